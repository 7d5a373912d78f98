"""Long prompts through a real server: what the embedding model never reads must still match.

The documents of tools/long_prompts.py run past the 256-token window of the packaged models, so a
document followed by two different instructions embeds to (nearly) one vector; the server keys such
prompts on the text past the window (cache/window.py)."""

from __future__ import annotations

import numpy as np
import pytest

from modelcache_svc.embedding import EmbeddingBatcher, load_embedder
from modelcache_svc.tools import long_prompts
from tests.servers import ROOT, ThreadServer

MODEL = "gpt-4o"
DOC = long_prompts.documents()[0]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def tuned() -> EmbeddingBatcher:
    return EmbeddingBatcher(load_embedder("onnx", "packaged:minilm-cache-en"))


def test_the_model_cannot_tell_the_instructions_apart(tuned: EmbeddingBatcher) -> None:
    """Why the window matters: without the key on the tail, these would share an answer."""
    a, b = long_prompts.prompt(DOC, 0), long_prompts.prompt(DOC, 1)
    vectors = tuned.embedder.encode([a, b])
    assert float(np.dot(vectors[0], vectors[1])) > 0.999
    assert tuned.tail_past_window(a).endswith(long_prompts.INSTRUCTIONS[0])
    assert tuned.tail_past_window(b).endswith(long_prompts.INSTRUCTIONS[1])
    assert tuned.tail_past_window("How do I reverse a list in Python?") == ""


def test_tail_is_what_the_model_drops(tuned: EmbeddingBatcher) -> None:
    """The head (the text minus its tail) embeds as the whole text does: the tail is exactly what is cut."""
    text = long_prompts.prompt(DOC, 3)
    tail = tuned.tail_past_window(text)
    head = text[: len(text) - len(tail)].rstrip()
    assert tail and len(head) < len(text)
    whole, cut = tuned.embedder.encode([text, head])
    assert float(np.dot(whole, cut)) > 0.9999


def test_instructions_past_the_window_never_share_an_answer(make_server) -> None:  # type: ignore[no-untyped-def]
    server: ThreadServer = make_server(verifier="off")  # the cosine alone: the key must do it
    with server.client() as c:
        summary = long_prompts.prompt(DOC, 0)
        entry = c.insert("default", MODEL, user(summary), "a summary")
        for other in range(1, len(long_prompts.INSTRUCTIONS)):
            got = c.query("default", MODEL, user(long_prompts.prompt(DOC, other)))
            assert not got.hit, long_prompts.INSTRUCTIONS[other]
        again = c.query("default", MODEL, user(summary))
        assert (again.hit, again.id, again.answer) == (True, entry, "a summary")
        # The same instruction over the document with one word of its first sentence changed: a semantic hit.
        edited = c.query("default", MODEL, user(long_prompts.prompt(DOC, 0, edited=True)))
        assert (edited.hit, edited.match, edited.id) == (True, "semantic", entry)


def test_short_prompts_are_keyed_as_before(make_server) -> None:  # type: ignore[no-untyped-def]
    server: ThreadServer = make_server(verifier="off")
    with server.client() as c:
        entry = c.insert("default", MODEL, user("How do I reverse a list in Python?"), "reversed()")
        got = c.query("default", MODEL, user("How can I reverse a Python list?"))
        assert (got.hit, got.match, got.id) == (True, "semantic", entry)


def test_the_committed_pairs_are_the_generators() -> None:
    import json

    rows = [json.loads(line) for line in (ROOT / "tests/data/long_prompts_en.jsonl").read_text().splitlines()]
    assert rows == long_prompts.pairs()
    assert {r["label"] for r in rows} == {0, 1}


def _reworded(path: str) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in (ROOT / path).read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("scalar_store_uri", ["sqlite"], indirect=True)  # the match, not the store, is tested
@pytest.mark.parametrize("path", ["tests/data/long_prompts_reworded_en.jsonl", "tests/data/long_prompts_zh.jsonl"])
def test_a_reworded_instruction_hits_and_another_task_never(make_server, path: str) -> None:  # type: ignore[no-untyped-def]
    """One document: the instruction reworded is one task (cache/tasks.py), a different task or a changed
    document is not; each row in a scope of its own, so only the pair's own outcome counts."""
    server: ThreadServer = make_server()
    rows = _reworded(path)
    by_kind = {kind: [r for r in rows if r["kind"] == kind] for kind in ("reworded_instruction", "other_task",
                                                                          "changed_document")}
    outcomes: dict[str, list[bool]] = {}
    with server.client() as c:
        for kind, picked in by_kind.items():
            for i, row in enumerate(picked[:6]):
                model = f"{kind}-{i}"
                entry = c.insert("default", model, user(str(row["a"])), "answer")
                got = c.query("default", model, user(str(row["b"])))
                outcomes.setdefault(kind, []).append(got.hit and got.id == entry)
    assert not any(outcomes["other_task"]) and not any(outcomes["changed_document"])
    assert sum(outcomes["reworded_instruction"]) >= 4, outcomes  # 27 and 30 of 32 in cache mode (docs)
