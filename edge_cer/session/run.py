"""`edge-cer run`: one CER session, headless, from the protocol to the BIDS export.

    edge-cer run --participant P017 --data study-data --scripted script.toml          # embedded protocol + stimuli
    edge-cer run --protocol study.toml --stimuli pictures/ --participant P017 --data study-data \\
                 --engines engines/ --asr asr/ --scripted script.toml
    edge-cer run --participant P017 --data study-data --scripted script.toml --resume   # after a crash

A headless run needs a scripted participant (`--scripted`); the live participant uses `edge-cer tui`.
Python callers use `open_session` + `Session` + `run_headless`, or `run_scripted_demo(data_dir)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import sqlite3
from pathlib import Path

from edge_cer.crash_log import environment_problem
from edge_cer.errors import EdgeCerError
from edge_cer.session import bids
from edge_cer.session.counterbalance import PlannedTrial, balanced_latin_square, participant_number, plan_session
from edge_cer.session.data import KEY_FILE, SessionStore, check_label, check_writable, list_sessions, sessions_dir
from edge_cer.session.engine import NS, RESPONSE_PHASES, Session, TrialAnnotator
from edge_cer.session.generation import PictureGenerator, PlaceholderGenerator, Transcriber
from edge_cer.session.ownership import claim_participant
from edge_cer.session.participant import Participant, ScriptedParticipant
from edge_cer.session.protocol import Protocol, load_protocol, parse_protocol
from edge_cer.session.stimuli import StimulusSet, load_stimuli, synthetic_stimuli

DEMO_PROTOCOL = """\
# edge-cer demo: the default protocol, shortened and without waiting.
name = "cer-demo"
time_scale = 0.0
[design]
trials_per_condition = 2
practice_trials = 1
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", type=Path, help="protocol TOML (default: the embedded default protocol)")
    parser.add_argument("--stimuli", type=Path, help="stimulus folder with norms.csv (default: the synthetic set)")
    parser.add_argument("--norms", type=Path, help="an IAPS-style norm table instead of STIMULI/norms.csv")
    parser.add_argument("--participant", required=True, help="the lab's participant code, e.g. P017 (never a name)")
    parser.add_argument("--data", type=Path, required=True, help="data folder (one per study)")
    parser.add_argument("--engines", type=Path, help="picture engine folder; required for AI-feedback conditions")
    parser.add_argument("--server", help="grpc://HOST:PORT of `edge-cer serve` (or Triton serving `edge-cer export "
                        "triton-repo`): pictures are made there instead of with local --engines (docs/serve.md)")
    parser.add_argument("--asr", type=Path, help="speech recogniser folder; required when the script gives WAV files. "
                        "With --engines the WAV trials run live: streamed through the recogniser with speculative "
                        "generation (docs/live.md)")
    parser.add_argument("--scripted", type=Path, help="scripted participant (TOML/JSON); required for headless runs")
    parser.add_argument("--resume", action="store_true", help="continue the participant's interrupted session")
    parser.add_argument("--key-file", type=Path, help="label -> pseudonym table (default: DATA/participant-keys.tsv)")
    parser.add_argument("--min-free-mb", type=float, default=200, help="refuse to start with less free disk space")


def run(args: argparse.Namespace) -> int:
    if args.scripted is None:
        raise EdgeCerError("--scripted FILE is required for a headless run; a live participant uses `edge-cer tui`")
    participant = ScriptedParticipant.from_file(args.scripted)
    participant.require_recogniser(have_asr=args.asr is not None)
    protocol = load_protocol(args.protocol) if args.protocol else None
    if args.server and args.engines:
        raise EdgeCerError("--server and --engines: choose one (the server holds the engines)")
    generator = transcriber = live = None
    pictures = args.server or args.engines  # a URL (str) or an engine folder (Path)
    if pictures and args.asr:  # built once the session's protocol (new or resumed) is known
        live = functools.partial(_live_pipeline, pictures, args.asr)
    else:
        if args.server:
            from edge_cer.serve.client import connect

            generator = connect(args.server)
        elif args.engines:
            generator = _load(args.engines, "edge_cer.engine", "load_generator", "--engines")
        transcriber = _load(args.asr, "edge_cer.speech.transcribe", "load_transcriber", "--asr") if args.asr else None
    summary = run_session(
        participant, args.participant, args.data, protocol=protocol, stimuli=args.stimuli, norms=args.norms,
        generator=generator, transcriber=transcriber, live=live, resume=args.resume, key_file=args.key_file,
        min_free_bytes=int(args.min_free_mb * 1e6),
        on_trial=lambda t: print(f"trial {t.trial} recorded", flush=True),
    )
    print(json.dumps(summary, indent=2))
    return 0


def _load(folder: Path, module: str, factory: str, option: str):
    """The lead's engine and the speech stage are imported only when asked for (they are not session code)."""
    try:
        return getattr(importlib.import_module(module), factory)(folder)
    except (ImportError, AttributeError) as exc:
        raise EdgeCerError(
            f"{option} {folder}: this install has no `{module}.{factory}` ({exc}); update edge-cer or leave {option} out"
        ) from exc


def _live_pipeline(pictures: Path | str, asr: Path, protocol: Protocol):
    from edge_cer.engine import load_generator
    from edge_cer.live.pipeline import LivePipeline
    from edge_cer.serve.client import connect
    from edge_cer.speech.recognizer import create_recognizer

    load = connect if isinstance(pictures, str) else load_generator  # --server URL or --engines folder
    generator = load(pictures, vae=protocol.generation.vae, negative_prompt=protocol.prompt.negative_prompt or None)
    return LivePipeline(generator, create_recognizer(asr), protocol)


def open_session(
    label: str, data_dir: Path, *, protocol: Protocol | None = None, stimuli: StimulusSet | None = None,
    resume: bool = False, key_file: Path | None = None, min_free_bytes: int = 200_000_000,
) -> tuple[Protocol, list[PlannedTrial], SessionStore]:
    """Create the participant's next session, or reopen the interrupted one (`resume`), locked for this process:
    the participant's lock is taken before anything is created and released by `store.close()`.

    A resumed session uses the protocol stored in it; the stimulus set must give the same plan as before.
    """
    data_dir, key_file = Path(data_dir), Path(key_file) if key_file else Path(data_dir) / KEY_FILE
    number = participant_number(check_label(label))
    check_writable(data_dir, min_free_bytes)
    stimuli = stimuli or synthetic_stimuli()
    if not resume:  # a design the stimuli cannot fill is refused before anything is written
        plan_session(protocol or load_protocol(), stimuli, number)
    pseudonym, lock = claim_participant(data_dir, key_file, label, create=not resume)
    try:
        protocol, plan, store = _open_locked(label, pseudonym, number, data_dir, protocol, stimuli, resume)
    except BaseException:
        lock.release()
        raise
    store.held.append(lock)
    return protocol, plan, store


def _open_locked(label: str, pseudonym: str, number: int, data_dir: Path, protocol: Protocol | None,
                 stimuli: StimulusSet, resume: bool) -> tuple[Protocol, list[PlannedTrial], SessionStore]:
    if resume:
        mine = [s for s in list_sessions(data_dir) if s.participant == pseudonym]
        running = [s for s in mine if s.state == "running"]
        if not running:
            last = mine[-1] if mine else None
            raise EdgeCerError(
                f"--resume: session {last.session} of {label} is {last.state}; resuming a finished session is refused "
                "(leave out --resume to start a new session)" if last else f"--resume: {label} has no session to resume"
            )
        store = SessionStore(running[-1].folder)
        stored = parse_protocol(store.meta["protocol"], f"session {store.code} protocol")
        if protocol is not None and protocol.text != stored.text:
            store.close()
            raise EdgeCerError(f"--protocol {protocol.source} differs from the one session {store.code} began with; "
                               "leave out --protocol when resuming")
        plan = plan_session(stored, stimuli, number)
        if _plan_json(plan) != store.meta["plan"]:
            store.close()
            raise EdgeCerError(f"--stimuli {stimuli.folder}: gives a different trial plan than session {store.code} "
                               "began with; resume with the original stimulus set")
        return stored, plan, store
    protocol = protocol or load_protocol()
    mine = [s for s in list_sessions(data_dir) if s.participant == pseudonym]
    if any(s.state == "running" for s in mine):
        raise EdgeCerError(f"participant {label} has an unfinished session; continue it with --resume")
    plan = plan_session(protocol, stimuli, number)
    square = balanced_latin_square(len(protocol.conditions))
    meta = {
        "participant": pseudonym, "session": f"{max((int(s.session) for s in mine), default=0) + 1:02d}", "protocol": protocol.text,
        "protocol_sha256": protocol.sha256, "protocol_source": protocol.source,
        "protocol_resolved": json.dumps(dataclasses.asdict(dataclasses.replace(protocol, text=""))),
        "stimulus_folder": str(stimuli.folder.resolve()), "stimuli_synthetic": str(int(stimuli.synthetic)),
        "latin_square_row": str((number - 1) % len(square)), "plan": _plan_json(plan),
    }
    return protocol, plan, SessionStore.create(data_dir, meta)


def _plan_json(plan: list[PlannedTrial]) -> str:
    return json.dumps([[t.trial, t.block, t.condition.label, t.stimulus.id, t.seed] for t in plan])


def run_headless(session: Session, participant: Participant, on_trial=None, live=None) -> None:
    """Drive a session to its end with a participant that answers without a screen (waits on the session clock).
    With `live` (an `edge_cer.live.pipeline.LivePipeline`) WAV utterances run through the live pipeline."""
    clock, scale = session.clock, session.protocol.time_scale
    while (phase := session.next_phase()) is not None:
        if live is not None and phase.name == "stimulus":
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
            utterance = participant.speak(phase.trial)
            if utterance.wav is not None and live is not None:  # the recording's own length is the speaking time
                live.speak(session, phase, utterance.wav, realtime=scale > 0)
                continue
            clock.sleep_until(min(phase.due_ns, phase.onset_ns + round(utterance.duration_s * scale * NS)))
            if utterance.wav is not None:
                session.submit_audio(utterance.wav)
            else:
                session.submit_transcript(utterance.text)
        else:
            clock.sleep_until(phase.due_ns)
        if phase.name == "iti" and on_trial is not None:
            on_trial(phase.trial)  # its row is committed by now


def run_session(
    participant: Participant, label: str, data_dir: Path, *, protocol: Protocol | None = None,
    stimuli: Path | None = None, norms: Path | None = None, generator: PictureGenerator | None = None,
    transcriber: Transcriber | None = None, live=None, trial_annotators: list[TrialAnnotator] = (), resume: bool = False,
    key_file: Path | None = None, min_free_bytes: int = 200_000_000, on_trial=None, export: bool = True,
) -> dict:
    """Open (or resume) a session, run it headless to the end, export BIDS + tidy CSV; returns a summary.
    `live(protocol) -> LivePipeline` runs WAV utterances live; its generator serves every other picture too."""
    stimulus_set = load_stimuli(stimuli, norms) if stimuli else None
    if not resume:  # refuse before a session folder exists
        protocol = protocol or load_protocol()
        _require_generator(protocol, generator or live)
    if export and sessions_dir(data_dir).is_dir():  # repairs exports a kill interrupted, before the session exists
        bids.export_all(data_dir)
    protocol, plan, store = open_session(label, Path(data_dir), protocol=protocol, stimuli=stimulus_set, resume=resume,
                                         key_file=key_file, min_free_bytes=min_free_bytes)
    pipeline = None
    try:
        pipeline = live(protocol) if live is not None else None
        generator = pipeline.generator if pipeline is not None else generator
        _require_generator(protocol, generator)
        session = Session(protocol, plan, store, generator=generator, transcriber=transcriber,
                          trial_annotators=trial_annotators)
        run_headless(session, participant, on_trial, live=pipeline)
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
        if pipeline is not None:
            pipeline.close()
        store.close()
    if export:
        summary["bids"], summary["tidy_csv"] = map(str, bids.export_all(data_dir))
    return summary


def _require_generator(protocol: Protocol, generator: PictureGenerator | None) -> None:
    if protocol.uses_ai_feedback and generator is None:
        raise EdgeCerError(
            f"{protocol.source}: has AI-feedback conditions, which need the picture engine; pass --engines DIR "
            'or use a protocol with feedback = ["none"]'
        )


def run_scripted_demo(data_dir: str | Path, generator: PictureGenerator | None = None) -> dict:
    """A short scripted session on the embedded defaults (synthetic stimuli, demo script), exported to BIDS + CSV.

    Without a generator the AI-feedback trials get `PlaceholderGenerator` pictures, recorded as engine "placeholder".
    """
    protocol = parse_protocol(DEMO_PROTOCOL, "<demo protocol>")
    return run_session(ScriptedParticipant.from_file(), "D001", Path(data_dir), protocol=protocol,
                       generator=generator or PlaceholderGenerator(), min_free_bytes=20_000_000)

