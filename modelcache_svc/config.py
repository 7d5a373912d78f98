"""One typed Settings object. The environment is read only by ``Settings.load``,
which the command line calls at its entry point; everything else receives a
Settings and never looks at os.environ. Each field's default and help are
written once, here: the serve flags (cli.py) show both from the field."""

from __future__ import annotations

import dataclasses
import functools
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
# Every other language: the CJK model and its verifier are multilingual-e5-small underneath (docs/hit-quality.md,
# "Fourth round", has the models measured for it).
DEFAULT_MULTILINGUAL_MODEL = DEFAULT_CJK_MODEL
# Its cosine 0.81 reads as the common 0.80 for those languages: fitted in cache mode on the odd rows of
# tests/data/multilingual.jsonl for F0.5 (docs/hit-quality.md, "Fourth round"); LCQMC's 1.71 made recall 0.40.
DEFAULT_MULTILINGUAL_SCALE = 1.0526
# No verifier for them by default: the Chinese one, read on Spanish or Russian, cut recall on
# tests/data/multilingual.jsonl from 0.71 to 0.46 (its band was fitted on LCQMC); the guard does the work.
DEFAULT_MULTILINGUAL_VERIFIER = "off"
EMBEDDING_BACKENDS = ("onnx", "onnx-int8", "torch", "text2vec")
MILVUS_INDEX_TYPES = ("HNSW", "IVF_FLAT", "IVF_SQ8", "FLAT")


def setting(default: Any, help: str, *, flag: bool = True, choices: tuple[str, ...] = ()) -> Any:
    """A Settings field: its default, written here once, and the help the serve flag and docs show beside it
    (``flag=False``: set through MODELCACHE_<NAME> only, deliberately no serve flag)."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


@dataclass(frozen=True)
class Settings:
    # --- Network: where the service listens and who may reach it
    host: str = setting("127.0.0.1", "address to listen on")
    grpc_port: int = setting(50051, "gRPC port (0 = any free port)")
    http_port: int = setting(8080, "metrics and health port (0 = off)")
    resp_port: int = setting(6390, "Redis-protocol port (0 = off; never 6379, Redis's own)")
    admin_key: str = setting("", 'turns authentication on; the key that reaches everything ("" = off, '
                             "loopback only)")
    modelcache_compat_tenant: str = setting("default", "tenant served by POST /modelcache (ModelCache's API)")
    http_tls_cert: str = setting("", 'a PEM certificate: the HTTP port (and the console\'s own listener) speak '
                                 'HTTPS ("" = plain HTTP)')
    http_tls_key: str = setting("", "the PEM private key of --http-tls-cert")
    http_idle_timeout_s: float = setting(30.0, "seconds an HTTP connection may sit without a whole request "
                                         "(head or body) before it is closed", flag=False)

    # --- Console (console/, docs/operations.md "The console"): pages under /console on the HTTP port
    console: bool = setting(True, "serve the web console under /console; only ever with --admin-key set "
                            "(off = never)")
    console_port: int = setting(0, "a listener of its own for the console, which the HTTP port then does not "
                                "serve (0 = the console is on the HTTP port)")
    console_host: str = setting("", 'address of the console\'s own listener ("" = --host)')
    console_secure_cookie: bool = setting(False, "mark the console's session cookie Secure over plain HTTP too "
                                          "(a TLS proxy in front); over HTTPS it always is")
    console_session_ttl_s: float = setting(8 * 3600.0, "seconds a console sign-in lasts", flag=False)
    console_traffic_rows: int = setting(5_000, "recent queries (with their texts) the console shows, kept in "
                                        "this process's memory (0 = none)", flag=False)

    # --- Stores: where entries live and how the service talks to them
    data_dir: Path = setting(Path("./data"), "home of the embedded stores")
    vector_uri: str = setting("", 'a path = Milvus Lite file, http://host:port = Milvus server, memory:// = '
                              'this process\'s memory; "" = Milvus Lite at <data-dir>/milvus.db')
    scalar_uri: str = setting("", 'sqlite:///path, mysql://user:pass@host:port/db or memory://; "" = SQLite '
                              'at <data-dir>/modelcache.db')
    namespace: str = setting("", "prefix of every table and collection (dev/staging/prod)")
    store_timeout_s: float = setting(5.0, "seconds a store call may take", flag=False)
    store_threads: int = setting(8, "threads that run store calls", flag=False)
    repair_on_start: bool = setting(True, "a background pass that re-adds vectors lost to a crash", flag=False)
    fail_open: bool = setting(True, "a store failure makes Query answer a miss (counted) instead of "
                              "UNAVAILABLE", flag=False)
    default_tenant: str = setting("default", 'a tenant made at start if missing ("" = none)', flag=False)
    query_log_sample_rate: float = setting(1.0, "share of queries written to the query log (0 = off)",
                                           flag=False)
    query_log_retention_s: float = setting(7 * 24 * 3600.0, "seconds the query log is kept", flag=False)
    query_log_max_queue: int = setting(10_000, "query log rows waiting to be written at most", flag=False)

    # --- Embedding: the models that turn questions into vectors
    embedding_backend: str = setting("onnx", " | ".join(EMBEDDING_BACKENDS), choices=EMBEDDING_BACKENDS)
    model_cache_dir: str = setting("", 'where exported ONNX models are kept; "" = ~/.cache/modelcache_svc/onnx',
                                   flag=False)
    embedding_model: str = setting(DEFAULT_MODEL, "packaged:minilm-cache-en, packaged:all-MiniLM-L6-v2 or a "
                                   "local model folder")
    embedding_model_cjk: str = setting(DEFAULT_CJK_MODEL, "model for questions with CJK characters in tenants "
                                       "on the default model (off = one model for all)")
    embedding_model_multilingual: str = setting(DEFAULT_MULTILINGUAL_MODEL, "model for questions in languages "
                                                "other than English and CJK in tenants on the default model "
                                                "(off = the default model)")
    multilingual_similarity_scale: float = setting(
        DEFAULT_MULTILINGUAL_SCALE, "similarity scale of the multilingual route when it shares the CJK model "
        "(0 = that model's own)", flag=False)
    embedding_max_batch: int = setting(32, "questions embedded in one batch at most", flag=False)
    embedding_max_wait_ms: float = setting(2.0, "how long a batch waits for more questions", flag=False)
    embedding_threads: int = setting(0, "embedding threads (0 = the backend's default)", flag=False)
    embedding_spin: bool = setting(True, "onnx: intra-op threads spin between operators within a run, parked "
                                   "after it", flag=False)
    question_vector_cache_size: int = setting(10_000, "recent question vectors remembered per model: a "
                                              "repeated paraphrase skips the model (0 = off)")

    # --- Verifier (verifier/): a cross-encoder over candidates in its uncertain band
    verifier: str = setting(DEFAULT_VERIFIER, "cross-encoder over uncertain candidates: packaged:<name>, a "
                            "trained folder, or off")
    verifier_cjk: str = setting(DEFAULT_CJK_VERIFIER, "verifier for questions with CJK characters (off = none)")
    verifier_multilingual: str = setting(DEFAULT_MULTILINGUAL_VERIFIER, "verifier for questions in languages "
                                         "other than English and CJK (off = none)")
    verifier_threads: int = setting(1, "threads of each verifier run", flag=False)

    # --- Matching: which candidate, if any, a query is served
    similarity_threshold: float = setting(DEFAULT_SIMILARITY_THRESHOLD, "default cosine threshold for a "
                                          "semantic hit")
    precision_guard: bool = setting(True, "veto candidates whose numbers, programming languages or "
                                    "negation differ from the question's", flag=False)
    # 0.15 measured best on shared/eval (docs/hit-quality.md, "The rerank").
    rerank_lexical_weight: float = setting(0.15, "candidates above the threshold ranked by cosine + this x "
                                           "word-pair overlap (0 = off)")
    # 0.75: above every other-task instruction pair of tests/data/long_prompts_{reworded_en,zh}.jsonl (highest
    # 0.56 English, 0.71 Chinese), taking 10 and 17 of their 32 reworded ones (docs/hit-quality.md, "Fourth round")
    long_prompt_instruction_threshold: float = setting(
        0.75, "a long prompt's instruction (cache/window.py) must be this alike to the candidate's (the common "
        "similarity scale)", flag=False)
    top_k: int = setting(5, "candidates read from the vector store per query", flag=False)
    exact_cache_size: int = setting(10_000, "chats remembered for exact hits", flag=False)

    # --- Feedback: learning from feedback (cache/feedback.py, docs/hit-quality.md "Learning from feedback")
    feedback_keep_per_entry: int = setting(64, "feedback observations kept per entry, newest first")
    feedback_floor_margin: float = setting(0.001, "a WRONG at s stops the entry serving at s + this and below",
                                           flag=False)
    verify_answer_similarity: float = setting(0.9, "a verification write-back agrees with the entry at this "
                                              "cosine of the answers")
    verify_pending_ttl_s: float = setting(3600.0, "how long a verification miss waits for its write-back",
                                          flag=False)
    feedback_pool_ttl_s: float = setting(5.0, "a tenant's pooled evidence is re-read at most this often per "
                                         "replica", flag=False)
    learned_min_similarity: float = setting(0.70, "with max_error_rate: learned evidence may serve down to "
                                            "this", flag=False)

    # --- Limits: what one tenant and one request may take
    max_concurrent_per_tenant: int = setting(256, "calls in flight per tenant; more -> RESOURCE_EXHAUSTED",
                                             flag=False)
    limits: Limits = field(default_factory=Limits)

    # --- Scale (docs/performance.md, "Scale"): the embedded HNSW graph and a Milvus server's index
    approx_index_min_entries: int = setting(20_000, "embedded: rows of one scope and context past which an "
                                            "HNSW graph (built in the background) serves (0 = always exact)")
    approx_index_m: int = setting(32, "embedded HNSW graph degree")
    approx_index_ef_construction: int = setting(80, "embedded HNSW build breadth")
    approx_index_ef_search: int = setting(128, "embedded HNSW search breadth (of a graph of up to "
                                          "approx_index_ef_rows rows)")
    approx_index_ef_rows: int = setting(100_000, "embedded: past this many rows a graph searches with "
                                        "ef_search x sqrt(rows / this) (0 = ef_search at any size)")
    milvus_index_type: str = setting("HNSW", "Milvus server: " + ", ".join(MILVUS_INDEX_TYPES))
    milvus_index_params: str = setting('{"M": 16, "efConstruction": 200}', "Milvus server: index build "
                                       "parameters, JSON")
    milvus_search_params: str = setting('{"ef": 64}', "Milvus server: search parameters, JSON")

    # --- Operation
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING, ERROR")

    @property
    def resolved_vector_uri(self) -> str:
        return self.vector_uri or str(self.data_dir / "milvus.db")

    @property
    def resolved_scalar_uri(self) -> str:
        return self.scalar_uri or f"sqlite:///{self.data_dir / 'modelcache.db'}"

    @functools.cached_property
    def milvus_index_config(self) -> dict[str, Any]:
        """``milvus_index_params`` parsed (once; validate() refuses a value that is not a JSON object)."""
        return self.json_setting("milvus_index_params")

    @functools.cached_property
    def milvus_search_config(self) -> dict[str, Any]:
        """``milvus_search_params`` parsed."""
        return self.json_setting("milvus_search_params")

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

    @property
    def multilingual_model(self) -> str:
        """The model routing sends other languages to, "" for the default model; the CJK model under its
        multilingual scale is named ``<spec>#multilingual``."""
        spec = self._off(self.embedding_model_multilingual)
        if spec and spec == self.cjk_model and self.multilingual_similarity_scale > 0:
            return f"{spec}#multilingual"
        return spec

    @property
    def verifier_multilingual_model(self) -> str:
        return self._off(self.verifier_multilingual)

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
        if not 0.0 <= self.multilingual_similarity_scale <= 100.0:
            raise InvalidArgument("multilingual_similarity_scale must be in [0, 100] (0 = the model's own)")
        if not 0.0 < self.long_prompt_instruction_threshold <= 1.0:
            raise InvalidArgument("long_prompt_instruction_threshold must be in (0, 1]")
        if self.question_vector_cache_size < 0:
            raise InvalidArgument("question_vector_cache_size must be >= 0 (0 = off)")
        for name in ("grpc_port", "http_port", "resp_port", "console_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise InvalidArgument(f"{name} must be 0..65535")
        if self.console_port and self.console_port in (self.grpc_port, self.http_port, self.resp_port):
            raise InvalidArgument("console_port must differ from the gRPC, HTTP and Redis-protocol ports")
        if bool(self.http_tls_cert) != bool(self.http_tls_key):
            raise InvalidArgument("http_tls_cert and http_tls_key go together")
        if self.http_idle_timeout_s <= 0 or self.console_session_ttl_s <= 0 or self.console_traffic_rows < 0:
            raise InvalidArgument("http_idle_timeout_s and console_session_ttl_s must be positive, "
                                  "console_traffic_rows >= 0")
        if self.resp_port == 6379:
            raise InvalidArgument("resp_port 6379 belongs to Redis; choose another (default 6390)")
        if self.embedding_backend not in EMBEDDING_BACKENDS:
            raise InvalidArgument(f"embedding_backend must be one of {', '.join(EMBEDDING_BACKENDS)}")
        if self.top_k < 1 or self.top_k > self.limits.max_top_k:
            raise InvalidArgument(f"top_k must be 1..{self.limits.max_top_k}")
        if self.approx_index_min_entries < 0 or self.approx_index_m < 4 or self.approx_index_ef_search < 1 \
                or self.approx_index_ef_construction < 1 or self.approx_index_ef_rows < 0:
            raise InvalidArgument("approx_index_min_entries >= 0, approx_index_m >= 4, ef values >= 1, "
                                  "approx_index_ef_rows >= 0")
        if self.milvus_index_type not in MILVUS_INDEX_TYPES:
            raise InvalidArgument(f"milvus_index_type must be one of {', '.join(MILVUS_INDEX_TYPES)}")
        self.milvus_index_config, self.milvus_search_config  # parsed here, once
        try:
            check_tenant_name(self.modelcache_compat_tenant)
        except InvalidArgument as exc:
            raise InvalidArgument(f"modelcache_compat_tenant: {exc.message}") from exc


def setting_help(f: dataclasses.Field[Any]) -> str:
    """A field's help with its default, as ``serve --help`` shows it."""
    return f"{f.metadata['help']} (default {show_default(f.default)})"


def show_default(value: Any) -> str:
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"
    return '""' if value == "" else str(value)


def flag_fields() -> list[dataclasses.Field[Any]]:
    """The fields that are serve flags, in declaration order."""
    return [f for f in fields(Settings) if f.metadata.get("flag")]


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
