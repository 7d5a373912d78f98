"""A small OpenAI-compatible HTTP server that plays the model in the integration tests.

``POST /v1/chat/completions`` (JSON, or SSE with ``"stream": true``) and
``POST /v1/completions`` (JSON). Every answer names its call number and the
question it answers ("answer 3: What's the capital of Vietnam?"), so a test can
tell a cached answer from a fresh one; ``requests`` keeps every request body.

A question containing ``BREAK`` is streamed halfway and the connection is then
dropped (no finish_reason, no ``[DONE]``): a stream that broke off.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class FakeOpenAI:
    """The server in a background thread on a free port; ``base_url`` is what the SDKs take."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                n = fake._record(self.path, body)
                if self.path.endswith("/chat/completions"):
                    question = _text(body["messages"][-1].get("content"))
                    answer = f"answer {n}: {question}"
                    if body.get("stream"):
                        self._stream(body, answer, broken="BREAK" in question)
                    else:
                        self._json(_completion(body, answer, n))
                elif self.path.endswith("/completions"):
                    prompt = body.get("prompt")
                    prompt = prompt[0] if isinstance(prompt, list) else prompt
                    self._json(_text_completion(body, f"answer {n}: {prompt}", n))
                else:
                    self.send_error(404)

            def _json(self, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict[str, Any], answer: str, broken: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                words = answer.split(" ")
                pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
                if broken:
                    pieces = pieces[: max(1, len(pieces) // 2)]
                base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time())}
                base["model"] = body.get("model", "")
                events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
                events += [{**base, "choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
                if not broken:
                    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                for event in events:
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                if not broken:
                    self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, path: str, body: dict[str, Any]) -> int:
        with self._lock:
            self.requests.append({"path": path, **body})
            return len(self.requests)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _completion(body: dict[str, Any], answer: str, n: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _text_completion(body: dict[str, Any], answer: str, n: int) -> dict[str, Any]:
    return {
        "id": f"cmpl-{n}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [{"index": 0, "text": answer, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
