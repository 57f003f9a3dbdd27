"""The safety gate: blocks pictures built darker or redder than the stimulus, regenerates, falls back, fails closed."""

import json
import math

import numpy as np
import pytest

from edge_cer.affect.picture import picture_proxies
from edge_cer.affect.safety import FALLBACK, REGENERATE, SHOW, AffectScores, SafetyPolicy, decide

POLICY = SafetyPolicy(blocked_concepts=("a photo of blood",), max_attempts=3)


def scores(picture) -> AffectScores:
    p = picture_proxies(picture)
    return AffectScores(valence=p.valence_proxy, red_share=p.red_share)


@pytest.fixture
def stimulus():
    rng = np.random.default_rng(3)
    return rng.uniform(0.25, 0.85, (64, 64, 3)).astype(np.float32)


def test_same_or_brighter_picture_is_shown(stimulus):
    brighter = np.clip(stimulus * 1.2, 0, 1)
    for candidate in (stimulus, brighter):
        decision = decide(scores(stimulus), scores(candidate), POLICY)
        assert decision.action == SHOW and decision.shown and decision.reasons == ()


def test_darker_picture_is_blocked_and_regenerated(stimulus):
    decision = decide(scores(stimulus), scores(stimulus * 0.6), POLICY, attempt=1)
    assert decision.action == REGENERATE
    assert "valence" in decision.reasons[0]


def test_redder_picture_is_blocked_although_its_pleasure_proxy_rises(stimulus):
    redder = stimulus.copy()
    redder[8:40, 8:40] = [0.9, 0.05, 0.05]
    stim, cand = scores(stimulus), scores(redder)
    assert cand.valence >= stim.valence  # saturation raises the V&M pleasure proxy: red must be checked separately
    decision = decide(stim, cand, POLICY)
    assert decision.action == REGENERATE and any("red share" in r for r in decision.reasons)


def test_fallback_when_attempts_or_time_run_out(stimulus):
    dark = scores(stimulus * 0.5)
    last = decide(scores(stimulus), dark, POLICY, attempt=3)
    assert last.action == FALLBACK and last.fallback == POLICY.fallback and "attempts exhausted" in last.reasons
    late = decide(scores(stimulus), dark, POLICY, attempt=1, time_left_s=0.4, expected_generation_s=1.0)
    assert late.action == FALLBACK and "deadline" in late.reasons


def test_blocked_concept_trips_the_gate():
    ok = AffectScores(0.2, 0.0)
    decision = decide(ok, ok, POLICY, concept_scores={"a photo of blood": 0.6, "a happy scene": 0.4})
    assert decision.action == REGENERATE and "blood" in decision.reasons[0]
    assert decide(ok, ok, POLICY, concept_scores={"a photo of blood": 0.1, "a happy scene": 0.9}).shown


@pytest.mark.parametrize("candidate, concepts", [
    (AffectScores(math.nan, 0.0), None),  # NaN valence
    (AffectScores(0.5, math.inf), None),  # non-finite red share
    (AffectScores(0.5, 0.0, valence_source="clip"), None),  # compared across measures
    (AffectScores(0.5, 0.0), {"a happy scene": 1.0}),  # the policy's concept is missing from the scores
    (AffectScores(0.5, 0.0), {"a photo of blood": math.nan}),
    (None, None),  # no scores at all (scoring crashed upstream)
])
def test_fails_closed(candidate, concepts):
    decision = decide(AffectScores(0.0, 0.0), candidate, POLICY, attempt=1, concept_scores=concepts)
    assert decision.action == FALLBACK and not decision.shown
    assert decision.reasons[0].startswith("error:")


def test_every_decision_is_a_json_log_record(stimulus):
    for decision in (decide(scores(stimulus), scores(stimulus), POLICY),
                     decide(scores(stimulus), scores(stimulus * 0.5), POLICY),
                     decide(AffectScores(0.0, 0.0), AffectScores(math.nan, 0.0), POLICY)):
        record = json.loads(json.dumps(decision.record(), allow_nan=False))
        assert record["action"] == decision.action and record["attempt"] == 1 and "decided_at" in record
