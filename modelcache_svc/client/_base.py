"""Construction both clients share: target, key, default timeout, retry policy."""

from __future__ import annotations

from typing import Any

from ._calls import Call
from .retry import Retry

# Answers may be long (up to 256k characters, more in bytes): above gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class BaseClient:
    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        api_key: str | None = None,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        retry: Retry | None = None,
    ) -> None:
        """``timeout``: the default deadline of a call in seconds (each method takes its own
        ``timeout=`` too). ``retries``/``backoff``/``max_backoff`` build the retry policy;
        ``retry`` gives one directly (with an ``on_retry`` hook, say) and wins over them."""
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.target = target
        self.timeout = timeout
        self.retry = retry if retry is not None else Retry(retries, backoff, max_backoff)
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._connect()

    def _connect(self) -> None:
        """Open the channel and its stubs (each client its own kind of channel)."""
        raise NotImplementedError

    def _channel_options(self) -> list[tuple[str, Any]]:
        return [
            *self.retry.channel_options(),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]

    def _deadline(self, call: Call[Any], timeout: float | None) -> float:
        """The call's own timeout, else the RPC's default (reindex), else the client's."""
        if timeout is not None:
            if timeout <= 0:
                raise ValueError("timeout must be positive")
            return timeout
        return call.default_timeout if call.default_timeout is not None else self.timeout
