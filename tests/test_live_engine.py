"""The live pipeline on the tiny exported engine: cancellation through the engine's step callback, and the shown
picture is exactly the final transcript's picture (same prompt, same seed) whether speculation made it or not."""

from __future__ import annotations

import threading
import time

import pytest

from edge_cer.affect.safety import SafetyPolicy
from edge_cer.session.protocol import Live
from tests.live_helpers import make_trial

# Random-weight pictures are noise; the gate is tested in test_live_trial.py, here it must let everything through.
OPEN_GATE = SafetyPolicy(max_valence_drop=2.0, max_red_share_increase=1.0)


@pytest.fixture(scope="module")
def generator(tiny_export):
    from edge_cer.engine import EngineGenerator
    from edge_cer.pipeline import SDPipeline

    return EngineGenerator(SDPipeline.from_export(tiny_export()))  # live trials gate their own pictures


def direct(generator, stimulus, prompt, steps, seed=7):
    return generator.generate(stimulus, prompt, seed=seed, strength=0.6, ip_scale=0.6, steps=steps).png


def wait_for(condition, timeout=30.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end
        time.sleep(0.005)


class HeldInTheEngine:
    """The engine generator, except that a run of `prompt` waits inside the engine, at its first step callback,
    until `release` is set: the final transcript then surely arrives while that run is in the engine, on a CPU of
    any speed or load (150 steps were once over before the final came, on a loaded CI machine)."""

    def __init__(self, generator, prompt: str):
        self.generator, self.prompt = generator, prompt
        self.entered, self.release = threading.Event(), threading.Event()

    def generate(self, stimulus_path, prompt, *, callback_on_step_end=None, **options):
        inner = callback_on_step_end
        if prompt == self.prompt and inner is not None:
            def callback_on_step_end(*args):
                self.entered.set()
                assert self.release.wait(30)
                return inner(*args)
        return self.generator.generate(stimulus_path, prompt, callback_on_step_end=callback_on_step_end, **options)

    def __getattr__(self, name):
        return getattr(self.generator, name)


def test_speculative_run_is_cancelled_in_the_engine_and_the_final_picture_is_the_final_prompts(generator, stimulus_png):
    steps = 20
    held = HeldInTheEngine(generator, "the man is badly hurt")
    trial = make_trial(held, stimulus_png, steps=steps, live=Live(debounce_s=0.0, deadline_s=60.0), policy=OPEN_GATE)
    trial.partial("the man is badly hurt")
    assert held.entered.wait(30)
    trial.final("The man is being helped by a nurse.", time.monotonic_ns())
    held.release.set()
    outcome = trial.result()
    trial.close()
    speculative, final = trial.generations
    assert speculative.prompt == "the man is badly hurt"
    assert speculative.outcome == "cancelled" and speculative.picture is None
    assert final.prompt == "the man is being helped by a nurse" and final.kind == "final"
    assert outcome.source == "final" and outcome.reason is None
    assert outcome.picture.png == direct(generator, stimulus_png, "the man is being helped by a nurse", steps)
    assert outcome.picture.params["seed"] == 7 and not outcome.picture.params["interrupted"]


def test_final_equal_to_last_speculative_prompt_skips_the_final_generation(generator, stimulus_png):
    trial = make_trial(generator, stimulus_png, steps=4, live=Live(debounce_s=0.0, deadline_s=60.0),
                       policy=OPEN_GATE)
    trial.partial("They are actors")
    wait_for(lambda: trial.generations and trial.generations[-1].outcome == "ready")
    trial.final("they are ... actors!", time.monotonic_ns())
    outcome = trial.result()
    trial.close()
    assert [g.kind for g in trial.generations] == ["speculative"]
    assert outcome.source == "speculative" and outcome.ready_ns < time.monotonic_ns()
    assert outcome.picture.png == direct(generator, stimulus_png, "they are actors", 4)
