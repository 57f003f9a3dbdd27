"""Every picture a participant may see passes the safety gate: scripted, typed and spoken trials all get their
picture from the live trial, which regenerates a blocked picture with the next seed (recorded) and falls back as
the protocol says; the warm-up picture is never gated. CLIP zero-shot scores feed the gate when the export
carries prompt embeddings."""

from __future__ import annotations

import json

from edge_cer.affect.gate import PictureScorer, SafetyGate
from edge_cer.affect.picture import SAFETY_CONCEPTS
from edge_cer.affect.safety import SafetyPolicy
from edge_cer.headless import run_scripted_demo
from edge_cer.runtime import build_runtime
from edge_cer.session.data import list_sessions, read_session
from edge_cer.session.protocol import Protocol
from tests.live_helpers import CALM, DARK_RED, StepGenerator, stimulus


def _options():
    return dict(strength=0.6, ip_scale=0.6, steps=2)


def _demo(tmp_path, generator):
    run_scripted_demo(tmp_path / "data", runtime=lambda protocol: build_runtime(protocol, generator=generator))
    folder = list_sessions(tmp_path / "data")[0].folder
    return folder, *read_session(folder)[1:]


def test_a_blocked_picture_is_regenerated_with_the_next_seed_and_that_seed_is_recorded(tmp_path):
    """Precondition: even seeds paint a picture darker and redder than the stimulus, odd seeds a calm one."""
    inner = StepGenerator(step_s=0, colour=lambda prompt, seed: DARK_RED if seed % 2 == 0 else CALM)
    folder, trials, _ = _demo(tmp_path, inner)
    planned = {t: seed for t, _, _, _, seed in json.loads(read_session(folder)[0]["plan"])}
    ai = [t for t in trials if t["feedback"] == "ai"]
    assert {planned[t["trial"]] % 2 for t in ai} == {0, 1}, "precondition: both kinds of planned seed"
    for t in ai:
        retried = planned[t["trial"]] % 2 == 0
        assert t["picture_shown"] == 1 and t["safety_blocked"] == int(retried)
        assert t["seed"] == planned[t["trial"]] + retried, "the seed that made the shown picture"
        assert ("red share" in t["safety_reason"]) if retried else t["safety_reason"] is None


def test_a_session_never_stores_a_blocked_picture(tmp_path):
    folder, trials, events = _demo(tmp_path, StepGenerator(step_s=0, colour=lambda prompt, seed: DARK_RED))
    ai = [t for t in trials if t["feedback"] == "ai"]
    assert ai and all(t["picture_shown"] == 0 and t["safety_blocked"] == 3 for t in ai)
    assert all(t["no_picture_reason"].startswith("safety gate") and "attempts exhausted" in t["no_picture_reason"]
               for t in ai)
    assert sum(e["kind"] == "no_picture" for e in events) == len(ai)
    assert not list(folder.rglob("*.png"))


def test_the_warm_up_picture_is_not_gated(tmp_path):
    """A warm-up picture no one sees is not refused (the UI could not start when the gate blocked it)."""
    inner = StepGenerator(step_s=0, colour=lambda prompt, seed: DARK_RED)
    runtime = build_runtime(Protocol(), generator=inner)
    runtime.warm_up(stimulus(tmp_path / "s.png"))
    assert inner.calls == [("warm-up", 0)]


def test_clip_zero_shot_scores_feed_the_gate(tiny_model, tmp_path, stimulus_png):
    from edge_cer.engine import EngineGenerator
    from edge_cer.pipeline import SDPipeline
    from export.sd import ExportOptions, export_sd

    model, adapters = tiny_model("tiny-sd15")
    out = export_sd(ExportOptions(model=model, ip_adapter=adapters["base"], clip=model.parent / "tiny-sd15-clip",
                                  out=tmp_path / "zs", height=64, width=48))
    engine = EngineGenerator(SDPipeline.from_export(out))
    scorer = PictureScorer(engine)
    assert scorer.concepts == SAFETY_CONCEPTS
    assert build_runtime(Protocol(), engines=out).live.policy.blocked_concepts == SAFETY_CONCEPTS
    picture = engine.generate(stimulus_png, "calm", seed=0, **_options())
    # Under test: a concept threshold of 0 blocks on every concept; the reasons name them.
    gate = SafetyGate(stimulus_png, SafetyPolicy(blocked_concepts=SAFETY_CONCEPTS, concept_threshold=0.0,
                                                 max_valence_drop=2.0, max_red_share_increase=1.0), scorer)
    decision = gate.check(picture, attempt=1, time_left_s=10, expected_generation_s=1)
    assert gate.stimulus.valence_source == "clip"
    assert decision.action == "regenerate"
    assert sum("concept" in r for r in decision.reasons) == len(SAFETY_CONCEPTS)
    assert set(decision.concept_scores) >= set(SAFETY_CONCEPTS)
