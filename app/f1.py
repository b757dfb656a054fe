"""LoCoMo's answer score: token F1 after the official normalisation, by question category.

Interface:

- :func:`normalize_answer` -- the official normalisation of an answer or a prediction.
- :func:`answer_tokens` -- its Porter-stemmed tokens (what F1 counts).
- :func:`token_f1` -- F1 of the two token bags.
- :func:`multi_answer_f1` -- category 1 (multi-hop): per comma-separated gold sub-answer, the
  best F1 of any comma-separated part of the prediction, averaged over the sub-answers.
- :func:`score_answer` -- the score of a prediction for a question of a category (1-5).
- :func:`gold_answer` -- the gold answer a QA item is scored against.

The rules, as the LoCoMo authors' scorer applies them (``task_eval/evaluation.py`` in
snap-research/LoCoMo; reimplemented here, not copied):

1. Normalisation: commas removed; lower-cased; every ASCII punctuation character removed;
   the words ``a``, ``an``, ``the`` *and* ``and`` removed (the scorer drops ``and`` too,
   beyond SQuAD's articles); runs of white space collapsed.
2. Tokens are the normalised text split on white space, each Porter-stemmed; F1 is the
   harmonic mean of precision and recall of the two token multisets (0 when none is shared,
   and so 0 for an empty prediction).
3. Category 1 (multi-hop): prediction and gold are each split on ``,`` *before* normalising;
   the score is the mean over gold parts of the best F1 against any prediction part.
4. Categories 2 (temporal) and 4 (single-hop): plain F1 against the gold answer.
5. Category 3 (open-domain): plain F1 against the gold answer's first ``;``-separated part.
6. Category 5 (adversarial, unanswerable): 1 if the prediction contains ``not mentioned`` or
   ``no information available`` (case-insensitive), else 0.

Stemming uses PyStemmer's ``porter`` algorithm (M. F. Porter's original, in C; vmem's text
index already depends on it). The official scorer uses NLTK's ``PorterStemmer`` in its default
mode, which adds a few extensions to the original algorithm (irregular forms such as
``day``/``play``/``key``: ``-y`` after a vowel, ``-ly`` endings, irregular forms). Measured on
LoCoMo dev: 50 of the 1,773 distinct words of the gold answers stem differently, but a word and its
inflections still fall together under either stemmer, so scores barely move: of 1,600 (evidence turn,
gold answer) pairs scored as if the turn were the prediction, 14 score differently and the mean F1 is
0.1340 here against 0.1334 with NLTK's.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping
from typing import Any

import Stemmer

__all__ = [
    "ADVERSARIAL_MARKERS",
    "answer_tokens",
    "gold_answer",
    "multi_answer_f1",
    "normalize_answer",
    "score_answer",
    "token_f1",
]

#: A category 5 prediction that contains one of these abstains, and scores 1.
ADVERSARIAL_MARKERS = ("not mentioned", "no information available")

_PUNCTUATION = frozenset(string.punctuation)
_DROPPED_WORDS = re.compile(r"\b(a|an|the|and)\b")
_stemmer = Stemmer.Stemmer("porter")


def normalize_answer(text: str) -> str:
    """``text`` after rule 1: no commas, lower case, no punctuation, no a/an/the/and, single spaces."""
    text = text.replace(",", "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _DROPPED_WORDS.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> list[str]:
    """The Porter-stemmed tokens of ``text`` once normalised (rule 2)."""
    words = normalize_answer(text).split()
    return _stemmer.stemWords(words) if words else []


def token_f1(prediction: str, gold: str) -> float:
    """Token F1 of ``prediction`` against ``gold`` (rules 1-2), in [0, 1]."""
    pred, ref = answer_tokens(prediction), answer_tokens(gold)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def multi_answer_f1(prediction: str, gold: str) -> float:
    """Rule 3: the mean over ``gold``'s comma-separated parts of the best F1 of any part of ``prediction``."""
    parts = [p.strip() for p in prediction.split(",")]
    golds = [g.strip() for g in gold.split(",")]
    return sum(max(token_f1(p, g) for p in parts) for g in golds) / len(golds)


def score_answer(prediction: str, gold: str, category: int) -> float:
    """The LoCoMo score of ``prediction`` for a question of ``category`` (1-5) whose gold answer is
    ``gold`` (as :func:`gold_answer` gives it). ValueError for another category."""
    if category == 1:
        return multi_answer_f1(prediction, gold)
    if category in (2, 4):
        return token_f1(prediction, gold)
    if category == 3:
        return token_f1(prediction, gold.split(";")[0].strip())
    if category == 5:
        low = prediction.lower()
        return 1.0 if any(marker in low for marker in ADVERSARIAL_MARKERS) else 0.0
    raise ValueError(f"LoCoMo question categories are 1-5, got {category!r}")


def gold_answer(qa: Mapping[str, Any]) -> str:
    """The gold answer of a LoCoMo QA item as text: ``answer``, or for adversarial items (which
    have none) ``adversarial_answer`` -- the plausible wrong answer offered beside "not mentioned".
    Numbers (some answers are years) become their text. KeyError when the item has neither."""
    if "answer" in qa:
        return str(qa["answer"])
    return str(qa["adversarial_answer"])
