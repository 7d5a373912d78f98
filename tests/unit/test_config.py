"""Settings.load: defaults, MODELCACHE_* variables, overrides, and clear errors for bad values."""

from __future__ import annotations

import pytest

from modelcache_svc.config import Settings
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
