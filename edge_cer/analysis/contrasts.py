"""How the design's factors enter the models, and what every term means in words.

A two-level factor is coded +1/2 (reappraise; ai) and -1/2 (describe; none: the active control), so in
`relief ~ strategy_c * feedback_c`:
    Intercept          = the mean of the four cell means
    feedback           = AI picture minus none, averaged over the two strategies      ("the AI effect")
    strategy           = reappraise minus describe, averaged over the two feedback levels
    strategy:feedback  = (reappraise/ai - reappraise/none) - (describe/ai - describe/none)
and the simple effects (feedback | reappraise = the AI effect when reappraising, ...) are linear combinations of
them. With treatment coding the `feedback` term would be the AI effect within describe only. A design that is not
two crossed two-level factors (e.g. one `condition` factor) keeps treatment coding: each term is a level minus the
baseline. The same contrasts are computed per participant from their cell means for Cohen's dz.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

BASELINES = {"strategy": "describe", "feedback": "none"}  # coded -1/2, or the treatment-coding reference
# The AI effect as the sensitivity table shows it: on average, when reappraising, and the interaction.
HEADLINE = ("feedback", "feedback | reappraise", "strategy:feedback")
WORDS = {"ai": "the AI picture", "none": "no picture", "reappraise": "reappraising", "describe": "describing",
         "look": "looking"}
CONTEXT = {"ai": "with the AI picture", "none": "with no picture", "reappraise": "when reappraising",
           "describe": "when describing", "look": "when looking"}


@dataclass(frozen=True)
class Coding:
    formula: str
    description: str
    slopes: tuple[str, ...] = ()  # coded columns that get by-participant random slopes
    combinations: dict[str, dict[str, float]] = field(default_factory=dict)  # simple effects: term -> weight
    meanings: dict[str, str] = field(default_factory=dict)  # term -> plain words
    cells: dict[str, dict[tuple, float]] = field(default_factory=dict)  # contrast -> {cell: weight}


def levels(factor: str, data: pd.DataFrame) -> tuple[str, str] | None:
    """(baseline, active) of a factor with exactly two levels in `data`, else None."""
    present = sorted(data[factor].dropna().unique())
    if len(present) != 2:
        return None
    baseline = BASELINES.get(factor) if BASELINES.get(factor) in present else present[0]
    return baseline, next(p for p in present if p != baseline)


def with_codes(data: pd.DataFrame) -> pd.DataFrame:
    """`data` plus `<factor>_c` = +1/2 for the active level, -1/2 for the baseline, for each two-level factor."""
    codes = {}
    for factor in ("strategy", "feedback"):
        pair = levels(factor, data)
        if pair:
            codes[f"{factor}_c"] = (data[factor] == pair[1]).astype(float) - 0.5
    return data.assign(**codes)


def coded_term(factor: str, data: pd.DataFrame) -> str:
    """The patsy term of one factor: its +-1/2 column for two levels, else treatment coding against its baseline."""
    if levels(factor, data):
        return f"{factor}_c"
    baseline = BASELINES.get(factor)
    return f"C({factor}, Treatment('{baseline}'))" if (data[factor] == baseline).any() else f"C({factor})"


def coding(design: pd.DataFrame, factors: list[str]) -> Coding:
    pairs = {f: levels(f, design) for f in factors}
    if not factors:
        return Coding("relief ~ 1", "no factor varies: the intercept is the mean relief",
                      meanings={"Intercept": "mean relief"})
    if not all(pairs.values()):
        return _treatment(design, factors[0])
    words = {f: f"{WORDS.get(a, a)} minus {WORDS.get(b, b)}" for f, (b, a) in pairs.items()}
    sign = {f: {b: -1.0, a: 1.0} for f, (b, a) in pairs.items()}
    cells = [tuple(c) for c in design.groupby(factors).size().index.map(lambda k: k if isinstance(k, tuple) else (k,))]
    meanings = {"Intercept": f"mean relief over the {len(cells)} conditions, each weighted equally"}
    weights = {}
    for i, f in enumerate(factors):
        other = [g for g in factors if g != f]
        meanings[f] = words[f] + (f", averaged over {other[0]} ({' and '.join(pairs[other[0]][::-1])})" if other else "")
        weights[f] = {c: sign[f][c[i]] / (len(cells) / 2) for c in cells}
    combinations = {}
    if len(factors) == 2:
        (s, f) = factors
        meanings[f"{s}:{f}"] = (f"({words[f]}) {CONTEXT.get(pairs[s][1], pairs[s][1])} minus the same "
                                f"{CONTEXT.get(pairs[s][0], pairs[s][0])}: a difference of differences")
        weights[f"{s}:{f}"] = {c: sign[s][c[0]] * sign[f][c[1]] for c in cells}
        for first, second, j in ((f, s, 0), (s, f, 1)):
            for level in pairs[second][::-1]:
                name = f"{first} | {level}"
                combinations[name] = {first: 1.0, f"{s}:{f}": 0.5 * sign[second][level]}
                meanings[name] = f"{words[first]}, {CONTEXT.get(level, level)}"
                weights[name] = {c: sign[first][c[1 - j]] * (c[j] == level) for c in cells}
    description = ("two-level factors coded +1/2 (" + ", ".join(a for _, a in pairs.values()) + ") and -1/2 ("
                   + ", ".join(b for b, _ in pairs.values()) + "): the intercept is the mean of the cell means, a "
                   "main effect is a difference averaged over the other factor, the interaction a difference of "
                   "differences; simple effects are linear combinations of the model's terms")
    coded = tuple(f"{f}_c" for f in factors)
    return Coding("relief ~ " + " * ".join(coded), description, slopes=coded, combinations=combinations,
                  meanings=meanings, cells=weights)


def _treatment(design: pd.DataFrame, factor: str) -> Coding:
    term = coded_term(factor, design)
    present = sorted(design[factor].unique())
    baseline = BASELINES.get(factor) if BASELINES.get(factor) in present else present[0]
    meanings = {"Intercept": f"mean relief in {baseline}"}
    cells = {}
    for level in present:
        if level != baseline:
            meanings[f"{factor}={level}"] = f"{level} minus {baseline}"
            cells[f"{factor}={level}"] = {(level,): 1.0, (baseline,): -1.0}
    return Coding(f"relief ~ {term}", f"treatment coding against {baseline}: each term is a level minus "
                  f"{baseline}", meanings=meanings, cells=cells)


def participant_scores(design: pd.DataFrame, coding: Coding) -> pd.DataFrame:
    """Each participant's contrast scores from their cell means (participants with every cell only)."""
    if not coding.cells:
        return pd.DataFrame()
    factors = [f for f in ("strategy", "feedback", "condition") if f in _factors_of(coding)]
    wide = design.groupby(["participant", *factors])["relief"].mean().unstack(factors).dropna()
    wide.columns = [c if isinstance(c, tuple) else (c,) for c in wide.columns]
    return pd.DataFrame({name: sum(w * wide[c] for c, w in weights.items() if c in wide)
                         for name, weights in coding.cells.items()})


def _factors_of(coding: Coding) -> list[str]:
    if coding.slopes:
        return [s.removesuffix("_c") for s in coding.slopes]
    return [next(iter(coding.cells)).split("=")[0]]
