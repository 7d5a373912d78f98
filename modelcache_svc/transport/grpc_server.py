"""The gRPC front end: CacheService and TenantService over the core, plus
grpc.health.v1 and server reflection.

Handlers are registered generically (not through the generated servicer
base classes) so that a request the protobuf runtime cannot decode — invalid
UTF-8 in a string field, say — reaches our error path and is answered
INVALID_ARGUMENT instead of the runtime's INTERNAL.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from .. import errors
from ..cache.service import CacheCore
from ..cache.tenants import Principal
from .proto import (
    VERDICTS,
    carried_from_pb,
    carried_to_pb,
    config_from_pb,
    entry_from_pb,
    import_report_to_pb,
    messages_from_pb,
    pb,
    result_to_pb,
    scope_from_pb,
    stats_to_pb,
    tenant_to_pb,
)

log = logging.getLogger("modelcache_svc.grpc")


def status_of(exc: BaseException) -> grpc.StatusCode:
    """The status errors.TABLE gives the exception's class (INTERNAL for a bug)."""
    return grpc.StatusCode[errors.codes_of(exc).grpc]


CACHE_SERVICE = "modelcache.v1.CacheService"
TENANT_SERVICE = "modelcache.v1.TenantService"


class _Undecodable:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _safe_deserializer(cls: type[Message]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as exc:
            return _Undecodable(str(exc) or type(exc).__name__)

    return deserialize


# A fresh request id: 32 hex digits like a uuid4's, unique within this process and across processes (a
# random prefix, then a counter). uuid4 per call read the kernel's random source on every call.
_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def call_metadata(context: grpc.aio.ServicerContext) -> tuple[str, str | None]:
    """(the caller's x-request-id, bounded and printable, or a fresh one; the bearer token or None),
    in one pass over the call's metadata."""
    rid = ""
    token: str | None = None
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and not rid and isinstance(value, str):
            rid = "".join(ch for ch in value[:64] if ch.isprintable())
        elif key == "authorization" and token is None and isinstance(value, str):
            scheme, _, rest = value.partition(" ")
            token = rest.strip() if scheme.lower() == "bearer" else value.strip()
    return rid or new_request_id(), token


Handler = Callable[..., Awaitable[Message]]


SERVICES = ("", CACHE_SERVICE, TENANT_SERVICE)


class GrpcFrontEnd:
    def __init__(self, core: CacheCore) -> None:
        self.core = core
        self.health = HealthServicer()

    async def set_serving(self, serving: bool) -> None:
        """Health of every service: SERVING, or NOT_SERVING (while the core reads its vectors back)."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in SERVICES:
            await self.health.set(service, status)

    def _method(self, name: str, fn: Handler, request_cls: type[Message]) -> grpc.RpcMethodHandler:
        core = self.core

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Message:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            rid, token = call_metadata(context)
            context.set_trailing_metadata((("x-request-id", rid),))
            try:
                if isinstance(request, _Undecodable):
                    raise errors.InvalidArgument(f"request could not be decoded: {request.reason}")
                principal = await core.tenants.authenticate(token)
                return await fn(request, principal, rid)
            except errors.CacheError as exc:
                code = status_of(exc)
                message = exc.message
            except Exception as exc:
                log.exception("%s failed with an unexpected error", name, extra={"request_id": rid, "rpc": name})
                code, message = status_of(exc), f"internal error in {name}"
            finally:
                elapsed = time.perf_counter() - start
                core.metrics.request("grpc", name, code.name, elapsed)
                level = logging.DEBUG if code == grpc.StatusCode.OK else logging.INFO
                if log.isEnabledFor(level):
                    log.log(
                        level,
                        "%s %s in %.2f ms",
                        name,
                        code.name,
                        elapsed * 1000,
                        extra={"request_id": rid, "rpc": name, "status": code.name},
                    )
            await context.abort(code, message)
            raise AssertionError("unreachable")  # context.abort raises

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=_safe_deserializer(request_cls),
            response_serializer=lambda m: m.SerializeToString(),
        )

    # -- CacheService ----------------------------------------------------------------
    async def _query(self, r: pb.QueryRequest, p: Principal, rid: str) -> pb.QueryResponse:
        result = await self.core.query(
            p,
            scope_from_pb(r.scope),
            messages_from_pb(r.messages),
            similarity_threshold=r.similarity_threshold if r.HasField("similarity_threshold") else None,
            top_k=int(r.top_k),
            request_id=rid,
        )
        return result_to_pb(result)

    async def _insert(self, r: pb.InsertRequest, p: Principal, rid: str) -> pb.InsertResponse:
        result = await self.core.insert(p, scope_from_pb(r.scope), [entry_from_pb(e) for e in r.entries])
        return pb.InsertResponse(ids=result.ids, uncacheable=result.uncacheable)

    async def _remove(self, r: pb.RemoveRequest, p: Principal, rid: str) -> pb.RemoveResponse:
        return pb.RemoveResponse(removed=await self.core.remove(p, scope_from_pb(r.scope), list(r.ids)))

    async def _feedback(self, r: pb.FeedbackRequest, p: Principal, rid: str) -> pb.FeedbackResponse:
        # An unknown verdict reaches the core as "": it refuses it after the scope and key checks.
        verdict = VERDICTS.get(r.verdict, "")
        action = await self.core.feedback(
            p, scope_from_pb(r.scope), r.entry_id, messages_from_pb(r.messages), verdict, r.answer
        )
        return pb.FeedbackResponse(action=action)

    async def _clear(self, r: pb.ClearRequest, p: Principal, rid: str) -> pb.ClearResponse:
        return pb.ClearResponse(removed=await self.core.clear(p, r.scope.tenant, r.scope.model or None))

    # -- TenantService -----------------------------------------------------------------
    async def _stats(self, r: pb.StatsRequest, p: Principal, rid: str) -> pb.StatsResponse:
        window = int(r.window_seconds) or 3600
        scopes = await self.core.stats(p, r.scope.tenant, r.scope.model or None, window, int(r.top) or 5)
        return pb.StatsResponse(window_seconds=window, scopes=[stats_to_pb(s) for s in scopes])

    async def _reindex(self, r: pb.ReindexRequest, p: Principal, rid: str) -> pb.ReindexResponse:
        return pb.ReindexResponse(reindexed=await self.core.reindex(p, r.tenant))

    async def _repair(self, r: pb.RepairRequest, p: Principal, rid: str) -> pb.RepairResponse:
        report = await self.core.repair(p, r.tenant or None)
        return pb.RepairResponse(
            rows_checked=report.rows_checked,
            vectors_added=report.vectors_added,
            vectors_removed=report.vectors_removed,
        )

    async def _create_tenant(self, r: pb.CreateTenantRequest, p: Principal, rid: str) -> pb.Tenant:
        return tenant_to_pb(await self.core.create_tenant(p, r.name, config_from_pb(r.config)))

    async def _get_tenant(self, r: pb.GetTenantRequest, p: Principal, rid: str) -> pb.Tenant:
        return tenant_to_pb(await self.core.get_tenant(p, r.name))

    async def _list_tenants(self, r: pb.ListTenantsRequest, p: Principal, rid: str) -> pb.ListTenantsResponse:
        return pb.ListTenantsResponse(tenants=[tenant_to_pb(t) for t in await self.core.list_tenants(p)])

    async def _update_tenant(self, r: pb.UpdateTenantRequest, p: Principal, rid: str) -> pb.Tenant:
        p.check_admin()
        current = await self.core.tenants.get(r.name)
        config = config_from_pb(r.config, current.config, r.update_mask.paths)
        return tenant_to_pb(await self.core.update_tenant(p, r.name, config))

    async def _delete_tenant(self, r: pb.DeleteTenantRequest, p: Principal, rid: str) -> pb.DeleteTenantResponse:
        return pb.DeleteTenantResponse(removed=await self.core.delete_tenant(p, r.name))

    async def _create_api_key(self, r: pb.CreateApiKeyRequest, p: Principal, rid: str) -> pb.ApiKey:
        key_id, key = await self.core.create_api_key(p, r.tenant)
        return pb.ApiKey(id=key_id, key=key, tenant=r.tenant)

    async def _revoke_api_key(self, r: pb.RevokeApiKeyRequest, p: Principal, rid: str) -> pb.RevokeApiKeyResponse:
        await self.core.revoke_api_key(p, r.id)
        return pb.RevokeApiKeyResponse()

    async def _export(self, r: pb.ExportRequest, p: Principal, rid: str) -> pb.ExportResponse:
        page = await self.core.export_entries(
            p, r.scope.tenant, r.scope.model, r.after_id, int(r.limit), with_vectors=not r.without_vectors
        )
        return pb.ExportResponse(
            tenant=tenant_to_pb(page.tenant),
            entries=[carried_to_pb(e) for e in page.entries],
            next_after_id=page.next_after,
            total=page.total,
        )

    async def _import(self, r: pb.ImportRequest, p: Principal, rid: str) -> pb.ImportResponse:
        config = config_from_pb(r.config) if r.HasField("config") else None
        report = await self.core.import_entries(p, r.tenant, config, [carried_from_pb(e) for e in r.entries])
        return import_report_to_pb(report)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        cache = {
            "Query": self._method("Query", self._query, pb.QueryRequest),
            "Insert": self._method("Insert", self._insert, pb.InsertRequest),
            "Remove": self._method("Remove", self._remove, pb.RemoveRequest),
            "Clear": self._method("Clear", self._clear, pb.ClearRequest),
            "Stats": self._method("Stats", self._stats, pb.StatsRequest),
            "Feedback": self._method("Feedback", self._feedback, pb.FeedbackRequest),
        }
        tenants = {
            "CreateTenant": self._method("CreateTenant", self._create_tenant, pb.CreateTenantRequest),
            "GetTenant": self._method("GetTenant", self._get_tenant, pb.GetTenantRequest),
            "ListTenants": self._method("ListTenants", self._list_tenants, pb.ListTenantsRequest),
            "UpdateTenant": self._method("UpdateTenant", self._update_tenant, pb.UpdateTenantRequest),
            "DeleteTenant": self._method("DeleteTenant", self._delete_tenant, pb.DeleteTenantRequest),
            "CreateApiKey": self._method("CreateApiKey", self._create_api_key, pb.CreateApiKeyRequest),
            "RevokeApiKey": self._method("RevokeApiKey", self._revoke_api_key, pb.RevokeApiKeyRequest),
            "Reindex": self._method("Reindex", self._reindex, pb.ReindexRequest),
            "Repair": self._method("Repair", self._repair, pb.RepairRequest),
            "Export": self._method("Export", self._export, pb.ExportRequest),
            "Import": self._method("Import", self._import, pb.ImportRequest),
        }
        return [
            grpc.method_handlers_generic_handler(CACHE_SERVICE, cache),
            grpc.method_handlers_generic_handler(TENANT_SERVICE, tenants),
        ]


async def start_grpc_server(front: GrpcFrontEnd, host: str, port: int, max_message_bytes: int) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers(front.handlers())
    health_pb2_grpc.add_HealthServicer_to_server(front.health, server)
    reflection.enable_server_reflection(
        (CACHE_SERVICE, TENANT_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise errors.Unavailable(f"cannot listen on {address}")
    await server.start()
    # NOT_SERVING until the core has read its vectors back (the app then calls set_serving(True)).
    await front.set_serving(front.core.loading is None)
    return server, bound
