"""A judge model for the local world: a deterministic score of two answers, from how alike they are.

The router's judge prompt (lambdas/router/spillway/judge.py) puts the incumbent's answer between
``<reference_answer>`` tags and the candidate's between ``<candidate_answer>`` tags, and asks for one whole number
from 0 to 10. A target marked ``judge`` reads those two answers and answers that number: the similarity of their
words (difflib's ratio) times 10, rounded. The same pair always gets the same score; identical answers get 10. A
request without both answers is answered as the target answers anything else (so a feature's own model can be its
judge too). tests/router/test_shadow_emulated.py checks the tags against the router's template.
"""

from __future__ import annotations

import difflib
import re

REFERENCE_TAG = "reference_answer"
CANDIDATE_TAG = "candidate_answer"
SCORE_MAX = 10


def _between(text: str, tag: str) -> str | None:
    match = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, re.DOTALL)
    return match.group(1) if match is not None else None


def similarity(reference: str, candidate: str) -> float:
    """How alike two answers are, word by word: 1.0 for the same words in the same order, 0.0 for none shared."""
    return difflib.SequenceMatcher(None, reference.split(), candidate.split(), autojunk=False).ratio()


def judge_reply(text: str) -> str | None:
    """The judge's answer to a prompt: the score of the two tagged answers in it; None when it has not both."""
    reference, candidate = _between(text, REFERENCE_TAG), _between(text, CANDIDATE_TAG)
    if reference is None or candidate is None:
        return None
    return str(round(similarity(reference, candidate) * SCORE_MAX))
