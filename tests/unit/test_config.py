"""Settings.load: defaults, MODELCACHE_* variables, overrides, and clear errors for bad values."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from modelcache_svc.cli import build_parser, settings_from_args
from modelcache_svc.config import Settings, show_default
from modelcache_svc.errors import InvalidArgument


def test_rerank_weight_default_environment_and_override() -> None:
    assert Settings.load({}, {}).rerank_lexical_weight == 0.15
    assert Settings.load({}, {"MODELCACHE_RERANK_LEXICAL_WEIGHT": "0"}).rerank_lexical_weight == 0.0
    assert Settings.load({"rerank_lexical_weight": 0.3}, {"MODELCACHE_RERANK_LEXICAL_WEIGHT": "0"}) \
        .rerank_lexical_weight == 0.3


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MODELCACHE_RERANK_LEXICAL_WEIGHT": "-0.1"}, "rerank_lexical_weight must be in"),
        ({"MODELCACHE_RERANK_LEXICAL_WEIGHT": "2"}, "rerank_lexical_weight must be in"),
        ({"MODELCACHE_RERANK_LEXICAL_WEIGHT": "nan"}, "rerank_lexical_weight must be in"),
        ({"MODELCACHE_RERANK_LEXICAL_WEIGHT": "lots"}, "cannot read 'lots' as float"),
        ({"MODELCACHE_SIMILARITY_THRESHOLD": "0"}, "similarity_threshold must be in"),
        ({"MODELCACHE_EMBEDDING_SPIN": "maybe"}, "cannot read 'maybe' as bool"),
        ({"MODELCACHE_RESP_PORT": "6379"}, "belongs to Redis"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        Settings.load({}, environ)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="unknown setting 'rerank_weight'"):
        Settings.load({"rerank_weight": 0.1}, {})


# Each default is written once, on its Settings field; the serve flags show it from there.
NOT_FLAGS = {  # set through MODELCACHE_<NAME> only, deliberately
    "model_cache_dir", "embedding_max_batch", "embedding_max_wait_ms", "embedding_threads", "embedding_spin",
    "precision_guard", "verifier_threads", "top_k", "exact_cache_size", "store_timeout_s", "repair_on_start",
    "max_concurrent_per_tenant", "fail_open", "store_threads", "default_tenant", "query_log_sample_rate",
    "query_log_retention_s", "query_log_max_queue", "feedback_floor_margin", "verify_pending_ttl_s",
    "feedback_pool_ttl_s", "learned_min_similarity", "limits", "long_prompt_instruction_threshold", "multilingual_similarity_scale",
    "http_idle_timeout_s", "console_session_ttl_s", "console_traffic_rows",
}


def _serve_actions() -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["serve"]._actions if a.dest != "help"}


def test_every_setting_is_a_serve_flag_or_deliberately_not() -> None:
    actions = _serve_actions()
    names = {f.name for f in dataclasses.fields(Settings)}
    assert set(actions) | NOT_FLAGS == names
    assert not set(actions) & NOT_FLAGS
    assert not [f.name for f in dataclasses.fields(Settings) if f.name != "limits" and not f.metadata.get("help")]


def test_every_serve_flag_shows_the_settings_default() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    for dest, action in _serve_actions().items():
        default = defaults[dest]
        assert action.help and action.help.endswith(f"(default {show_default(default)})"), (dest, action.help)
        assert action.option_strings == ["--" + dest.replace("_", "-")]
        assert action.default is None  # not given = the environment, then the field's default
    assert _serve_actions()["similarity_threshold"].help.endswith("(default 0.8)")
    assert _serve_actions()["data_dir"].help.endswith("(default ./data)")


def test_serve_flags_override_the_environment() -> None:
    args = build_parser().parse_args(["serve", "--similarity-threshold", "0.9", "--grpc-port", "0",
                                      "--embedding-backend", "torch"])
    settings = settings_from_args(args, {"MODELCACHE_SIMILARITY_THRESHOLD": "0.7", "MODELCACHE_TOP_K": "3"})
    assert (settings.similarity_threshold, settings.grpc_port, settings.embedding_backend, settings.top_k) \
        == (0.9, 0, "torch", 3)
    assert settings_from_args(build_parser().parse_args(["serve"]), {}) == Settings.load({}, {})


def test_milvus_params_are_parsed_once_into_dicts() -> None:
    settings = Settings.load({}, {"MODELCACHE_MILVUS_SEARCH_PARAMS": '{"nprobe": 32}'})
    assert settings.milvus_index_config == {"M": 16, "efConstruction": 200}
    assert settings.milvus_search_config == {"nprobe": 32}
    assert settings.milvus_search_config is settings.milvus_search_config
    assert settings.replace(milvus_search_params='{"ef": 8}').milvus_search_config == {"ef": 8}
    with pytest.raises(InvalidArgument, match="milvus_index_params: not JSON"):
        Settings.load({"milvus_index_params": "{nope"}, {})
