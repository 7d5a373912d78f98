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
that escapes is a bug: transports log it and answer INTERNAL. Each transport
maps these classes to its own codes in one table (transport/grpc_server.py
and transport/resp_server.py).
"""

from __future__ import annotations


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
