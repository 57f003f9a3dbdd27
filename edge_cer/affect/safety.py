"""The safety gate: may a generated picture be shown, or must it be regenerated or replaced?

A decision is a pure function of scores and a policy, so the live pipeline, the tests and an audit of the logs
all evaluate the same rule:

    blocked  if  candidate valence < stimulus valence - policy.max_valence_drop
             or  candidate red share > stimulus red share + policy.max_red_share_increase
             or  any concept in policy.blocked_concepts scores >= policy.concept_threshold (CLIP only)
    action   = "show" if not blocked, else "regenerate" while attempts and time remain, else "fallback"

It fails closed: a missing or non-finite score, an unknown concept name or any exception while deciding gives
"fallback" (the protocol's replacement, `policy.fallback`), never "show". Every decision is a `GateDecision`
whose `record()` is one JSON-serialisable dict for the trial log.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from edge_cer.affect.json_ready import json_ready

SHOW, REGENERATE, FALLBACK = "show", "regenerate", "fallback"


@dataclass(frozen=True)
class AffectScores:
    """What the gate compares; `valence` is CLIP zero-shot valence when available, else the pixel proxy."""

    valence: float  # [-1, 1]
    red_share: float  # [0, 1]
    valence_source: str = "proxy"  # "clip" or "proxy"; stimulus and candidate must use the same source


@dataclass(frozen=True)
class SafetyPolicy:
    # 0: a supportive picture must never be more negative than what the participant already saw.
    max_valence_drop: float = 0.0
    # Blood and fire read as red; 5 points of the frame is above resampling noise on our test pictures.
    max_red_share_increase: float = 0.05
    # Prompt names from the manifest's `clip_zero_shot` prompts; only checked when concept scores are given.
    blocked_concepts: tuple[str, ...] = ()
    concept_threshold: float = 0.3  # softmax probability over all prompts
    # One SD-turbo style generation takes ~1 s on the target GPU; 3 tries keep inside the feedback deadline.
    max_attempts: int = 3
    # What the participant sees instead, per protocol (recorded, carried out by the pipeline).
    fallback: str = "neutral_picture"


@dataclass(frozen=True)
class GateDecision:
    action: str  # show / regenerate / fallback
    reasons: tuple[str, ...]
    attempt: int
    stimulus: dict | None
    candidate: dict | None
    concept_scores: dict | None = None
    fallback: str | None = None
    decided_at: float = field(default_factory=time.time)

    @property
    def shown(self) -> bool:
        return self.action == SHOW

    def record(self) -> dict:
        """One log row, valid JSON: non-finite scores become null (the reasons say which value it was)."""
        return json_ready(asdict(self))


def decide(
    stimulus: AffectScores,
    candidate: AffectScores,
    policy: SafetyPolicy,
    *,
    attempt: int = 1,
    time_left_s: float = math.inf,
    expected_generation_s: float = 0.0,
    concept_scores: Mapping[str, float] | None = None,
) -> GateDecision:
    """Decides one candidate picture (`attempt` counts from 1). Never raises; fails closed."""
    stim = _as_dict(stimulus)
    cand = _as_dict(candidate)
    concepts = dict(concept_scores) if isinstance(concept_scores, Mapping) else None
    try:
        reasons = _block_reasons(stimulus, candidate, policy, concept_scores)
    except Exception as exc:  # noqa: BLE001 - fail closed on anything, and say why in the log
        return GateDecision(FALLBACK, (f"error: {type(exc).__name__}: {exc}",), attempt, stim, cand, concepts,
                            policy.fallback)
    if not reasons:
        return GateDecision(SHOW, (), attempt, stim, cand, concepts)
    if attempt < policy.max_attempts and time_left_s >= expected_generation_s:
        return GateDecision(REGENERATE, reasons, attempt, stim, cand, concepts)
    why = "attempts exhausted" if attempt >= policy.max_attempts else "deadline"
    return GateDecision(FALLBACK, (*reasons, why), attempt, stim, cand, concepts, policy.fallback)


def _block_reasons(stimulus, candidate, policy, concept_scores) -> tuple[str, ...]:
    for name, scores in (("stimulus", stimulus), ("candidate", candidate)):
        for key in ("valence", "red_share"):
            value = getattr(scores, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} {key} is {value!r}")
    if stimulus.valence_source != candidate.valence_source:
        raise ValueError(f"valence sources differ: {stimulus.valence_source} vs {candidate.valence_source}")
    reasons = []
    if candidate.valence < stimulus.valence - policy.max_valence_drop:
        reasons.append(f"valence {candidate.valence:.3f} below stimulus {stimulus.valence:.3f}")
    if candidate.red_share > stimulus.red_share + policy.max_red_share_increase:
        reasons.append(f"red share {candidate.red_share:.3f} above stimulus {stimulus.red_share:.3f}")
    if concept_scores is not None:
        for concept in policy.blocked_concepts:
            score = concept_scores[concept]  # KeyError: the list names a prompt the manifest lacks -> fail closed
            if not math.isfinite(score):
                raise ValueError(f"concept {concept!r} score is {score!r}")
            if score >= policy.concept_threshold:
                reasons.append(f"concept {concept!r} {score:.3f} >= {policy.concept_threshold}")
    return tuple(reasons)


def _as_dict(scores) -> dict | None:
    try:
        return asdict(scores)
    except TypeError:
        return None
