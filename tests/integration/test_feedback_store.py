"""The scalar store's part of learning from feedback (stores/learning_sql.py), on SQLite and MariaDB:
bounds, floors, pending verifications, and every path that deletes an entry taking its learning along."""

from __future__ import annotations

from dataclasses import replace

from modelcache_svc.records import EvictionPolicy, Observation
from modelcache_svc.stores.base import ScalarStore
from tests.integration.test_scalar_stores import NOW, entry, insert


def observe(entry_id: str, s: float, wrong: bool, tenant: str = "acme") -> Observation:
    return Observation(entry_id, tenant, s, wrong, "user", "k" * 64, NOW)


def test_observations_bounded_newest_first_and_floor_raised(scalar_store: ScalarStore) -> None:
    (e,) = insert(scalar_store, entry())
    n = scalar_store.record_observations([observe(e, s, False) for s in (0.90, 0.91, 0.92, 0.93, 0.94)], 3, 0.001)
    assert n == 5
    scalar_store.record_observations([observe(e, 0.85, True)], 3, 0.001)
    got = scalar_store.learning_of([e])[e]
    assert got.observations == ((0.85, True), (0.94, False), (0.93, False))
    assert abs(got.floor - 0.851) < 1e-9
    scalar_store.record_observations([observe(e, 0.80, True)], 3, 0.001)  # a lower WRONG never lowers it
    assert abs(scalar_store.learning_of([e])[e].floor - 0.851) < 1e-9
    assert scalar_store.tenant_observations("acme", 10)[0] == (0.80, True)
    assert scalar_store.learning_of(["0" * 32]) == {}


def test_no_observation_without_its_entry(scalar_store: ScalarStore) -> None:
    assert scalar_store.record_observations([observe("0" * 32, 0.9, True)], 64, 0.001) == 0
    assert scalar_store.learning_of(["0" * 32]) == {}


def test_pending_verification_is_taken_once_and_expires(scalar_store: ScalarStore) -> None:
    (e,) = insert(scalar_store, entry())
    scalar_store.add_pending_verification(e, "k" * 64, "acme", 0.83, NOW)
    assert scalar_store.take_pending_verification(e, "k" * 64, NOW - 10) == 0.83
    assert scalar_store.take_pending_verification(e, "k" * 64, NOW - 10) is None
    scalar_store.add_pending_verification(e, "k" * 64, "acme", 0.83, NOW - 100)
    assert scalar_store.take_pending_verification(e, "k" * 64, NOW - 10) is None  # too old
    scalar_store.add_pending_verification(e, "j" * 64, "acme", 0.83, NOW - 100)
    assert scalar_store.purge_pending_verifications(NOW - 10) == 1


def test_every_delete_path_takes_the_learning_along(scalar_store: ScalarStore) -> None:
    rows = [entry(question=f"q{i}") for i in range(5)] + [entry(question="x", expires_at=NOW - 1, created_at=NOW + 1)]
    ids = insert(scalar_store, *rows)
    for e in ids:
        scalar_store.record_observations([observe(e, 0.9, True)], 64, 0.001)
        scalar_store.add_pending_verification(e, "k" * 64, "acme", 0.9, NOW)
    assert set(scalar_store.learning_of(ids)) == set(ids)

    scalar_store.delete_entries("acme", "gpt", [ids[0]])  # Remove
    victims = scalar_store.eviction_candidates("acme", EvictionPolicy.FIFO, 1)  # capacity eviction
    scalar_store.delete_ids([v[0] for v in victims])
    expired = [i for i, _, _ in scalar_store.expired(NOW, 10)]  # expiry
    assert expired == [ids[5]]
    scalar_store.delete_ids(expired)
    gone = {ids[0], victims[0][0], ids[5]}
    assert set(scalar_store.learning_of(ids)) == set(ids) - gone
    scalar_store.clear("acme", None)  # Clear and DeleteTenant
    assert scalar_store.learning_of(ids) == {}
    for e in ids:
        assert scalar_store.take_pending_verification(e, "k" * 64, 0) is None


def test_a_new_answer_resets_what_was_learned(scalar_store: ScalarStore) -> None:
    row = entry()
    (e,) = insert(scalar_store, row)
    scalar_store.record_observations([observe(e, 0.9, True)], 64, 0.001)
    insert(scalar_store, replace(row, id="f" * 32))  # the same answer written again: kept
    assert e in scalar_store.learning_of([e])
    insert(scalar_store, replace(row, id="e" * 32, answer="a better answer"))
    assert scalar_store.learning_of([e]) == {}
