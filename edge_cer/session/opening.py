"""Opening a participant's session: a new one (pseudonym, plan, protocol stored) or the interrupted one (resume).

    protocol, plan, store = open_session("P017", Path("study-data"), protocol=protocol, stimuli=stimuli)
    session = Session(protocol, plan, store)          # edge_cer.session.phases
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edge_cer.errors import EdgeCerError
from edge_cer.session.counterbalance import PlannedTrial, balanced_latin_square, participant_number, plan_session
from edge_cer.session.data import KEY_FILE, SessionStore, check_label, check_writable, list_sessions
from edge_cer.session.ownership import claim_participant
from edge_cer.session.protocol import Protocol, load_protocol, parse_protocol
from edge_cer.session.stimuli import StimulusSet, synthetic_stimuli


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
