"""Learning from feedback through a real server: Feedback, verification write-backs, the learned floor,
its durability, bounds and clean-up, over SQLite and MariaDB."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from modelcache_svc import errors
from modelcache_svc.records import EntryLearning
from tests.servers import ThreadServer, free_port

MODEL = "m1"
OWN = "How do I reset my password?"
ANSWER = "Click 'forgot password' on the login page."
FAR = "How do I change my password?"  # ~0.87 to OWN with the packaged model
NEAR = "How can I reset my password?"  # ~0.99
FARTHER = "How do I change my username?"  # below FAR, above 0.5
Start = Callable[..., ThreadServer]


def learning(server: ThreadServer, entry_id: str) -> EntryLearning | None:
    return server.core.scalar.learning_of([entry_id]).get(entry_id)


def test_a_wrong_hit_reported_stops_serving_that_chat_and_survives_a_restart(make_server: Start) -> None:
    server = make_server()
    with server.client() as c:
        entry = c.insert("default", MODEL, OWN, ANSWER)
        far, near = c.query("default", MODEL, FAR), c.query("default", MODEL, NEAR)
        assert far.hit and far.id == entry and near.hit and near.similarity > far.similarity + 0.01
        action = c.feedback("default", MODEL, entry, FAR, "wrong")
        assert entry in action and "no longer serves" in action
        assert not c.query("default", MODEL, FAR).hit  # that chat, and anything less similar
        assert c.query("default", MODEL, NEAR).id == entry  # a closer paraphrase still served
        own = c.query("default", MODEL, OWN)
        assert own.match == "exact" and own.id == entry  # the entry's own question still hits
    floor = learning(server, entry)
    assert floor is not None and far.similarity < floor.floor < near.similarity
    server.stop()

    again = make_server()  # the same stores, reopened
    with again.client() as c:
        assert not c.query("default", MODEL, FAR).hit
        assert c.query("default", MODEL, NEAR).id == entry
        assert c.query("default", MODEL, OWN).match == "exact"


def test_wrong_with_an_answer_caches_it_for_that_chat(server: ThreadServer) -> None:
    with server.client() as c:
        entry = c.insert("default", MODEL, OWN, ANSWER)
        action = c.feedback("default", MODEL, entry, FAR, "wrong", answer="Settings > Security > Change.")
        assert "right answer is cached" in action
        hit = c.query("default", MODEL, FAR)
        assert (hit.match, hit.answer) == ("exact", "Settings > Security > Change.") and hit.id != entry


def test_wrong_on_the_entrys_own_question_replaces_or_removes_it(server: ThreadServer) -> None:
    with server.client() as c:
        entry = c.insert("default", MODEL, OWN, ANSWER)
        c.feedback("default", MODEL, entry, FAR, "correct")
        assert learning(server, entry) is not None
        action = c.feedback("default", MODEL, entry, OWN, "wrong", answer="Use the reset link we email you.")
        assert "replaced the answer" in action
        hit = c.query("default", MODEL, OWN)
        assert (hit.id, hit.answer) == (entry, "Use the reset link we email you.")
        assert learning(server, entry) is None  # a new answer starts with no evidence
        assert "removed" in c.feedback("default", MODEL, entry, OWN, "wrong")
        assert not c.query("default", MODEL, OWN).hit


def test_a_verification_round_trip_changes_the_entrys_threshold(server: ThreadServer) -> None:
    with server.client() as c:
        # The learner's own thresholds, without the verifier in front of it (which would refuse FARTHER before
        # the learner could offer it: tests/integration/test_verifier.py covers the two together).
        c.create_tenant("learns", verify_rate=1.0, verifier=False)
        assert c.get_tenant("learns").verify_rate == 1.0
        entry = c.insert("learns", MODEL, OWN, ANSWER)
        farther = c.query("learns", MODEL, FARTHER, similarity_threshold=0.5)
        assert not farther.hit and farther.verify_entry_id == entry  # offered for verification
        missed = c.query("learns", MODEL, FAR)  # uncertain (no evidence) and rate 1: verified, not served
        assert not missed.hit and missed.verify_entry_id == entry
        assert learning(server, entry) is None
        # The product's model answered differently: the entry was wrong for this chat.
        c.insert("learns", MODEL, FAR, "Open Settings, then Security.", verifies=missed.verify_entry_id)
        after = learning(server, entry)
        assert after is not None and after.observations and after.observations[0][1] is True
        assert abs(after.observations[0][0] - 0.874) < 0.02 and after.floor > after.observations[0][0]
        # A chat less similar than the verified one: the entry is now below its floor, neither served nor offered.
        farther = c.query("learns", MODEL, FARTHER, similarity_threshold=0.5)
        assert farther.id != entry and farther.verify_entry_id != entry

        # Agreeing answers (normalised) record a CORRECT.
        other = c.insert("learns", MODEL, "What is the capital of France?", "Paris.")
        miss = c.query("learns", MODEL, "Which city is the capital of France?")
        assert miss.verify_entry_id == other
        c.insert("learns", MODEL, "Which city is the capital of France?", "  paris. ", verifies=other)
        seen = learning(server, other)
        assert seen is not None and seen.observations[0][1] is False and seen.floor == 0.0


def test_feedback_errors_are_clear(make_server: Start) -> None:
    server = make_server(admin_key="admin")
    with server.client("admin") as admin:
        admin.create_tenant("a")
        admin.create_tenant("b")
        entry_a = admin.insert("a", MODEL, OWN, ANSWER)
        _, key_b = admin.create_api_key("b")
        with pytest.raises(errors.NotFound, match="no entry"):
            admin.feedback("a", MODEL, "0" * 32, FAR, "wrong")
        with pytest.raises(errors.NotFound):  # another tenant's entry, asked in b's scope
            admin.feedback("b", MODEL, entry_a, FAR, "wrong")
        with pytest.raises(errors.NotFound):  # another model of the same tenant
            admin.feedback("a", "other-model", entry_a, FAR, "wrong")
        with pytest.raises(errors.InvalidArgument, match="verdict"):
            admin.feedback("a", MODEL, entry_a, FAR, "maybe")
        with pytest.raises(errors.InvalidArgument, match="entry_id"):
            admin.feedback("a", MODEL, "not-an-id", FAR, "wrong")
        with pytest.raises(errors.InvalidArgument, match="WRONG verdict only"):
            admin.feedback("a", MODEL, entry_a, FAR, "correct", answer="x")
        with pytest.raises(errors.InvalidArgument):
            admin.feedback("a", MODEL, entry_a, [], "wrong")
        with pytest.raises(errors.InvalidArgument, match="context"):
            admin.feedback("a", MODEL, entry_a, [{"role": "system", "content": "pirate"}, {"role": "user",
                                                                                          "content": FAR}], "wrong")
        with pytest.raises(errors.InvalidArgument, match="verifies"):
            admin.insert("a", MODEL, FAR, "x", verifies="nope")
    with server.client(key_b) as b:
        with pytest.raises(errors.PermissionDenied):
            b.feedback("a", MODEL, entry_a, FAR, "wrong")
        with pytest.raises(errors.NotFound):
            b.feedback("b", MODEL, entry_a, FAR, "wrong")
    with server.client("admin") as admin:
        assert admin.query("a", MODEL, FAR).id == entry_a  # nothing above changed the entry


def test_observations_are_bounded_per_entry(make_server: Start) -> None:
    server = make_server(feedback_keep_per_entry=4)
    with server.client() as c:
        entry = c.insert("default", MODEL, OWN, ANSWER)
        for _ in range(10):
            c.feedback("default", MODEL, entry, NEAR, "correct")
        c.feedback("default", MODEL, entry, FAR, "wrong")
    seen = learning(server, entry)
    assert seen is not None and len(seen.observations) == 4
    assert seen.observations[0][1] is True  # the newest kept first
    assert seen.floor > 0.8  # the floor is kept apart from the bounded observations


def test_learning_is_removed_with_its_entry(server: ThreadServer) -> None:
    with server.client() as c:
        ids = [c.insert("default", MODEL, OWN, ANSWER), c.insert("default", MODEL, "What is 2+2?", "4"),
               c.insert("default", "m2", OWN, ANSWER)]
        for entry, model in zip(ids, (MODEL, MODEL, "m2"), strict=True):
            c.feedback("default", model, entry, FAR if entry != ids[1] else "What's 2+2 equal to?", "wrong")
        assert all(learning(server, i) is not None for i in ids)
        c.remove("default", MODEL, [ids[0]])
        assert learning(server, ids[0]) is None and learning(server, ids[1]) is not None
        c.clear("default", MODEL)
        assert learning(server, ids[1]) is None and learning(server, ids[2]) is not None
        c.create_tenant("gone")
        gone = c.insert("gone", MODEL, OWN, ANSWER)
        c.feedback("gone", MODEL, gone, FAR, "wrong")
        c.delete_tenant("gone")
        assert learning(server, gone) is None
    store = server.core.scalar
    store.delete_ids([ids[2]])  # eviction and expiry delete through delete_ids
    assert learning(server, ids[2]) is None


@pytest.mark.parametrize("scalar_store_uri", ["sqlite"], indirect=True)
def test_mc_feedback_over_the_redis_protocol(make_server: Start) -> None:
    server = make_server(resp_port=free_port())
    r = redis.Redis(port=server.service.resp_port, decode_responses=True, socket_timeout=30)
    chat = json.dumps([{"role": "user", "content": FAR}])
    entry = r.execute_command("MC.INSERT", "default", MODEL, json.dumps([{"role": "user", "content": OWN}]), ANSWER)
    action = r.execute_command("MC.FEEDBACK", "default", MODEL, entry, "WRONG", chat, "ANSWER", "Settings.")
    assert "no longer serves" in action
    with pytest.raises(redis.ResponseError, match="verdict"):
        r.execute_command("MC.FEEDBACK", "default", MODEL, entry, "MAYBE", chat)
    reply = r.execute_command("MC.QUERY", "default", MODEL, chat)
    got = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2]))
    assert got["answer"] == "Settings." and "verify_entry_id" not in got  # only on a verification miss
    other = r.execute_command("MC.INSERT", "default", MODEL, json.dumps([{"role": "user", "content": "Hi?"}]), "Hello")
    r.execute_command("MC.INSERT", "default", MODEL, json.dumps([{"role": "user", "content": "Hi there?"}]),
                      "Go away.", "VERIFIES", other)
    seen = learning(server, other)
    assert seen is not None and seen.observations[0][1] is True
    r.close()


def test_feedback_and_verifications_are_counted_and_logged(server: ThreadServer) -> None:
    with server.client() as c:
        entry = c.insert("default", MODEL, OWN, ANSWER)
        c.feedback("default", MODEL, entry, FAR, "wrong")
        c.query("default", MODEL, OWN)
        stats = c.stats("default", MODEL)
    assert stats[0]["queries"] == 1  # feedback rows in the query log are not queries
    text = server.core.metrics.render().decode()
    assert 'modelcache_feedback_total{tenant="default",verdict="wrong"} 1.0' in text
    rows = server.core.scalar.query_log_since("default", MODEL, 0)
    assert ("m1", "feedback:wrong") in {(m, k) for m, k, _ in rows}


@pytest.mark.parametrize("scalar_store_uri", ["sqlite"], indirect=True)
def test_the_async_client_reports_and_verifies(server: ThreadServer) -> None:
    import asyncio

    from modelcache_svc.client import AsyncCacheClient

    async def go() -> tuple[str, str, str]:
        async with AsyncCacheClient(server.target) as c:
            await c.create_tenant("av", verify_rate=1.0)
            entry = await c.insert("av", MODEL, OWN, ANSWER)
            miss = await c.query("av", MODEL, FAR)
            await c.insert("av", MODEL, FAR, ANSWER, verifies=miss.verify_entry_id)
            return entry, miss.verify_entry_id, await c.feedback("av", MODEL, entry, NEAR, "correct")

    entry, verified, action = asyncio.run(go())
    assert verified == entry and "recorded CORRECT" in action
    seen = learning(server, entry)
    assert seen is not None and [w for _, w in seen.observations] == [False, False]  # verified agree + CORRECT
