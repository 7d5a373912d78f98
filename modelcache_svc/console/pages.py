"""The console's pages and the changes its forms make. Every page asks the Gate who is calling first; every
read goes through the core with that caller's Principal (a tenant key reaches its own tenant only, whatever
the URL says) and every change through the core's own calls: Remove, Insert (a replaced answer), Feedback
(a served hit marked WRONG), UpdateTenant and CreateApiKey."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from ..cache.browse import MAX_PAGE
from ..cache.service import CacheCore
from ..errors import InvalidArgument, NotFound
from ..records import EvictionPolicy, NewEntry, Scope, TenantConfig
from . import charts
from .auth import CSRF_FIELD, SIGNIN_COOKIE, Caller, Gate

WINDOW_S = 24 * 3600.0  # the overview's and the tenant page's query-log window
OUTCOMES = ("exact", "semantic", "miss", "error", "feedback")
SHOWN_TRAFFIC = 200


def field(form: FormData | Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def optional_float(form: FormData, name: str, what: str) -> float | None:
    text = field(form, name)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"{name}: {what}") from None
    if not math.isfinite(value):
        raise InvalidArgument(f"{name}: {what}")
    return value


def whole(form: FormData, name: str) -> int:
    text = field(form, name) or "0"
    if not text.isdigit():
        raise InvalidArgument(f"{name}: a whole number, 0 or more")
    return int(text)


def config_from_form(form: FormData, current: TenantConfig) -> TenantConfig:
    """The settings form over the tenant's current config (its embedding model and cacheability policy stay)."""
    verifier = field(form, "verifier")
    if verifier not in ("", "on", "off"):
        raise InvalidArgument("verifier: default, on or off")
    policy = field(form, "eviction_policy").upper() or current.eviction_policy.name
    if policy not in EvictionPolicy.__members__ or policy == "EVICTION_POLICY_UNSPECIFIED":
        raise InvalidArgument("eviction_policy: LRU, LFU or FIFO")
    return TenantConfig(
        similarity_threshold=optional_float(form, "similarity_threshold", "a number in (0, 1], or empty"),
        ttl_seconds=whole(form, "ttl_seconds"),
        max_entries=whole(form, "max_entries"),
        eviction_policy=EvictionPolicy[policy],
        embedding_model=current.embedding_model,
        cacheability=current.cacheability,
        max_error_rate=optional_float(form, "max_error_rate", "a number in (0, 1), or empty"),
        verify_rate=optional_float(form, "verify_rate", "a number in [0, 1]") or 0.0,
        verifier=None if not verifier else verifier == "on",
        verifier_cutoff=optional_float(form, "verifier_cutoff", "a number in [0, 1], or empty"),
        cross_language=field(form, "cross_language") == "on",
    )


def similarity_range(text: str, name: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"{name}: a similarity in [0, 1]") from None
    if not 0.0 <= value <= 1.0:
        raise InvalidArgument(f"{name}: a similarity in [0, 1]")
    return value


class Pages:
    def __init__(self, core: CacheCore, templates: Jinja2Templates, gate: Gate) -> None:
        self.core = core
        self.templates = templates
        self.gate = gate

    # -- rendering ---------------------------------------------------------------------------------
    def render(self, request: Request, name: str, caller: Caller | None, status: int = 200,
               **context: Any) -> Response:
        base = request.scope.get("root_path", "")
        return self.templates.TemplateResponse(
            request, name, {"base": base, "caller": caller, "csrf_field": CSRF_FIELD, **context}, status_code=status)

    def signin_page(self, request: Request, message: str = "", status: int = 200) -> Response:
        token = self.gate.signin_token(request)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = self.render(request, "signin.html", None, status, message=message, token=token,
                               next=target if request.method == "GET" else "")
        self.gate.set_cookie(request, response, SIGNIN_COOKIE, token, max_age=3600)
        return response

    async def change(self, request: Request) -> tuple[Caller, FormData]:
        caller = await self.gate.caller(request)
        form = await request.form()
        self.gate.check_change(request, caller, form.get(CSRF_FIELD))
        return caller, form

    def done(self, request: Request, caller: Caller, message: str, back: str, back_label: str) -> Response:
        return self.render(request, "result.html", caller, message=message, back=back, back_label=back_label)

    # -- signing in ---------------------------------------------------------------------------------
    async def signin_form(self, request: Request) -> Response:
        return self.signin_page(request)

    async def signin(self, request: Request) -> Response:
        form = await request.form()
        self.gate.check_signin(request, form.get(CSRF_FIELD))
        base = request.scope.get("root_path", "")
        target = field(form, "next")
        # Only back to a page of the console: never to another site (an open redirect).
        if not target.startswith(base + "/") or target.startswith("//") or "\\" in target or "://" in target:
            target = base + "/"
        response = RedirectResponse(target, 303)
        await self.gate.sign_in(request, response, field(form, "key"))
        return response

    async def signout(self, request: Request) -> Response:
        caller = await self.gate.caller(request)
        form = await request.form()
        self.gate.check_csrf(request, caller, form.get(CSRF_FIELD))  # a read-only key signs out too
        response = self.signin_page(request, "Signed out.")
        self.gate.sign_out(request, response)
        return response

    # -- tenants and models -------------------------------------------------------------------------
    async def overview(self, request: Request) -> Response:
        caller = await self.gate.caller(request)
        p = caller.principal
        names = [t.name for t in await self.core.list_tenants(p)] if p.admin else [p.tenant or ""]
        tenants = []
        for name in names:
            scopes = await self.core.stats(p, name, None, WINDOW_S, 3)
            queries = sum(s.queries for s in scopes)
            answered = queries - sum(s.errors for s in scopes)
            served = sum(s.exact_hits + s.semantic_hits for s in scopes)
            tenants.append({
                "name": name, "models": len(scopes), "entries": sum(s.entries for s in scopes), "queries": queries,
                "exact": sum(s.exact_hits for s in scopes), "semantic": sum(s.semantic_hits for s in scopes),
                "miss": sum(s.misses for s in scopes), "hit_ratio": served / answered if answered else 0.0,
                "p50": max((s.p50_latency_ms for s in scopes), default=0.0),
            })
        return self.render(request, "overview.html", caller, tenants=tenants, window_h=int(WINDOW_S // 3600))

    async def tenant(self, request: Request) -> Response:
        caller = await self.gate.caller(request)
        name = request.path_params["tenant"]
        tenant = await self.core.tenants.for_caller(caller.principal, name)
        scopes = await self.core.stats(caller.principal, name, None, WINDOW_S, 10)
        return self.render(request, "tenant.html", caller, tenant=name, config=tenant.config, scopes=scopes,
                           policies=("LRU", "LFU", "FIFO"), window_h=int(WINDOW_S // 3600),
                           default_threshold=self.core.settings.similarity_threshold)

    async def tenant_settings(self, request: Request) -> Response:
        caller, form = await self.change(request)
        name = request.path_params["tenant"]
        caller.principal.check_admin()
        tenant = await self.core.tenants.for_caller(caller.principal, name)
        await self.core.update_tenant(caller.principal, name, config_from_form(form, tenant.config))
        base = request.scope.get("root_path", "")
        return self.done(request, caller, f"The settings of tenant {name} are saved.", f"{base}/t/{name}",
                         f"Back to tenant {name}")

    async def create_key(self, request: Request) -> Response:
        caller, form = await self.change(request)
        name = request.path_params["tenant"]
        read_only = field(form, "role") == "read-only"
        key_id, key = await self.core.create_api_key(caller.principal, name, read_only)
        return self.render(request, "key.html", caller, tenant=name, key_id=key_id, key=key, read_only=read_only)

    # -- entries ------------------------------------------------------------------------------------
    async def entries(self, request: Request) -> Response:
        caller = await self.gate.caller(request)
        name = request.path_params["tenant"]
        p = caller.principal
        q = request.query_params
        models = await self.core.browse.models(p, name)
        entry_id = (q.get("id") or "").strip().lower()
        if entry_id:
            await self.core.browse.entry(p, name, entry_id)  # NotFound: said on this page's error
            return RedirectResponse(f"{request.scope.get('root_path', '')}/t/{name}/entry/{entry_id}", 303)
        model = (q.get("model") or "").strip() or next(iter(models), "")
        text = q.get("text") or ""
        system = q.get("system") or ""
        search = page = None
        if text.strip():
            if not model:
                raise NotFound(f"tenant {name!r} has no entries to search")
            self.core.refuse_while_loading()  # never a search of a half-read vector copy
            search = await self.core.browse.search(p, Scope(name, model), text, system, 10)
        else:
            page = await self.core.browse.entries(p, name, model, (q.get("after") or "").strip(), 50)
        return self.render(request, "entries.html", caller, tenant=name, models=models, model=model, text=text,
                           system=system, search=search, page=page, page_size=50, max_page=MAX_PAGE)

    async def entry(self, request: Request) -> Response:
        caller = await self.gate.caller(request)
        name, entry_id = request.path_params["tenant"], request.path_params["entry_id"]
        view = await self.core.browse.entry(caller.principal, name, entry_id)
        served = [r for r in await self.core.browse.traffic(caller.principal, name) if r.row.entry_id == entry_id]
        return self.render(request, "entry.html", caller, tenant=name, view=view, row=view.row, served=served[:20],
                           now=self.core.runtime.clock())

    async def remove(self, request: Request) -> Response:
        caller, _ = await self.change(request)
        name, entry_id = request.path_params["tenant"], request.path_params["entry_id"]
        view = await self.core.browse.entry(caller.principal, name, entry_id)
        removed = await self.core.remove(caller.principal, Scope(name, view.row.model), [entry_id])
        base = request.scope.get("root_path", "")
        said = f"Entry {entry_id} is removed." if removed else f"Entry {entry_id} was already gone."
        return self.done(request, caller, said, f"{base}/t/{name}/entries?model={quote(view.row.model)}",
                         "Back to the entries")

    async def replace(self, request: Request) -> Response:
        caller, form = await self.change(request)
        name, entry_id = request.path_params["tenant"], request.path_params["entry_id"]
        answer = form.get("answer")
        view = await self.core.browse.entry(caller.principal, name, entry_id)
        written = await self.core.insert(caller.principal, Scope(name, view.row.model),
                                         [NewEntry(tuple(view.messages), answer if isinstance(answer, str) else "",
                                                   0, view.metadata)])
        base = request.scope.get("root_path", "")
        if not written.ids[0]:
            said = f"Not replaced: the tenant's cacheability policy refuses this question ({written.uncacheable[0]})."
        elif written.ids[0] == entry_id:
            said = f"The answer of entry {entry_id} is replaced (what it had learned is reset)."
        else:
            said = f"The answer is cached as entry {written.ids[0]}."
        return self.done(request, caller, said, f"{base}/t/{name}/entry/{written.ids[0] or entry_id}",
                         "Back to the entry")

    # -- traffic ------------------------------------------------------------------------------------
    async def traffic(self, request: Request) -> Response:
        caller = await self.gate.caller(request)
        name = request.path_params["tenant"]
        q = request.query_params
        model = (q.get("model") or "").strip()
        outcome = (q.get("outcome") or "").strip()
        if outcome and outcome not in (*OUTCOMES, "hit"):
            raise InvalidArgument(f"outcome: one of {', '.join((*OUTCOMES, 'hit'))}")
        low = similarity_range((q.get("min") or "").strip(), "min")
        high = similarity_range((q.get("max") or "").strip(), "max")
        tenant = await self.core.tenants.for_caller(caller.principal, name)
        everything = await self.core.browse.traffic(caller.principal, name)
        recent = [r for r in everything if not model or r.row.model == model]
        queries = [r for r in recent if ":" not in r.row.match_kind]
        threshold = tenant.config.similarity_threshold or self.core.settings.similarity_threshold
        histogram = charts.histogram([r.row.similarity for r in queries if r.row.match_kind == "semantic"], threshold)
        timeline = charts.hit_ratio_over_time(
            [(r.row.ts, r.row.match_kind in ("exact", "semantic")) for r in queries if r.row.match_kind != "error"],
            self.core.runtime.clock())

        def kept(r: Any) -> bool:
            kind = r.row.match_kind
            if outcome == "hit" and kind not in ("exact", "semantic"):
                return False
            if outcome == "feedback" and ":" not in kind:
                return False
            if outcome and outcome not in ("hit", "feedback") and kind != outcome:
                return False
            s = r.row.similarity
            return (low is None or s >= low) and (high is None or s <= high)

        shown = [r for r in recent if kept(r)][:SHOWN_TRAFFIC]
        models = sorted({r.row.model for r in everything})
        return self.render(request, "traffic.html", caller, tenant=name, rows=shown, model=model, models=models,
                           outcome=outcome, outcomes=(*OUTCOMES, "hit"), low=q.get("min") or "",
                           high=q.get("max") or "", histogram=histogram, timeline=timeline, threshold=threshold,
                           kept=len(recent), served=sum(1 for r in queries if r.row.match_kind == "semantic"))

    async def mark_wrong(self, request: Request) -> Response:
        caller, _ = await self.change(request)
        name = request.path_params["tenant"]
        seq = request.path_params["seq"]
        found = next((r for r in await self.core.browse.traffic(caller.principal, name) if r.seq == seq), None)
        if found is None or found.row.match_kind not in ("exact", "semantic") or not found.row.entry_id:
            raise NotFound("no served hit of this tenant by that number among the recent traffic")
        if not found.texts.messages:
            raise InvalidArgument("this chat was too long to keep: send Feedback for it from the product")
        action = await self.core.feedback(caller.principal, Scope(name, found.row.model), found.row.entry_id,
                                          found.texts.messages, "wrong")
        base = request.scope.get("root_path", "")
        return self.done(request, caller, f"Marked WRONG: {action}.", f"{base}/t/{name}/traffic", "Back to the traffic")
