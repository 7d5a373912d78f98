"""Eviction order through a real server, on SQLite and on MariaDB, with the real clock.

Two things eviction must see: every hit served before it (hits are counted in
memory and written in the background), and the order of the entries of one
Insert (they share the call's instant).
"""

from __future__ import annotations

import pytest

from modelcache_svc.client import CacheClient, Entry
from tests.servers import ThreadServer

MODEL = "m1"
CAP = 40


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def question(i: int) -> str:
    return f"What is fact number {i} about topic {i * 7 % 13}?"


def alive(c: CacheClient, questions: list[str]) -> set[str]:
    return {q for q in questions if c.query("capped", MODEL, user(q), similarity_threshold=1.0).match == "exact"}


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_an_entry_hit_just_before_an_over_capacity_insert_is_kept(server: ThreadServer, policy: str) -> None:
    with server.client() as c:
        c.create_tenant("capped", max_entries=CAP, eviction_policy=policy)
        for i in range(CAP):  # one call each: oldest first
            c.insert("capped", MODEL, user(question(i)), f"a{i}")
        hot: list[str] = []
        for r in range(8):
            # The oldest entry left that was never hit is hit three times, then one insert pushes the tenant
            # over: the victim must be the next one never hit (question 2r + 1), whatever the background
            # writer of hit counts did meanwhile.
            hot.append(question(2 * r))
            for _ in range(3):
                assert c.query("capped", MODEL, user(hot[-1])).hit
            c.insert("capped", MODEL, user(question(1000 + r)), "new")
            assert alive(c, hot) == set(hot), f"round {r}: a hit entry was evicted"
            assert not alive(c, [question(2 * r + 1)])
        # The scenario: 3 hits on each hot entry, then a big batch over capacity.
        c.insert_many("capped", MODEL, [Entry(user(question(2000 + j)), "b") for j in range(CAP // 2)])
        assert alive(c, hot) == set(hot)
        assert c.get_tenant("capped").entries == CAP


@pytest.mark.parametrize("policy", ["fifo", "lru", "lfu"])
def test_one_batch_is_evicted_in_insertion_order(server: ThreadServer, policy: str) -> None:
    batch = [question(i) for i in range(CAP)]
    with server.client() as c:
        c.create_tenant("capped", max_entries=CAP, eviction_policy=policy)
        c.insert_many("capped", MODEL, [Entry(user(q), "a") for q in batch])  # one call, one instant
        c.insert_many("capped", MODEL, [Entry(user(question(500 + j)), "b") for j in range(10)])
        assert c.get_tenant("capped").entries == CAP
        # Never hit: first in, first out under all three policies.
        assert alive(c, batch) == set(batch[10:])
