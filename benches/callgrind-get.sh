#!/usr/bin/env bash
# Instructions a `serve` process spends on one virtual-workspace GET and on one /healthz, counted
# by callgrind (repeatable on a noisy machine, unlike times). Starts the release binary on the
# Cloud Co example under valgrind on a loopback port, warms both paths up, then counts N
# keep-alive requests of each from one Python client (HTTP/1.1 over TLS, the admin certificate).
#
#   cargo build --release && benches/callgrind-get.sh [N] [PORT]
#
# Prints `get <instructions per request>` and `healthz <instructions per request>`; the two
# callgrind files stay in the work directory it prints, for callgrind_annotate.
set -euo pipefail
N=${1:-2000}
PORT=${2:-16443}
# shellcheck source=benches/callgrind-lib.sh
source "$(dirname "$0")/callgrind-lib.sh"
callgrind_serve "$PORT"
cat >client.py <<'EOF'
import http.client, json, ssl, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(cafile=".replication-vw/ca.crt")
ctx.load_cert_chain(".replication-vw/admin.crt", ".replication-vw/admin.key")
c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
if path == "first-flavor":
    c.request("GET", sys.argv[4]); r = c.getresponse()
    print(sys.argv[4] + "/" + json.loads(r.read())["items"][0]["metadata"]["name"]); sys.exit(0)
for _ in range(n):
    c.request("GET", path); r = c.getresponse(); r.read()
    if r.status != 200: sys.exit(f"{path} answered {r.status}")
EOF
LIST=/services/replication/1p5f2x8rkq0vd7wz/cpuflavors-v1/clusters/3h9tqa6m2cxe1kbn/apis/cloud.example.com/v1/cpuflavors
callgrind_control -i on >/dev/null
OBJ=$(python3 client.py "$PORT" first-flavor 0 "$LIST")
python3 client.py "$PORT" "$OBJ" 100
python3 client.py "$PORT" /healthz 100
callgrind_count get "$N" python3 client.py "$PORT" "$OBJ" "$N"
callgrind_count healthz "$N" python3 client.py "$PORT" /healthz "$N"
echo "callgrind files: $WORK"
