"""The speaking window, live: audio -> streaming ASR partials -> prompt -> speculative generation -> picture.

    live = LivePipeline(generator, recognizer, protocol)       # built by edge_cer.runtime, once per session
    live.prepare(trial, session.clock.now_ns)                   # at the stimulus phase: caches, generation worker
    heard = live.listen(trial.trial, chunks, clock)             # blocking: the turn's transcript (its finals)
    session.submit_transcript(heard.text, speech_end_ns=heard.speech_end_ns, source="live")
    outcome = live.picture(trial.trial, heard.text, heard.speech_end_ns)   # blocking, at most to the deadline
    live.submit(session, outcome)                               # the picture (or why none) and its accounting

Spoken, typed and scripted reappraisals all get their picture from `picture()`: the same prompt rules, the same
safety gate (regenerate with the next seed, then the protocol's fallback), the same deadline. ASR and generation
run in their own threads (`RecognizerWorker`, `LiveTrial`); `listen` and `picture` block their caller, so a UI
calls them from a worker and the session verbs (`submit`) from the thread that owns the session.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from edge_cer.affect.gate import PictureScorer
from edge_cer.affect.safety import SafetyPolicy
from edge_cer.live.trial import NS, LiveOutcome, LiveTrial
from edge_cer.session.counterbalance import PlannedTrial
from edge_cer.session.phases import Session
from edge_cer.session.prompt import PromptBuilder
from edge_cer.session.protocol import Protocol
from edge_cer.speech.recognizer import Final, Partial, RecognizerWorker


@dataclass(frozen=True)
class HeardWindow:
    """One speaking window's transcript; times on the caller's clock (ns)."""

    text: str
    speech_end_ns: int | None  # the last final's endpoint (None: nothing was said)
    final_ns: int  # when the turn ended: the transcript is final from here
    partials: int
    start_ns: int = 0  # audio time 0: when listening started
    last_final_ns: int | None = None  # when the recogniser delivered the turn's last final


def listen(recognizer, chunks: Iterable[np.ndarray], clock: Callable[[], int], *, end_of_turn_s: float,
           on_event=None, until_ns: int | None = None, stop: threading.Event | None = None) -> HeardWindow:
    """Stream audio through the recogniser (in its worker thread) for one speaking turn. A Final does not end it:
    the turn ends when the recogniser has heard `end_of_turn_s` of silence after a Final (speech within it
    continues the turn, and the transcript joins the finals), at `until_ns` (the speaking limit), at `stop`, or
    when the audio runs out; the utterance in progress is then finished. Audio time 0 is the clock when listening
    starts. `on_event(event, running_text)` gets every Partial and Final with the transcript so far (finished
    utterances + the current partial)."""
    finals: list[Final] = []
    partials, last_final_ns = 0, None

    def on_recognised(event) -> None:
        nonlocal partials, last_final_ns
        if isinstance(event, Final):
            finals.append(event)
            last_final_ns = clock()
        partials += isinstance(event, Partial)
        if on_event is not None:
            tail = [event.text] if isinstance(event, Partial) else []
            on_event(event, " ".join([f.text for f in finals] + tail))

    worker = RecognizerWorker(recognizer, on_event=on_recognised)
    start = clock()
    try:
        for chunk in chunks:
            finished, silence_s = worker.progress
            if (finished and silence_s >= end_of_turn_s) or (stop is not None and stop.is_set()) or (
                    until_ns is not None and clock() >= until_ns):
                break
            worker.push(chunk)
    finally:
        worker.close(timeout=30)
    now = clock()
    # Audio time -> caller's clock. Replayed faster than real time the endpoint maps into the future: clamp.
    end = min(now, start + round(finals[-1].t_endpoint * NS)) if finals else None
    return HeardWindow(" ".join(f.text for f in finals), end, now, partials, start, last_final_ns)


class LivePipeline:
    """Per session: the picture engine (None: no AI-feedback condition), the recogniser (None: typed or scripted
    text) and the protocol's `[prompt]`, `[live]` and `[generation]`."""

    def __init__(self, generator, recognizer, protocol: Protocol, policy: SafetyPolicy | None = None):
        self.generator, self.recognizer, self.protocol = generator, recognizer, protocol
        self.prompt = PromptBuilder(protocol.prompt)
        fallback = "best_ready" if protocol.live.on_deadline == "best" else "none"
        self.scorer = PictureScorer(generator)
        self.policy = policy or SafetyPolicy(fallback=fallback, blocked_concepts=self.scorer.concepts,
                                             **dataclasses.asdict(protocol.safety))
        self._trials: dict[int, LiveTrial] = {}
        self._lock = threading.Lock()

    def prepare(self, trial: PlannedTrial, clock: Callable[[], int]) -> LiveTrial | None:
        """Start the trial's generation worker, which first caches the stimulus' embeddings and latents."""
        with self._lock:
            for number in [n for n in self._trials if n != trial.trial]:  # one trial at a time (a skipped one, too)
                self._trials.pop(number).close()  # stops at the engine's next step
            if trial.condition.feedback != "ai" or self.generator is None:
                return None
            if trial.trial not in self._trials or self._trials[trial.trial].closed:
                self._trials[trial.trial] = LiveTrial(
                    self.generator, trial.stimulus.path, seed=trial.seed, generation=self.protocol.generation,
                    prompt=self.prompt, live=self.protocol.live, policy=self.policy, scorer=self.scorer, clock=clock)
            return self._trials[trial.trial]

    def listen(self, trial: int, chunks: Iterable[np.ndarray], clock: Callable[[], int], *, on_event=None,
               until_ns: int | None = None, stop: threading.Event | None = None) -> HeardWindow:
        """One speaking turn from `chunks` (a microphone, or a recording at microphone timing:
        edge_cer.speech.audio.paced), ended by `[live] end_of_turn_s`. In an AI trial the transcript so far feeds
        speculative generation: a partial's after the debounce, a final's (the turn's finished utterances) at once,
        so the picture is under way while the end-of-turn silence runs out."""
        live = self._trials.get(trial)

        def on_recognised(event, text: str) -> None:
            if live is not None:
                live.partial(text, settled=isinstance(event, Final))
            if on_event is not None:
                on_event(event, text)

        return listen(self.recognizer, chunks, clock, end_of_turn_s=self.protocol.live.end_of_turn_s,
                      on_event=on_recognised, until_ns=until_ns, stop=stop)

    def picture(self, trial: int, text: str, speech_end_ns: int | None = None) -> LiveOutcome | None:
        """The final transcript's picture for an AI trial prepared with `prepare` (None for any other trial):
        blocks until it is decided or the deadline passes, never longer."""
        live = self._trials.get(trial)
        if live is None:
            return None
        live.final(text, speech_end_ns)
        outcome = live.result()
        live.close(timeout=0)  # cancels what still runs; joined at the next prepare(), not here: the clock goes on
        errors = {k: v for k, v in (("precompute_error", live.precompute_error), ("worker_error", live.worker_error))
                  if v}
        return dataclasses.replace(outcome, errors=errors) if errors else outcome

    def submit(self, session: Session, outcome: LiveOutcome) -> None:
        """Hand the outcome to the session: the picture (or why there is none) and the accounting for its row."""
        session.submit_picture(outcome.picture, reason=outcome.reason if outcome.picture is None else None,
                               ready_ns=outcome.ready_ns, accounting=outcome.fields(self.settings()))

    def settings(self) -> dict:
        """Recorded with every AI trial: the prompt rules, the live rules, the gate's policy."""
        return {"prompt": dataclasses.asdict(self.protocol.prompt), "live": dataclasses.asdict(self.protocol.live),
                "safety": dataclasses.asdict(self.policy)}

    def close(self) -> None:
        with self._lock:
            for live in self._trials.values():
                live.close()
            self._trials.clear()
