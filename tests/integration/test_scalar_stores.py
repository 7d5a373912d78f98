"""The ScalarStore contract, run against SQLite, MariaDB and the in-memory store alike (the fixture
``scalar_store``); tests of migrations, namespaces and URIs are the SQL stores' own."""

from __future__ import annotations

import gc
import hashlib
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from modelcache_svc.records import ApiKeyRecord, EntryRow, EvictionPolicy, TenantConfig
from modelcache_svc.errors import AlreadyExists, InvalidArgument, Unavailable
from modelcache_svc.stores import open_scalar_store
from modelcache_svc.stores.base import ScalarStore
from modelcache_svc.stores.migrations import load_migrations
from modelcache_svc.stores.mysql_store import MySQLStore
from modelcache_svc.stores.sqlite_store import SQLiteStore

NOW = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]


def entry(tenant: str = "acme", model: str = "gpt", question: str = "q", **fields: Any) -> EntryRow:
    values: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "tenant": tenant,
        "model": model,
        "context_hash": hashlib.sha256(b"ctx").hexdigest(),
        "exact_key": hashlib.sha256(question.encode()).hexdigest(),
        "question": question,
        "messages_json": f'[["user", "{question}"]]',
        "answer": f"answer to {question}",
        "metadata_json": "{}",
        "embed_model": "mini",
        "created_at": NOW,
        "expires_at": None,
        "last_hit_at": NOW,
    }
    return EntryRow(**{**values, **fields})


def insert(store: ScalarStore, *rows: EntryRow) -> list[str]:
    return [entry_id for entry_id, _ in store.upsert_entries(rows)]


def fresh_namespace() -> str:
    return "n" + uuid.uuid4().hex[:12]


def migration_versions(store: Any) -> list[int]:
    def op(cur: Any) -> list[int]:
        cur.execute(store._q("SELECT version FROM {schema_migrations} ORDER BY version"))
        return [int(r[0]) for r in cur.fetchall()]

    result: list[int] = store._read(op)
    return result


# -- migrations ----------------------------------------------------------------------
# Every version in migrations/ (both dialects hold the same ones).
VERSIONS = [m.version for m in load_migrations("sqlite", "")]


def test_migrate_is_idempotent_and_recorded(scalar_store_uri: str) -> None:
    namespace = fresh_namespace()
    store = open_scalar_store(scalar_store_uri, namespace)
    try:
        assert store.migrate() == VERSIONS
        assert store.migrate() == []
        assert migration_versions(store) == VERSIONS
    finally:
        store.close()
    again = open_scalar_store(scalar_store_uri, namespace)
    try:
        assert again.migrate() == []
    finally:
        again.close()


def test_a_version_cut_off_after_its_add_column_reruns(scalar_store_uri: str) -> None:
    """0003 adds a column; were its version never recorded (a crash after the DDL, which MySQL commits
    at once), the rerun meets the column and counts the version as applied instead of failing."""
    store = open_scalar_store(scalar_store_uri, fresh_namespace())
    try:
        store.migrate()
        store._write(lambda cur: cur.execute(store._q("DELETE FROM {schema_migrations} WHERE version = 3")))
        if isinstance(store, SQLiteStore):
            # SQLite's DDL is transactional: a cut-off version leaves no column behind to meet.
            store._write(lambda cur: cur.execute(store._q("ALTER TABLE {query_log} DROP COLUMN uncacheable")))
        assert store.migrate() == [3]
        assert migration_versions(store) == VERSIONS
    finally:
        store.close()


def test_concurrent_migrations_apply_once(scalar_store_uri: str) -> None:
    namespace = fresh_namespace()
    stores = [open_scalar_store(scalar_store_uri, namespace) for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def run(store: ScalarStore) -> list[int]:
        barrier.wait()
        return store.migrate()

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            results = list(pool.map(run, stores))
        assert sorted(v for r in results for v in r) == VERSIONS
        assert migration_versions(stores[0]) == VERSIONS
    finally:
        for store in stores:
            store.close()


# -- tenants ---------------------------------------------------------------------------


def test_tenant_crud(scalar_store: ScalarStore) -> None:
    config = TenantConfig(
        similarity_threshold=0.91,
        ttl_seconds=60,
        max_entries=10,
        eviction_policy=EvictionPolicy.LFU,
        embedding_model="org/model-x",
    )
    created = scalar_store.create_tenant("beta", config, NOW)
    assert (created.name, created.config, created.created_at) == ("beta", config, NOW)
    scalar_store.create_tenant("alpha", TenantConfig(), NOW + 1)
    with pytest.raises(AlreadyExists):
        scalar_store.create_tenant("beta", TenantConfig(), NOW)

    got = scalar_store.get_tenant("beta")
    assert got is not None and got.config == config and got.created_at == NOW
    assert scalar_store.get_tenant("gamma") is None
    assert [t.name for t in scalar_store.list_tenants()] == ["alpha", "beta"]
    assert scalar_store.get_tenant("alpha").config == TenantConfig()  # type: ignore[union-attr]

    fifo = replace(config, eviction_policy=EvictionPolicy.FIFO, similarity_threshold=None)
    updated = scalar_store.update_tenant("beta", fifo)
    assert updated is not None and updated.config == fifo and updated.created_at == NOW
    assert scalar_store.update_tenant("beta", fifo) is not None  # unchanged row still found
    assert scalar_store.update_tenant("gamma", fifo) is None

    scalar_store.create_api_key(ApiKeyRecord(uuid.uuid4().hex, "beta", "b" * 64, NOW))
    assert scalar_store.delete_tenant("beta") is True
    assert scalar_store.delete_tenant("beta") is False
    assert scalar_store.get_tenant("beta") is None
    assert scalar_store.get_api_key("b" * 64) is None
    # A failed create does not poison the store (MySQL: its connection is dropped).
    assert [t.name for t in scalar_store.list_tenants()] == ["alpha"]


def test_delete_tenant_keeps_its_entries(scalar_store: ScalarStore) -> None:
    scalar_store.create_tenant("acme", TenantConfig(), NOW)
    insert(scalar_store, entry())
    assert scalar_store.delete_tenant("acme") is True
    assert scalar_store.count_entries("acme") == 1


# -- entries ------------------------------------------------------------------------------


def test_upsert_creates_then_replaces_keeping_the_id(scalar_store: ScalarStore) -> None:
    first = entry(question="what is x")
    [(first_id, created)] = scalar_store.upsert_entries([first])
    assert (first_id, created) == (first.id, True)

    second = entry(
        question="what is x",
        answer="new answer",
        metadata_json='{"v": "2"}',
        messages_json='[["system", "s"], ["user", "what is x"]]',
        expires_at=NOW + 500,
        created_at=NOW + 100,
    )
    assert scalar_store.upsert_entries([second]) == [(first.id, False)]
    row = scalar_store.get_by_exact_key("acme", "gpt", first.exact_key, NOW)
    assert row is not None
    assert (row.id, row.answer, row.metadata_json, row.messages_json) == (
        first.id,
        "new answer",
        '{"v": "2"}',
        second.messages_json,
    )
    assert row.expires_at == NOW + 500 and row.created_at == NOW
    assert scalar_store.count_entries("acme") == 1


def test_upsert_batch_in_order_with_a_repeated_key(scalar_store: ScalarStore) -> None:
    a, b = entry(question="a"), entry(question="b")
    a_again = entry(question="a", answer="a2")
    assert scalar_store.upsert_entries([a, b, a_again]) == [(a.id, True), (b.id, True), (a.id, False)]
    assert scalar_store.get_entries([a.id], NOW)[a.id].answer == "a2"
    assert scalar_store.upsert_entries([]) == []


def test_same_key_in_another_scope_is_another_row(scalar_store: ScalarStore) -> None:
    rows = [entry(), entry(tenant="other"), entry(model="gpt-2")]
    assert [created for _, created in scalar_store.upsert_entries(rows)] == [True, True, True]
    assert scalar_store.count_by_tenant() == {"acme": 2, "other": 1}
    for row in rows:
        got = scalar_store.get_by_exact_key(row.tenant, row.model, row.exact_key, NOW)
        assert got is not None and got.id == row.id


def test_get_by_exact_key_skips_expired(scalar_store: ScalarStore) -> None:
    live = entry(question="l", expires_at=NOW + 10)
    dead = entry(question="d", expires_at=NOW - 1)
    boundary = entry(question="b", expires_at=NOW)  # expires_at <= now is expired
    forever = entry(question="f")
    insert(scalar_store, live, dead, boundary, forever)
    assert scalar_store.get_by_exact_key("acme", "gpt", live.exact_key, NOW) == live
    assert scalar_store.get_by_exact_key("acme", "gpt", forever.exact_key, NOW) == forever
    assert scalar_store.get_by_exact_key("acme", "gpt", dead.exact_key, NOW) is None
    assert scalar_store.get_by_exact_key("acme", "gpt", boundary.exact_key, NOW) is None
    assert scalar_store.get_by_exact_key("acme", "gpt", "0" * 64, NOW) is None


def test_get_entries_returns_only_live_rows(scalar_store: ScalarStore) -> None:
    live, dead = entry(question="l", expires_at=NOW + 10), entry(question="d", expires_at=NOW - 10)
    insert(scalar_store, live, dead)
    got = scalar_store.get_entries([live.id, dead.id, live.id, "f" * 32], NOW)
    assert got == {live.id: live}
    assert scalar_store.get_entries([], NOW) == {}


def test_get_entries_many_ids(scalar_store: ScalarStore) -> None:
    rows = [entry(question=f"q{i}") for i in range(1200)]  # more than one IN chunk
    insert(scalar_store, *rows)
    assert set(scalar_store.get_entries([r.id for r in rows], NOW)) == {r.id for r in rows}
    assert scalar_store.delete_ids([r.id for r in rows]) == 1200


def test_delete_entries_only_within_scope(scalar_store: ScalarStore) -> None:
    mine, other_model, other_tenant = entry(), entry(model="gpt-2"), entry(tenant="other")
    insert(scalar_store, mine, other_model, other_tenant)
    ids = [other_tenant.id, mine.id, other_model.id, "e" * 32]
    assert scalar_store.delete_entries("acme", "gpt", ids) == [mine.id]
    assert set(scalar_store.get_entries(ids, NOW)) == {other_model.id, other_tenant.id}
    assert scalar_store.delete_entries("acme", "gpt", [mine.id]) == []
    assert scalar_store.delete_entries("acme", "gpt", []) == []


def test_clear_by_scope_and_by_tenant(scalar_store: ScalarStore) -> None:
    insert(
        scalar_store,
        entry(question="1"),
        entry(question="2"),
        entry(model="gpt-2"),
        entry(tenant="other"),
    )
    assert scalar_store.clear("acme", "gpt") == 2
    assert scalar_store.count_entries("acme") == 1
    assert scalar_store.clear("acme", "gpt") == 0
    assert scalar_store.clear("acme", None) == 1
    assert scalar_store.count_by_tenant() == {"other": 1}


def test_counts(scalar_store: ScalarStore) -> None:
    assert scalar_store.count_entries("acme") == 0
    assert scalar_store.count_by_tenant() == {}
    insert(scalar_store, entry(question="1"), entry(question="2"), entry(model="m2"), entry(tenant="b"))
    assert scalar_store.count_entries("acme") == 3
    assert scalar_store.count_entries("acme", "gpt") == 2
    assert scalar_store.count_entries("acme", "m2") == 1
    assert scalar_store.count_entries("nobody") == 0
    counts = scalar_store.count_by_tenant()
    assert counts == {"acme": 3, "b": 1} and all(type(v) is int for v in counts.values())


def test_record_hits(scalar_store: ScalarStore) -> None:
    a, b = entry(question="a"), entry(question="b")
    insert(scalar_store, a, b)
    scalar_store.record_hits([(a.id, NOW + 5), (a.id, NOW + 2), (b.id, NOW - 50), ("d" * 32, NOW)])
    got = scalar_store.get_entries([a.id, b.id], NOW)
    assert (got[a.id].hit_count, got[a.id].last_hit_at) == (2, NOW + 5)
    assert (got[b.id].hit_count, got[b.id].last_hit_at) == (1, NOW)  # never moves back
    assert type(got[a.id].hit_count) is int and type(got[a.id].last_hit_at) is float
    scalar_store.record_hits([])


def test_expired(scalar_store: ScalarStore) -> None:
    rows = [entry(question=str(i), expires_at=NOW - 10 + i) for i in range(5)]  # NOW-10 .. NOW-6
    older = entry(tenant="t2", model="m2", question="x", expires_at=NOW - 100)
    insert(scalar_store, *rows, entry(question="forever"), older)
    assert scalar_store.expired(NOW - 7, 10) == [(older.id, "t2", "m2")] + [(r.id, "acme", "gpt") for r in rows[:4]]
    assert scalar_store.expired(NOW, 2) == [(older.id, "t2", "m2"), (rows[0].id, "acme", "gpt")]
    assert scalar_store.expired(NOW - 1000, 10) == []
    assert scalar_store.expired(NOW, 0) == []


def test_eviction_candidates(scalar_store: ScalarStore) -> None:
    ids = sorted(uuid.uuid4().hex for _ in range(4))
    # id, created_at, last_hit_at, hit_count
    spec = [(ids[0], 3.0, 1.0, 5), (ids[1], 1.0, 4.0, 0), (ids[2], 2.0, 2.0, 0), (ids[3], 4.0, 1.0, 5)]
    rows = [
        entry(id=i, question=i, created_at=NOW + c, last_hit_at=NOW + h, hit_count=n, model=f"m{k}")
        for k, (i, c, h, n) in enumerate(spec)
    ]
    insert(scalar_store, *rows, entry(tenant="other", question="o", created_at=0.0, last_hit_at=0.0))
    lru = scalar_store.eviction_candidates("acme", EvictionPolicy.LRU, 10)
    assert lru == [(ids[0], "m0"), (ids[3], "m3"), (ids[2], "m2"), (ids[1], "m1")]  # ties by id
    lfu = scalar_store.eviction_candidates("acme", EvictionPolicy.LFU, 3)
    assert [i for i, _ in lfu] == [ids[2], ids[1], ids[0]]
    fifo = scalar_store.eviction_candidates("acme", EvictionPolicy.FIFO, 2)
    assert [i for i, _ in fifo] == [ids[1], ids[2]]
    assert scalar_store.eviction_candidates("acme", EvictionPolicy.LRU, 0) == []
    assert scalar_store.eviction_candidates("nobody", EvictionPolicy.LRU, 5) == []


def test_entries_of_tenant_paging(scalar_store: ScalarStore) -> None:
    rows = [entry(question=str(i), model=f"m{i % 2}", expires_at=NOW - 1 if i == 3 else None) for i in range(7)]
    insert(scalar_store, *rows, entry(tenant="other"))
    seen: list[EntryRow] = []
    after = ""
    while page := scalar_store.entries_of_tenant("acme", after, 3):
        assert len(page) <= 3
        seen.extend(page)
        after = page[-1].id
    assert [r.id for r in seen] == sorted(r.id for r in rows)
    assert {r.id: r for r in seen} == {r.id: r for r in rows}


def test_set_embed_model_and_delete_ids(scalar_store: ScalarStore) -> None:
    a, b, c = entry(question="a"), entry(question="b"), entry(tenant="x")
    insert(scalar_store, a, b, c)
    scalar_store.set_embed_model([a.id, c.id], "bigger-model")
    got = scalar_store.get_entries([a.id, b.id, c.id], NOW)
    assert [got[i].embed_model for i in (a.id, b.id, c.id)] == ["bigger-model", "mini", "bigger-model"]
    assert scalar_store.delete_ids([a.id, c.id, "c" * 32]) == 2
    assert scalar_store.delete_ids([]) == 0
    assert set(scalar_store.get_entries([a.id, b.id, c.id], NOW)) == {b.id}


# -- API keys ------------------------------------------------------------------------------


def test_api_keys(scalar_store: ScalarStore) -> None:
    record = ApiKeyRecord(id=uuid.uuid4().hex, tenant="acme", key_hash="a" * 64, created_at=NOW)
    scalar_store.create_api_key(record)
    assert scalar_store.get_api_key("a" * 64) == record
    assert scalar_store.get_api_key("0" * 64) is None
    with pytest.raises(AlreadyExists):
        scalar_store.create_api_key(replace(record, id=uuid.uuid4().hex))
    revoked = scalar_store.revoke_api_key(record.id, NOW + 5)
    assert revoked == replace(record, revoked_at=NOW + 5)
    assert scalar_store.revoke_api_key(record.id, NOW + 9) == revoked  # the first revocation stands
    assert scalar_store.get_api_key("a" * 64) == revoked
    assert scalar_store.revoke_api_key("no-such-key", NOW) is None


# -- namespaces, hostile values ------------------------------------------------------------


def test_namespaces_are_isolated(scalar_store_uri: str) -> None:
    plain, named = open_scalar_store(scalar_store_uri, ""), open_scalar_store(scalar_store_uri, fresh_namespace())
    try:
        plain.migrate()
        named.migrate()
        tenant = "iso" + uuid.uuid4().hex[:8]  # the "" namespace is shared by the module's tests
        row = entry(tenant=tenant)
        insert(named, row)
        named.create_tenant(tenant, TenantConfig(), NOW)
        key_hash = hashlib.sha256(tenant.encode()).hexdigest()
        named.create_api_key(ApiKeyRecord(uuid.uuid4().hex, tenant, key_hash, NOW))
        assert plain.get_by_exact_key(tenant, "gpt", row.exact_key, NOW) is None
        assert plain.count_entries(tenant) == 0
        assert plain.get_tenant(tenant) is None
        assert plain.get_api_key(key_hash) is None
        plain.create_tenant(tenant, TenantConfig(), NOW)  # no clash with the other namespace
        assert plain.clear(tenant, None) == 0
        assert named.count_entries(tenant) == 1
    finally:
        plain.close()
        named.close()


HOSTILE = [
    "'; DROP TABLE x; --",
    'x" || id > 0',
    "back\\slash \\' \\\" \\\\",
    "%s %(name)s %% ? ?1 :name {entries} {prefix}",
    "ünïcödé 中文 日本語 עברית 🙂🚀 \u200b\t\nnew line   ",
    "`backtick`; SELECT 1;",
]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_values_round_trip(scalar_store: ScalarStore, value: str) -> None:
    tenant = value.strip()[:64]  # key columns: no trailing blanks (MySQL PAD SPACE), length limits
    model = value.strip()[:128]
    row = entry(
        tenant=tenant,
        model=model,
        question=value,
        answer=value * 3,
        messages_json=value,
        metadata_json=value,
        embed_model=value.strip()[:191],
    )
    assert scalar_store.upsert_entries([row]) == [(row.id, True)]
    assert scalar_store.get_by_exact_key(tenant, model, row.exact_key, NOW) == row
    assert scalar_store.get_entries([row.id], NOW) == {row.id: row}
    assert scalar_store.entries_of_tenant(tenant, "", 10) == [row]
    assert scalar_store.count_by_tenant() == {tenant: 1}
    assert scalar_store.eviction_candidates(tenant, EvictionPolicy.LRU, 5) == [(row.id, model)]

    config = TenantConfig(embedding_model=value.strip()[:191])
    assert scalar_store.create_tenant(tenant, config, NOW).config == config
    got = scalar_store.get_tenant(tenant)
    assert got is not None and (got.name, got.config) == (tenant, config)
    key_hash = hashlib.sha256(value.encode()).hexdigest()
    key = ApiKeyRecord(id=uuid.uuid4().hex, tenant=tenant, key_hash=key_hash, created_at=NOW)
    scalar_store.create_api_key(key)
    assert scalar_store.get_api_key(key.key_hash) == key

    assert scalar_store.delete_entries(tenant, model, [row.id]) == [row.id]
    assert scalar_store.delete_tenant(tenant) is True
    assert scalar_store.list_tenants() == []


@pytest.mark.parametrize("namespace", ["Upper", "1abc", "a-b", "a b", "a;drop", "a" * 33, "_a", "ns`x"])
def test_invalid_namespace_is_refused(tmp_path: Path, namespace: str) -> None:
    with pytest.raises(InvalidArgument):
        SQLiteStore(str(tmp_path / "x.db"), namespace)
    with pytest.raises(InvalidArgument):
        MySQLStore("mysql://root@127.0.0.1:1/x", namespace)
    with pytest.raises(InvalidArgument):
        open_scalar_store(f"sqlite:///{tmp_path / 'x.db'}", namespace)
    with pytest.raises(InvalidArgument):
        open_scalar_store("memory://", namespace)


# -- opening ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "postgres://u@h/db",
        "sqlite://rel.db",
        "sqlite:///",
        "sqlite:///:memory:",
        "mysql://u@h:3306/",
        "mysql://u@h:x/db",
        "memory:",
        "memory://x",
    ],
)
def test_bad_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidArgument):
        open_scalar_store(uri)


def test_sqlite_uris_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = open_scalar_store("sqlite:///sub/dir/rel.db")
    rel.close()
    assert (tmp_path / "sub" / "dir" / "rel.db").exists()
    absolute = tmp_path / "abs" / "a.db"
    store = open_scalar_store(f"sqlite:///{absolute}")  # four slashes: absolute path
    store.close()
    assert absolute.exists()


def test_mysql_on_a_closed_port_is_unavailable_quickly() -> None:
    store = open_scalar_store("mysql://root@127.0.0.1:1/nothing", timeout=1.0)
    try:
        start = time.monotonic()
        with pytest.raises(Unavailable, match="^mysql: "):
            store.ping()
        with pytest.raises(Unavailable):
            store.migrate()
        with pytest.raises(Unavailable):
            store.get_tenant("x")
        assert time.monotonic() - start < 3.0
    finally:
        store.close()


def test_mysql_recovers_from_killed_connections(mysql_uri: str) -> None:
    import pymysql

    store = MySQLStore(mysql_uri, fresh_namespace())
    store.migrate()

    def session_id(_: int) -> int:
        def op(cur: Any) -> int:
            cur.execute("SELECT CONNECTION_ID(), SLEEP(0.05)")
            return int(cur.fetchone()[0])

        result: int = store._read(op)
        return result

    def session_ids() -> set[int]:
        # Several threads at once, so the pool ends up holding several connections.
        with ThreadPoolExecutor(4) as pool:
            return set(pool.map(session_id, range(4)))

    def kill_all(ids: set[int]) -> None:
        from tests.conftest import _mysql_admin

        conn = _mysql_admin()
        try:
            with conn.cursor() as cur:
                for i in ids:
                    try:
                        cur.execute("KILL %s", (i,))
                    except pymysql.err.MySQLError:
                        pass
        finally:
            conn.close()

    try:
        kill_all(session_ids())
        time.sleep(1.2)  # idle connections are pinged before reuse: no call fails
        assert store.count_entries("acme") == 0
        kill_all(session_ids())
        # Used at once: at most one call fails, and it drops every idle connection.
        failures = 0
        for _ in range(3):
            try:
                store.count_entries("acme")
            except Unavailable:
                failures += 1
        assert failures <= 1
        store.ping()
    finally:
        store.close()


# -- concurrency, durability -----------------------------------------------------------------


def test_many_threads(scalar_store: ScalarStore) -> None:
    def work(i: int) -> None:
        row = entry(question=f"q{i % 50}", answer=f"a{i}")
        [(entry_id, _)] = scalar_store.upsert_entries([row])
        scalar_store.record_hits([(entry_id, NOW + i)])
        assert scalar_store.get_by_exact_key("acme", "gpt", row.exact_key, NOW) is not None
        assert scalar_store.count_entries("acme") <= 50

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(400)))
    assert scalar_store.count_entries("acme") == 50
    rows = scalar_store.entries_of_tenant("acme", "", 100)
    assert sum(r.hit_count for r in rows) == 400


CHILD = """
import os, signal
from modelcache_svc.records import EntryRow
from modelcache_svc.stores import open_scalar_store
store = open_scalar_store({uri!r}, "dur")
store.migrate()
store.upsert_entries([EntryRow("d" * 32, "acme", "gpt", "c" * 64, "k" * 64, "q", "[]", "a", "{{}}", "mini", 1.0, None, 1.0)])
print("written", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sqlite_commit_survives_kill_9(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'd.db'}"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(uri=uri)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == -9, proc.stderr
    assert "written" in proc.stdout
    store = open_scalar_store(uri, "dur")
    try:
        assert store.migrate() == []
        assert set(store.get_entries(["d" * 32], NOW)) == {"d" * 32}
    finally:
        store.close()


def test_sqlite_closes_connections_of_finished_threads(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "t.db"))
    store.migrate()
    try:
        for _ in range(20):
            thread = threading.Thread(target=store.ping)
            thread.start()
            thread.join()
        gc.collect()
        assert len(store._holders) <= 2  # this thread's, and at most one not yet collected
    finally:
        store.close()
