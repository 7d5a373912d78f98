"""The cacheability policy through a real server: gRPC clients, RESP, the ModelCache HTTP endpoint,
the query log and the metrics, over SQLite and MariaDB."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from modelcache_svc import errors
from tests.servers import ThreadServer, free_port

MODEL = "support-bot-v1"
Start = Callable[..., ThreadServer]


def _query_log(server: ThreadServer, tenant: str) -> list[tuple[str, str]]:
    """(match_kind, uncacheable) of the tenant's logged queries, oldest first."""
    server.call(server.core.query_log.flush())
    store = server.core.scalar

    def read(cur: Any) -> list[tuple[str, str]]:
        cur.execute(store._q("SELECT match_kind, uncacheable FROM {query_log} WHERE tenant = ? ORDER BY id"), (tenant,))
        return [(str(k), str(u or "")) for k, u in cur.fetchall()]

    return list(store._read(read))


def test_flagged_question_is_never_stored_nor_served_but_general_ones_are(server: ThreadServer) -> None:
    flagged = [
        ("What's the status of my order 12345?", "user_specific"),
        ("How's the weather today?", "time_sensitive"),
        ("My email is john.smith@example.com, can you send the report there?", "pii"),
        ("我的快递怎么还没到", "user_specific"),
    ]
    general = ["How do I reset my password?", "What is 12345 times 6789?", "Why is my dog eating grass?"]
    with server.client() as c:
        for question, klass in flagged:
            entry_id = c.insert("default", MODEL, question, "some answer")
            assert entry_id == "" and entry_id.uncacheable == klass
            hit = c.query("default", MODEL, question)
            assert (hit.hit, hit.match, hit.uncacheable) == (False, "miss", klass)
        # Nothing of them reached either store.
        assert c.get_tenant("default").entries == 0
        paraphrase = c.query("default", MODEL, "what is the status of my order 12345")
        assert not paraphrase.hit and paraphrase.uncacheable == "user_specific"

        ids = c.insert_many("default", MODEL, [_entry(q, f"answer {i}") for i, q in enumerate(general)])
        assert all(ids) and [i.uncacheable for i in ids] == ["", "", ""]
        for i, question in enumerate(general):
            hit = c.query("default", MODEL, question)
            assert (hit.hit, hit.match, hit.answer, hit.uncacheable) == (True, "exact", f"answer {i}", "")
        semantic = c.query("default", MODEL, "How can I reset my password?")
        assert semantic.hit and semantic.match == "semantic" and semantic.answer == "answer 0"

        # A batch mixing both: the refused entry has id "" and its class, the others are stored.
        mixed = c.insert_many("default", MODEL, [_entry("What is the capital of Peru?", "Lima."),
                                                  _entry("Where is my package?", "On its way."),
                                                  _entry("What is the boiling point of water?", "100 C.")])
        assert [bool(i) for i in mixed] == [True, False, True]
        assert [i.uncacheable for i in mixed] == ["", "user_specific", ""]
        assert c.query("default", MODEL, "What is the capital of Peru?").answer == "Lima."

    log = _query_log(server, "default")
    assert ("miss", "user_specific") in log and ("miss", "pii") in log and ("exact", "") in log
    text = server.core.metrics.render().decode()
    assert 'modelcache_uncacheable_total{action="refuse",call="query",class="pii",tenant="default"} 1.0' in text
    insert_refused = (
        'modelcache_uncacheable_total{action="refuse",call="insert",class="user_specific",tenant="default"}'
    )
    assert f"{insert_refused} 3.0" in text


def _entry(question: str, answer: str) -> Any:
    from modelcache_svc.client import Entry

    return Entry(question, answer)


def test_an_entry_stored_under_allow_is_not_served_once_the_tenant_refuses(server: ThreadServer) -> None:
    with server.client() as c:
        c.create_tenant("shop", cacheability={"user_specific": "allow"})
        assert c.get_tenant("shop").cacheability["user_specific"] == "allow"
        entry_id = c.insert("shop", MODEL, "Where is my package?", "In Lyon.")
        assert entry_id and entry_id.uncacheable == ""
        hit = c.query("shop", MODEL, "Where is my package?")
        assert hit.hit and hit.answer == "In Lyon." and hit.uncacheable == ""

        c.update_tenant("shop", cacheability={"user_specific": "refuse"})
        hit = c.query("shop", MODEL, "Where is my package?")
        assert not hit.hit and hit.uncacheable == "user_specific"


def test_short_ttl_stores_with_the_short_lifetime(server: ThreadServer) -> None:
    with server.client() as c:
        c.create_tenant("news", ttl_seconds=86400, cacheability={"time_sensitive": "short_ttl", "short_ttl_seconds": 2})
        entry_id = c.insert("news", MODEL, "What's the gold price today?", "2,400 USD.")
        assert entry_id and entry_id.uncacheable == ""
        general_id = c.insert("news", MODEL, "What is the chemical symbol of gold?", "Au.")
        rows = server.core.scalar.get_entries([entry_id, general_id], 0.0)  # the stores take any thread
        short, normal = rows[entry_id], rows[general_id]
        assert short.expires_at is not None and short.expires_at - short.created_at == pytest.approx(2, abs=0.01)
        assert normal.expires_at is not None and normal.expires_at - normal.created_at == pytest.approx(86400, abs=1)
        hit = c.query("news", MODEL, "What's the gold price today?")
        assert hit.hit and hit.answer == "2,400 USD." and hit.uncacheable == ""
        # Not served once those 2 s have passed: tests/unit/test_core_logic.py, on a clock that moves.


def test_tenant_rules_by_regex_and_keywords(server: ThreadServer) -> None:
    policy = {"rules": [
        {"name": "project-x", "keywords": ["Project X", "机密"]},
        {"name": "ticket", "pattern": r"\bTCK-\d{4,}\b"},
        {"name": "promo", "keywords": ["coupon"], "action": "allow"},
    ]}
    with server.client() as c:
        c.create_tenant("acme", cacheability=policy)
        for question, klass in [("When does project x ship?", "rule:project-x"),
                                ("这个文件是机密吗", "rule:project-x"),
                                ("Summarise tck-20931 for me", "rule:ticket")]:
            entry_id = c.insert("acme", MODEL, question, "an answer")
            assert entry_id == "" and entry_id.uncacheable == klass
            assert c.query("acme", MODEL, question).uncacheable == klass
        assert c.insert("acme", MODEL, "Is there a coupon for new users?", "Yes: WELCOME10.")
        assert c.query("acme", MODEL, "Is there a coupon for new users?").hit
        # Other tenants never see acme's rules.
        assert c.insert("default", MODEL, "When does project x ship?", "In May.")


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"name": "bad", "pattern": "(unclosed"}, "not a valid regular expression"),
        ({"name": "slow", "pattern": "(a+)+$"}, "exponential"),
        ({"name": "alt", "pattern": "(a|aa)*b"}, "exponential"),
        ({"name": "all", "pattern": ".*"}, "empty text"),
        ({"name": "long", "pattern": "a" * 300}, "longer than"),
        ({"name": "Bad Name", "pattern": "x"}, "name"),
        ({"name": "none"}, "pattern or keywords"),
        ({"name": "ref", "pattern": r"(a)\1"}, "back-references"),
    ],
)
def test_bad_rules_are_refused_and_the_server_keeps_serving(module_server: ThreadServer, rule: dict[str, Any],
                                                             words: str) -> None:
    # One server for every rule: each run is refused alike and writes the same entry.
    with module_server.client() as c:
        with pytest.raises(errors.InvalidArgument) as info:
            c.create_tenant("rules", cacheability={"rules": [rule]})
        assert words in info.value.message
        with pytest.raises(errors.InvalidArgument):
            c.update_tenant("default", cacheability={"rules": [rule]})
        too_many = {"rules": [{"name": f"r{i}", "keywords": [f"w{i}"]} for i in range(33)]}
        with pytest.raises(errors.InvalidArgument, match="more than 32 rules"):
            c.create_tenant("rules", cacheability=too_many)
        assert c.insert("default", MODEL, "What is the capital of Chile?", "Santiago.")


@pytest.mark.parametrize("scalar_store_uri", ["sqlite"], indirect=True)
def test_cli_shapes_the_policy(server: ThreadServer, capsys: pytest.CaptureFixture[str]) -> None:
    from modelcache_svc import cli

    def run(*args: str) -> Any:
        capsys.readouterr()
        assert cli.main([*args, "--target", server.target, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    created = run("tenant", "create", "clinic", "--short-ttl", "time_sensitive", "--short-ttl-seconds", "60",
                  "--rule", r"patient=\bMRN-?\d{6}\b")
    policy = created["cacheability"]
    assert (policy["time_sensitive"], policy["short_ttl_seconds"], policy["user_specific"]) == ("short_ttl", 60, "refuse")
    assert policy["rules"] == [{"name": "patient", "pattern": r"\bMRN-?\d{6}\b", "keywords": [], "action": "refuse"}]
    # update changes the current policy: the rule and the short TTL stay.
    updated = run("tenant", "update", "clinic", "--allow", "pii", "--rule-keywords", "staff=rota,排班",
                  "--rule-action", "staff=allow")["cacheability"]
    assert updated["pii"] == "allow" and updated["time_sensitive"] == "short_ttl"
    assert [r["name"] for r in updated["rules"]] == ["patient", "staff"] and updated["rules"][1]["action"] == "allow"
    dropped = run("tenant", "update", "clinic", "--drop-rule", "patient")["cacheability"]
    assert [r["name"] for r in dropped["rules"]] == ["staff"]
    assert run("insert", "--tenant", "clinic", "--model", MODEL, "Where is my package?", "Lyon") == {
        "id": "", "uncacheable": "user_specific"}
    capsys.readouterr()
    assert cli.main(["tenant", "update", "clinic", "--rule", "bad=(a+)+", "--target", server.target]) == cli.EXIT_USAGE
    assert "exponential" in capsys.readouterr().err
    assert cli.main(["tenant", "update", "clinic", "--allow", "weather", "--target", server.target]) == cli.EXIT_USAGE


@pytest.mark.parametrize("scalar_store_uri", ["sqlite"], indirect=True)
def test_resp_and_modelcache_http_expose_the_class(make_server: Start) -> None:
    server = make_server(resp_port=free_port(), http_port=free_port())
    r = redis.Redis(port=server.service.resp_port, decode_responses=True, protocol=3, socket_timeout=30)
    chat = json.dumps([{"role": "user", "content": "What's my account balance?"}])
    assert r.execute_command("MC.INSERT", "default", MODEL, chat, "100 EUR") is None
    reply = r.execute_command("MC.QUERY", "default", MODEL, chat)
    assert reply["hit"] is False and reply["uncacheable"] == "user_specific"
    assert r.execute_command("MC.SET", "default", MODEL, "Is it going to rain this afternoon?", "No.") is None
    assert r.execute_command("MC.GET", "default", MODEL, "Is it going to rain this afternoon?") is None
    assert r.execute_command("MC.SET", "default", MODEL, "What is the capital of Japan?", "Tokyo.") == "OK"
    general = r.execute_command("MC.QUERY", "default", MODEL, json.dumps([{"role": "user", "content":
                                "What is the capital of Japan?"}]))
    assert general["hit"] is True and "uncacheable" not in general
    r.close()

    def post(body: dict[str, Any]) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", server.service.http_port, timeout=30)
        conn.request("POST", "/modelcache", json.dumps(body), {"Content-Type": "application/json"})
        result = json.loads(conn.getresponse().read())
        conn.close()
        return dict(result)

    written = post({"type": "insert", "scope": {"model": MODEL}, "chat_info": [
        {"query": [{"role": "user", "content": "Call me at (415) 555-0132 tomorrow"}], "answer": "Sure."},
        {"query": [{"role": "user", "content": "What is the capital of Kenya?"}], "answer": "Nairobi."},
    ]})
    assert written["errorCode"] == 0 and written["ids"][0] == "" and written["ids"][1]
    assert written["uncacheable"] == ["pii", ""]
    miss = post({"type": "query", "scope": {"model": MODEL},
                 "query": [{"role": "user", "content": "Call me at (415) 555-0132 tomorrow"}]})
    assert miss["cacheHit"] is False and miss["uncacheable"] == "pii"
    hit = post({"type": "query", "scope": {"model": MODEL},
                "query": [{"role": "user", "content": "What is the capital of Kenya?"}]})
    assert hit["cacheHit"] is True and "uncacheable" not in hit
