"""Sessions without a screen: a scripted participant drives a `Session`, the runtime makes its pictures.

    summary = run_session(ScriptedParticipant.from_file("script.toml"), "P017", "study-data",
                          runtime=lambda protocol: build_runtime(protocol, engines=..., asr=...))
    run_scripted_demo("demo-data")         # the embedded defaults, placeholder pictures

A scripted WAV utterance is played to the recogniser as a microphone would deliver it (at time_scale > 0) and
goes through the live pipeline with speculative generation; a scripted text is the final transcript at once. Either
way the AI trial's picture comes from `runtime.live` (prompt rules, safety gate, deadline).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from edge_cer.crash_log import environment_problem
from edge_cer.errors import EdgeCerError
from edge_cer.runtime import Runtime, build_runtime
from edge_cer.session import bids
from edge_cer.session.data import sessions_dir
from edge_cer.session.opening import open_session
from edge_cer.session.participant import Participant, ScriptedParticipant
from edge_cer.session.phases import NS, RESPONSE_PHASES, Phase, Session, TrialAnnotator
from edge_cer.session.protocol import Protocol, load_protocol, parse_protocol
from edge_cer.session.stimuli import load_stimuli
from edge_cer.speech.audio import file_source

DEMO_PROTOCOL = """\
# edge-cer demo: the default protocol, shortened and without waiting.
name = "cer-demo"
time_scale = 0.0
[design]
trials_per_condition = 2
practice_trials = 1
[safety]
# The demo's engine has random weights: its pictures are noise, and its CLIP zero-shot valence of noise is 0.2-0.57
# below the stimuli's, its red share up to 0.06 above (measured on the 48 synthetic stimuli, docs/wiring.md). These
# thresholds let noise through and still block a picture that turns red or dark; a study keeps the defaults.
max_valence_drop = 0.6
max_red_share_increase = 0.1
"""


def run_headless(session: Session, participant: Participant, runtime: Runtime, on_trial=None) -> None:
    """Drive a session to its end with a participant that answers without a screen (waits on the session clock)."""
    clock, scale, live = session.clock, session.protocol.time_scale, runtime.live
    while (phase := session.next_phase()) is not None:
        if phase.name == "stimulus":
            live.prepare(phase.trial, clock.now_ns)  # caches the stimulus before the participant speaks
        if phase.name in RESPONSE_PHASES:
            rating = participant.rate(phase.trial, phase.name.removeprefix("rating_"), session.protocol.rating)
            answer_ns = phase.onset_ns + round(rating.rt_s * scale * NS) if rating else None
            if rating is None or answer_ns > phase.due_ns:
                clock.sleep_until(phase.due_ns)  # no answer in time: logged as missing
            else:
                clock.sleep_until(answer_ns)
                session.submit_rating(rating.value)
        elif phase.name == "regulate" and phase.trial.condition.speaks:
            _speak(session, phase, participant, runtime)
        else:
            clock.sleep_until(phase.due_ns)
        if phase.name == "iti" and on_trial is not None:
            on_trial(phase.trial)  # its row is committed by now


def _speak(session: Session, phase: Phase, participant: Participant, runtime: Runtime) -> None:
    clock, scale, live = session.clock, session.protocol.time_scale, runtime.live
    utterance = participant.speak(phase.trial)
    if utterance.wav is not None:  # the recording's own length is the speaking time
        if runtime.recognizer is None:
            raise EdgeCerError(f"trial {phase.trial.trial} gives audio {utterance.wav} but no recogniser was "
                               "loaded; pass --asr DIR")
        # At microphone timing; the speaking limit stops a real-time replay, an instant one (time_scale 0) has none.
        heard = live.listen(phase.trial.trial, file_source(utterance.wav, realtime=scale > 0), clock.now_ns,
                            until_ns=phase.due_ns if scale > 0 else None)
        text, speech_end, source = heard.text, heard.speech_end_ns, "live"
    else:
        clock.sleep_until(min(phase.due_ns, phase.onset_ns + round(utterance.duration_s * scale * NS)))
        text, speech_end, source = utterance.text, None, "scripted"
    session.submit_transcript(text, speech_end_ns=speech_end, source=source)
    outcome = live.picture(phase.trial.trial, text, speech_end)
    if outcome is not None:
        live.submit(session, outcome)


def repair_exports(data_dir: Path) -> None:
    """Rebuilds the exports from the session databases (idempotent): repairs what a kill during an export left."""
    if sessions_dir(data_dir).is_dir():
        bids.export_all(data_dir)


def run_session(
    participant: Participant, label: str, data_dir: Path, *, protocol: Protocol | None = None,
    stimuli: Path | None = None, norms: Path | None = None, runtime: Callable[[Protocol], Runtime] = build_runtime,
    trial_annotators: list[TrialAnnotator] = (), resume: bool = False, key_file: Path | None = None,
    min_free_bytes: int = 200_000_000, on_trial=None, export: bool = True,
) -> dict:
    """Open (or resume) a session, run it headless to the end, export BIDS + tidy CSV; returns a summary.
    `runtime(protocol)` builds the parts once the session's protocol (new or resumed) is known."""
    stimulus_set = load_stimuli(stimuli, norms) if stimuli else None
    if not resume:  # refuse a protocol the runtime cannot serve before a session folder exists
        protocol = protocol or load_protocol()
        parts = runtime(protocol)
    if export:
        repair_exports(data_dir)
    protocol, plan, store = open_session(label, Path(data_dir), protocol=protocol, stimuli=stimulus_set, resume=resume,
                                         key_file=key_file, min_free_bytes=min_free_bytes)
    try:
        if resume:
            parts = runtime(protocol)
        session = Session(protocol, plan, store, trial_annotators=trial_annotators)
        run_headless(session, participant, parts, on_trial)
        summary = {"session_code": store.code, "participant": store.meta["participant"], "session": store.meta["session"],
                   "state": store.end_state(), "trials_recorded": len(store.finished_trials()), "trials_planned": len(plan),
                   "folder": str(store.folder)}
    except (OSError, sqlite3.Error) as exc:  # a full disk mid-session: every committed trial stays, the session resumes
        if (problem := environment_problem(exc)) is None:
            raise
        raise EdgeCerError(f"--data {data_dir}: {problem} in session {store.meta['session']} of {label}, after "
                           f"{len(store.finished_trials())} recorded trials (none lost); free some space, then "
                           "continue it with --resume") from exc
    finally:
        if "parts" in locals():
            parts.close()
        store.close()
    if export:
        summary["bids"], summary["tidy_csv"] = map(str, bids.export_all(data_dir))
    return summary


def run_scripted_demo(data_dir: str | Path, runtime: Callable[[Protocol], Runtime] | None = None) -> dict:
    """A short scripted session on the embedded defaults (synthetic stimuli, demo script), exported to BIDS + CSV.

    Without a runtime the AI-feedback trials get `PlaceholderGenerator` pictures, recorded as engine "placeholder".
    """
    protocol = parse_protocol(DEMO_PROTOCOL, "<demo protocol>")
    return run_session(ScriptedParticipant.from_file(), "D001", Path(data_dir), protocol=protocol,
                       runtime=runtime or (lambda p: build_runtime(p, placeholder=True)), min_free_bytes=20_000_000)
