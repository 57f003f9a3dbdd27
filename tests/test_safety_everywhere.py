"""Every path that shows a picture goes through the safety gate: scripted runs, the terminal UI and typed
utterances use `GatedGenerator` (what `load_generator` returns); CLIP zero-shot scores feed it when the export
carries prompt embeddings."""

from __future__ import annotations

import pytest

from edge_cer.affect.picture import SAFETY_CONCEPTS
from edge_cer.affect.safety import SafetyPolicy
from edge_cer.live.gate import GatedGenerator, PictureBlocked, PictureScorer, SafetyGate
from tests.live_helpers import CALM, DARK_RED, StepGenerator, stimulus


def _options():
    return dict(strength=0.6, ip_scale=0.6, steps=2)


def test_a_blocked_picture_is_regenerated_with_the_next_seed(tmp_path):
    """Precondition: seed 5 paints a picture darker and redder than the stimulus, seed 6 a calm one."""
    inner = StepGenerator(step_s=0, colour=lambda prompt, seed: DARK_RED if seed == 5 else CALM)
    gated = GatedGenerator(inner)
    picture = gated.generate(stimulus(tmp_path / "s.png"), "he will recover", seed=5, **_options())
    assert [seed for _, seed in inner.calls] == [5, 6]
    assert [d["action"] for d in picture.params["safety"]] == ["regenerate", "show"]
    assert picture.params["seed"] == 6


def test_the_gate_fails_closed_when_every_attempt_is_blocked(tmp_path):
    inner = StepGenerator(step_s=0, colour=lambda prompt, seed: DARK_RED)
    gated = GatedGenerator(inner, SafetyPolicy(max_attempts=2))
    with pytest.raises(PictureBlocked, match=r"valence .* below stimulus.*after 2 attempt"):
        gated.generate(stimulus(tmp_path / "s.png"), "x", seed=0, **_options())


def test_scripted_session_never_stores_a_blocked_picture(tmp_path):
    from edge_cer.session.run import run_scripted_demo
    from tests.session_helpers import db_rows

    summary = run_scripted_demo(tmp_path / "data", generator=GatedGenerator(
        StepGenerator(step_s=0, colour=lambda prompt, seed: DARK_RED)))
    folder = tmp_path / "data" / "sessions" / summary["session_code"]
    assert summary["state"] == "completed"
    reasons = [r[0] for r in db_rows(folder, "SELECT detail FROM events WHERE kind = 'no_picture'")]
    assert reasons and all("safety gate" in r for r in reasons)
    assert not list(folder.rglob("*.png"))


def test_clip_zero_shot_scores_feed_the_gate(tiny_model, tmp_path, stimulus_png):
    from edge_cer.engine import EngineGenerator, load_generator
    from edge_cer.pipeline import SDPipeline
    from export.sd import ExportOptions, export_sd

    model, adapters = tiny_model("tiny-sd15")
    out = export_sd(ExportOptions(model=model, ip_adapter=adapters["base"], clip=model.parent / "tiny-sd15-clip",
                                  out=tmp_path / "zs", height=64, width=48))
    assert isinstance(load_generator(out), GatedGenerator)
    engine = EngineGenerator(SDPipeline.from_export(out))
    scorer = PictureScorer(engine)
    assert scorer.concepts == SAFETY_CONCEPTS
    picture = engine.generate(stimulus_png, "calm", seed=0, **_options())
    # Under test: a concept threshold of 0 blocks on every concept; the reasons name them.
    gate = SafetyGate(stimulus_png, SafetyPolicy(blocked_concepts=SAFETY_CONCEPTS, concept_threshold=0.0,
                                                 max_valence_drop=2.0, max_red_share_increase=1.0), scorer)
    decision = gate.check(picture, attempt=1, time_left_s=10, expected_generation_s=1)
    assert gate.stimulus.valence_source == "clip"
    assert decision.action == "regenerate"
    assert sum("concept" in r for r in decision.reasons) == len(SAFETY_CONCEPTS)
    assert set(decision.concept_scores) >= set(SAFETY_CONCEPTS)
