"""One trial of live generation: speculative pictures from partial transcripts, the final one, the gate, the deadline.

    trial = LiveTrial(generator, stimulus, seed=17, generation=protocol.generation, prompt=PromptBuilder(...),
                      live=protocol.live, policy=SafetyPolicy(...), clock=session.clock.now_ns)
    trial.partial("they are actors")        # from the recogniser's thread, as often as partials come
    trial.partial("They are actors.", settled=True)   # a recogniser's final inside the turn: starts at once
    trial.final("They are actors.", speech_end_ns)
    outcome = trial.result()                # blocks until the picture is ready, or until the deadline
    trial.close()

A worker thread runs one generation at a time. A partial whose prompt has stood `debounce_s` starts a speculative
generation, and cancels a running one whose prompt it replaced (the engine's step callback is the cancel point); a
settled text (a recogniser's final, while the turn may still go on) needs no debounce.
The final transcript cancels every speculative run with another prompt; when the last speculative prompt equals
the final one, its picture is used and no final generation runs (same seed, so it is the same picture). Every
picture passes the safety gate; a blocked picture of the final prompt is regenerated with the next seed while the
gate allows. At the deadline `result()` returns what `[live] on_deadline` says, without waiting for the worker.
A generator that is gone for good (`GeneratorLost`: its server died) ends the trial at once: `result()` raises it, so
the session stops (resumable) instead of recording every later AI trial without a picture.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_cer.affect.gate import PictureScorer, SafetyGate
from edge_cer.affect.safety import REGENERATE, GateDecision, SafetyPolicy
from edge_cer.engine import GeneratedPicture
from edge_cer.errors import GeneratorLost
from edge_cer.session.prompt import PromptBuilder
from edge_cer.session.protocol import Generation, Live

NS = 1_000_000_000
SPECULATIVE, FINAL, REGENERATED = "speculative", "final", "regenerate"


@dataclass
class EngineRun:
    """One engine run; times are on the trial's clock (ns)."""

    kind: str  # speculative / final / regenerate
    prompt: str
    seed: int
    started_ns: int
    ended_ns: int | None = None
    outcome: str = "running"  # running / ready / cancelled / failed
    why: str | None = None  # why it was cancelled or failed
    picture: GeneratedPicture | None = field(default=None, repr=False)
    decision: GateDecision | None = None

    @property
    def safe(self) -> bool:
        return self.outcome == "ready" and self.decision is not None and self.decision.shown

    def record(self) -> dict:
        return {"kind": self.kind, "prompt": self.prompt, "seed": self.seed, "started_ns": self.started_ns,
                "ended_ns": self.ended_ns, "outcome": self.outcome, "why": self.why,
                "safety": self.decision.record() if self.decision else None,
                "timings": self.picture.timings if self.picture else None}


@dataclass(frozen=True)
class LiveOutcome:
    """What the participant is shown, and the accounting for the trial row (data.DRIVER_COLUMNS)."""

    picture: GeneratedPicture | None
    prompt: str  # the shown picture's prompt ("" when none)
    source: str  # final / speculative / best_ready / none
    ready_ns: int | None  # when the shown picture was ready
    reason: str | None  # why the picture is not that of the final transcript (None when it is)
    final_prompt: str
    generations: tuple[EngineRun, ...]
    decided_ns: int  # when this outcome was chosen: the feedback can start from here
    deadline_missed: bool = False  # the deadline passed before the final transcript's picture was decided
    errors: dict = field(default_factory=dict)  # the worker's own failures (precompute, a bug), for the log

    def fields(self, settings: dict) -> dict:
        speculative = [g for g in self.generations if g.kind == SPECULATIVE]
        shown = next((g for g in self.generations if self.picture is not None and g.picture is self.picture), None)
        blocked = [g for g in self.generations if g.outcome == "ready" and not g.safe]
        return {
            "speculative_generations": len(speculative),
            "wasted_generations": sum(g is not shown for g in speculative),
            "feedback_source": self.source,
            "safety_blocked": len(blocked),
            "safety_reason": "; ".join(dict.fromkeys(r for g in blocked for r in g.decision.reasons)) or None,
            "generation_deadline_missed": int(self.deadline_missed),
            "live": {"final_prompt": self.final_prompt, "shown_prompt": self.prompt, "reason": self.reason,
                     "settings": settings, "generations": [g.record() for g in self.generations], **self.errors},
        }


class LiveTrial:
    def __init__(self, generator, stimulus_path: Path, *, seed: int, generation: Generation,
                 prompt: PromptBuilder, live: Live, policy: SafetyPolicy, scorer: PictureScorer | None = None,
                 clock: Callable[[], int] = time.monotonic_ns, precompute: bool = True):
        self.generator, self.stimulus_path, self.seed = generator, Path(stimulus_path), seed
        self.settings, self.prompt, self.live, self.clock = generation, prompt, live, clock
        self.gate = SafetyGate(self.stimulus_path, policy, scorer or PictureScorer(generator))
        self.generations: list[EngineRun] = []
        self._cond = threading.Condition()
        self._pending: tuple[str, int] | None = None  # newest speculative prompt not yet generated, and when it is due
        self._running: EngineRun | None = None
        self._final: str | None = None  # the final transcript's prompt, once known
        self._deadline_ns: int | None = None
        self._outcome: LiveOutcome | None = None
        self._closed = False
        self.precompute_error: str | None = None
        self.worker_error: str | None = None
        self.lost: GeneratorLost | None = None  # the generator is gone: result() raises it
        self._thread = threading.Thread(target=self._work, args=(precompute,), name="live-generation", daemon=True)
        self._thread.start()

    # ---- inputs (any thread) ----

    def partial(self, text: str, settled: bool = False) -> None:
        """The current partial transcript; may start (after the debounce) a speculative generation. `settled`: the
        transcript of the turn's finished utterances, whose picture is likely the final one: due at once."""
        prompt = self.prompt.speculative(text) if self.live.speculate else ""
        with self._cond:
            if self._final is not None or not prompt:
                return
            covered = (self._running and self._running.prompt == prompt) or any(
                g.prompt == prompt and g.outcome == "ready" for g in self.generations)
            if covered:
                self._pending = None  # back to what runs (or ran): a flicker, nothing to cancel or start
            elif self._pending is None or self._pending[0] != prompt or settled:
                self._pending = (prompt, self.clock() + (0 if settled else round(self.live.debounce_s * NS)))
            self._cond.notify_all()

    def final(self, text: str, speech_end_ns: int | None = None) -> None:
        """The final transcript; the feedback deadline counts from the end of speech (or from now, if later)."""
        now = self.clock()
        with self._cond:
            self._final, self._pending = self.prompt(text), None
            due = (now if speech_end_ns is None else speech_end_ns) + round(self.live.deadline_s * NS)
            self._deadline_ns = max(now, due)
            self._cond.notify_all()

    def result(self) -> LiveOutcome:
        """Block until the final picture is decided or the deadline passes (after `final()`); never longer."""
        with self._cond:
            if self._final is None:
                raise RuntimeError("LiveTrial.result() before final()")
            while self._outcome is None and self.lost is None and (left := self._deadline_ns - self.clock()) > 0:
                self._cond.wait(left / NS)
            if self.lost is not None:
                raise self.lost
            if self._outcome is None:
                self._outcome = dataclasses.replace(self._select("deadline: the final picture was not ready in time"),
                                                    deadline_missed=True)
                self._closed = True
                self._cond.notify_all()
            return self._outcome

    @property
    def closed(self) -> bool:
        """Its outcome is decided or it was closed: a repeated speaking window (after a pause) needs a new trial."""
        return self._closed or self._outcome is not None

    def close(self, timeout: float | None = None) -> None:
        """Cancel whatever runs and wait for the worker (it stops at the engine's next step)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # ---- the worker ----

    def _work(self, precompute: bool) -> None:
        if precompute and hasattr(self.generator, "precompute"):
            try:
                self.generator.precompute(self.stimulus_path)  # image embeddings + latents before speech
            except GeneratorLost as exc:
                self._lose(exc)
                return
            except Exception as exc:  # noqa: BLE001 - logged; generate() meets (and records) the same problem
                self.precompute_error = f"{type(exc).__name__}: {exc}"
        try:
            while (job := self._next_job()) is not None:
                self._generate(job)
        except Exception as exc:  # noqa: BLE001 - a bug here must not stall the trial: result() falls back at the deadline
            self.worker_error = f"{type(exc).__name__}: {exc}"

    def _next_job(self) -> EngineRun | None:
        with self._cond:
            while True:
                if self._closed or self._outcome is not None:
                    return None
                if self._final is not None:
                    job = self._final_job()
                    if job is None:
                        self._cond.notify_all()
                        return None
                    break
                if self._pending and (wait := self._pending[1] - self.clock()) <= 0:
                    job = EngineRun(SPECULATIVE, self._pending[0], self.seed, self.clock())
                    self._pending = None
                    break
                self._cond.wait(wait / NS if self._pending else None)
            self._running = job
            self.generations.append(job)
            return job

    def _final_job(self) -> EngineRun | None:
        """The next generation for the final prompt, or None after deciding the outcome (under the lock)."""
        prompt = self._final
        if not prompt:
            self._outcome = self._select("empty transcript: nothing to draw", allow_other=False)
            return None
        mine = [g for g in self.generations if g.prompt == prompt and g.outcome in ("ready", "failed")]
        if any(g.safe for g in mine):
            self._outcome = self._select(None)
            return None
        last = mine[-1] if mine else None
        if last is None:
            return EngineRun(FINAL, prompt, self.seed, self.clock())
        if last.outcome == "failed":
            self._outcome = self._select(f"generation failed: {last.why}")
        elif last.decision.action == REGENERATE:
            return EngineRun(REGENERATED, prompt, self.seed + len(mine), self.clock())
        else:
            self._outcome = self._select("safety gate: " + "; ".join(last.decision.reasons))
        return None

    def _generate(self, job: EngineRun) -> None:
        g = self.settings
        try:
            picture = self.generator.generate(self.stimulus_path, job.prompt, seed=job.seed, strength=g.strength,
                                              ip_scale=g.ip_scale, steps=g.steps,
                                              callback_on_step_end=lambda *_: self._stale(job) is None)
        except GeneratorLost as exc:
            picture, job.why = None, f"{type(exc).__name__}: {exc}"
            self._lose(exc)
        except Exception as exc:  # noqa: BLE001 - recorded; the trial goes on without this picture
            picture, job.why = None, f"{type(exc).__name__}: {exc}"
        with self._cond:
            job.ended_ns, job.picture = self.clock(), picture
            if picture is None:
                job.outcome = "failed"
            elif picture.params.get("interrupted"):
                job.outcome, job.picture, job.why = "cancelled", None, self._stale(job)
            else:
                job.outcome = "ready"
                attempt = sum(x.prompt == job.prompt and x.outcome == "ready" for x in self.generations)
                left = (self._deadline_ns - job.ended_ns) / NS if self._deadline_ns is not None else float("inf")
                job.decision = self.gate.check(picture, attempt=attempt, time_left_s=left,
                                               expected_generation_s=(job.ended_ns - job.started_ns) / NS)
            self._running = None
            self._cond.notify_all()

    def _lose(self, exc: GeneratorLost) -> None:
        with self._cond:
            self.lost, self._closed = exc, True  # no more jobs: the worker ends
            self._cond.notify_all()

    def _stale(self, job: EngineRun) -> str | None:
        """Why a running generation should stop (checked at every engine step), or None."""
        if self._closed or self._outcome is not None:
            return "trial closed (deadline passed or picture chosen)"
        if self._final is not None:
            return None if job.prompt == self._final else "the final transcript's prompt differs"
        pending = self._pending
        if pending and pending[0] != job.prompt and self.clock() >= pending[1]:
            return "the transcript changed"
        return None

    def _select(self, reason: str | None, allow_other: bool = True) -> LiveOutcome:
        """The picture to show now: the final prompt's newest safe picture, else per `on_deadline` (under the lock)."""
        safe = sorted((g for g in self.generations if g.safe), key=lambda g: g.ended_ns, reverse=True)
        mine = next((g for g in safe if g.prompt == self._final), None)
        if mine is not None:
            source = SPECULATIVE if mine.kind == SPECULATIVE else FINAL
            return self._outcome_of(mine, source, None)
        if allow_other and self.live.on_deadline == "best" and safe:
            return self._outcome_of(safe[0], "best_ready", reason)
        return self._outcome_of(None, "none", reason)

    def _outcome_of(self, g: EngineRun | None, source: str, reason: str | None) -> LiveOutcome:
        return LiveOutcome(g.picture if g else None, g.prompt if g else "", source, g.ended_ns if g else None,
                           reason, self._final or "", tuple(self.generations), self.clock())
