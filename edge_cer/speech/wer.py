"""Word error rate: (substitutions + deletions + insertions) / reference words.

Two ways to split a text into words: `words` only lower-cases and drops punctuation; `whisper_words` first applies
Whisper's English text normaliser (the one the Whisper paper scores with: British spellings to American,
contractions expanded, numbers as digits, fillers dropped), so "neighbour" / "neighbor" and "thirty" / "30" are
not errors. It comes from the `whisper-normalizer` package (the export extra), not the runtime.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache


def words(text: str) -> list[str]:
    """Lower-case words without punctuation (Whisper punctuates, espeak scripts and streaming models do not)."""
    return re.findall(r"[a-z0-9']+", text.lower())


def whisper_words(text: str) -> list[str]:
    """Words after Whisper's English text normaliser."""
    return _whisper_normalizer()(text).split()


@cache
def _whisper_normalizer():
    try:
        from whisper_normalizer.english import EnglishTextNormalizer
    except ImportError as error:
        raise ImportError("Whisper's English normaliser needs the whisper-normalizer package: "
                          "pip install -e '.[export]' (./setup.sh installs it)") from error
    return EnglishTextNormalizer()


def word_error_rate(reference: str, hypothesis: str, split: Callable[[str], list[str]] = words) -> float:
    ref, hyp = split(reference), split(hypothesis)
    if not ref:
        return float(bool(hyp))
    row = list(range(len(hyp) + 1))  # Levenshtein over words, one row at a time
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)
