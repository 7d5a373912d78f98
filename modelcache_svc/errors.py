"""One exception tree for the whole service.

    CacheError
    ├── InvalidArgument      bad input: empty chat, bad role, oversized, bad name
    ├── NotFound             unknown tenant, key or entry
    ├── AlreadyExists        a tenant that exists
    ├── Unauthenticated      no key, or a key nobody issued
    ├── PermissionDenied     a key used outside its tenant
    ├── ResourceExhausted    over a limit
    └── Unavailable          a store is down and the call cannot be served

Errors of the libraries underneath (pymysql, sqlite3, pymilvus) are translated
at the store boundary with ``raise Unavailable(...) from exc``. Anything else
that escapes is a bug: transports log it and answer INTERNAL.

How each front end answers a class is written once, in ``TABLE`` at the end:
the gRPC status, the RESP error prefix, ModelCache's ``errorCode`` per call
type and the HTTP status the console answers. The gRPC and RESP servers, the
ModelCache endpoint, the console and the Python client all read it. Statuses
are named, not ``grpc.StatusCode`` members, so this
module imports nothing and the client distribution ships it as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class CacheError(Exception):
    """Base of every error the service answers on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(CacheError):
    pass


class NotFound(CacheError):
    pass


class AlreadyExists(CacheError):
    pass


class Unauthenticated(CacheError):
    pass


class PermissionDenied(CacheError):
    pass


class ResourceExhausted(CacheError):
    pass


class Unavailable(CacheError):
    pass


# -- the one table from error class to each front end's code -------------------------------------
@dataclass(frozen=True, slots=True)
class Codes:
    """How every front end answers an error of one class."""

    grpc: str  # a grpc.StatusCode name (grpc.StatusCode[codes.grpc])
    resp: str  # the first word of a RESP error reply: Redis clients key on it (NOAUTH, TRYAGAIN, ...)
    compat: Mapping[str, int]  # ModelCache's errorCode per call type: query, insert, remove, register
    http: int = 500  # the console's page status (POST /modelcache answers 200 whatever happened, as ModelCache)


# ModelCache's codes (DESIGN §10) tell a refused call (the caller's to fix) from a failed one (ours);
# register has one code for both.
_REFUSED = {"query": 201, "insert": 301, "remove": 401, "register": 502}
_FAILED = {"query": 202, "insert": 302, "remove": 402, "register": 502}

TABLE: Mapping[type[CacheError], Codes] = {
    # The base class alone is raised only by clients, for a status without a class of its own.
    CacheError: Codes("UNKNOWN", "ERR", _REFUSED, 400),
    InvalidArgument: Codes("INVALID_ARGUMENT", "ERR", _REFUSED, 400),
    NotFound: Codes("NOT_FOUND", "ERR", _REFUSED, 404),
    AlreadyExists: Codes("ALREADY_EXISTS", "ERR", _REFUSED, 409),
    Unauthenticated: Codes("UNAUTHENTICATED", "NOAUTH", _REFUSED, 401),
    PermissionDenied: Codes("PERMISSION_DENIED", "NOPERM", _REFUSED, 403),
    ResourceExhausted: Codes("RESOURCE_EXHAUSTED", "ERR", _FAILED, 429),
    Unavailable: Codes("UNAVAILABLE", "TRYAGAIN", _FAILED, 503),
}

# Any other exception is a bug: answered INTERNAL with a generic message, its details only in the log.
# ModelCache's insert has a code of its own for it.
INTERNAL = Codes("INTERNAL", "ERR", {**_FAILED, "insert": 303}, 500)


def codes_of(exc: BaseException) -> Codes:
    """The row of the exception's nearest class in TABLE (a subclass answers as its parent);
    INTERNAL for anything that is not a CacheError."""
    for cls in type(exc).__mro__:
        codes = TABLE.get(cls)
        if codes is not None:
            return codes
    return INTERNAL


def error_for_status(name: str) -> type[CacheError]:
    """The class a client raises for a gRPC status name; CacheError for one without a class of its own
    (DEADLINE_EXCEEDED, CANCELLED, INTERNAL, ...)."""
    # A scan of eight rows, on the error path only: nothing derived from TABLE to keep in step with it.
    return next((cls for cls, codes in TABLE.items() if codes.grpc == name), CacheError)
