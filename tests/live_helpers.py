"""Fakes for the live pipeline tests: a step-wise generator with a cancel point, and a scripted recogniser."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import replace

import numpy as np
from PIL import Image

from edge_cer.affect.safety import SafetyPolicy
from edge_cer.session.prompt import PromptBuilder
from edge_cer.live.trial import LiveTrial
from edge_cer.engine import GeneratedPicture
from edge_cer.session.protocol import Generation, Live, PromptSettings
from edge_cer.speech.recognizer import Final, Partial

CALM = (150, 190, 230)  # brighter and bluer than the stimulus: passes the gate
DARK_RED = (70, 4, 4)  # darker and redder than the stimulus: blocked


def stimulus(path, rgb=(150, 150, 160)):
    Image.new("RGB", (40, 32), rgb).save(path)
    return path


class StepGenerator:
    """Sleeps `step_s` per step and honours `callback_on_step_end`, like the engine; paints `colour(prompt, seed)`."""

    def __init__(self, step_s=0.02, colour=lambda prompt, seed: CALM):
        self.step_s, self.colour = step_s, colour
        self.calls: list[tuple[str, int]] = []
        self.precomputed = []
        self.lock = threading.Lock()

    def precompute(self, stimulus_path):
        self.precomputed.append(stimulus_path)

    def generate(self, stimulus_path, prompt, *, seed, strength, ip_scale, steps, callback_on_step_end=None):
        with self.lock:
            self.calls.append((prompt, seed))
        interrupted = False
        for i in range(steps):
            time.sleep(self.step_s)
            if callback_on_step_end is not None and not callback_on_step_end(i, steps):
                interrupted = True
                break
        buffer = io.BytesIO()
        Image.new("RGB", (24, 24), self.colour(prompt, seed)).save(buffer, format="PNG")
        return GeneratedPicture(png=buffer.getvalue(), params={"prompt": prompt, "seed": seed,
                                                               "interrupted": interrupted})


def make_trial(generator, stimulus_path, *, steps=10, live=None, prompt=None, policy=None, seed=7):
    live = live or Live(debounce_s=0.05, deadline_s=2.0)
    return LiveTrial(generator, stimulus_path, seed=seed, generation=replace(Generation(), steps=steps),
                     prompt=PromptBuilder(prompt or PromptSettings(min_words=2)), live=live,
                     policy=policy or SafetyPolicy(fallback="best_ready"))


class ScriptedRecognizer:
    """Fabricated ASR: emits the scripted events once the audio clock passes their time (RecognizerWorker verbs);
    speech is heard at each scripted event's time, silence after the last one."""

    mode = "scripted"

    def __init__(self, script: list[tuple[float, str, str]]):  # (audio s, "partial"/"final", text)
        self.script = script

    class Stream:
        def __init__(self):
            self.samples, self.sent, self.heard_at = 0, 0, 0.0

        def accept_waveform(self, sample_rate, samples):
            self.samples += len(np.asarray(samples))

        def silence_s(self):
            return self.samples / 16000 - self.heard_at

    def create_stream(self):
        return self.Stream()

    def decode(self, stream, partials=True):
        t = stream.samples / 16000
        due = [e for e in self.script[stream.sent:] if e[0] <= t]
        stream.sent += len(due)
        stream.heard_at = max([stream.heard_at] + [at for at, _, _ in due])
        return [Partial(text, at) if kind == "partial" else Final(text, at, t) for at, kind, text in due
                if partials or kind == "final"]

    def finish(self, stream):
        """End of input finishes the utterance in progress (a partial was its last event), not the ones after it."""
        sent, rest = self.script[:stream.sent], self.script[stream.sent:]
        stream.sent, t = len(self.script), stream.samples / 16000
        final = next((e for e in rest if e[1] == "final"), None)
        return [Final(final[2], min(final[0], t), t)] if final and sent and sent[-1][1] == "partial" else []
