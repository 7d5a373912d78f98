#!/usr/bin/env bash
# bench-scale over a Milvus server that has a core of its own while it serves (issue #32): the layout of the
# deploy files (a query node beside the service, not on its cores), on this 2-core host.
#
#   milvus-server on core 1 while a scope is measured, on both cores while it builds an index (a million rows:
#   ~20 min on both); bench-scale, its gRPC server and its load generator on core 0 throughout.
#
#   bash tests/perf/milvus_own_core.sh > scale-milvus-own-core.json
#
# Run it alone on the host (nothing else: the point is who has which core). The report is bench-scale's JSON on
# stdout; the core moves are logged on stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
work=$(mktemp -d /tmp/milvus-own-core.XXXXXX)
port=$($PY -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
taskset -c 1 .venv/bin/milvus-server --data "$work/data" --proxy-port "$port" > "$work/milvus.log" 2>&1 &
milvus=$!
trap 'kill -- -$milvus 2>/dev/null || kill $milvus 2>/dev/null; pkill -f "milvus-server --data $work" || true; wait || true; rm -rf "$work"' EXIT
uri="http://127.0.0.1:$port"
$PY - "$uri" <<'PY'
import sys, time
from pymilvus import MilvusClient
for _ in range(180):
    try:
        MilvusClient(uri=sys.argv[1], timeout=5).list_collections(); break
    except Exception:
        time.sleep(1)
PY
# The watcher: both cores while any of the server's collections has rows to index, core 1 otherwise.
$PY - "$uri" "$work" <<'PY' >&2 &
import subprocess, sys, time
from pymilvus import MilvusClient
c = MilvusClient(uri=sys.argv[1], timeout=10)
where = "1"
while True:
    try:
        busy = False
        for n in c.list_collections():
            rows = int(c.get_collection_stats(n).get("row_count", 0))
            info = c.describe_index(n, "vector") if "vector" in c.list_indexes(n) else {}
            busy |= rows > 20000 and (int(info.get("indexed_rows", 0)) < rows or int(info.get("pending_index_rows", 0)) > 0)
        want = "0,1" if busy else "1"
        if want != where:
            # The launcher and the standalone it starts (<work>/data/bin/milvus run standalone), every thread.
            pids = subprocess.run(["pgrep", "-f", sys.argv[2] + "/data"], capture_output=True, text=True).stdout.split()
            for pid in pids:
                subprocess.run(["taskset", "-a", "-p", "-c", want, pid], capture_output=True)
            print(f"{time.strftime('%H:%M:%S')} milvus-server on cores {want}", flush=True)
            where = want
    except Exception as exc:
        print(f"watcher: {exc}", flush=True)
    time.sleep(1)
PY
watcher=$!
trap 'kill $watcher 2>/dev/null; kill -- -$milvus 2>/dev/null || kill $milvus 2>/dev/null; pkill -f "milvus-server --data $work" || true; rm -rf "$work"' EXIT
HF_HUB_OFFLINE=1 taskset -c 0 .venv/bin/modelcache-svc bench-scale --sizes "${SIZES:-10000,1000000}" --modes milvus \
    --milvus-uri "$uri" --duration 15 --no-kill --json
