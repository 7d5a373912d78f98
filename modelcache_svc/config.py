"""One typed Settings object. The environment is read only by ``Settings.load``,
which the command line calls at its entry point; everything else receives a
Settings and never looks at os.environ."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InvalidArgument
from .limits import Limits, check_tenant_name

ENV_PREFIX = "MODELCACHE_"
DEFAULT_MODEL = "packaged:minilm-cache-en"
DEFAULT_CJK_MODEL = "packaged:e5-cache-zh"
DEFAULT_SIMILARITY_THRESHOLD = 0.80
DEFAULT_VERIFIER = "packaged:verifier-en"
DEFAULT_CJK_VERIFIER = "packaged:verifier-zh"
EMBEDDING_BACKENDS = ("onnx", "onnx-int8", "torch", "text2vec")
MILVUS_INDEX_TYPES = ("HNSW", "IVF_FLAT", "IVF_SQ8", "FLAT")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_port: int = 8080
    resp_port: int = 6390
    vector_uri: str = ""  # "" = Milvus Lite at <data_dir>/milvus.db
    scalar_uri: str = ""  # "" = SQLite at <data_dir>/modelcache.db
    namespace: str = ""
    admin_key: str = ""
    embedding_backend: str = "onnx"  # onnx | onnx-int8 | torch | text2vec
    model_cache_dir: str = ""  # "" = ~/.cache/modelcache_svc/onnx (exported ONNX models)
    embedding_model: str = DEFAULT_MODEL
    # Questions with CJK characters, in tenants on the default model, go to this one ("" or "off" = no routing).
    embedding_model_cjk: str = DEFAULT_CJK_MODEL
    embedding_max_batch: int = 32
    embedding_max_wait_ms: float = 2.0
    embedding_threads: int = 0  # 0 = torch's default
    embedding_spin: bool = True  # onnx: intra-op threads spin between operators within a run, parked after it
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD
    precision_guard: bool = True
    # Candidates above the threshold are ranked by cosine + this weight x word-pair overlap (0 = cosine alone);
    # 0.15 measured best on shared/eval (docs/hit-quality.md, "The rerank").
    rerank_lexical_weight: float = 0.15
    # The verifier (verifier/): a cross-encoder over candidates in its uncertain band; "off" = none.
    verifier: str = DEFAULT_VERIFIER
    verifier_cjk: str = DEFAULT_CJK_VERIFIER  # for questions with CJK characters; "off" = none
    verifier_threads: int = 1
    top_k: int = 5
    exact_cache_size: int = 10_000
    # Recent question vectors remembered per embedding model (a repeated paraphrase skips the model); 0 = off.
    question_vector_cache_size: int = 10_000
    store_timeout_s: float = 5.0
    repair_on_start: bool = True  # a background pass that re-adds vectors lost to a crash
    max_concurrent_per_tenant: int = 256  # calls in flight per tenant; more -> RESOURCE_EXHAUSTED
    fail_open: bool = True  # a store failure makes Query answer a miss (counted) instead of UNAVAILABLE
    store_threads: int = 8
    default_tenant: str = "default"
    modelcache_compat_tenant: str = "default"  # the tenant POST /modelcache (ModelCache's API) serves
    query_log_sample_rate: float = 1.0  # share of queries written to the query log (0 = off)
    query_log_retention_s: float = 7 * 24 * 3600.0
    query_log_max_queue: int = 10_000
    log_level: str = "INFO"
    # Scale (docs/performance.md, "Scale"). Embedded: past this many rows of one (scope, context) an HNSW
    # graph (built in the background) serves that block, the exact scan below it; 0 = always exact.
    approx_index_min_entries: int = 20_000
    approx_index_m: int = 32
    approx_index_ef_construction: int = 80
    approx_index_ef_search: int = 128
    # Milvus server: the index of each collection and its search parameters (JSON objects).
    milvus_index_type: str = "HNSW"
    milvus_index_params: str = '{"M": 16, "efConstruction": 200}'
    milvus_search_params: str = '{"ef": 64}'
    # Learning from feedback (cache/feedback.py, docs/hit-quality.md "Learning from feedback").
    feedback_keep_per_entry: int = 64  # observations kept per entry, newest first
    feedback_floor_margin: float = 0.001  # a WRONG at s stops the entry serving at s + this and below
    verify_answer_similarity: float = 0.9  # a verification write-back agrees at this cosine of the two answers
    verify_pending_ttl_s: float = 3600.0  # how long a verification miss waits for its write-back
    feedback_pool_ttl_s: float = 5.0  # a tenant's pooled evidence is re-read at most this often per replica
    learned_min_similarity: float = 0.70  # with max_error_rate: learned evidence may serve down to this
    limits: Limits = field(default_factory=Limits)

    @property
    def resolved_vector_uri(self) -> str:
        return self.vector_uri or str(self.data_dir / "milvus.db")

    @property
    def resolved_scalar_uri(self) -> str:
        return self.scalar_uri or f"sqlite:///{self.data_dir / 'modelcache.db'}"

    def json_setting(self, name: str) -> dict[str, Any]:
        import json

        try:
            value = json.loads(getattr(self, name))
        except ValueError as exc:
            raise InvalidArgument(f"{name}: not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise InvalidArgument(f"{name}: a JSON object, e.g. {{\"ef\": 64}}")
        return value

    @classmethod
    def load(cls, overrides: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
        """Defaults, then MODELCACHE_<NAME> variables, then explicit overrides (None = not given)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "limits":
                continue
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, f.type, raw)
        for name, value in overrides.items():
            if value is not None:
                if name not in {f.name for f in fields(cls)}:
                    raise InvalidArgument(f"unknown setting {name!r}")
                values[name] = value
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        settings = cls(**values)
        settings.validate()
        return settings

    @property
    def cjk_model(self) -> str:
        """The CJK model routing uses, "" when routing is off (``--embedding-model-cjk off``)."""
        return "" if self.embedding_model_cjk.strip().lower() in ("", "off", "none") else self.embedding_model_cjk

    @staticmethod
    def _off(spec: str) -> str:
        return "" if spec.strip().lower() in ("", "off", "none") else spec

    @property
    def verifier_model(self) -> str:
        """The verifier spec, "" when off."""
        return self._off(self.verifier)

    @property
    def verifier_cjk_model(self) -> str:
        return self._off(self.verifier_cjk)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        if not 0.0 <= self.query_log_sample_rate <= 1.0:
            raise InvalidArgument("query_log_sample_rate must be in [0, 1]")
        if not 0.0 < self.similarity_threshold <= 1.0:
            raise InvalidArgument("similarity_threshold must be in (0, 1]")
        if not 1 <= self.feedback_keep_per_entry <= 10_000:
            raise InvalidArgument("feedback_keep_per_entry must be 1..10000")
        if not 0.0 <= self.feedback_floor_margin <= 0.1:
            raise InvalidArgument("feedback_floor_margin must be in [0, 0.1]")
        if not 0.0 < self.verify_answer_similarity <= 1.0 or not 0.0 < self.learned_min_similarity <= 1.0:
            raise InvalidArgument("verify_answer_similarity and learned_min_similarity must be in (0, 1]")
        if self.verify_pending_ttl_s <= 0 or self.feedback_pool_ttl_s < 0:
            raise InvalidArgument("verify_pending_ttl_s must be positive and feedback_pool_ttl_s not negative")
        if not 0.0 <= self.rerank_lexical_weight <= 1.0:
            raise InvalidArgument("rerank_lexical_weight must be in [0, 1]")
        if self.question_vector_cache_size < 0:
            raise InvalidArgument("question_vector_cache_size must be >= 0 (0 = off)")
        for name in ("grpc_port", "http_port", "resp_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise InvalidArgument(f"{name} must be 0..65535")
        if self.resp_port == 6379:
            raise InvalidArgument("resp_port 6379 belongs to Redis; choose another (default 6390)")
        if self.embedding_backend not in EMBEDDING_BACKENDS:
            raise InvalidArgument(f"embedding_backend must be one of {', '.join(EMBEDDING_BACKENDS)}")
        if self.top_k < 1 or self.top_k > self.limits.max_top_k:
            raise InvalidArgument(f"top_k must be 1..{self.limits.max_top_k}")
        if self.approx_index_min_entries < 0 or self.approx_index_m < 4 or self.approx_index_ef_search < 1 \
                or self.approx_index_ef_construction < 1:
            raise InvalidArgument("approx_index_min_entries >= 0, approx_index_m >= 4, ef values >= 1")
        if self.milvus_index_type not in MILVUS_INDEX_TYPES:
            raise InvalidArgument(f"milvus_index_type must be one of {', '.join(MILVUS_INDEX_TYPES)}")
        self.json_setting("milvus_index_params")
        self.json_setting("milvus_search_params")
        try:
            check_tenant_name(self.modelcache_compat_tenant)
        except InvalidArgument as exc:
            raise InvalidArgument(f"modelcache_compat_tenant: {exc.message}") from exc


def _coerce(name: str, typ: Any, raw: str) -> Any:
    t = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
        if t == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if t == "Path":
            return Path(raw)
    except ValueError as exc:
        raise InvalidArgument(f"{ENV_PREFIX}{name.upper()}: cannot read {raw!r} as {t}") from exc
    return raw
