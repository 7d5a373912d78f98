"""The first start of `modelcache-svc serve`, as a new user sees it: the one-time ONNX export says one line
per model (the English and the CJK one), and making the tuned models whole says one line each too."""

from __future__ import annotations

import json
from pathlib import Path

from tests.servers import ProcessServer


def test_first_start_exports_the_model_in_one_log_line(tmp_path: Path) -> None:
    cache = tmp_path / "onnx"  # nothing exported yet
    verifiers, env = cache / "verifiers", {"MODELCACHE_MODEL_CACHE_DIR": str(cache)}
    args = ["--data-dir", str(tmp_path / "data"), "--http-port", "0", "--resp-port", "0"]
    # A first start exports every model once (the e5 one with its whole vocabulary since conversion v3).
    server = ProcessServer(args, env=env, ready_timeout=360)
    try:
        with server.client() as c:
            assert not c.query("default", "m1", [{"role": "user", "content": "Is it up?"}]).hit
    finally:
        server.terminate()
    assert len(list(cache.glob("*/model.onnx"))) == 2  # the English and the CJK model
    lines = [line for line in server.output.splitlines() if line.strip()]
    stray = [line for line in lines if not line.startswith("{") and not line.startswith("modelcache-svc ready")]
    assert stray == [], "output that is not a JSON log line:\n" + "\n".join(stray[:20])
    events = [json.loads(line) for line in lines if line.startswith("{")]
    export = [e for e in events if "ONNX" in e["msg"]]
    # One line per model: the English and the CJK embedders, and the two verifiers.
    assert len(export) == 4 and all("once" in e["msg"] for e in export), export
    assert len([e for e in export if e["logger"] == "modelcache_svc.verifier"]) == 2, export
    assert len(list(verifiers.glob("*/verifier.int8.onnx"))) == 2
    # Nothing of the exporter, the fuser or faiss's loader in the logs either.
    assert [e for e in events if e["logger"].split(".")[0] not in ("modelcache_svc", "milvus_lite")] == []
    assert not any(word in line for line in lines for word in ("Warning", "Traceback", "Loading weights"))

    # A second start reuses the export and says nothing of it.
    again = ProcessServer(args, env=env)
    again.terminate()
    assert "ONNX" not in again.output
