"""Text affect of a transcript: VADER compound (primary) and an AFINN-165 score (robustness check).

Both are valence in [-1, 1], negative = unpleasant; an empty transcript has no valence (NaN), not a neutral one.

VADER (Hutto & Gilbert, 2014) handles negation ("not as bad"), intensifiers and "but" itself. AFINN
(Nielsen, 2011) is a plain word list; we give it VADER's negation rule so the two measures differ in lexicon, not in
whether "not hopeless" counts as hopeless:
    afinn_valence = mean over matched words w of  s(w) * (-0.74 if one of the 3 words before w negates) / 5
(-0.74 is VADER's N_SCALAR, 5 the AFINN scale's maximum). Known limit of both: pronoun negation ("nobody is hurt")
is not recognised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from afinn import Afinn
from vaderSentiment import vaderSentiment as vader

AFINN_MAX = 5.0
NEGATION_WINDOW = 3  # words before a scored word that can negate it, as in VADER


@dataclass(frozen=True)
class TextAffect:
    vader: float  # VADER compound, [-1, 1]
    afinn: float  # negation-aware AFINN-165 mean, [-1, 1]


@lru_cache(maxsize=1)
def _vader() -> vader.SentimentIntensityAnalyzer:
    return vader.SentimentIntensityAnalyzer()


@lru_cache(maxsize=1)
def _afinn() -> Afinn:
    return Afinn(language="en")


def _is_empty(text) -> bool:
    """No transcript: None, NaN, pandas' NA or blank. Anything not a string counts as none."""
    return not isinstance(text, str) or not text.strip()


def vader_valence(text: str | None) -> float:
    """VADER compound score of `text`; NaN when there is no text."""
    if _is_empty(text):
        return math.nan
    return float(_vader().polarity_scores(str(text))["compound"])


def afinn_valence(text: str | None) -> float:
    """Negation-aware AFINN-165 mean valence of `text` (formula in the module docstring); NaN when there is no text."""
    if _is_empty(text):
        return math.nan
    words = _afinn().split(str(text).lower())
    scores = []
    for i, word in enumerate(words):
        score = _afinn().score(word)
        if score:
            negated = vader.negated(words[max(0, i - NEGATION_WINDOW) : i])
            scores.append(score * (vader.N_SCALAR if negated else 1.0))
    return sum(scores) / len(scores) / AFINN_MAX if scores else 0.0


def text_affect(text: str | None) -> TextAffect:
    return TextAffect(vader=vader_valence(text), afinn=afinn_valence(text))
