#!/usr/bin/env bash
#: Builds the fuzz targets once (`cargo fuzz build -s none`: stable toolchain, no sanitizer) and
#: runs each for SECONDS_PER_TARGET seconds (default 60), one after the other, printing per
#: target the executions libFuzzer reports and a total. Exits non-zero if any target crashed
#: (the crashing input is in fuzz/artifacts/<target>/).
#:
#: Usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   (no TARGET: every target)
#:
#: FUZZ_DEV=1 builds without optimizations (`cargo fuzz build --dev`): far quicker to build from
#: clean, far fewer executions per second. CI uses it for its few seconds per target.
#:
#: New corpus entries go to fuzz/target/corpus/<target>/ (ignored by git); the committed seeds
#: in fuzz/corpus/<target>/ are only read. A dictionary fuzz/dict/<target>.dict is used when it
#: exists. Logs: fuzz/target/logs/<target>.log.
set -euo pipefail

secs="${1:-60}"
shift || true
case "$secs" in
'' | *[!0-9]*)
  echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
  ;;
esac

cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

start=$(date +%s)
profile=release
build_args=(-s none)
if [ "${FUZZ_DEV:-}" = 1 ]; then
  profile=debug
  build_args+=(--dev)
fi
cargo fuzz build "${build_args[@]}"
echo "fuzz build ($profile): $(($(date +%s) - start)) s"

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

host=$(rustc -vV | sed -n 's/^host: //p')
bin_dir="target/$host/$profile"
mkdir -p target/logs

total=0
failed=()
printf '%-20s %8s %14s %10s  %s\n' target seconds executions exec/s result
for t in "${targets[@]}"; do
  mkdir -p "target/corpus/$t" "artifacts/$t"
  args=(
    "target/corpus/$t"
    "-max_total_time=$secs"
    -print_final_stats=1
    -max_len=4096
    -timeout=10
    -rss_limit_mb=2048
    "-artifact_prefix=artifacts/$t/"
  )
  [ -d "corpus/$t" ] && args+=("corpus/$t")
  [ -f "dict/$t.dict" ] && args+=("-dict=dict/$t.dict")
  log="target/logs/$t.log"
  t0=$(date +%s)
  rc=0
  "$bin_dir/$t" "${args[@]}" >"$log" 2>&1 || rc=$?
  elapsed=$(($(date +%s) - t0))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  execs="${execs:-0}"
  total=$((total + execs))
  rate=$((execs / (elapsed > 0 ? elapsed : 1)))
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    result="CRASH (exit $rc, see fuzz/$log)"
    failed+=("$t")
  fi
  printf '%-20s %8d %14d %10d  %s\n' "$t" "$elapsed" "$execs" "$rate" "$result"
done
printf '%-20s %8s %14d\n' total "" "$total"

if [ "${#failed[@]}" -gt 0 ]; then
  echo "crashed: ${failed[*]}" >&2
  exit 1
fi
