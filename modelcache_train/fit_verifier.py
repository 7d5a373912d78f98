"""Fit where the verifier decides: the band of similarities and its cut-off, on held-out training pairs.

For each held-out pair (kept out of the verifier's training, tools/train_verifier.py; never shared/eval) the
served embedding model gives the similarity on the common threshold scale, and the cross-encoder its logit.
A logistic fit over the two (``combine``) gives the probability the service uses (verifier/model.py,
VerifierOptions): the cross-encoder and the cosine err on different pairs. A candidate is then accepted when its similarity is at least ``band_high`` (the cosine alone), or when it lies
in ``[band_low, band_high)`` and the probability is at least ``cutoff``. The three are chosen on a grid for the
best F-beta (beta 0.5 by default: a wrong answer costs a cache more than a miss), a narrower band winning ties
(fewer verifier calls). Written to the verifier folder's ``verifier.json`` with the figures it was chosen by.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .data import Pair, read_pairs


def scores(verifier_folder: Path, embedding_model: str, pairs: list[Pair], quiet: bool) -> tuple[Any, Any]:
    from tqdm import tqdm

    from modelcache_svc.embedding import load_embedder
    from modelcache_svc.embedding.models import model_cache_root
    from modelcache_svc.verifier.model import Verifier

    embedder = load_embedder("onnx", embedding_model)
    scale = float(getattr(embedder, "similarity_scale", 1.0))
    verifier = Verifier(verifier_folder.name, verifier_folder, model_cache_root() / "verifiers", threads=0)
    sims: list[float] = []
    logits: list[float] = []
    step = 32
    for start in tqdm(range(0, len(pairs), step), desc="fit verifier", disable=quiet or not sys.stderr.isatty()):
        chunk = pairs[start:start + step]
        a = embedder.encode([p.a for p in chunk])
        b = embedder.encode([p.b for p in chunk])
        cos = np.sum(a * b, axis=1)
        sims.extend((1.0 - (1.0 - cos) * scale).tolist())
        logits.extend(verifier.logits([p.b for p in chunk], [p.a for p in chunk]))
    return np.array(sims), np.array(logits)


def cache_samples(verifier_folder: Path, embedding_model: str, pairs: list[Pair], quiet: bool,
                  language: str = "", top_k: int = 5) -> tuple[Any, Any, Any, float]:
    """Cache mode on held-out pairs, eval's protocol: every ``a`` cached, every ``b`` asked of all of them. Per
    ``b``: the similarity of its nearest ``a`` that the precision guard lets through (cache/matching.guard_veto
    over the ``top_k`` nearest, in ``language``, as the service reads them before its verifier), the verifier's
    logit on the two, and whether serving it is right (its own ``a`` on a label-1 row); and the count of label-1
    rows (what recall is out of). The wrong hits a cache serves come from other rows' entries, which pairs alone
    never show; a ``b`` with no candidate left gets similarity -1 (never served)."""
    from tqdm import tqdm

    from modelcache_svc.cache.matching import guard_veto
    from modelcache_svc.embedding import load_embedder
    from modelcache_svc.embedding.models import model_cache_root
    from modelcache_svc.verifier.model import Verifier

    embedder = load_embedder("onnx", embedding_model)
    scale = float(getattr(embedder, "similarity_scale", 1.0))
    verifier = Verifier(verifier_folder.name, verifier_folder, model_cache_root() / "verifiers", threads=0)
    cached = sorted({p.a for p in pairs})
    encode = lambda texts: np.concatenate([embedder.encode(texts[i:i + 64]) for i in range(0, len(texts), 64)])
    a_vectors, b_vectors = encode(cached), encode([p.b for p in pairs])
    cosines = b_vectors @ a_vectors.T
    ranked = np.argsort(-cosines, axis=1)[:, :top_k]
    nearest = np.zeros(len(pairs), dtype=int)
    sims = np.full(len(pairs), -1.0)
    for i, pair in enumerate(pairs):
        passed = [j for j in ranked[i] if guard_veto(pair.b, cached[j], language) is None]
        if passed:
            nearest[i] = passed[0]
            sims[i] = 1.0 - (1.0 - cosines[i, passed[0]]) * scale
    labels = np.array([float(p.label == 1 and cached[j] == p.a and sims[i] > -1.0)
                       for i, (p, j) in enumerate(zip(pairs, nearest))])
    logits: list[float] = []
    for start in tqdm(range(0, len(pairs), 32), desc="fit verifier (cache)", disable=quiet or not sys.stderr.isatty()):
        chunk = range(start, min(start + 32, len(pairs)))
        logits.extend(verifier.logits([pairs[i].b for i in chunk], [cached[nearest[i]] for i in chunk]))
    return sims, np.array(logits), labels, float(sum(p.label == 1 for p in pairs))


def logistic(features: Any, labels: Any, iterations: int = 50) -> Any:
    """Weights (w..., bias) of a logistic regression by Newton's method, with a small ridge for stability."""
    x = np.c_[features, np.ones(len(features))]
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -60, 60)))
        gradient = x.T @ (p - labels) + 1e-3 * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-3 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return w


def f_beta(tp: float, fp: float, fn: float, beta: float) -> float:
    b2 = beta * beta
    denominator = (1 + b2) * tp + b2 * fn + fp
    return (1 + b2) * tp / denominator if denominator else 0.0


def choose(sims: Any, probs: Any, labels: Any, beta: float, positives: float | None = None,
           min_precision: float | None = None) -> dict[str, float]:
    """The band and cut-off of the best F-beta; with ``min_precision``, of the most recall at that precision
    or more (F-beta among them when none reaches it). A narrower band wins ties."""
    positives = float(labels.sum()) if positives is None else positives
    best: tuple[float, float, float, float, float] | None = None
    best_key: tuple[float, float, float] | None = None
    for low in np.arange(0.40, 0.86, 0.02):
        for high in np.arange(0.80, 1.011, 0.01):
            if high <= low:
                continue
            sure = sims >= high
            band = (sims >= low) & ~sure
            for cutoff in np.arange(0.05, 0.96, 0.025):
                accept = sure | (band & (probs >= cutoff))
                tp = float((accept & (labels == 1)).sum())
                fp = float(accept.sum()) - tp
                score = f_beta(tp, fp, positives - tp, beta)
                key = (0.0, round(score, 4), -(high - low))
                if min_precision is not None and tp and tp / (tp + fp) >= min_precision:
                    key = (1.0, round(tp / positives, 4), -(high - low))
                if best_key is None or key > best_key:
                    best_key = key
                    best = (score, float(low), float(high), float(cutoff), float(band.mean()))
    assert best is not None
    score, low, high, cutoff, share = best
    return {"band_low": round(low, 3), "band_high": round(high, 3), "cutoff": round(cutoff, 3),
            "f_beta": round(score, 4), "share_in_band": round(share, 4)}


def summary(sims: Any, probs: Any, labels: Any, chosen: dict[str, float], threshold: float) -> dict[str, Any]:
    def pr(accept: Any) -> dict[str, float]:
        tp = float((accept & (labels == 1)).sum())
        n = float(accept.sum())
        return {"precision": round(tp / n, 4) if n else 0.0, "recall": round(tp / float(labels.sum()), 4),
                "f1": round(f_beta(tp, n - tp, float(labels.sum()) - tp, 1.0), 4)}

    sure = sims >= chosen["band_high"]
    band = (sims >= chosen["band_low"]) & ~sure
    return {
        f"cosine alone at {threshold}": pr(sims >= threshold),
        "with the verifier": pr(sure | (band & (probs >= chosen["cutoff"]))),
        "combined probability alone at 0.5": pr(probs >= 0.5),
    }


def fit(verifier_folder: Path, embedding_model: str, pairs: list[Pair], *, beta: float = 0.5,
        threshold: float = 0.80, protocol: str = "pairs", language: str = "", min_precision: float | None = None,
        quiet: bool = False) -> dict[str, Any]:
    """``protocol``: the band and cut-off chosen on the pairs themselves ("pairs"), or on cache mode over
    them ("cache", cache_samples, the guard's rules in ``language``); the combination of logit and similarity
    is fitted on the pairs either way."""
    sims, logits = scores(verifier_folder, embedding_model, pairs, quiet)
    labels = np.array([int(p.label) for p in pairs])
    w_logit, w_similarity, bias = logistic(np.c_[logits, sims], labels)

    def combined(logits: Any, sims: Any) -> Any:
        return 1.0 / (1.0 + np.exp(-np.clip(w_logit * logits + w_similarity * sims + bias, -60, 60)))

    probs = combined(logits, sims)
    if protocol == "cache":
        c_sims, c_logits, c_labels, positives = cache_samples(verifier_folder, embedding_model, pairs, quiet,
                                                                 language)
        chosen = choose(c_sims, combined(c_logits, c_sims), c_labels, beta, positives, min_precision)
    elif protocol == "pairs":
        chosen = choose(sims, probs, labels, beta, min_precision=min_precision)
    else:
        raise SystemExit(f"protocol {protocol!r}: pairs or cache")
    record = {
        **chosen,
        "combine": {"w_logit": round(float(w_logit), 5), "w_similarity": round(float(w_similarity), 5),
                    "bias": round(float(bias), 5)},
        "beta": beta,
        **({"min_precision": min_precision} if min_precision is not None else {}),
        "embedding_model": embedding_model,
        "fitted_on_pairs": len(pairs),
        "protocol": protocol,
        **({"guard_language": language or "en"} if protocol == "cache" else {}),
        "held_out": summary(sims, probs, labels, chosen, threshold),
    }
    (verifier_folder / "verifier.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="fit a verifier's band and cut-off on held-out training pairs")
    p.add_argument("folder", type=Path)
    p.add_argument("--embedding-model", required=True)
    p.add_argument("--pairs", type=Path, default=None, help="default: the folder's held_out.jsonl")
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--protocol", choices=["pairs", "cache"], default="pairs")
    p.add_argument("--min-precision", type=float, default=None,
                   help="choose the most recall at this precision or more (default: the best F-beta)")
    p.add_argument("--language", default="", help="--protocol cache: the guard's rules for this language "
                   "(zh, ja, ...; default English)")
    p.add_argument("--only", type=Path, default=None, help="fit on the pairs that are also in this file")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    pairs = read_pairs(args.pairs or args.folder / "held_out.jsonl")
    if args.only is not None:
        keep = {(p.a, p.b) for p in read_pairs(args.only)}
        pairs = [p for p in pairs if (p.a, p.b) in keep]
    record = fit(args.folder, args.embedding_model, pairs, beta=args.beta, protocol=args.protocol,
                 language=args.language, min_precision=args.min_precision, quiet=args.json)
    print(json.dumps(record, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
