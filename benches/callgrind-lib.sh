# Shared by benches/callgrind-*.sh (sourced, not run): start the release `serve` binary on the
# Cloud Co example under callgrind (instrumentation off until the caller turns it on) on a
# loopback port, in a new work directory, and count instructions per request of a client run.
#
# After sourcing: `callgrind_serve PORT` (sets WORK and changes into it; the process is killed
# on exit), then `callgrind_count NAME N COMMAND...` prints `NAME <instructions per request>`
# for N requests made by COMMAND.

callgrind_serve() {
  local port=$1 root bin
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  bin=$root/target/release/replication-vw
  command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
  WORK=$(mktemp -d)
  cd "$WORK"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg.%p.out" \
    "$bin" serve --seed "$root/examples/cloud-co" --listen "127.0.0.1:$port" --storage memory \
    >serve.log 2>&1 &
  CALLGRIND_PID=$!
  trap 'kill $CALLGRIND_PID 2>/dev/null || true' EXIT
  for _ in $(seq 1 180); do
    grep -q 'get memflavors' serve.log 2>/dev/null && break
    sleep 1
  done
}

callgrind_count() {
  local name=$1 n=$2 f
  shift 2
  callgrind_control -z >/dev/null
  "$@"
  callgrind_control -d "$name" >/dev/null
  sleep 1
  f=$(grep -l "Trigger: dump $name" "$WORK"/cg.*.out.* | head -1)
  echo "$name $(($(grep '^summary:' "$f" | cut -d' ' -f2) / n))"
}
