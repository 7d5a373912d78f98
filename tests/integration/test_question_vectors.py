"""Remembered question vectors through a real server: a repeated paraphrase skips the model,
and what was removed or cleared is still never served."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from modelcache_svc.client import Entry
from tests.servers import ThreadServer

MODEL = "m1"
Q = "How do I reverse a list in Python?"
PARAPHRASE = "How can I reverse a Python list?"
ANSWER = "Use my_list.reverse() or my_list[::-1]."


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def model_calls(server: ThreadServer) -> float:
    """Texts the embedding model was called with so far (the batch-size histogram's sum)."""
    for line in server.core.metrics.render().decode().splitlines():
        if line.startswith("modelcache_embedding_batch_size_sum"):
            return float(line.split()[-1])
    return 0.0


def test_a_repeated_paraphrase_skips_the_model(server: ThreadServer) -> None:
    with server.client() as c:
        c.insert("default", MODEL, user(Q), ANSWER)
        first = c.query("default", MODEL, user(PARAPHRASE))
        assert first.match == "semantic"
        before = model_calls(server)
        # Whitespace and Unicode form are normalised away before the vector is looked up.
        for text in (PARAPHRASE, "  How can I reverse a   Python list?\n"):
            again = c.query("default", MODEL, user(text))
            assert (again.match, again.id, again.similarity) == (first.match, first.id, first.similarity)
        assert model_calls(server) == before
        metrics = server.core.metrics.render().decode()
        assert 'modelcache_question_vector_memo_total{result="hit"} 2.0' in metrics


@pytest.mark.parametrize("how", ["remove", "clear"])
def test_a_removed_entry_is_never_served_to_a_remembered_paraphrase(server: ThreadServer, how: str) -> None:
    with server.client() as c:
        entry_id = c.insert("default", MODEL, user(Q), ANSWER)
        assert c.query("default", MODEL, user(PARAPHRASE)).id == entry_id  # the vector is now remembered
        if how == "remove":
            assert c.remove("default", MODEL, [entry_id]) == 1
        else:
            assert c.clear("default", MODEL) == 1
        assert c.query("default", MODEL, user(PARAPHRASE)).match == "miss"  # at once
        # A new answer for the same chat is served to the remembered paraphrase.
        new_id = c.insert("default", MODEL, user(Q), "reversed(my_list) for an iterator.")
        hit = c.query("default", MODEL, user(PARAPHRASE))
        assert (hit.match, hit.id, hit.answer) == ("semantic", new_id, "reversed(my_list) for an iterator.")


def test_a_write_back_after_a_miss_reuses_the_vector(server: ThreadServer) -> None:
    with server.client() as c:
        assert c.query("default", MODEL, user(Q)).match == "miss"
        before = model_calls(server)
        entries = [Entry(user(Q), ANSWER), Entry(user("What is the boiling point of water?"), "100 C")]
        c.insert_many("default", MODEL, entries)
        assert model_calls(server) == before + 1  # only the question never asked
        assert c.query("default", MODEL, user(PARAPHRASE)).answer == ANSWER


def test_off_with_size_zero(make_server: Callable[..., ThreadServer]) -> None:
    server = make_server(question_vector_cache_size=0)
    with server.client() as c:
        c.insert("default", MODEL, user(Q), ANSWER)
        assert c.query("default", MODEL, user(PARAPHRASE)).hit
        before = model_calls(server)
        assert c.query("default", MODEL, user(PARAPHRASE)).hit
        assert model_calls(server) == before + 1
    assert len(server.core.question_vectors) == 0
