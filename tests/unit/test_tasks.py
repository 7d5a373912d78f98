"""Reading a long prompt's instruction as a task (cache/tasks.py): the shapes read before any model."""

from __future__ import annotations

import pytest

from modelcache_svc.cache.tasks import is_question, phrasings
from modelcache_svc.cache.matching import named_languages


@pytest.mark.parametrize("text", [
    "According to the text above, when did the bridge open?",
    "Based on the passage above, why was the mill closed?",
    "根据上文，这座塔是哪一年建成的？",
    "上文说开馆时间是几点？",
])
def test_questions_about_the_content(text: str) -> None:
    assert is_question(text)


@pytest.mark.parametrize("text", [
    "Summarize the text above in three bullet points.",
    "Which dates and years appear in the passage above? List them.",  # a list asked as a question: a task
    "上面提到了哪些人？列个名单。",
    "帮上面这段文字想个标题。",
])
def test_tasks_are_not_questions(text: str) -> None:
    assert not is_question(text)


def test_a_translation_names_its_language() -> None:
    assert named_languages("Could you put the passage above into Spanish?") == {"es"}
    assert named_languages("把上面的内容翻译成日语。") == {"ja"}
    assert named_languages("Summarize the text above.") == frozenset()


def test_the_table_has_every_task_in_both_languages() -> None:
    tasks = {task for task, _ in phrasings()}
    assert {"summary", "title", "translate", "question", "quiz", "timeline"} <= tasks
    texts = [text for _, text in phrasings()]
    assert len(texts) == len(set(texts))
    assert any("\u4e00" <= ch <= "\u9fff" for text in texts for ch in text)
