"""Hard negatives for the verifier, mined with the served bi-encoder from the training pairs themselves.

The wrong hits a cache serves are not the label-0 rows of a pair file: they are other rows' entries, the
nearest cached questions that pass the threshold and the precision guard (eval's cache mode,
fit_verifier.cache_samples). A verifier trained on the pairs alone never sees one. This module replays that
protocol over the *training* split (never the held-out pairs, never shared/eval): every ``a`` is cached, every
``b`` asks, and each ``b``'s nearest cached questions that the guard lets through, inside the verifier's band
(similarity on the common scale at least ``floor``), become label-0 pairs, unless the file itself makes the two
duplicates (a label-1 row, or a chain of them: duplicates of a duplicate), or they are one text after folding
case, punctuation and spaces (eval's own test of "the same question").

The mined pairs are a function of the pairs, the model and the settings; a run writes them to its folder and
reads them back on ``--resume``, so the batch order stays bit for bit the same even where a new export of the
model would embed a hair differently.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data import Pair

MINED_FILE = "mined_negatives.jsonl"


def mine(pairs: Sequence[Pair], embedding_model: str, *, per_question: int = 1, floor: float = 0.78,
         language: str = "", quiet: bool = False, embedder: Any = None) -> list[Pair]:
    """Label-0 pairs (a: the cached question, b: the asking one), at most ``per_question`` a ``b``, the most
    similar first, in a fixed order (the ``b`` texts sorted)."""
    import numpy as np
    from tqdm import tqdm

    from modelcache_svc.cache.keys import normalise_text
    from modelcache_svc.cache.matching import guard_veto

    if per_question <= 0:
        return []
    if embedder is None:
        from modelcache_svc.embedding import load_embedder

        embedder = load_embedder("onnx", embedding_model)
    scale = float(getattr(embedder, "similarity_scale", 1.0))
    cached = sorted({p.a for p in pairs})
    asking = sorted({p.b for p in pairs})
    cluster = _clusters(pairs)
    show = not quiet and sys.stderr.isatty()
    # Without a terminal (a --background run's train.log) a line per phase says where mining is.
    note = (lambda _: None) if quiet or show else (lambda m: print(f"mine: {m}", file=sys.stderr, flush=True))
    note(f"embedding {len(cached)} cached and {len(asking)} asking questions with {embedding_model}")

    def encode(texts: list[str], what: str) -> Any:
        out = []
        for start in tqdm(range(0, len(texts), 64), desc=f"mine: embed {what}", disable=not show):
            out.append(np.asarray(embedder.encode(texts[start:start + 64]), dtype=np.float32))
        return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)

    a_vectors, b_vectors = encode(cached, "cached"), encode(asking, "asking")
    note("embedded; finding each asking question's nearest cached ones")
    fold = lambda text: "".join(ch for ch in normalise_text(text).casefold() if ch.isalnum())
    keys = [fold(t) for t in cached]
    look = min(len(cached), per_question + 8)
    mined: list[Pair] = []
    for start in tqdm(range(0, len(asking), 512), desc="mine: nearest", disable=not show):
        cosines = b_vectors[start:start + 512] @ a_vectors.T
        top = np.argpartition(-cosines, look - 1, axis=1)[:, :look] if look < len(cached) else \
            np.tile(np.arange(len(cached)), (len(cosines), 1))
        for row, candidates in enumerate(top):
            question = asking[start + row]
            key = fold(question)
            taken = 0
            for j in sorted(candidates.tolist(), key=lambda j: (-cosines[row, j], j)):
                similarity = 1.0 - (1.0 - float(cosines[row, j])) * scale
                if similarity < floor:
                    break
                other = cached[j]
                if keys[j] == key or cluster(other) == cluster(question):
                    continue
                if guard_veto(question, other, language) is not None:
                    continue  # the service never asks the verifier about it
                mined.append(Pair(other, question, 0.0))
                taken += 1
                if taken == per_question:
                    break
    note(f"{len(mined)} label-0 pairs mined (similarity >= {floor}, at most {per_question} a question)")
    return mined


def _clusters(pairs: Sequence[Pair]) -> Any:
    """The duplicate cluster of a text (union-find over the label-1 rows): a text of no label-1 row is its own."""
    parent: dict[str, str] = {}

    def find(text: str) -> str:
        root = text
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(text, text) != root:
            parent[text], text = root, parent[text]
        return root

    for p in pairs:
        if p.label == 1:
            a, b = find(p.a), find(p.b)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return find
