#!/usr/bin/env bash
# Instructions a `serve` process spends on the churn scenario's write through the cache API:
# a GET of one CachedObject, and that GET followed by a PUT of it with one field changed (the
# PUT's event applied by the embedded virtual workspace's index included), counted by callgrind.
# Starts the release binary on the Cloud Co example under valgrind on a loopback port, warms up,
# then counts N keep-alive rounds of each from one Python client (HTTP/1.1 over TLS, the admin
# certificate).
#
#   cargo build --release && benches/callgrind-write.sh [N] [PORT]
#
# Prints `get <instructions per GET>` and `put <instructions per GET and PUT>`; the callgrind
# files stay in the work directory it prints, for callgrind_annotate.
set -euo pipefail
N=${1:-500}
PORT=${2:-16444}
# shellcheck source=benches/callgrind-lib.sh
source "$(dirname "$0")/callgrind-lib.sh"
callgrind_serve "$PORT"
cat >client.py <<'PY'
import http.client, json, ssl, sys
port, mode, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(cafile=".replication-vw/ca.crt")
ctx.load_cert_chain(".replication-vw/admin.crt", ".replication-vw/admin.key")
c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
base = "/services/cache/shards/root/clusters/1p5f2x8rkq0vd7wz/apis/cache.kcp.io/v1alpha1/cachedobjects"
c.request("GET", base); r = c.getresponse(); items = json.loads(r.read())["items"]
url = base + "/" + items[0]["metadata"]["name"]
for _ in range(n):
    c.request("GET", url); r = c.getresponse(); body = r.read()
    if r.status != 200: sys.exit(f"GET answered {r.status}")
    if mode == "put":
        v = json.loads(body)
        spec = v["spec"]["raw"].setdefault("spec", {})
        spec["cores"] = spec.get("cores", 1) % 64 + 1
        c.request("PUT", url, body=json.dumps(v), headers={"Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        if r.status != 200: sys.exit(f"PUT answered {r.status}")
PY
callgrind_control -i on >/dev/null
python3 client.py "$PORT" put 50
callgrind_count get "$N" python3 client.py "$PORT" get "$N"
callgrind_count put "$N" python3 client.py "$PORT" put "$N"
echo "callgrind files: $WORK"
