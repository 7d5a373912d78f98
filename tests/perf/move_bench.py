"""The move of issue #24 at size: N entries of the embedded default -> MariaDB + a Milvus server, by
`modelcache-svc export` and `modelcache-svc import`, then every entry asked on the target.

Not a test (pytest does not collect this folder's files): a measurement, run by hand on a quiet host:

    HF_HUB_OFFLINE=1 .venv/bin/python -m tests.perf.move_bench --entries 100000 --json

The source is filled with the bench-scale bulk path (tools/bulk_load.py: real questions with their
vectors, then synthetic rows), started as the embedded default, exported through gRPC, imported into a
server on MariaDB (127.0.0.1:3306) and the `milvus` package's standalone server, and each exported entry's
chat is asked on the target: it must come back as an exact hit with the same id and answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modelcache_svc.cli import main as cli
from modelcache_svc.config import Settings
from modelcache_svc.embedding import load_embedder
from modelcache_svc.stores import open_scalar_store
from modelcache_svc.stores.milvus_store import MilvusVectorStore
from modelcache_svc.tools import bulk_load
from tests.integration.test_replicas import milvus_standalone
from tests.servers import ThreadServer

ADMIN = "move-bench-admin"
MYSQL = "mysql://root@127.0.0.1:3306/modelcache_move_bench"


def fill(data_dir: Path, entries: int, embedder: Any, cache_dir: Path) -> float:
    real = bulk_load.real_set(2000, Path(__file__).resolve().parents[2].parent / "shared" / "eval", embedder, cache_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    scalar = open_scalar_store(f"sqlite:///{data_dir / 'modelcache.db'}", "")
    scalar.migrate()
    vector = MilvusVectorStore(str(data_dir / "milvus.db"), "")
    started = time.perf_counter()
    bulk_load.load(scalar, vector, real, entries, "default", "m1")
    seconds = time.perf_counter() - started
    vector.close()
    scalar.close()
    return seconds


def ask_all(target: str, path: Path) -> tuple[int, int]:
    from modelcache_svc.client import CacheClient

    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    rows = [json.loads(line) for line in lines]

    def check(chunk: list[dict[str, Any]]) -> int:
        bad = 0
        with CacheClient(target, api_key=ADMIN, timeout=30) as c:
            for row in chunk:
                hit = c.query("default", row["model"], row["messages"])
                bad += (hit.id, hit.answer) != (row["id"], row["answer"])
        return bad

    chunks = [rows[i::8] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        return len(rows), sum(pool.map(check, chunks))


def run(entries: int) -> dict[str, Any]:
    embedder = load_embedder("onnx", Settings().embedding_model)
    report: dict[str, Any] = {"entries": entries}
    with tempfile.TemporaryDirectory(prefix="move-bench-") as tmp:
        root = Path(tmp)
        report["bulk_load_s"] = round(fill(root / "embedded", entries, embedder, root / "cache"), 1)
        source = ThreadServer(Settings(data_dir=root / "embedded", grpc_port=0, http_port=0, resp_port=0), embedder)
        out = root / "export.jsonl"
        started = time.perf_counter()
        assert cli(["export", "--target", source.target, "--tenant", "default", "--out", str(out), "--json"]) == 0
        report["export_s"] = round(time.perf_counter() - started, 1)
        report["export_mb"] = round(out.stat().st_size / 1e6, 1)
        source.stop()
        with milvus_standalone(root / "milvus") as uri:
            target = ThreadServer(Settings(data_dir=root / "svc", grpc_port=0, http_port=0, resp_port=0,
                                           scalar_uri=MYSQL, vector_uri=uri, admin_key=ADMIN,
                                           namespace="m" + uuid.uuid4().hex[:8]), embedder)
            for name in ("import_s", "second_import_s"):
                started = time.perf_counter()
                assert cli(["import", "--target", target.target, "--key", ADMIN, str(out), "--json"]) == 0
                report[name] = round(time.perf_counter() - started, 1)
            time.sleep(1.0)  # a Milvus server's bounded consistency: new vectors searchable within ~200 ms
            started = time.perf_counter()
            asked, different = ask_all(target.target, out)
            report.update(asked=asked, different=different, ask_all_s=round(time.perf_counter() - started, 1))
            target.stop()
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    report = run(args.entries)
    print(json.dumps(report), file=sys.stdout)
    return 0 if report["different"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
