"""LiveTrial with a fake step-wise generator: speculation, cancellation, debounce, deadline, the safety gate."""

from __future__ import annotations

import time

import pytest

from edge_cer.affect.safety import SafetyPolicy
from edge_cer.live.trial import NS
from edge_cer.engine import GeneratedPicture
from edge_cer.session.protocol import Live
from tests.live_helpers import CALM, DARK_RED, StepGenerator, make_trial, stimulus


@pytest.fixture
def stim(tmp_path):
    return stimulus(tmp_path / "stimulus.png")


def wait_for(condition, timeout=5.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.005)


def finish(trial, text, speech_end_ns=None):
    trial.final(text, speech_end_ns if speech_end_ns is not None else time.monotonic_ns())
    outcome = trial.result()
    trial.close()
    shown = [g for g in outcome.generations if outcome.picture is not None and g.picture is outcome.picture]
    if outcome.reason is None:  # the invariant: the picture is the final transcript's, or the log says why not
        assert outcome.picture is not None and outcome.prompt == outcome.final_prompt
    if outcome.picture is not None:
        assert len(shown) == 1 and shown[0].safe, "only a picture the gate passed is ever shown"
    return outcome


def test_stale_speculation_is_cancelled_and_replaced_and_the_final_reuses_it(stim):
    gen = StepGenerator(step_s=0.02)  # 10 steps: 0.2 s per picture
    trial = make_trial(gen, stim)
    trial.partial("They are")  # 2 words: min_words = 2
    wait_for(lambda: gen.calls)
    time.sleep(0.05)
    trial.partial("They are actors on a film set")
    wait_for(lambda: len(gen.calls) == 2)
    wait_for(lambda: trial.generations[-1].outcome == "ready")
    outcome = finish(trial, "Um, they are, uh, actors actors on a film set.")
    assert gen.calls == [("they are", 7), ("they are actors on a film set", 7)]
    first, second = trial.generations
    assert first.outcome == "cancelled" and first.why == "the transcript changed"
    assert second.outcome == "ready" and second.kind == "speculative"
    assert outcome.source == "speculative" and outcome.picture is second.picture and outcome.reason is None
    fields = outcome.fields({})
    assert (fields["speculative_generations"], fields["wasted_generations"], fields["safety_blocked"]) == (2, 1, 0)
    assert gen.precomputed == [stim], "the stimulus is cached before any generation"


def test_final_transcript_that_differs_cancels_speculation_and_generates_from_the_final(stim):
    gen = StepGenerator(step_s=0.03)
    trial = make_trial(gen, stim)
    trial.partial("the man is hurt badly")
    wait_for(lambda: gen.calls)
    outcome = finish(trial, "The man is being helped.")
    assert [g.kind for g in trial.generations] == ["speculative", "final"]
    assert trial.generations[0].outcome == "cancelled"
    assert trial.generations[0].why == "the final transcript's prompt differs"
    assert outcome.source == "final" and outcome.prompt == "the man is being helped"
    assert gen.calls[-1] == ("the man is being helped", 7)
    assert outcome.fields({})["wasted_generations"] == 1


def test_debounce_a_flicker_neither_cancels_nor_starts_anything(stim):
    gen = StepGenerator(step_s=0.02)
    trial = make_trial(gen, stim, live=Live(debounce_s=0.15, deadline_s=2.0))
    trial.partial("they are actors")
    time.sleep(0.03)
    assert gen.calls == [], "nothing starts before the partial has stood debounce_s"
    wait_for(lambda: gen.calls)
    trial.partial("they are factors")  # a re-decode flickers ...
    time.sleep(0.03)
    trial.partial("they are actors")  # ... and comes back before the debounce
    wait_for(lambda: trial.generations[0].outcome != "running")
    time.sleep(0.2)
    assert trial.generations[0].outcome == "ready" and len(gen.calls) == 1
    assert finish(trial, "They are actors.").source == "speculative"


@pytest.mark.parametrize("on_deadline", ["best", "none"])
def test_deadline_holds_and_degrades_per_protocol(stim, on_deadline):
    gen = StepGenerator(step_s=0.005)
    trial = make_trial(gen, stim, live=Live(debounce_s=0.0, deadline_s=0.3, on_deadline=on_deadline))
    trial.partial("they are actors on a set")
    wait_for(lambda: trial.generations and trial.generations[0].outcome == "ready")
    gen.step_s = 0.25  # the final generation would take 2.5 s
    speech_end = time.monotonic_ns()
    trial.final("Nobody is hurt at all.", speech_end)
    outcome = trial.result()
    waited = (time.monotonic_ns() - speech_end) / NS
    assert 0.3 <= waited < 0.45, f"result() returned {waited:.3f} s after speech end, deadline 0.3 s"
    assert outcome.reason.startswith("deadline")
    if on_deadline == "best":
        assert outcome.source == "best_ready" and outcome.prompt == "they are actors on a set"
    else:
        assert outcome.source == "none" and outcome.picture is None
    t0 = time.monotonic()
    trial.close()
    assert time.monotonic() - t0 < 0.4, "the running generation stops at its next step"
    assert trial.generations[-1].outcome == "cancelled"


def test_safety_gate_regenerates_with_new_seeds_until_a_picture_passes(stim):
    gen = StepGenerator(step_s=0.001, colour=lambda prompt, seed: DARK_RED if seed < 9 else CALM)
    trial = make_trial(gen, stim, live=Live(speculate=False))
    outcome = finish(trial, "It is a staged scene")
    assert [seed for _, seed in gen.calls] == [7, 8, 9]
    assert [g.decision.action for g in trial.generations] == ["regenerate", "regenerate", "show"]
    reasons = " ".join(trial.generations[0].decision.reasons)
    assert "valence" in reasons and "red share" in reasons
    assert outcome.source == "final" and outcome.picture is trial.generations[-1].picture
    assert outcome.fields({})["safety_blocked"] == 2


@pytest.mark.parametrize("on_deadline", ["best", "none"])
def test_safety_gate_falls_back_when_every_attempt_is_blocked(stim, on_deadline):
    gen = StepGenerator(step_s=0.001, colour=lambda prompt, seed: CALM if prompt == "help is on the way" else DARK_RED)
    trial = make_trial(gen, stim, live=Live(debounce_s=0.0, on_deadline=on_deadline))
    trial.partial("help is on the way")
    wait_for(lambda: trial.generations and trial.generations[0].outcome == "ready")
    outcome = finish(trial, "Help is on the way now")
    blocked = [g for g in trial.generations if g.prompt == "help is on the way now"]
    assert len(blocked) == SafetyPolicy().max_attempts and not any(g.safe for g in blocked)
    assert blocked[-1].decision.action == "fallback" and "attempts exhausted" in blocked[-1].decision.reasons
    assert outcome.reason.startswith("safety gate")
    if on_deadline == "best":
        assert outcome.source == "best_ready" and outcome.prompt == "help is on the way"
    else:
        assert outcome.picture is None and outcome.source == "none"


def test_gate_fails_closed_on_an_unreadable_picture(stim):
    class Broken(StepGenerator):
        def generate(self, *args, **kwargs):
            return GeneratedPicture(png=b"not a png", params={"interrupted": False})

    trial = make_trial(Broken(), stim, live=Live(speculate=False, on_deadline="best"))
    outcome = finish(trial, "a calm sunny beach")
    decision = trial.generations[0].decision
    assert decision.action == "fallback" and decision.reasons[0].startswith("error: candidate")
    assert outcome.picture is None and outcome.source == "none"


def test_gate_fails_closed_on_an_unreadable_stimulus(tmp_path):
    bad = tmp_path / "stimulus.png"
    bad.write_text("not a picture")
    trial = make_trial(StepGenerator(step_s=0.001), bad, live=Live(speculate=False))
    outcome = finish(trial, "a calm sunny beach")
    assert all(g.decision.action != "show" for g in trial.generations)
    assert trial.generations[0].decision.reasons[0].startswith("error: stimulus")
    assert outcome.picture is None


def test_empty_transcript_and_failing_generator_show_nothing_and_say_why(stim):
    gen = StepGenerator(step_s=0.001)
    outcome = finish(make_trial(gen, stim), "um, uh")
    assert outcome.source == "none" and outcome.reason.startswith("empty transcript") and gen.calls == []

    class Failing(StepGenerator):
        def generate(self, *args, **kwargs):
            raise RuntimeError("out of memory")

    outcome = finish(make_trial(Failing(), stim, live=Live(speculate=False)), "a calm beach")
    assert outcome.picture is None and outcome.reason == "generation failed: RuntimeError: out of memory"


def test_without_speculation_nothing_runs_before_the_final(stim):
    gen = StepGenerator(step_s=0.001)
    trial = make_trial(gen, stim, live=Live(speculate=False, debounce_s=0.0))
    trial.partial("they are actors on a set")
    time.sleep(0.1)
    assert gen.calls == []
    outcome = finish(trial, "They are actors on a set")
    assert outcome.source == "final" and outcome.fields({})["speculative_generations"] == 0


def test_a_worker_bug_is_recorded_and_the_deadline_still_holds(stim):
    class Wrong(StepGenerator):
        def generate(self, *args, **kwargs):
            return object()  # not a GeneratedPicture

    trial = make_trial(Wrong(), stim, live=Live(speculate=False, deadline_s=0.2, on_deadline="none"))
    start = time.monotonic_ns()
    outcome = finish(trial, "a calm beach", start)
    assert (time.monotonic_ns() - start) / NS < 0.4
    assert outcome.picture is None and outcome.reason.startswith("deadline")
    assert trial.worker_error.startswith("AttributeError")


def test_a_lost_generator_is_raised_at_once_not_recorded_as_a_missing_picture(stim):
    from edge_cer.errors import GeneratorLost

    class Gone(StepGenerator):
        def generate(self, *args, **kwargs):
            raise GeneratorLost("grpc://gpu-box:8001: server unavailable; continue the session with --resume")

    trial = make_trial(Gone(), stim, live=Live(speculate=False, deadline_s=5.0))
    start = time.monotonic_ns()
    trial.final("a calm beach", start)
    with pytest.raises(GeneratorLost, match="--resume"):
        trial.result()
    assert (time.monotonic_ns() - start) / NS < 2.0, "the deadline is not waited for"
    trial.close()
