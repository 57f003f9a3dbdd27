"""The speaking phase, live: audio -> streaming ASR partials -> prompt -> speculative generation -> picture.

    live = LivePipeline(load_generator(engines, negative_prompt=...), create_recognizer(asr), protocol)
    ...                                                  # at the stimulus phase of an AI trial:
    live.prepare(phase.trial, session.clock.now_ns)      # warms the stimulus caches in the background
    ...                                                  # at the regulate phase:
    live.speak(session, phase, wav, realtime=True)       # transcript, picture (or why none) and accounting submitted

ASR and generation run in their own threads (`RecognizerWorker`, `LiveTrial`); `speak` blocks its caller for the
speaking window plus at most the feedback deadline, so a UI calls it from a worker, never from its event loop.
All session verbs are called from the caller's thread (the session's SQLite connection belongs to it).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_cer.affect.safety import SafetyPolicy
from edge_cer.live.gate import GatedGenerator, PictureScorer
from edge_cer.live.prompt import PromptBuilder
from edge_cer.live.trial import NS, LiveOutcome, LiveTrial
from edge_cer.session.counterbalance import PlannedTrial
from edge_cer.session.engine import Phase, Session
from edge_cer.session.protocol import Protocol
from edge_cer.speech.audio import file_source
from edge_cer.speech.recognizer import Final, Partial, RecognizerWorker


@dataclass(frozen=True)
class Heard:
    """One speaking window's transcript; times on the caller's clock (ns)."""

    text: str
    speech_end_ns: int | None  # the last final's endpoint (None: nothing was said)
    final_ns: int  # when the last final's text was ready (the end of listening, when nothing was said)
    partials: int


def listen(recognizer, wav: Path, clock: Callable[[], int], *, realtime: bool, on_text=None,
           until_ns: int | None = None) -> Heard:
    """Stream a recording through the recogniser (in its worker thread) until its endpoint, as a microphone would
    be: the first Final ends the speaking window (the rest of the recording is not heard), and so does `until_ns`
    (the speaking limit). `on_text(text)` gets the running transcript (finished utterances + the current partial)."""
    finals: list[Final] = []
    final_ns: list[int] = []
    partials = 0
    ended = threading.Event()

    def on_event(event) -> None:
        nonlocal partials
        if isinstance(event, Final):
            finals.append(event)
            final_ns.append(clock())
            ended.set()
        partials += isinstance(event, Partial)
        if on_text is not None:
            tail = [event.text] if isinstance(event, Partial) else []
            on_text(" ".join([f.text for f in finals] + tail))

    worker = RecognizerWorker(recognizer, on_event=on_event)
    start = clock()
    try:
        for chunk in file_source(wav, realtime=realtime):
            if ended.is_set() or (until_ns is not None and clock() >= until_ns):
                break
            worker.push(chunk)
    finally:
        worker.close()
    now = clock()
    # Audio time -> caller's clock. Replayed faster than real time the endpoint maps into the future: clamp.
    end = min(now, start + round(finals[-1].t_endpoint * NS)) if finals else None
    return Heard(" ".join(f.text for f in finals), end, final_ns[-1] if final_ns else now, partials)


class LivePipeline:
    """Per session: the picture engine, the recogniser and the protocol's `[prompt]`, `[live]` and `[generation]`."""

    def __init__(self, generator, recognizer, protocol: Protocol, policy: SafetyPolicy | None = None):
        self.recognizer, self.protocol = recognizer, protocol
        # Live trials gate their own pictures (weighing the deadline); every other picture of the session goes
        # through `self.generator`, the same engine behind the same gate.
        self.engine = generator.generator if isinstance(generator, GatedGenerator) else generator
        self.prompt = PromptBuilder(protocol.prompt)
        fallback = "best_ready" if protocol.live.on_deadline == "best" else "none"
        concepts = PictureScorer(self.engine).concepts
        self.policy = policy or SafetyPolicy(fallback=fallback, blocked_concepts=concepts)
        self.generator = GatedGenerator(self.engine, self.policy)
        self._trials: dict[int, LiveTrial] = {}

    def prepare(self, trial: PlannedTrial, clock: Callable[[], int]) -> LiveTrial | None:
        """Start the trial's generation worker, which first caches the stimulus' embeddings and latents."""
        for number in [n for n in self._trials if n != trial.trial]:  # one trial at a time (a skipped one, too)
            self._trials.pop(number).close()
        if trial.condition.feedback != "ai":
            return None
        if trial.trial not in self._trials:
            self._trials[trial.trial] = LiveTrial(
                self.engine, trial.stimulus.path, seed=trial.seed, generation=self.protocol.generation,
                prompt=self.prompt, live=self.protocol.live, policy=self.policy, clock=clock)
        return self._trials[trial.trial]

    def speak(self, session: Session, phase: Phase, wav: Path, *, realtime: bool) -> LiveOutcome | None:
        """Run one speaking window from a recording and submit its transcript, picture and accounting."""
        live = self.prepare(phase.trial, session.clock.now_ns)
        # The speaking limit stops a real-time replay; an instant one (time_scale 0) has no time to limit.
        heard = listen(self.recognizer, wav, session.clock.now_ns, realtime=realtime,
                       on_text=live.partial if live else None, until_ns=phase.due_ns if realtime else None)
        session.submit_transcript(heard.text, speech_end_ns=heard.speech_end_ns)
        if live is None:
            return None
        live.final(heard.text, heard.speech_end_ns)
        outcome = live.result()
        live.close(timeout=0)  # cancels what still runs; joined at the next prepare(), not here: the clock goes on
        if outcome.picture is not None:
            session.submit_picture(outcome.picture, prompt=outcome.prompt, ready_ns=outcome.ready_ns)
        fields = outcome.fields(self.settings())
        fields["live"].update(precompute_error=live.precompute_error, worker_error=live.worker_error)
        session.submit_live(fields, no_picture=outcome.reason if outcome.picture is None else None)
        return outcome

    def settings(self) -> dict:
        """Recorded with every live trial: the prompt rules, the live rules, the gate's policy."""
        return {"prompt": dataclasses.asdict(self.protocol.prompt), "live": dataclasses.asdict(self.protocol.live),
                "safety": dataclasses.asdict(self.policy)}

    def close(self) -> None:
        for live in self._trials.values():
            live.close()
        self._trials.clear()
