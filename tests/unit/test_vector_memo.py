from __future__ import annotations

import numpy as np
import pytest

from modelcache_svc.cache.vector_memo import MAX_CHARS, VectorMemo


def test_bounded_least_recently_used_first_out() -> None:
    memo = VectorMemo(2)
    memo.put("m", "a", np.ones(3))
    memo.put("m", "b", np.zeros(3))
    assert memo.get("m", "a") is not None  # a is now the most recent
    memo.put("m", "c", np.ones(3))
    assert (memo.get("m", "a") is not None, memo.get("m", "b"), len(memo)) == (True, None, 2)


def test_per_model_and_read_only() -> None:
    memo = VectorMemo(10)
    memo.put("m1", "q", np.ones(3))
    assert memo.get("m2", "q") is None
    found = memo.get("m1", "q")
    assert found is not None and found.dtype == np.float32
    with pytest.raises(ValueError):
        found[0] = 5.0


def test_off_and_long_questions_not_kept() -> None:
    off = VectorMemo(0)
    off.put("m", "q", np.ones(3))
    assert not off.enabled and off.get("m", "q") is None
    memo = VectorMemo(10)
    memo.put("m", "x" * (MAX_CHARS + 1), np.ones(3))
    assert len(memo) == 0
