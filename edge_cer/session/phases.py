"""The headless CER session: a state machine driven by verbs, on one monotonic clock, writing as it goes.

    session = Session(protocol, plan, store)
    while (phase := session.next_phase()) is not None:
        if phase.name == "regulate" and phase.trial.condition.speaks:
            session.submit_transcript("It is only a film set.", source="typed")
            if (request := session.picture_request()) is not None:     # an AI-feedback trial
                session.submit_picture(make(request))                  # or submit_picture(None, reason="...")
        elif phase.name in ("rating_pre", "rating_post"):
            session.submit_rating(4)
        else:
            session.clock.sleep_until(phase.due_ns)   # a UI would set a timer instead

`next_phase()` ends the current phase and starts the next one; the caller decides when (a phase's `due_ns`, a
response, an endpoint) and the session records, for every phase, the requested onset (the schedule, non-slip: a
timed phase is due when the previous one's requested duration is over) and the actual onset (the clock when the
phase began). The experimenter's verbs are `pause()`, `resume()`, `skip_trial()` and `abort(reason)`.

The session never makes pictures: it says which one an AI trial needs (`picture_request()`: stimulus, seed,
settings, and the prompt once the final transcript is in) and its driver (edge_cer.runtime, the terminal UI) makes
it and hands it back, or says why there is none. The feedback phase's duration runs from its actual onset, the
moment the picture (or the blank screen) appears, so waiting for a picture never shortens it; the wait itself is
recorded (`feedback_wait_s`), and so is a missed generation deadline.

Each phase boundary and response is committed to the session database before the call returns, and a trial's row
is written when its last rating ends, so a crash loses at most the trial in progress. A new `Session` on a store
that already has events is a resume: it logs the interruption and starts at the first trial without a row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edge_cer.engine import GeneratedPicture
from edge_cer.errors import EdgeCerError
from edge_cer.session.counterbalance import PlannedTrial
from edge_cer.session.data import ANNOTATION_COLUMNS, DRIVER_COLUMNS, SessionStore
from edge_cer.session.prompt import PromptBuilder
from edge_cer.session.protocol import Generation, Protocol

NS = 1_000_000_000


def seconds(ns: float) -> float:
    """Session-clock nanoseconds as seconds, to the microsecond (the log keeps the nanoseconds)."""
    return round(ns / NS, 6)


TRIAL_PHASES = ("fixation", "stimulus", "rating_pre", "cue", "regulate", "feedback", "rating_post", "iti")
RESPONSE_PHASES = ("rating_pre", "rating_post")
TRANSCRIPT_SOURCES = ("live", "scripted", "typed")  # a recogniser heard it; a script gave it; someone typed it
# What a picture's params say about how it was made, copied into the trial row (names of `edge-cer generate`).
PICTURE_PARAMS = ("prompt", "negative_prompt", "seed", "strength", "ip_scale", "steps", "guidance", "scheduler",
                  "vae", "engine", "provider", "engine_manifest_sha256")

# (row, planned trial, absolute picture path or None) -> {annotation column: value}; see data.ANNOTATION_COLUMNS.
TrialAnnotator = Callable[[Mapping, PlannedTrial, "Path | None"], Mapping[str, float]]


class SessionClock:
    """Nanoseconds of session time from `time.monotonic_ns`; `offset_ns` continues a resumed session's timeline."""

    def __init__(self, offset_ns: int = 0):
        self._origin = time.monotonic_ns() - offset_ns

    def now_ns(self) -> int:
        return time.monotonic_ns() - self._origin

    def sleep_until(self, t_ns: int | None) -> None:
        if t_ns is not None:
            while (left := t_ns - self.now_ns()) > 0:
                time.sleep(left / NS)


@dataclass(frozen=True)
class Phase:
    name: str  # instructions, break, end, or one of TRIAL_PHASES ("regulate" is spoken unless the strategy is look)
    trial: PlannedTrial | None
    requested_onset_ns: int
    onset_ns: int
    duration_ns: int | None  # requested duration (a limit for response and speaking phases); None: until acknowledged
    text: str = ""  # what to show: instructions, the cue, the rating question
    picture: Path | None = None  # the stimulus, or the feedback picture (None: blank screen)

    @property
    def timed(self) -> bool:
        """Ends by the clock alone (otherwise a response, an endpoint or an acknowledgement may end it first)."""
        return self.name not in RESPONSE_PHASES + ("instructions", "break", "end") and not (
            self.name == "regulate" and self.trial.condition.speaks
        )

    @property
    def due_ns(self) -> int | None:
        """When to call `next_phase()` if nothing ends the phase sooner (None: wait for an acknowledgement)."""
        if self.duration_ns is None:
            return None
        return self.anchor_ns + self.duration_ns

    @property
    def anchor_ns(self) -> int:
        """Where the duration counts from: the schedule for timed phases (non-slip), the actual onset for limits and
        for feedback (the picture, or the blank screen, is shown for its full duration however late it came)."""
        return self.requested_onset_ns if self.timed and self.name != "feedback" else self.onset_ns


class Session:
    def __init__(
        self,
        protocol: Protocol,
        plan: Sequence[PlannedTrial],
        store: SessionStore,
        *,
        trial_annotators: Sequence[TrialAnnotator] = (),
        clock: SessionClock | None = None,
    ):
        state = store.end_state()
        if state is not None:
            raise EdgeCerError(
                f"session {store.code} is already {state}; resuming a finished session is refused (start a new one)"
            )
        self.protocol, self.store, self.annotators = protocol, store, tuple(trial_annotators)
        self.prompt_builder = PromptBuilder(protocol.prompt)
        self.clock = clock or SessionClock(_elapsed_ns_since(store.first_wall_utc()))
        self.attempt = store.attempts() + 1
        done = store.finished_trials()
        self.remaining = [t for t in plan if t.trial not in done]
        if self.attempt > 1:
            store.log_event(self.attempt, None, None, "interrupted", self.clock.now_ns(),
                            last=store.last_event(), resume_at=self.remaining[0].trial if self.remaining else None)
        store.log_event(self.attempt, None, None, "session_start", self.clock.now_ns(), trials_left=len(self.remaining))
        self._steps = self._schedule()
        self.current: Phase | None = None
        self.paused = False
        self._next_requested = self.clock.now_ns()
        self._record: dict = {}

    # ---- the schedule ----

    def _schedule(self) -> list[tuple[str, PlannedTrial | None]]:
        steps: list[tuple[str, PlannedTrial | None]] = [("instructions", None)]
        for i, trial in enumerate(self.remaining):
            if i > 0 and trial.block != self.remaining[i - 1].block:
                steps.append(("break", trial))
            steps += [(name, trial) for name in TRIAL_PHASES]
        return steps + [("end", None)]

    def _duration_ns(self, name: str, trial: PlannedTrial | None) -> int | None:
        if name in ("instructions", "break", "end"):
            return None
        key = {"rating_pre": "rating", "rating_post": "rating"}.get(name, name)
        if name == "regulate":
            key = "speaking" if trial.condition.speaks else "look"
        return round(self.protocol.seconds(key) * NS)

    def _text(self, name: str, trial: PlannedTrial | None) -> str:
        ins, rating = self.protocol.instructions, self.protocol.rating
        if name == "instructions":
            first = self.remaining[0] if self.remaining else None
            return ins.welcome + (f"\n\n{ins.practice}" if first and first.practice else "")
        return {
            "break": ins.block_break, "end": ins.end, "cue": getattr(ins, trial.condition.strategy) if trial else "",
            "rating_pre": rating.pre_prompt, "rating_post": rating.post_prompt,
        }.get(name, "")

    # ---- the driver's verb ----

    def next_phase(self) -> Phase | None:
        """End the current phase and start the next; None when the session is over."""
        if self.paused:
            raise EdgeCerError("the session is paused; call resume() before moving on")
        now = self.clock.now_ns()
        if self.current is not None:
            self._end_current(now)
        if not self._steps:
            self.current = None
            return None
        name, trial = self._steps.pop(0)
        if name == "fixation":
            self._record = {"onsets": {}}
        if name == "feedback" and trial.condition.feedback == "ai" and "picture_shown" not in self._record:
            self._no_picture(trial, "no picture was handed to the session before the feedback phase")
        return self._begin(name, trial, self._next_requested)

    def _begin(self, name: str, trial: PlannedTrial | None, requested: int, **detail) -> Phase:
        onset = self.clock.now_ns()
        picture = None
        if name == "stimulus":
            picture = trial.stimulus.path
        elif name == "feedback" and self._record.get("picture_file"):
            picture = self.store.folder.parent.parent / self._record["picture_file"]
        self.current = Phase(name, trial, requested, onset, self._duration_ns(name, trial), self._text(name, trial), picture)
        number = trial.trial if trial else None
        self.store.log_event(self.attempt, number, name, "onset", onset, requested, **detail)
        if trial is not None and name in TRIAL_PHASES:
            self._record["onsets"][name] = [seconds(requested), seconds(onset)]
        if name == "end":
            self.store.log_event(self.attempt, None, None, "session_end", onset, state="completed")
        return self.current

    def _end_current(self, now: int) -> None:
        phase = self.current
        if phase.timed:
            self._next_requested = phase.anchor_ns + phase.duration_ns
        else:
            self._next_requested = self._record.get(f"_{phase.name}_response_ns", now)
        if phase.name == "rating_post" and not self._record.get("_written"):
            self._write_trial(phase.trial, "completed")

    # ---- participant responses ----

    def submit_rating(self, value: int, *, rt_ms: float | None = None) -> None:
        phase = self._expect(RESPONSE_PHASES, "submit_rating")
        low, high = self.protocol.rating.low, self.protocol.rating.high
        if not (isinstance(value, int) and low <= value <= high):
            raise EdgeCerError(f"rating {value!r} is outside the protocol's scale {low}..{high}")
        which = phase.name.removeprefix("rating_")
        if f"rating_{which}" in self._record:
            raise EdgeCerError(f"trial {phase.trial.trial} already has its {which} rating")
        now = self.clock.now_ns()
        rt = rt_ms if rt_ms is not None else (now - phase.onset_ns) / 1e6
        self._record.update({f"rating_{which}": value, f"rating_{which}_rt_ms": round(rt, 3), f"_{phase.name}_response_ns": now})
        self.store.log_event(self.attempt, phase.trial.trial, phase.name, "rating", now, value=value, rt_ms=rt)

    def submit_transcript(self, text: str, *, final: bool = True, speech_end_ns: int | None = None,
                          source: str = "typed") -> None:
        """A partial (`final=False`, logged only) or the final transcript; the final one ends the speaking window
        and, on an AI trial, fixes the picture's prompt (`picture_request()`). `source`: TRANSCRIPT_SOURCES."""
        phase = self._expect(("regulate",), "submit_transcript")
        if source not in TRANSCRIPT_SOURCES:
            raise EdgeCerError(f"transcript source {source!r} is not one of {TRANSCRIPT_SOURCES}")
        now = self.clock.now_ns()
        if not final:
            self.store.log_event(self.attempt, phase.trial.trial, phase.name, "partial", now, text=text)
            return
        end = speech_end_ns if speech_end_ns is not None else now
        self._record.update(transcript=text, transcript_source=source, speech_end_s=seconds(end - phase.onset_ns),
                            transcript_final_s=seconds(now - phase.onset_ns), _regulate_response_ns=now)
        self.store.log_event(self.attempt, phase.trial.trial, phase.name, "transcript", now, text=text,
                             speech_end_ns=end, source=source)

    def picture_request(self) -> PictureRequest | None:
        """What the current AI trial's feedback picture must be (None on a no-feedback trial or without a trial).
        `prompt` is "" until the final transcript is in: a driver may start on partials with `prompt_builder`."""
        trial = self.current.trial if self.current else None
        if trial is None or trial.condition.feedback != "ai":
            return None
        transcript = self._record.get("transcript")
        return PictureRequest(trial.trial, trial.stimulus.path, trial.seed, self.protocol.generation,
                              self.prompt_builder(transcript) if transcript else "", transcript is not None)

    def submit_picture(self, picture: GeneratedPicture | None, *, reason: str | None = None,
                       ready_ns: int | None = None, accounting: Mapping | None = None) -> None:
        """The AI trial's feedback picture, made by the driver; stored at once, shown when the feedback phase begins.
        `picture` None: nothing will be shown and `reason` says why (the feedback phase shows a blank screen at once).
        `ready_ns`: when it was ready on the session clock (a speculative picture is ready before it is handed in).
        `accounting`: the driver's fields (data.DRIVER_COLUMNS): speculation, the gate, the deadline, the log."""
        phase = self._expect(("regulate", "feedback"), "submit_picture")
        trial = phase.trial
        if trial.condition.feedback != "ai":
            raise EdgeCerError(f"trial {trial.trial} is a no-feedback trial; it shows no picture")
        if "picture_shown" in self._record:
            raise EdgeCerError(f"trial {trial.trial} already has its feedback picture (or its reason for none)")
        fields = dict(accounting or {})
        unknown = set(fields) - set(DRIVER_COLUMNS)
        if unknown:
            raise EdgeCerError(f"submit_picture() got unknown accounting fields {sorted(unknown)}; "
                               f"allowed: {DRIVER_COLUMNS}")
        now = self.clock.now_ns()
        self._record.update(fields)
        self.store.log_event(self.attempt, trial.trial, phase.name, "picture_accounting", now, **fields)
        if picture is None:
            self._no_picture(trial, reason or "no reason given")
            return
        relpath, sha = self.store.write_picture(trial.trial, picture.png)
        onset = self._record["onsets"]["regulate"][1] * NS
        p = picture.params
        self._record.update(
            picture_file=relpath, picture_sha256=sha, picture_shown=1,
            picture_ready_s=seconds((now if ready_ns is None else ready_ns) - onset),
            generation_s=round(picture.timings["total_s"], 6) if "total_s" in picture.timings else None,
            generation={"params": p, "timings": picture.timings},
            **{k: p.get(k) for k in PICTURE_PARAMS},
        )
        self.store.log_event(self.attempt, trial.trial, phase.name, "picture", now, file=relpath, sha256=sha, params=p)

    def _no_picture(self, trial: PlannedTrial, reason: str) -> None:
        self._record.update(picture_shown=0, no_picture_reason=reason)
        self.store.log_event(self.attempt, trial.trial, self.current.name if self.current else None, "no_picture",
                             self.clock.now_ns(), reason=reason)

    def _expect(self, names: tuple[str, ...], verb: str) -> Phase:
        if self.current is None or self.current.name not in names:
            now = self.current.name if self.current else "no phase"
            raise EdgeCerError(f"{verb}() belongs to the {'/'.join(names)} phase, but the session is in {now}")
        return self.current

    # ---- experimenter verbs ----

    def pause(self) -> None:
        if self.paused or self.current is None:
            return
        self.paused = True
        self.store.log_event(self.attempt, self._trial_number(), self.current.name, "pause", self.clock.now_ns())

    def resume(self) -> Phase:
        """Leave a pause by restarting the interrupted phase in full (the log keeps both onsets)."""
        if not self.paused:
            raise EdgeCerError("resume() without pause()")
        self.paused = False
        now = self.clock.now_ns()
        self.store.log_event(self.attempt, self._trial_number(), self.current.name, "resume", now)
        return self._begin(self.current.name, self.current.trial, now, restart=True)

    def skip_trial(self, reason: str = "") -> bool:
        """Record the current trial as skipped and continue with the next; False when no trial is open."""
        trial = self.current.trial if self.current else None
        if trial is None or self.current.name == "break" or self._record.get("_written"):
            return False
        self.store.log_event(self.attempt, trial.trial, self.current.name, "skip", self.clock.now_ns(), reason=reason)
        self._write_trial(trial, "skipped")
        self._steps = [(n, t) for n, t in self._steps if t is not trial]
        return True

    def abort(self, reason: str) -> None:
        """End the session for good; the open trial is recorded as aborted. A later resume is refused."""
        if not reason.strip():
            raise EdgeCerError("abort needs a reason (it is written to the session log)")
        now = self.clock.now_ns()
        trial = self.current.trial if self.current else None
        self.store.log_event(self.attempt, self._trial_number(), self.current.name if self.current else None, "abort", now, reason=reason)
        if trial is not None and self.current.name != "break" and not self._record.get("_written"):
            self._write_trial(trial, "aborted")
        self.store.log_event(self.attempt, None, None, "session_end", now, state="aborted", reason=reason)
        self._steps, self.current, self.paused = [], None, False

    def _trial_number(self) -> int | None:
        return self.current.trial.trial if self.current and self.current.trial else None

    # ---- the trial row ----

    def _write_trial(self, trial: PlannedTrial, status: str) -> None:
        r, s, meta = self._record, trial.stimulus, self.store.meta
        row = {
            "participant": meta["participant"], "session": meta["session"], "block": trial.block, "trial": trial.trial,
            "practice": int(trial.practice), "strategy": trial.condition.strategy, "feedback": trial.condition.feedback,
            "stimulus_id": s.id, "stimulus_valence": s.valence, "stimulus_arousal": s.arousal, "stimulus_dominance": s.dominance,
            "seed": trial.seed if trial.condition.feedback == "ai" else None,
            "status": status, "attempt": self.attempt,
            **{k: v for k, v in r.items() if not k.startswith("_")},
            **self._feedback_timing(trial),
        }
        picture = self.store.folder.parent.parent / row["picture_file"] if row.get("picture_file") else None
        for annotate in self.annotators:
            try:
                values = annotate(row, trial, picture)
                unknown = set(values) - set(ANNOTATION_COLUMNS)
                if unknown:
                    raise ValueError(f"returned unknown columns {sorted(unknown)}; allowed: {ANNOTATION_COLUMNS}")
                row.update(values)
            except Exception as exc:  # an annotation is optional; the trial row is not
                self.store.log_event(self.attempt, trial.trial, None, "annotator_failed", self.clock.now_ns(),
                                     annotator=getattr(annotate, "__name__", repr(annotate)), error=str(exc))
        self.store.write_trial(row)
        self._record["_written"] = True


    def _feedback_timing(self, trial: PlannedTrial) -> dict:
        """When the feedback appeared (from the speaking onset), how long it stood (requested and actual), and how
        long the participant waited for it after the speaking window closed (its requested onset)."""
        onsets = self._record.get("onsets", {})
        if "feedback" not in onsets:
            return {}
        regulate, feedback = onsets["regulate"][1], onsets["feedback"]
        after = onsets.get("rating_post")
        timing = {"feedback_duration_s": seconds(self._duration_ns("feedback", trial)),
                  "feedback_shown_duration_s": round(after[1] - feedback[1], 6) if after else None,
                  "feedback_wait_s": round(feedback[1] - feedback[0], 6)}
        if trial.condition.feedback == "ai":
            timing["picture_shown"] = self._record.get("picture_shown", 0)
            if self._record.get("picture_file"):
                timing["picture_shown_s"] = round(feedback[1] - regulate, 6)
        else:
            timing["picture_shown"] = 0
        return timing


@dataclass(frozen=True)
class PictureRequest:
    """The feedback picture an AI trial needs; its driver makes it (edge_cer.live) and hands it to the session."""

    trial: int
    stimulus_path: Path
    seed: int  # the planned seed; a picture regenerated after the safety gate records the seed it used
    generation: Generation  # strength, ip_scale, steps
    prompt: str  # from the final transcript ("" while it is not in, or when nothing is left to draw)
    final: bool  # whether the final transcript is in


def _elapsed_ns_since(first_wall_utc: str | None) -> int:
    """Wall-clock time since the session's first event: monotonic clocks do not survive a reboot, so a resumed
    session's timeline continues from the wall clock (the gap itself is logged as the interruption)."""
    if first_wall_utc is None:
        return 0
    return max(0, round((datetime.now(timezone.utc) - datetime.fromisoformat(first_wall_utc)).total_seconds() * NS))
