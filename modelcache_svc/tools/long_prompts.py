"""Long-prompt pairs: documents longer than the embedding window followed by an instruction.

Written here for tests and `modelcache-svc eval` (never training data): each document is three paragraphs,
about 300 words (400+ tokens, past the 256-token window of the packaged models), then one instruction.

- label 0: one document, two instructions ("... Summarize the text above" / "... Translate the text above
  into French"): the answers differ, and all that differs lies past the window;
- label 1: the same prompt asked again verbatim, and the same instruction over the same document with
  one word of its first sentence changed.

``python -m modelcache_svc.tools.long_prompts FILE`` writes them as eval rows ({"a", "b", "label"});
tests/data/long_prompts_en.jsonl is that file (a test keeps the two the same). Every ``b`` is a
prompt no ``a`` of another row holds, so cache mode counts only the pair's own outcome.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

PARAGRAPHS = (
    "The harbour town grew up around a natural inlet that sheltered fishing boats from the winter storms. For "
    "centuries its economy depended on herring, which were salted in long sheds beside the quay and shipped "
    "inland by cart. When the railway arrived in 1871 the catch could reach the cities fresh within a day, and "
    "the population doubled in a generation. Warehouses, a customs house and two churches were built in the "
    "decades that followed, most of them in the grey local stone that still gives the streets their colour. "
    "The decline came quickly once the herring moved away from the coast after the second world war.",
    "Photosynthesis converts light energy into chemical energy stored in sugar. In the chloroplasts of a leaf, "
    "pigments absorb red and blue light and pass the energy to reaction centres, where water molecules are split "
    "and oxygen is released as a by-product. The energy captured in this way drives the Calvin cycle, which fixes "
    "carbon dioxide from the air into three-carbon molecules that the plant assembles into glucose and starch. "
    "Because the process depends on light, temperature and the supply of water, the growth of a crop can be "
    "limited by whichever of these factors is scarcest at a given moment of the season.",
    "A relational database stores data in tables whose rows are identified by a primary key. Queries are written "
    "in a declarative language, so the programmer states which rows are wanted and the query planner decides how "
    "to find them, using indexes where they exist and scanning tables where they do not. Transactions group "
    "several changes so that either all of them take effect or none does, and isolation levels decide what one "
    "transaction may see of another that is still running. Most production systems add replication, keeping a "
    "copy of every change on a second server that can take over when the first one fails.",
    "The orchestra began rehearsals for the spring season in an old cinema while the concert hall was being "
    "renovated. The acoustics were poor at first: the strings sounded thin and the brass overwhelmed everything "
    "from the back of the stage. The conductor had heavy curtains hung along the side walls and moved the "
    "percussion onto a raised platform, and within a week the players said they could finally hear one another. "
    "The first concert sold out in two days, and many in the audience said afterwards that they preferred the "
    "intimacy of the cinema to the grand hall they had known for thirty years.",
    "Compound interest means that interest is paid not only on the original deposit but also on the interest "
    "already earned. Over a short period the difference from simple interest is small, but over decades it "
    "becomes the larger part of the balance. A sum invested at five percent a year roughly doubles in fourteen "
    "years, and quadruples in twenty-eight. The same arithmetic works against a borrower: an unpaid credit card "
    "balance at twenty percent grows quickly, which is why advisers suggest paying off expensive debt before "
    "saving. Inflation reduces the real return, so the rate that matters is the one left after rising prices.",
    "The expedition left base camp before dawn to cross the glacier while the snow bridges were still frozen "
    "hard. Each team of three was roped together, with the most experienced climber in front probing for hidden "
    "crevasses with an ice axe. By midday the sun had softened the surface and progress slowed to a few hundred "
    "metres an hour. They reached the col in the late afternoon, pitched their tents in the lee of a rock "
    "outcrop and melted snow for water. That night the wind rose sharply, and the leader decided that the final "
    "climb to the summit would have to wait until the weather settled again.",
    "Sleep is divided into cycles of about ninety minutes, each passing through light sleep, deep sleep and the "
    "rapid eye movement stage in which most vivid dreams occur. Deep sleep dominates the first half of the night "
    "and is thought to matter most for physical recovery, while rapid eye movement sleep grows longer towards "
    "morning and seems to support memory and mood. Adults who regularly sleep less than seven hours show slower "
    "reaction times and poorer concentration, even when they feel rested. Light in the evening, especially from "
    "screens, delays the release of melatonin and makes it harder to fall asleep at the usual hour.",
    "The new bicycle lanes were introduced on the main avenue after two years of consultation with residents and "
    "shop owners. Parking spaces were removed on one side of the street and replaced by a lane separated from "
    "traffic by a low kerb and a row of planters. Shopkeepers feared that trade would fall without parking, but "
    "footfall counts in the first year showed a small increase, and the number of people cycling along the "
    "avenue tripled. Accidents involving cyclists fell by almost half. The council now plans to extend the "
    "network to the university district and the railway station by the end of next year.",
)

INSTRUCTIONS = (
    "Summarize the text above in three sentences.",
    "Translate the text above into French.",
    "List the key facts in the text above as bullet points.",
    "Write a short title for the text above.",
    "Translate the text above into German.",
    "What is the main point of the text above?",
    "Rewrite the text above so that a ten-year-old can understand it.",
    "Extract every number mentioned in the text above.",
)

# One word of a paragraph's first sentence, and what it becomes in the edited copy.
_EDITS = (("grew up", "developed"), ("converts", "turns"), ("stores", "keeps"), ("began", "started"),
          ("means", "says"), ("left", "departed"), ("divided", "split"), ("introduced", "opened"))


def documents() -> list[tuple[int, ...]]:
    """Three-paragraph documents (paragraph indexes), none two with the same first paragraph and order."""
    return [combo for combo in itertools.permutations(range(len(PARAGRAPHS)), 3)][::13][:24]


def text_of(doc: tuple[int, ...], edited: bool = False) -> str:
    paragraphs = [PARAGRAPHS[i] for i in doc]
    if edited:
        old, new = _EDITS[doc[0]]
        paragraphs[0] = paragraphs[0].replace(old, new, 1)
    return "\n\n".join(paragraphs)


def prompt(doc: tuple[int, ...], instruction: int, edited: bool = False) -> str:
    return f"{text_of(doc, edited)}\n\n{INSTRUCTIONS[instruction]}"


def pairs() -> list[dict[str, object]]:
    docs = documents()
    rows: list[dict[str, object]] = []
    # Label 0: one document, two instructions; a's use even instructions, b's odd ones.
    for doc in docs[:12]:
        for i in range(0, len(INSTRUCTIONS), 2):
            rows.append({"a": prompt(doc, i), "b": prompt(doc, i + 1), "label": 0})
    # Label 1: the same prompt verbatim, and one word of the first sentence changed.
    for n, doc in enumerate(docs[12:18]):
        rows.append({"a": prompt(doc, n % 8), "b": prompt(doc, n % 8), "label": 1})
    for n, doc in enumerate(docs[18:24]):
        rows.append({"a": prompt(doc, (n + 3) % 8), "b": prompt(doc, (n + 3) % 8, edited=True), "label": 1})
    return rows


def write(out: Path) -> int:
    rows = pairs()
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


if __name__ == "__main__":
    import sys

    print(f"wrote {write(Path(sys.argv[1]))} rows to {sys.argv[1]}")
