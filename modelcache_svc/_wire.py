"""What the server and its Python clients both put on the wire, with nothing of the server in it:
the generated messages (``pb``) and stubs (``pb_grpc``), and the cacheability policy as a message.

The client distribution (clients/python) ships this module; transport/proto.py builds the server's
conversions on it. So it may import only the generated code, ``records`` and ``errors`` (a test,
tests/unit/test_client_imports.py, holds the client to that).
"""

from __future__ import annotations

from ._gen.modelcache.v1 import modelcache_pb2 as pb
from ._gen.modelcache.v1 import modelcache_pb2_grpc as pb_grpc
from .errors import InvalidArgument
from .records import CacheabilityAction, CacheabilityPolicy, CacheabilityRule

__all__ = ["pb", "pb_grpc", "policy_from_pb", "policy_to_pb"]

# UNSPECIFIED reads as REFUSE: an unset policy refuses the built-in classes.
_ACTION_FROM_PB = {
    pb.CACHEABILITY_ACTION_UNSPECIFIED: CacheabilityAction.REFUSE,
    pb.REFUSE: CacheabilityAction.REFUSE,
    pb.ALLOW: CacheabilityAction.ALLOW,
    pb.SHORT_TTL: CacheabilityAction.SHORT_TTL,
}
_ACTION_TO_PB = {CacheabilityAction.REFUSE: pb.REFUSE, CacheabilityAction.ALLOW: pb.ALLOW,
                 CacheabilityAction.SHORT_TTL: pb.SHORT_TTL}


def _action(value: int, where: str) -> CacheabilityAction:
    try:
        return _ACTION_FROM_PB[value]
    except KeyError:
        raise InvalidArgument(f"{where}: unknown CacheabilityAction {value}") from None


def policy_from_pb(p: pb.CacheabilityPolicy) -> CacheabilityPolicy:
    return CacheabilityPolicy(
        user_specific=_action(p.user_specific, "cacheability.user_specific"),
        time_sensitive=_action(p.time_sensitive, "cacheability.time_sensitive"),
        pii=_action(p.pii, "cacheability.pii"),
        short_ttl_seconds=int(p.short_ttl_seconds),
        rules=tuple(
            CacheabilityRule(r.name, r.pattern, tuple(r.keywords), _action(r.action, f"cacheability.rules[{i}].action"))
            for i, r in enumerate(p.rules)
        ),
    )


def policy_to_pb(p: CacheabilityPolicy) -> pb.CacheabilityPolicy:
    return pb.CacheabilityPolicy(
        user_specific=_ACTION_TO_PB[p.user_specific],
        time_sensitive=_ACTION_TO_PB[p.time_sensitive],
        pii=_ACTION_TO_PB[p.pii],
        short_ttl_seconds=p.short_ttl_seconds,
        rules=[
            pb.CacheabilityRule(
                name=r.name, pattern=r.pattern, keywords=list(r.keywords), action=_ACTION_TO_PB[r.action]
            )
            for r in p.rules
        ],
    )
