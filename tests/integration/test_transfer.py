"""modelcache-svc export / import through running servers (cache/transfer.py, tools/transfer_cli.py).

The move DESIGN §13 and docs/operations.md describe: a cache filled on the embedded default (SQLite +
Milvus Lite) is exported and imported into a server on MariaDB and a Milvus server (the PyPI `milvus`
package's standalone, started as test_replicas.py starts it), both running; afterwards every entry
answers the same query with the same answer and id, and a second import changes nothing. Also: a bad
line is reported by number with the rest imported, vectors of another model are re-embedded, an
interrupted export resumes, a backup restores on the embedded default, and a plain (question, answer)
file warms a cache through the cacheability policy.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelcache_svc import errors
from modelcache_svc.cli import main
from modelcache_svc.config import Settings
from modelcache_svc.embedding import Embedder
from tests.integration.test_replicas import milvus_standalone
from tests.servers import ThreadServer

TENANT = "shop"
MODELS = ("gpt-4o", "claude-3")
TASKS = ("reverse a list", "read a file", "sort a dictionary", "parse JSON", "open a socket",
         "format a date", "split a string", "start a thread", "catch an exception", "write a unit test")
LANGS = ("Python", "Go", "Rust", "Java", "Ruby")
SYSTEM = {"role": "system", "content": "You are a terse programming assistant."}
SEMANTIC = ("How do I reverse a list in Python?", "How can I reverse a Python list?")
WRONG = ("What is the capital of France?", "Which city is the capital of France?")
CHINESE = "怎么把列表倒过来排序"
ADMIN_KEY = "adm_" + uuid.uuid4().hex
VECTOR_VISIBLE_S = 6.0  # Bounded consistency on the Milvus server (test_replicas.py)


def _chat(i: int) -> list[dict[str, str]]:
    question = f"How do I {TASKS[i % 10]} in {LANGS[i // 10]}?"
    chat = [{"role": "user", "content": question}]
    if i % 7 == 0:
        chat.insert(0, SYSTEM)
    if i % 11 == 0:
        chat[-1:-1] = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"}]
    return chat


def _entries() -> list[tuple[str, list[dict[str, str]], str, int, dict[str, str]]]:
    """(model, chat, answer, ttl_seconds, metadata) of the source's 53 entries."""
    out = [(MODELS[i % 5 == 0], _chat(i), f"answer {i}", 3600 if i % 3 == 0 else 0, {"n": str(i)}) for i in range(50)]
    out.append((MODELS[0], [{"role": "user", "content": SEMANTIC[0]}], "Use reversed() or [::-1].", 0, {}))
    out.append((MODELS[0], [{"role": "user", "content": WRONG[0]}], "Paris.", 0, {}))
    out.append((MODELS[0], [{"role": "user", "content": CHINESE}], "用 reverse()。", 0, {}))
    return out


def _settings(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": root, "grpc_port": 0, "http_port": 0, "resp_port": 0, "verifier": "off",
                              "verifier_cjk": "off", "repair_on_start": False}
    values.update(overrides)
    return Settings(**values)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1]) if out else {}


def _lines(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The header and the entries by id of an export file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = [json.loads(t) for t in f.read().splitlines()]
    return lines[0], {e["id"]: e for e in lines[1:]}


def _same_entries(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> None:
    """Field for field; vectors to float32 rounding (a store that normalises a unit vector again may move
    its last bit)."""
    assert sorted(a) == sorted(b)
    for entry_id, entry in a.items():
        other = b[entry_id]
        assert {k: v for k, v in entry.items() if k != "vector"} == {k: v for k, v in other.items() if k != "vector"}
        va, vb = (np.frombuffer(base64.b64decode(e["vector"]), dtype="<f4") for e in (entry, other))
        assert va.shape == vb.shape and np.allclose(va, vb, atol=1e-6)


def _semantic(client: Any, tenant: str, question: str) -> Any:
    """The query's answer once it is a semantic hit (a new vector on the Milvus server: Bounded consistency)."""
    deadline = time.monotonic() + VECTOR_VISIBLE_S
    while (hit := client.query(tenant, MODELS[0], question)).match != "semantic" and time.monotonic() < deadline:
        time.sleep(0.1)
    return hit


class Source:
    def __init__(
        self, server: ThreadServer, ids: list[str], chats: list[tuple[str, list[dict[str, str]], str]]
    ) -> None:
        self.server, self.ids, self.chats = server, ids, chats


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Source]:
    """The embedded default filled as a product fills it: two models, context, TTLs, hits and a verdict."""
    root = tmp_path_factory.mktemp("embedded")
    server = ThreadServer(_settings(root), embedder)
    entries = _entries()
    with server.client() as c:
        c.create_tenant(TENANT, similarity_threshold=0.82, eviction_policy="lfu", max_entries=10_000,
                        cacheability={"pii": "allow"})
        ids = [str(c.insert(TENANT, m, chat, a, ttl_seconds=t, metadata=md)) for m, chat, a, t, md in entries]
        assert all(ids)
        for i in range(0, 50, 4):  # hit counts and last-hit stamps worth carrying
            assert c.query(TENANT, entries[i][0], entries[i][1]).id == ids[i]
        assert c.query(TENANT, MODELS[0], SEMANTIC[1]).id == ids[50]
        c.feedback(TENANT, MODELS[0], ids[51], WRONG[1], "wrong")
    yield Source(server, ids, [(m, chat, a) for m, chat, a, _, _ in entries])
    server.stop()


@pytest.fixture(scope="module")
def exported(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "shop.jsonl"
    assert main(["export", "--target", source.server.target, "--tenant", TENANT, "--out", str(path), "--json"]) == 0
    return path


@pytest.fixture(scope="module")
def target(mysql_uri: str, tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[ThreadServer]:
    """The production layout: MariaDB and a Milvus server, auth on."""
    root = tmp_path_factory.mktemp("milvus-server")
    with milvus_standalone(root / "milvus") as uri:
        server = ThreadServer(_settings(root / "svc", scalar_uri=mysql_uri, vector_uri=uri, admin_key=ADMIN_KEY,
                                        namespace="x" + uuid.uuid4().hex[:8]), embedder)
        yield server
        server.stop()


def test_the_export_file_carries_settings_entries_and_their_state(source: Source, exported: Path) -> None:
    header, entries = _lines(exported)
    assert (header["format"], header["version"], header["tenant"], header["model"]) == ("modelcache-svc-export", 1,
                                                                                        TENANT, None)
    settings = header["settings"]
    assert (settings["similarity_threshold"], settings["eviction_policy"]) == (pytest.approx(0.82), "lfu")
    assert settings["max_entries"] == 10_000 and settings["cacheability"]["pii"] == "allow"
    assert sorted(entries) == sorted(source.ids)
    first = entries[source.ids[0]]
    assert first["messages"] == [SYSTEM, {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"},
                                 {"role": "user", "content": "How do I reverse a list in Python?"}]
    assert first["hit_count"] == 1 and first["last_hit_at"] > first["created_at"]
    assert first["expires_at"] == pytest.approx(first["created_at"] + 3600, abs=1)
    assert entries[source.ids[1]]["expires_at"] is None and entries[source.ids[1]]["metadata"] == {"n": "1"}
    assert len(first["vector"]) == 4 * 384 * 4 // 3  # base64 of 384 float32
    wrong = entries[source.ids[51]]["feedback"]
    assert wrong["floor"] > 0.8 and wrong["observations"][0][1] is True
    assert entries[source.ids[52]]["embed_model"] != first["embed_model"]  # the CJK model's vector


def test_the_move_to_mariadb_and_a_milvus_server_answers_every_query_the_same(
    source: Source, exported: Path, target: ThreadServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, report = _cli(capsys, "import", "--target", target.target, "--key", ADMIN_KEY, str(exported))
    assert code == 0, report
    assert (report["tenant_created"], report["created"], report["embedded"], report["rejected"]) == (True, 53, 0, [])
    # Everything carried, field for field: the target's own export is the source's.
    again = tmp_path / "again.jsonl"
    assert main(["export", "--target", target.target, "--key", ADMIN_KEY, "--tenant", TENANT, "--out", str(again),
                 "--json"]) == 0
    (h1, e1), (h2, e2) = _lines(exported), _lines(again)
    assert h1["settings"] == h2["settings"]
    _same_entries(e1, e2)
    with source.server.client() as src, target.client(api_key=ADMIN_KEY) as dst:
        for (model, chat, answer), entry_id in zip(source.chats, source.ids, strict=True):
            before, after = src.query(TENANT, model, chat), dst.query(TENANT, model, chat)
            assert (after.match, after.answer, after.id) == (before.match, before.answer, before.id) == (
                "exact", answer, entry_id)
        for question, entry_id in ((SEMANTIC[1], source.ids[50]), ("列表怎么倒过来排序", source.ids[52])):
            expected = src.query(TENANT, MODELS[0], question)
            assert expected.match == "semantic" and expected.id == entry_id
            hit = _semantic(dst, TENANT, question)
            assert (hit.match, hit.id, hit.answer) == ("semantic", entry_id, expected.answer)
        # The verdict came along: the paraphrase marked wrong is a miss on both.
        assert not src.query(TENANT, MODELS[0], WRONG[1]).hit and not dst.query(TENANT, MODELS[0], WRONG[1]).hit


def test_a_second_import_changes_nothing(
    exported: Path, target: ThreadServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    before, after = tmp_path / "before.jsonl", tmp_path / "after.jsonl"
    export = ["export", "--target", target.target, "--key", ADMIN_KEY, "--tenant", TENANT, "--json", "--out"]
    assert main([*export, str(before)]) == 0
    code, report = _cli(capsys, "import", "--target", target.target, "--key", ADMIN_KEY, str(exported))
    assert code == 0
    assert (report["tenant_created"], report["created"], report["present"], report["updated"], report["merged"]) == (
        False, 0, 53, 0, 0)
    assert main([*export, str(after)]) == 0
    _same_entries(_lines(before)[1], _lines(after)[1])


def test_importing_a_newer_export_catches_up(
    source: Source, target: ThreadServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Entries written or answered anew on the old server after the first move arrive with the next one."""
    newer = tmp_path / "newer.jsonl"
    model, chat, answer = source.chats[1]
    with source.server.client() as src:
        assert src.insert(TENANT, model, chat, "a revised answer") == source.ids[1]
        added = src.insert(TENANT, MODELS[1], "How do I read a file in Kotlin?", "File(path).readText()")
        try:
            assert main(["export", "--target", source.server.target, "--tenant", TENANT, "--out", str(newer),
                         "--json"]) == 0
        finally:
            src.insert(TENANT, model, chat, answer)
            src.remove(TENANT, MODELS[1], [added])
    code, report = _cli(capsys, "import", "--target", target.target, "--key", ADMIN_KEY, str(newer))
    assert code == 0
    assert (report["created"], report["updated"], report["present"]) == (1, 1, 52)
    with target.client(api_key=ADMIN_KEY) as dst:
        assert (dst.query(TENANT, model, chat).answer, dst.query(TENANT, model, chat).id) == ("a revised answer",
                                                                                              source.ids[1])
        assert dst.query(TENANT, MODELS[1], "How do I read a file in Kotlin?").id == added


def _renumbered(path: Path) -> list[str]:
    """The lines of an export file with fresh ids: an id is unique per server, so a copy under another tenant
    of the same server needs its own (the same ids are rejected as belonging to another tenant)."""
    header, *entries = path.read_text(encoding="utf-8").splitlines()
    return [header] + [json.dumps({**json.loads(t), "id": uuid.uuid4().hex}) for t in entries]


def test_a_bad_line_is_reported_by_number_and_the_rest_imported(
    exported: Path, target: ThreadServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = _renumbered(exported)
    broken = json.loads(lines[7])
    broken["messages"][-1]["role"] = "robot"  # valid JSON, refused by the server
    lines[4] = lines[4][: len(lines[4]) // 2]  # torn JSON
    lines[7] = json.dumps(broken)
    lines[9] = json.dumps({**json.loads(lines[9]), "vector": "not base64!"})  # refused by the client
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, report = _cli(capsys, "import", "--target", target.target, "--key", ADMIN_KEY, "--tenant", "shop-copy",
                        str(path))
    assert code == 1
    assert [r["line"] for r in report["rejected"]] == [5, 8, 10]
    assert "role" in report["rejected"][1]["reason"] and "base64" in report["rejected"][2]["reason"]
    assert (report["tenant_created"], report["created"]) == (True, 50)
    with target.client(api_key=ADMIN_KEY) as c:
        assert c.get_tenant("shop-copy").entries == 50


def test_vectors_of_another_model_are_embedded_by_the_targets(
    exported: Path, target: ThreadServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    header, *entries = [json.loads(t) for t in _renumbered(exported)]
    path = tmp_path / "other-model.jsonl"
    rows = [header] + [{**e, "embed_model": "some-other-model", "vector": [0.5] * 8} for e in entries]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, report = _cli(capsys, "import", "--target", target.target, "--key", ADMIN_KEY, "--tenant", "reembedded",
                        str(path))
    assert code == 0 and (report["created"], report["embedded"]) == (53, 53)
    with target.client(api_key=ADMIN_KEY) as c:
        hit = _semantic(c, "reembedded", SEMANTIC[1])
        semantic = next(e for e in entries if e["messages"] == [{"role": "user", "content": SEMANTIC[0]}])
        assert (hit.match, hit.id, hit.answer) == ("semantic", semantic["id"], semantic["answer"])


def test_export_and_import_need_the_admin_key(target: ThreadServer, tmp_path: Path) -> None:
    with target.client(api_key=ADMIN_KEY) as admin:
        key = admin.create_api_key(TENANT).key
    with target.client(api_key=key) as c:
        with pytest.raises(errors.PermissionDenied):
            c.export_page(TENANT)
        with pytest.raises(errors.PermissionDenied):
            c.import_entries(TENANT, [])
    assert main(["export", "--target", target.target, "--key", key, "--tenant", TENANT,
                 "--out", str(tmp_path / "x.jsonl")]) == 1


def test_an_interrupted_export_resumes_where_it_stopped(source: Source, tmp_path: Path) -> None:
    whole, path = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    export = ["export", "--target", source.server.target, "--tenant", TENANT, "--json", "--out"]
    assert main([*export, str(whole)]) == 0
    lines = whole.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:24]) + lines[24][:100], encoding="utf-8")  # header, 23 entries, a torn line
    assert main([*export, str(path), "--resume", "--page", "10"]) == 0
    (h1, e1), (h2, e2) = _lines(path), _lines(whole)
    assert h1 == h2
    _same_entries(e1, e2)


def test_a_backup_restores_on_the_embedded_default(
    source: Source, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    backup, restored = tmp_path / "backup.jsonl.gz", tmp_path / "restored.jsonl"
    target = source.server.target
    assert main(["export", "--target", target, "--tenant", TENANT, "--out", str(backup), "--json"]) == 0
    with source.server.client() as c:
        settings = c.get_tenant(TENANT)
        c.delete_tenant(TENANT)
    code, report = _cli(capsys, "import", "--target", target, str(backup))
    assert code == 0 and (report["tenant_created"], report["created"], report["embedded"]) == (True, 53, 0)
    assert main(["export", "--target", target, "--tenant", TENANT, "--out", str(restored), "--json"]) == 0
    _same_entries(_lines(restored)[1], _lines(backup)[1])
    with source.server.client() as c:
        assert c.get_tenant(TENANT).similarity_threshold == settings.similarity_threshold
        for (model, chat, answer), entry_id in zip(source.chats, source.ids, strict=True):
            hit = c.query(TENANT, model, chat)
            assert (hit.match, hit.answer, hit.id) == ("exact", answer, entry_id)
        assert c.query(TENANT, MODELS[0], SEMANTIC[1]).id == source.ids[50]


def test_a_plain_file_warms_the_cache_through_the_policy(
    source: Source, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = [
        {"question": "How do I center a div in CSS?", "answer": "Use flexbox."},
        {"messages": [SYSTEM, {"role": "user", "content": "How do I undo a git commit?"}], "answer": "git reset."},
        {"question": "What's the status of my order 12345?", "answer": "Shipped."},  # user_specific: refused
        {"question": "My email is jo@example.com, what is a CSV?", "answer": "Comma-separated."},  # pii allowed here
        {"question": "No answer here"},
        {"question": "How do I exit vim?", "answer": ":q", "model": MODELS[1]},
        {"question": "A lone surrogate \ud800 here?", "answer": "It cannot be stored."},
    ]
    path = tmp_path / "logs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    code, report = _cli(capsys, "import", "--target", source.server.target, "--tenant", TENANT, "--model", "warm",
                        str(path))
    assert code == 1  # the line without an answer, and the one that is not valid Unicode
    assert (report["format"], report["stored"], report["refused"]) == ("plain", 4, {"user_specific": 1})
    assert [r["line"] for r in report["rejected"]] == [5, 7]
    with source.server.client() as c:
        assert c.query(TENANT, "warm", "How can I center a div with CSS?").answer == "Use flexbox."
        assert c.query(TENANT, "warm", [SYSTEM, {"role": "user", "content": "How do I undo a git commit?"}]).hit
        assert c.query(TENANT, MODELS[1], "How do I exit vim?").answer == ":q"
