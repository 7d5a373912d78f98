"""Recent question vectors: (embedding model, normalised question) -> the model's vector.

A paraphrase asked again is a repeated question for the model: its vector is
a pure function of the model and the text, so it is remembered instead of
computed again, and the query costs a search and a read. Only vectors live
here, never hits: what is served is still decided by the vector search and
the live scalar row, so a removed, cleared, expired or evicted entry is never
served from here. Bounded (least recently used dropped first); all calls run
on the event loop thread (no lock).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

# Questions longer than this are not remembered: rarely repeated, and the key itself would cost memory.
MAX_CHARS = 4_096


class VectorMemo:
    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def get(self, model_id: str, question: str) -> np.ndarray | None:
        key = (model_id, question)
        found = self._vectors.get(key)
        if found is not None:
            self._vectors.move_to_end(key)
        return found

    def put(self, model_id: str, question: str, vector: np.ndarray) -> None:
        if not self.size or len(question) > MAX_CHARS:
            return
        frozen = np.array(vector, dtype=np.float32, copy=True)
        frozen.setflags(write=False)  # shared by every later caller: nobody may change it
        key = (model_id, question)
        self._vectors[key] = frozen
        self._vectors.move_to_end(key)
        while len(self._vectors) > self.size:
            self._vectors.popitem(last=False)

    def __len__(self) -> int:
        return len(self._vectors)
