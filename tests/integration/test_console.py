"""The console's routes over plain HTTP (httpx) against a real server: access by key and by session, the
CSRF token on every change, read-only keys, escaping, the security headers, and where the console is served.
The browser's view of the same pages: tests/e2e/test_console_browser.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelcache_svc import errors
from modelcache_svc.cache.querylog import MAX_KEPT_CHAT_CHARS, Texts, kept_texts
from modelcache_svc.cache.service import query_texts
from modelcache_svc.cache.tenants import ADMIN as ADMIN_PRINCIPAL
from modelcache_svc.config import Settings
from modelcache_svc.console import charts
from modelcache_svc.embedding import Embedder
from modelcache_svc.records import MatchKind, Message, QueryResult
from tests.servers import ThreadServer, free_port

ADMIN = "console-admin-key"
MODEL = "chat-1"
Q = "How do I reverse a list in Python?"
PARAPHRASE = "How can I reverse a Python list?"
SCRIPT = "Use reversed(xs). <script>alert('owned')</script>"
OTHER_Q = "What is the capital of France?"
# Every form's hidden field, and the page's meta tag (what a script with a Bearer key reads).
CSRF = re.compile(r'name="csrf(?:" value|-token" content)="([^"]+)"')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[ThreadServer]:
    data = tmp_path_factory.mktemp("console")
    # The vectors in this process's memory (memory://, a store of the product's own): the routes are the point
    # here; the browser tests run on the embedded default.
    settings = Settings(data_dir=data, grpc_port=0, http_port=free_port(), resp_port=0, admin_key=ADMIN,
                        scalar_uri=f"sqlite:///{data}/s.db", vector_uri="memory://", verifier="off",
                        embedding_model_cjk="off", embedding_model_multilingual="off")
    running = ThreadServer(settings, embedder)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def world(server: ThreadServer) -> dict[str, str]:
    """Two tenants, their keys (acme: read-write and read-only), an entry each."""
    with server.client(ADMIN) as admin:
        admin.create_tenant("acme")
        admin.create_tenant("globex")
        _, acme = admin.create_api_key("acme")
        _, globex = admin.create_api_key("globex")
        acme_id = admin.insert("acme", MODEL, Q, SCRIPT)
        globex_id = admin.insert("globex", MODEL, OTHER_Q, "Paris, the globex answer.")
    # Read-only keys are made by the console's key form (or the core): the gRPC call has no field for it yet.
    _, read_only = server.call(server.core.create_api_key(ADMIN_PRINCIPAL, "acme", True))
    return {"acme": acme, "globex": globex, "read_only": read_only, "acme_id": acme_id, "globex_id": globex_id}


@pytest.fixture
def web(server: ThreadServer) -> Iterator[Callable[..., httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = httpx.Client(base_url=f"http://127.0.0.1:{server.service.http_port}", headers=headers, timeout=30,
                              **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, page[:500]
    return found.group(1)


def sign_in(client: httpx.Client, key: str) -> httpx.Response:
    form = client.get("/console/signin")
    return client.post("/console/signin", data={"csrf": csrf_of(form.text), "key": key, "next": "/console/"})


def test_nothing_without_a_key(web: Callable[..., httpx.Client], world: dict[str, str]) -> None:
    anonymous = web()
    for path in ("/console/", "/console/t/acme", "/console/t/acme/entries?text=reverse", "/console/t/acme/traffic",
                 f"/console/t/acme/entry/{world['acme_id']}"):
        page = anonymous.get(path)
        assert page.status_code == 401, path
        assert "Sign in" in page.text and "reversed(xs)" not in page.text and Q not in page.text
        assert page.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in page.headers
    refused = anonymous.post(f"/console/t/acme/entry/{world['acme_id']}/remove", data={"csrf": "x"})
    assert refused.status_code == 401
    forged = web("mck_forged").get("/console/")
    assert forged.status_code == 401 and "invalid or revoked API key" in forged.text


def test_security_headers(web: Callable[..., httpx.Client], world: dict[str, str]) -> None:
    page = web(ADMIN).get("/console/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert "script-src" not in csp  # no script at all: default-src 'none' covers it
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["cache-control"] == "no-store"
    css = web().get("/console/static/console.css")  # the stylesheet needs no key, holds nothing of the cache
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in page.text  # the console sends no script


def test_admin_sees_every_tenant_and_cached_text_is_escaped(web: Callable[..., httpx.Client],
                                                            world: dict[str, str]) -> None:
    admin = web(ADMIN)
    overview = admin.get("/console/")
    assert "/console/t/acme" in overview.text and "/console/t/globex" in overview.text
    found = admin.get("/console/t/acme/entries", params={"model": MODEL, "text": PARAPHRASE})
    assert found.status_code == 200 and world["acme_id"] in found.text
    assert "<script>alert" not in found.text and "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in found.text
    similarity = re.search(r'<td class="n">(0\.\d{4})</td>', found.text)
    assert similarity and float(similarity.group(1)) > 0.8
    entry = admin.get(f"/console/t/acme/entry/{world['acme_id']}")
    assert entry.status_code == 200 and "&lt;script&gt;" in entry.text and "<script>" not in entry.text
    by_id = admin.get("/console/t/acme/entries", params={"id": world["acme_id"]})
    assert by_id.status_code == 303 and by_id.headers["location"].endswith(f"/t/acme/entry/{world['acme_id']}")


def test_a_tenant_key_reaches_its_own_tenant_only(web: Callable[..., httpx.Client], world: dict[str, str]) -> None:
    acme = web(world["acme"])
    overview = acme.get("/console/")
    assert "/console/t/acme" in overview.text and "globex" not in overview.text
    for path in ("/console/t/globex", "/console/t/globex/entries", f"/console/t/globex/entries?text={OTHER_Q}",
                 "/console/t/globex/traffic", f"/console/t/globex/entry/{world['globex_id']}"):
        page = acme.get(path)
        assert page.status_code == 403, path
        assert "Paris" not in page.text and "another tenant" in page.text
    # Its own tenant's URL with the other tenant's entry id: not there.
    page = acme.get(f"/console/t/acme/entry/{world['globex_id']}")
    assert page.status_code == 404 and "Paris" not in page.text
    found = acme.get("/console/t/acme/entries", params={"model": MODEL, "text": OTHER_Q})
    assert world["globex_id"] not in found.text and "Paris" not in found.text
    csrf = csrf_of(acme.get(f"/console/t/acme/entry/{world['acme_id']}").text)
    refused = acme.post(f"/console/t/globex/entry/{world['globex_id']}/remove", data={"csrf": csrf})
    assert refused.status_code == 403


def test_sign_in_sets_a_strict_cookie_and_every_change_needs_the_csrf_token(
        server: ThreadServer, web: Callable[..., httpx.Client], world: dict[str, str]) -> None:
    with server.client(ADMIN) as admin:
        doomed = admin.insert("acme", MODEL, "How do I sort a dict by value?", "sorted(d.items(), key=...)")
    browser = web()
    form = browser.get("/console/signin")
    assert browser.post("/console/signin", data={"csrf": "wrong", "key": world["acme"]}).status_code == 403
    bad = browser.post("/console/signin", data={"csrf": csrf_of(form.text), "key": "mck_not-a-key"})
    assert bad.status_code == 401 and "invalid or revoked" in bad.text and "mc_console=" not in bad.headers.get(
        "set-cookie", "")
    signed = browser.post("/console/signin", data={"csrf": csrf_of(browser.get("/console/signin").text),
                                                   "key": world["acme"], "next": "https://elsewhere.example/"})
    assert signed.status_code == 303 and signed.headers["location"] == "/console/"  # never off the console
    cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("mc_console="))
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/console"} <= attributes
    assert "secure" not in attributes  # plain loopback HTTP: a Secure cookie would never come back
    page = browser.get(f"/console/t/acme/entry/{doomed}")
    assert page.status_code == 200 and "sorted(d.items()" in page.text
    token = csrf_of(page.text)
    remove = f"/console/t/acme/entry/{doomed}/remove"
    for data in ({}, {"csrf": ""}, {"csrf": token[:-2] + "xx"}):
        refused = browser.post(remove, data=data)
        assert refused.status_code == 403 and "CSRF" in refused.text
    other_site = browser.post(remove, data={"csrf": token}, headers={"Origin": "http://evil.example"})
    assert other_site.status_code == 403
    assert browser.get(f"/console/t/acme/entry/{doomed}").status_code == 200  # still there
    done = browser.post(remove, data={"csrf": token})
    assert done.status_code == 200 and "is removed" in done.text
    with server.client(world["acme"]) as acme:
        assert not acme.query("acme", MODEL, "How do I sort a dict by value?").hit
    out = browser.post("/console/signout", data={"csrf": token})
    assert out.status_code == 200 and "Signed out" in out.text
    assert browser.get("/console/").status_code == 401


def test_bearer_changes_need_the_token_too(server: ThreadServer, web: Callable[..., httpx.Client],
                                           world: dict[str, str]) -> None:
    with server.client(ADMIN) as admin:
        doomed = admin.insert("acme", MODEL, "How do I merge two dicts?", "{**a, **b}")
    acme = web(world["acme"])
    assert acme.post(f"/console/t/acme/entry/{doomed}/remove", data={}).status_code == 403
    token = csrf_of(acme.get(f"/console/t/acme/entry/{doomed}").text)
    assert acme.post(f"/console/t/acme/entry/{doomed}/remove", data={"csrf": token}).status_code == 200


def test_a_read_only_key_changes_nothing(server: ThreadServer, web: Callable[..., httpx.Client],
                                         world: dict[str, str]) -> None:
    assert world["read_only"].startswith("mcr_")
    viewer = web(world["read_only"])
    page = viewer.get(f"/console/t/acme/entry/{world['acme_id']}")
    assert page.status_code == 200 and "read-only" in page.text and 'id="remove"' not in page.text
    token = csrf_of(page.text)
    for path, data in ((f"/console/t/acme/entry/{world['acme_id']}/remove", {}),
                       (f"/console/t/acme/entry/{world['acme_id']}/answer", {"answer": "changed"})):
        refused = viewer.post(path, data={"csrf": token, **data})
        assert refused.status_code == 403 and "read-only" in refused.text
    with server.client(world["read_only"]) as client:
        assert client.query("acme", MODEL, Q).answer == SCRIPT  # reading works everywhere ...
        with pytest.raises(errors.PermissionDenied, match="read-only"):  # ... changing nowhere
            client.insert("acme", MODEL, "Another question?", "another answer")


def test_the_admin_edits_settings_and_makes_keys(server: ThreadServer, web: Callable[..., httpx.Client],
                                                 world: dict[str, str]) -> None:
    admin = web(ADMIN)
    page = admin.get("/console/t/globex")
    assert 'id="settings"' in page.text and "<form" in page.text
    token = csrf_of(page.text)
    saved = admin.post("/console/t/globex/settings", data={
        "csrf": token, "similarity_threshold": "0.91", "ttl_seconds": "3600", "max_entries": "0",
        "eviction_policy": "LFU", "max_error_rate": "", "verify_rate": "0", "verifier": "off", "verifier_cutoff": ""})
    assert saved.status_code == 200, saved.text
    with server.client(ADMIN) as client:
        info = client.get_tenant("globex")
    assert (info.similarity_threshold, info.ttl_seconds, info.eviction_policy) == (pytest.approx(0.91), 3600, "lfu")
    wrong = admin.post("/console/t/globex/settings", data={"csrf": token, "similarity_threshold": "2"})
    assert wrong.status_code == 400 and "similarity_threshold" in wrong.text
    tenant_page = web(world["globex"]).get("/console/t/globex")
    assert 'action="/console/t/globex/settings"' not in tenant_page.text  # shown, not editable
    refused = web(world["globex"]).post("/console/t/globex/settings",
                                        data={"csrf": csrf_of(tenant_page.text), "similarity_threshold": "0.5"})
    assert refused.status_code == 403
    made = admin.post("/console/t/globex/keys", data={"csrf": token, "role": "read-only"})
    key = re.search(r'<pre class="key" id="key">(mcr_[^<]+)</pre>', made.text)
    assert made.status_code == 200 and key
    principal = server.call(server.core.tenants.authenticate(key.group(1)))
    assert (principal.tenant, principal.read_only) == ("globex", True)


def test_replace_an_answer(server: ThreadServer, web: Callable[..., httpx.Client], world: dict[str, str]) -> None:
    with server.client(ADMIN) as admin:
        entry = admin.insert("acme", MODEL, "How do I read a file in Python?", "open(path).read()")
    acme = web(world["acme"])
    token = csrf_of(acme.get(f"/console/t/acme/entry/{entry}").text)
    done = acme.post(f"/console/t/acme/entry/{entry}/answer", data={"csrf": token, "answer": "Path(p).read_text()"})
    assert done.status_code == 200 and f"entry {entry} is replaced" in done.text
    with server.client(world["acme"]) as client:
        hit = client.query("acme", MODEL, "How do I read a file in Python?")
    assert (hit.id, hit.answer) == (entry, "Path(p).read_text()")


def test_traffic_filters_and_pictures(server: ThreadServer, web: Callable[..., httpx.Client],
                                      world: dict[str, str]) -> None:
    with server.client(world["acme"]) as client:
        assert client.query("acme", MODEL, PARAPHRASE).hit
        assert not client.query("acme", MODEL, "Which river runs through Vienna?").hit
    acme = web(world["acme"])
    page = acme.get("/console/t/acme/traffic")
    assert page.status_code == 200
    assert '<svg id="similarity-histogram"' in page.text and '<svg id="hit-ratio"' in page.text
    assert '<rect class="bar"' in page.text and "<polyline" in page.text
    assert PARAPHRASE in page.text and "Which river runs through Vienna?" in page.text
    assert "&lt;script&gt;" not in page.text or "<script>" not in page.text
    misses = acme.get("/console/t/acme/traffic", params={"outcome": "miss"}).text
    assert "Which river runs through Vienna?" in misses and PARAPHRASE not in misses
    high = acme.get("/console/t/acme/traffic", params={"outcome": "semantic", "min": "0.5", "max": "1"}).text
    assert PARAPHRASE in high and "Vienna" not in high
    assert PARAPHRASE not in acme.get("/console/t/acme/traffic", params={"min": "0.999", "max": "1"}).text
    assert acme.get("/console/t/acme/traffic", params={"outcome": "maybe"}).status_code == 400
    assert acme.get("/console/t/acme/traffic", params={"min": "2"}).status_code == 400
    # The other tenant's traffic is not in this tenant's page, nor its questions.
    with server.client(world["globex"]) as client:
        client.query("globex", MODEL, "Is the globex question private?")
    assert "globex question" not in acme.get("/console/t/acme/traffic").text


@pytest.mark.parametrize("overrides, on_http, on_console", [
    ({"admin_key": ""}, 404, None),
    ({"console": False}, 404, None),
    ({"console_port": -1}, 404, 200),  # -1: a free port, chosen below
])
def test_where_the_console_is_served(tmp_path: Path, embedder: Embedder, overrides: dict[str, Any], on_http: int,
                                     on_console: int | None) -> None:
    values: dict[str, Any] = dict(data_dir=tmp_path, grpc_port=0, http_port=free_port(), resp_port=0,
                                  admin_key=ADMIN, vector_uri="memory://", scalar_uri="memory://", verifier="off",
                                  embedding_model_cjk="off", embedding_model_multilingual="off")
    values.update(overrides)
    if values.get("console_port") == -1:
        values["console_port"] = free_port()
    server = ThreadServer(Settings(**values), embedder)
    try:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        http = httpx.get(f"http://127.0.0.1:{server.service.http_port}/console/", headers=headers, timeout=30)
        assert http.status_code == on_http
        assert httpx.get(f"http://127.0.0.1:{server.service.http_port}/healthz", timeout=30).status_code == 200
        if on_http == 404:
            assert "Sign in" not in http.text
        if on_console is not None:
            port = server.service.console_port
            assert port and port != server.service.http_port
            own = httpx.get(f"http://127.0.0.1:{port}/console/", headers=headers, timeout=30)
            assert own.status_code == on_console and "default" in own.text
            assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).status_code == 404
    finally:
        server.stop()


def test_what_the_traffic_keeps_of_a_query() -> None:
    chat = (Message("system", "Be brief."), Message("user", "How do I reverse a list?"))
    served = QueryResult(True, MatchKind.SEMANTIC, "xs[::-1]", "a" * 32, 0.84, "How to reverse a list?")
    assert query_texts(chat, served, [("How to reverse a list?", 0.93), ("other", 0.2)]) == Texts(
        "How do I reverse a list?", "How to reverse a list?", "accepted p=0.93", chat)
    assert query_texts(chat, served, [("other", 0.2)]).verifier == ""  # served above the band: not read
    assert query_texts(chat, QueryResult.miss(), [("a", 0.1), ("b", 0.3)]).verifier == "refused p=0.30"
    assert query_texts(chat, QueryResult.miss(), []).verifier == ""
    long_chat = (Message("user", "x" * (MAX_KEPT_CHAT_CHARS + 1)),)
    kept = kept_texts(Texts("x" * 5000, "", "", long_chat))
    assert kept.messages == () and len(kept.question) == 2000


def test_the_pictures_geometry() -> None:
    h = charts.histogram([0.81, 0.82, 0.95, 0.99, 1.0], 0.8)
    assert sum(int(b.title.rsplit(": ", 1)[1]) for b in h.bars) == 5 and not h.empty
    assert all(0 <= b.y <= h.bottom and b.h >= 0 for b in h.bars)
    assert h.marker_x is not None and h.left < h.marker_x < h.width
    assert charts.histogram([], 0.8).empty
    t = charts.hit_ratio_over_time([(1000.0, True), (1010.0, False), (1500.0, True)], now=1600.0)
    assert t.line and len(t.bars) >= 2 and sum(int(b.title.split()[0]) for b in t.bars) == 3
    assert charts.hit_ratio_over_time([], now=0.0).empty


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_over_tls_the_session_cookie_is_secure(tmp_path: Path, embedder: Embedder) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    settings = Settings(data_dir=tmp_path, grpc_port=0, http_port=free_port(), resp_port=0, admin_key=ADMIN,
                        vector_uri="memory://", scalar_uri="memory://", verifier="off", embedding_model_cjk="off",
                        embedding_model_multilingual="off", http_tls_cert=str(cert), http_tls_key=str(key))
    server = ThreadServer(settings, embedder)
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{server.service.http_port}", verify=str(cert),
                          timeout=30) as browser:
            signed = sign_in(browser, ADMIN)
            cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("mc_console="))
            assert "secure" in {a.strip().lower() for a in cookie.split(";")[1:]}
            assert browser.get("/console/").status_code == 200  # and it comes back over HTTPS
    finally:
        server.stop()
