"""The speaking turn (`edge_cer.live.speaking.listen`): a final does not end it, `end_of_turn_s` of silence does.

Fabricated ASR at microphone timing (tests/live_helpers.py): the voice detector ends an utterance at every pause
of a sentence, so a sentence with commas arrives as several finals; the real-recogniser case is in
tests/test_trial_end_to_end.py."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from edge_cer.live.speaking import LivePipeline, listen
from edge_cer.live.trial import NS
from edge_cer.session.counterbalance import PlannedTrial
from edge_cer.session.protocol import Condition, Live, load_protocol
from edge_cer.session.stimuli import Stimulus
from edge_cer.speech.audio import array_source
from tests.live_helpers import ScriptedRecognizer, StepGenerator, stimulus

END_OF_TURN_S = 0.4
FIRST, REST = "The man isn't hurt, he's being helped,", "and he'll recover soon."


def hear(script, seconds=2.5, **kwargs):
    """listen() to `seconds` of audio at microphone timing; the heard window and the clock when it started."""
    start = time.monotonic_ns()
    heard = listen(ScriptedRecognizer(script), array_source(np.zeros(int(seconds * 16000), np.float32), 16000,
                                                            realtime=True),
                   time.monotonic_ns, end_of_turn_s=kwargs.pop("end_of_turn_s", END_OF_TURN_S), **kwargs)
    return heard, start


def test_a_short_pause_after_a_final_continues_the_turn_and_the_finals_are_joined():
    heard, start = hear([(0.3, "final", FIRST), (0.6, "partial", "and he'll"), (0.9, "final", REST)])
    assert heard.text == f"{FIRST} {REST}"
    assert abs(heard.speech_end_ns - start - 0.9 * NS) < 0.05 * NS, "speech ends at the last final's endpoint"
    # The turn ends END_OF_TURN_S after the last speech (1.3 s audio), long before the 2.5 s recording runs out.
    assert 1.3 * NS <= heard.final_ns - start < 2.2 * NS


def test_a_pause_longer_than_the_end_of_turn_silence_ends_the_turn():
    heard, start = hear([(0.3, "final", FIRST), (2.0, "final", REST)])
    assert heard.text == FIRST, "speech after the end of the turn is not heard"
    assert 0.7 * NS <= heard.final_ns - start < 1.9 * NS


def test_the_speaking_limit_ends_the_turn_inside_the_pause():
    start = time.monotonic_ns()
    heard, _ = hear([(0.3, "final", FIRST), (1.0, "final", REST)], until_ns=start + round(0.45 * NS),
                    end_of_turn_s=1.0)
    assert heard.text == FIRST and heard.final_ns - start < 1.0 * NS


def test_no_end_of_turn_silence_ends_at_the_first_final():
    heard, _ = hear([(0.3, "final", FIRST), (0.5, "final", REST)], end_of_turn_s=0.0)
    assert heard.text == FIRST


def pipeline(tmp_path, generator, **live):
    protocol = replace(load_protocol(), live=replace(Live(), debounce_s=0.3, end_of_turn_s=END_OF_TURN_S, **live))
    picture = stimulus(tmp_path / "stimulus.png")
    trial = PlannedTrial(trial=1, block=1, practice=False, condition=Condition("reappraise", "ai"),
                         stimulus=Stimulus("s1", picture, valence=2.0, arousal=6.0), seed=7)
    return LivePipeline(generator, ScriptedRecognizer([]), protocol), trial


def speak_turn(live, trial, script, seconds=1.6):
    live.recognizer = ScriptedRecognizer(script)
    live.prepare(trial, time.monotonic_ns)
    heard = live.listen(trial.trial, array_source(np.zeros(int(seconds * 16000), np.float32), 16000, realtime=True),
                        time.monotonic_ns)
    return heard, live.picture(trial.trial, heard.text, heard.speech_end_ns)


def test_the_picture_starts_at_a_final_and_is_used_when_the_turn_ends_there(tmp_path):
    generator = StepGenerator(step_s=0.02)  # 4 steps: 0.08 s, well inside the end-of-turn silence
    live, trial = pipeline(tmp_path, generator)
    heard, outcome = speak_turn(live, trial, [(0.3, "final", f"{FIRST} {REST}")])
    assert outcome.source == "speculative"
    assert outcome.prompt == "the man isn't hurt he's being helped and he'll recover soon"
    run = outcome.generations[0]
    assert len(outcome.generations) == 1 and outcome.ready_ns < heard.final_ns, "ready before the turn ended"
    # Started at the final, not a debounce (0.3 s) later: the end-of-turn wait hides the generation.
    assert run.started_ns - heard.speech_end_ns < 0.2 * NS
    live.close()


def test_a_final_inside_the_turn_starts_a_picture_that_the_next_utterance_replaces(tmp_path):
    generator = StepGenerator(step_s=0.02)
    live, trial = pipeline(tmp_path, generator)
    heard, outcome = speak_turn(live, trial, [(0.3, "final", FIRST), (0.6, "final", REST)])
    assert heard.text == f"{FIRST} {REST}"
    assert [g.prompt for g in outcome.generations] == ["the man isn't hurt he's being helped",
                                                       "the man isn't hurt he's being helped and he'll recover soon"]
    assert outcome.prompt == outcome.final_prompt == outcome.generations[-1].prompt
    assert outcome.source == "speculative" and outcome.fields({})["wasted_generations"] == 1
    live.close()
