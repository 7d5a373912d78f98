"""The core's behaviour through a real gRPC server, on SQLite and on MariaDB."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from modelcache_svc import errors
from modelcache_svc.client import Entry
from modelcache_svc.transport.proto import pb, pb_grpc
from tests.servers import ThreadServer

MODEL = "gpt-4o-2024.08"
Q = "How do I reverse a list in Python?"
PARAPHRASE = "How can I reverse a Python list?"
ANSWER = "Use my_list.reverse() or my_list[::-1]."


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_miss_insert_then_exact_and_semantic_hits(server: ThreadServer) -> None:
    with server.client() as c:
        assert c.query("default", MODEL, user(Q)).match == "miss"
        entry_id = c.insert("default", MODEL, user(Q), ANSWER)

        exact = c.query("default", MODEL, user(Q))
        assert (exact.hit, exact.match, exact.answer, exact.id) == (True, "exact", ANSWER, entry_id)
        assert exact.similarity == pytest.approx(1.0)

        # Whitespace and Unicode form do not change the exact key.
        assert c.query("default", MODEL, user("  How do I reverse a list   in Python?\n")).match == "exact"

        semantic = c.query("default", MODEL, user(PARAPHRASE))
        assert (semantic.hit, semantic.match, semantic.answer, semantic.id) == (True, "semantic", ANSWER, entry_id)
        assert 0.8 <= semantic.similarity < 1.0
        assert semantic.matched_question == Q

        assert not c.query("default", MODEL, user("What is the boiling point of water at sea level?")).hit


def test_threshold_request_overrides_tenant_and_default(server: ThreadServer) -> None:
    with server.client() as c:
        c.insert("default", MODEL, user(Q), ANSWER)
        assert c.query("default", MODEL, user(PARAPHRASE)).hit
        assert not c.query("default", MODEL, user(PARAPHRASE), similarity_threshold=0.999).hit
        c.create_tenant("strict", similarity_threshold=0.999)
        c.insert("strict", MODEL, user(Q), ANSWER)
        assert not c.query("strict", MODEL, user(PARAPHRASE)).hit
        assert c.query("strict", MODEL, user(PARAPHRASE), similarity_threshold=0.5).hit
        with pytest.raises(errors.InvalidArgument):
            c.query("default", MODEL, user(Q), similarity_threshold=1.5)


def test_system_prompt_and_history_are_part_of_the_key(server: ThreadServer) -> None:
    pirate = [{"role": "system", "content": "You are a pirate."}, *user(Q)]
    formal = [{"role": "system", "content": "You are a formal assistant."}, *user(Q)]
    with server.client() as c:
        c.insert("default", MODEL, pirate, "Arr, ye call .reverse() on it!")
        assert not c.query("default", MODEL, user(Q)).hit
        assert not c.query("default", MODEL, formal).hit
        hit = c.query("default", MODEL, [{"role": "system", "content": "You are a pirate."}, *user(PARAPHRASE)])
        assert hit.match == "semantic" and hit.answer.startswith("Arr")

        python_chat = [*user("How do I sort a list in Python?"), {"role": "assistant", "content": "Use sorted()."}]
        java_chat = [*user("How do I sort a list in Java?"), {"role": "assistant", "content": "Use Collections.sort()."}]
        c.insert("default", MODEL, [*python_chat, *user("And in reverse order?")], "sorted(xs, reverse=True)")
        assert not c.query("default", MODEL, [*java_chat, *user("And in reverse order?")]).hit
        assert c.query("default", MODEL, [*python_chat, *user("And in reverse order?")]).match == "exact"
        assert c.query("default", MODEL, [*python_chat, *user("and in reverse order please?")]).match == "semantic"


# Two near-duplicate entries (from shared/eval/gptcache_mock_en); the query is a paraphrase of the second,
# which shares more of its word pairs, but embeds a little closer to the first (cosine 0.938 / 0.933).
NEAR_FIRST = "The `itercolumns` method is used to iterate over all columns in their numerical order."
NEAR_SECOND = "The `itercolumns` method iterates over all columns in their numerical order."
NEAR_QUERY = "The numerical order of all columns is traversed by the `itercolumns` method."


@pytest.mark.parametrize(("weight", "served"), [(0.15, NEAR_SECOND), (0.0, NEAR_FIRST)])
def test_rerank_serves_the_candidate_worded_most_alike(
    make_server: Callable[..., ThreadServer], weight: float, served: str
) -> None:
    server = make_server(rerank_lexical_weight=weight)
    with server.client() as c:
        c.insert("default", MODEL, user(NEAR_FIRST), "first")
        c.insert("default", MODEL, user(NEAR_SECOND), "second")
        first = c.query("default", MODEL, user(NEAR_QUERY), similarity_threshold=0.5, top_k=2)
        # The similarity reported is the served entry's cosine, reranked or not.
        assert first.matched_question == served and 0.92 < first.similarity < 0.95
        # Above the second's cosine only the first is eligible: the rerank never serves below the threshold.
        high = c.query("default", MODEL, user(NEAR_QUERY), similarity_threshold=0.936, top_k=2)
        assert high.matched_question == NEAR_FIRST


def test_tenants_and_models_never_share_entries(server: ThreadServer) -> None:
    with server.client() as c:
        c.create_tenant("acme")
        c.create_tenant("globex")
        c.insert("acme", MODEL, user(Q), "acme's answer")
        for tenant, model in (("globex", MODEL), ("acme", "other-model"), ("default", MODEL)):
            assert not c.query(tenant, model, user(Q)).hit
            assert not c.query(tenant, model, user(PARAPHRASE)).hit
        c.insert("globex", MODEL, user(Q), "globex's answer")
        assert c.query("acme", MODEL, user(PARAPHRASE)).answer == "acme's answer"
        assert c.query("globex", MODEL, user(PARAPHRASE)).answer == "globex's answer"


def test_insert_same_chat_replaces_answer_and_keeps_id(server: ThreadServer) -> None:
    with server.client() as c:
        first = c.insert("default", MODEL, user(Q), "old answer")
        second = c.insert("default", MODEL, user(Q), "new answer")
        assert first == second
        assert c.query("default", MODEL, user(Q)).answer == "new answer"
        assert c.get_tenant("default").entries == 1


def test_remove_deletes_exactly_the_ids_named(server: ThreadServer) -> None:
    questions = ["What is the capital of France?", "How tall is Mount Everest?", "Who wrote Hamlet?"]
    with server.client() as c:
        c.create_tenant("other")
        ids = c.insert_many("default", MODEL, [Entry(user(q), f"answer {i}") for i, q in enumerate(questions)])
        other_id = c.insert("other", MODEL, user(questions[0]), "other's answer")
        # An id of another tenant, named in this scope, is not touched.
        assert c.remove("default", MODEL, [ids[0], other_id]) == 1
        assert not c.query("default", MODEL, user(questions[0])).hit
        assert not c.query("default", MODEL, user("What's the capital city of France?")).hit
        assert c.query("default", MODEL, user(questions[1])).hit
        assert c.query("default", MODEL, user(questions[2])).hit
        assert c.query("other", MODEL, user(questions[0])).answer == "other's answer"
        assert c.remove("default", MODEL, [ids[0]]) == 0
        assert c.remove("default", "another-model", [ids[1]]) == 0
        assert c.query("default", MODEL, user(questions[1])).hit


def test_clear_scope_and_whole_tenant(server: ThreadServer) -> None:
    with server.client() as c:
        c.create_tenant("other")
        c.insert_many("default", "m1", [Entry(user(Q), "a1"), Entry(user("Who wrote Hamlet?"), "Shakespeare")])
        c.insert("default", "m2", user(Q), "a2")
        c.insert("other", "m1", user(Q), "other")
        assert c.clear("default", "m1") == 2
        assert not c.query("default", "m1", user(Q)).hit
        assert not c.query("default", "m1", user(PARAPHRASE)).hit
        assert c.query("default", "m2", user(Q)).answer == "a2"
        assert c.clear("default") == 1
        assert not c.query("default", "m2", user(PARAPHRASE)).hit
        assert c.query("other", "m1", user(Q)).answer == "other"
        # A cleared scope takes new entries again.
        c.insert("default", "m1", user(Q), "fresh")
        assert c.query("default", "m1", user(PARAPHRASE)).answer == "fresh"


def test_entries_survive_a_restart(make_server: Callable[..., ThreadServer]) -> None:
    first = make_server()
    with first.client() as c:
        entry_id = c.insert("default", MODEL, user(Q), ANSWER)
    first.stop()
    second = make_server()
    with second.client() as c:
        assert c.query("default", MODEL, user(Q)).id == entry_id
        assert c.query("default", MODEL, user(PARAPHRASE)).match == "semantic"


@pytest.mark.parametrize("scalar_store_uri", ["sqlite"], indirect=True)  # the stores are memory's here
def test_memory_stores_serve_until_the_server_stops(make_server: Callable[..., ThreadServer]) -> None:
    first = make_server(scalar_uri="memory://", vector_uri="memory://")
    with first.client() as c:
        entry_id = c.insert("default", MODEL, user(Q), ANSWER)
        assert c.query("default", MODEL, user(Q)).id == entry_id
        semantic = c.query("default", MODEL, user(PARAPHRASE))
        assert (semantic.match, semantic.id) == ("semantic", entry_id)
        assert c.remove("default", MODEL, [entry_id]) == 1
        assert not c.query("default", MODEL, user(PARAPHRASE)).hit
        c.insert("default", MODEL, user(Q), ANSWER)
    first.stop()
    assert not list(first.settings.data_dir.glob("*.db"))  # nothing written to disk
    second = make_server(scalar_uri="memory://", vector_uri="memory://")
    with second.client() as c:
        assert not c.query("default", MODEL, user(Q)).hit


def test_tenant_lifecycle(server: ThreadServer) -> None:
    with server.client() as c:
        assert [t.name for t in c.list_tenants()] == ["default"]
        t = c.create_tenant("acme", similarity_threshold=0.9, ttl_seconds=60, max_entries=10, eviction_policy="lfu")
        assert (t.similarity_threshold, t.ttl_seconds, t.max_entries, t.eviction_policy) == (
            pytest.approx(0.9), 60, 10, "lfu")
        with pytest.raises(errors.AlreadyExists):
            c.create_tenant("acme")
        updated = c.update_tenant("acme", ttl_seconds=120)
        assert (updated.ttl_seconds, updated.max_entries, updated.eviction_policy) == (120, 10, "lfu")
        c.insert("acme", MODEL, user(Q), ANSWER)
        assert c.get_tenant("acme").entries == 1
        assert c.delete_tenant("acme") == 1
        with pytest.raises(errors.NotFound):
            c.get_tenant("acme")
        with pytest.raises(errors.NotFound):
            c.query("acme", MODEL, user(Q))
        c.create_tenant("acme")
        assert not c.query("acme", MODEL, user(Q)).hit


@pytest.mark.parametrize(
    ("tenant", "messages", "code"),
    [
        ("default", [], grpc.StatusCode.INVALID_ARGUMENT),
        ("default", [("wizard", "hi")], grpc.StatusCode.INVALID_ARGUMENT),
        ("default", [("user", "")], grpc.StatusCode.INVALID_ARGUMENT),
        ("default", [("user", "hi"), ("assistant", "hello")], grpc.StatusCode.INVALID_ARGUMENT),
        ("default", [("user", "x" * 1_000_000)], grpc.StatusCode.INVALID_ARGUMENT),
        ("nobody", [("user", "hi")], grpc.StatusCode.NOT_FOUND),
        ("a' OR 1=1 --", [("user", "hi")], grpc.StatusCode.INVALID_ARGUMENT),
        ('x" || id > 0', [("user", "hi")], grpc.StatusCode.INVALID_ARGUMENT),
        ("", [("user", "hi")], grpc.StatusCode.INVALID_ARGUMENT),
        ("defаult", [("user", "hi")], grpc.StatusCode.INVALID_ARGUMENT),  # Cyrillic а
    ],
)
def test_bad_queries_get_clear_statuses(
    module_server: ThreadServer, tenant: str, messages: list[tuple[str, str]], code: grpc.StatusCode
) -> None:
    # One server for every case (module_server: nothing here writes), which each must leave serving.
    with grpc.insecure_channel(module_server.target) as channel:
        stub = pb_grpc.CacheServiceStub(channel)
        request = pb.QueryRequest(
            scope=pb.Scope(tenant=tenant, model=MODEL),
            messages=[pb.ChatMessage(role=r, content=t) for r, t in messages],
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.Query(request, timeout=30)
        assert info.value.code() == code
        assert info.value.details()
        # The server keeps serving.
        ok = stub.Query(pb.QueryRequest(scope=pb.Scope(tenant="default", model=MODEL),
                                        messages=[pb.ChatMessage(role="user", content="hi")]), timeout=30)
        assert ok.match == pb.MISS


def test_bad_inserts_and_hostile_names(server: ThreadServer) -> None:
    with server.client() as c:
        for bad_model in ("a' OR 1=1 --", 'x" || id > 0', "m\\x", "m;DROP TABLE entries", ""):
            with pytest.raises(errors.InvalidArgument):
                c.insert("default", bad_model, user(Q), ANSWER)
        for bad_name in ("a' OR 1=1 --", 'x" || id > 0', "ｄefault", "a" * 65):
            with pytest.raises(errors.InvalidArgument):
                c.create_tenant(bad_name)
        with pytest.raises(errors.InvalidArgument):
            c.insert("default", MODEL, user(Q), "")
        with pytest.raises(errors.InvalidArgument):
            c.remove("default", MODEL, ['" or id != "'])
        # Hostile text in questions, answers and metadata is stored and served verbatim.
        hostile = "'; DROP TABLE entries; -- \" || id > 0 \\ ｘ"
        entry_id = c.insert("default", MODEL, user(hostile), hostile, metadata={"k'\"": hostile})
        hit = c.query("default", MODEL, user(hostile))
        assert (hit.match, hit.answer, hit.id) == ("exact", hostile, entry_id)


def test_undecodable_request_is_invalid_argument(module_server: ThreadServer) -> None:
    # Field 2 (messages) holding a ChatMessage whose content is invalid UTF-8.
    bad_message = b"\x0a\x04user" + b"\x12\x02\xff\xfe"
    payload = b"\x0a\x09\x0a\x07default" + b"\x12" + bytes([len(bad_message)]) + bad_message
    with grpc.insecure_channel(module_server.target) as channel:
        call = channel.unary_unary("/modelcache.v1.CacheService/Query")
        with pytest.raises(grpc.RpcError) as info:
            call(payload, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_and_reflection(module_server: ThreadServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(module_server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service="modelcache.v1.CacheService"), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
        assert {"modelcache.v1.CacheService", "modelcache.v1.TenantService", "grpc.health.v1.Health"} <= names
