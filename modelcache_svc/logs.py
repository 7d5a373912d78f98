"""Structured logs: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("request_id", "rpc", "tenant", "status"):
            value = getattr(record, key, None)
            if value is not None:
                event[key] = value
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


class _MilvusLiteNoise(logging.Filter):
    """Milvus Lite's in-process gRPC server lacks AllocTimestamp; pymilvus asks for it
    before each query iterator, falls back to a client timestamp, and the server logs a
    traceback for nothing. Drop that one record, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "grpc._server" and "Method not implemented" in record.getMessage())


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_MilvusLiteNoise())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # faiss.loader (imported by Milvus Lite) logs its CPU-feature probing at INFO on every start, failures included.
    for noisy in ("transformers", "urllib3", "pymilvus", "filelock", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
