"""What a long prompt's instruction asks of its document: summary, key points, a title, a translation, a
quiz, a question about the content ... (cache/window.py splits the instruction off).

Two instructions worded apart ask one task more often than their cosine says: "Summarize the text above in
three bullet points" and "Give me a three-bullet summary of the text above" sit as far apart as a title and a
summary do (docs/hit-quality.md). So an instruction is read as the task of its nearest phrasing in a table
(instruction_tasks.json, English and Chinese), embedded once per model by the model that routes the prompt;
a question about the content ("According to the text above, who ...", "根据上文，...") is told by its shape
first, since questions about two different facts are one "task" to a nearest-neighbour reading, and so is a
translation (it names a human language: the models read "翻译成日语" as a summary).

``Lookup.same_task`` then holds: two questions, when they are alike as questions (the instruction
threshold); two other instructions, when they read as one task; the guard keeps the slots (a count, a target
language, a name). A question and a transformation never share an answer, nor two tasks worded alike.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from .matching import named_languages

QUESTION = "question"
TRANSLATE = "translate"

_EN_QUESTION = re.compile(
    r"^\s*(?:according to|based on|from|in|as per|going by|judging by)\b[^,:?]*\b(?:above|text|passage|article|"
    r"memo|document|report|email|story|essay)\b[^,:?]*[,:]?\s*(?:who|whom|whose|what|when|where|why|how|which|"
    r"is|are|was|were|does|do|did|can|could|should|will|would|has|have)\b", re.IGNORECASE)
# "根据上文，..." / "上文说 ..." asks about the content; "上面提到了哪些人？列个名单。" asks for a list (a task).
_ZH_QUESTION = re.compile(r"^\s*(?:(?:根据|按照|依据)(?:上文|上面|文中|上述|这篇|这段|本文)|(?:上文|文中|上面|上述)(?:说|认为|建议|讲|提到的|"
                          r"里说|中说))[^。！]*?(?:什么|谁|哪|多少|几|为什么|怎么|怎样|如何|是否|吗|呢|多久|多长|多大|多高)")


def is_question(instruction: str) -> bool:
    """A question about the document's content (not an instruction to transform it)."""
    return bool(_EN_QUESTION.search(instruction) or _ZH_QUESTION.search(instruction))


@cache
def phrasings() -> tuple[tuple[str, str], ...]:
    """(task, phrasing) of the table, every language."""
    table = json.loads(resources.files(__package__).joinpath("instruction_tasks.json").read_text("utf-8"))
    return tuple((task, text) for task, languages in table.items() if not task.startswith("_")
                 for texts in languages.values() for text in texts)


class TaskReader:
    """Reads instructions as tasks with a model's vectors of the table, embedded on first use per model."""

    def __init__(self) -> None:
        self._tables: dict[str, tuple[np.ndarray, tuple[str, ...]]] = {}

    async def table(self, embedder: Any) -> tuple[np.ndarray, tuple[str, ...]]:
        key = embedder.model_id
        if key not in self._tables:
            rows = phrasings()
            vectors = await embedder.embed_many([text for _, text in rows])
            self._tables[key] = (np.asarray(vectors, dtype=np.float32), tuple(task for task, _ in rows))
        return self._tables[key]

    async def tasks(self, embedder: Any, instructions: list[str], vectors: dict[str, Any]) -> dict[str, str]:
        """The task of each instruction (``vectors``: their embeddings, by text)."""
        matrix, names = await self.table(embedder)
        out: dict[str, str] = {}
        for text in instructions:
            if is_question(text):
                out[text] = QUESTION
                continue
            if named_languages(text):  # "... into French", "翻成日语", "in Spanish": the guard compares the two
                out[text] = TRANSLATE
                continue
            out[text] = names[int(np.argmax(matrix @ np.asarray(vectors[text], dtype=np.float32)))]
        return out
