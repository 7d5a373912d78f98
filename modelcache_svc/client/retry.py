"""The retry policy both clients follow.

Only UNAVAILABLE is retried: it means the call did not reach a working server
(connection refused, a replica restarting, a store down), and every RPC of the
service is safe to repeat then (Insert of the same chat replaces its answer and
keeps its id; Remove and Clear are idempotent). Any other code is an answer and
is raised at once.

A call's timeout is its whole deadline, retries included: each attempt gets
what is left of it, and no retry is started that the deadline would cut short
(the caller then gets the last UNAVAILABLE, which says more than a
DEADLINE_EXCEEDED would).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from .. import errors
from ._calls import translate

OnRetry = Callable[[int, errors.CacheError, float], None]


@dataclass(frozen=True)
class Retry:
    """``retries`` more attempts after the first, with capped, jittered exponential backoff.

    ``on_retry(n, error, delay_s)`` is called before the n-th retry (to log or count them).
    """

    retries: int = 2
    backoff: float = 0.05
    max_backoff: float = 1.0
    on_retry: OnRetry | None = None

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff <= 0 or self.max_backoff < self.backoff:
            raise errors.InvalidArgument("retry policy: retries >= 0 and 0 < backoff <= max_backoff")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based): half fixed, half random.

        The random half spreads the retries of many clients that lost the same
        server at the same moment, so they do not all come back at once.
        """
        base = min(self.max_backoff, self.backoff * (2**retry))
        return base * (0.5 + random.random() / 2)

    def channel_options(self) -> list[tuple[str, int]]:
        """gRPC reconnect pacing matched to this policy.

        A channel that failed to connect waits its own backoff (1 s, growing to
        120 s) before it dials again, and every call in that wait fails at once
        with UNAVAILABLE: our retries would then spend themselves on a channel
        that is not even trying. Capping the channel's backoff at ours keeps a
        retry meaningful once the server is back.
        """
        first_ms = max(10, int(self.backoff * 1000))
        cap_ms = max(first_ms, int(self.max_backoff * 1000))
        return [
            ("grpc.initial_reconnect_backoff_ms", first_ms),
            ("grpc.min_reconnect_backoff_ms", first_ms),
            ("grpc.max_reconnect_backoff_ms", cap_ms),
        ]

    def start(self, timeout: float) -> Attempts:
        return Attempts(self, timeout)


class Attempts:
    """The retry state of one call: its deadline and how many retries it spent."""

    def __init__(self, policy: Retry, timeout: float) -> None:
        self._policy = policy
        self._deadline = time.monotonic() + timeout
        self.retried = 0

    def remaining(self) -> float:
        """The timeout for the next attempt: what is left of the call's deadline."""
        return max(0.0, self._deadline - time.monotonic())

    def next_delay(self, exc: grpc.RpcError) -> float | None:
        """How long to wait before trying again, or None to give up and raise."""
        code = exc.code() if hasattr(exc, "code") else None
        if code != grpc.StatusCode.UNAVAILABLE or self.retried >= self._policy.retries:
            return None
        delay = self._policy.delay(self.retried)
        if time.monotonic() + delay >= self._deadline:
            return None
        self.retried += 1
        if self._policy.on_retry is not None:
            self._policy.on_retry(self.retried, translate(exc), delay)
        return delay
