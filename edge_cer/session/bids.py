"""Exports of a data folder: a BIDS `beh` dataset and the tidy long CSV (one row per trial, all sessions).

    export_bids(data_dir)   # -> DATA_DIR/bids/ (checked by the official bids-validator in the tests)
    export_tidy(data_dir)   # -> DATA_DIR/trials.csv with exactly data.TIDY_COLUMNS

Both are derived from the session databases and rebuilt whole (at the start and end of every run, and by
`edge-cer export-data DATA`); the databases stay the truth. A rebuild is written beside the old export and swapped
in by one rename, under the data folder's export lock, so a kill at any moment leaves the old export or the new
one, and the next rebuild repairs it. Damaged sessions are reported and left out. Missing values are empty cells in
the CSV and `n/a` in BIDS; control characters (tab, newline, NUL, ...) are escaped as `\\t`, `\\n`, `\\x00` in
both, while the databases keep the text raw.

    edge-cer export-data study-data        # rebuild study-data/bids/ and study-data/trials.csv
"""

from __future__ import annotations

import argparse
import ctypes
import csv
import errno
import io
import json
import os
import re
import shutil
import sqlite3
from importlib.metadata import version
from pathlib import Path

from edge_cer.errors import EdgeCerError, warn
from edge_cer.session.data import (BIDS_DIR, TIDY_COLUMNS, TIDY_FILE, _fsync_dir, atomic_write, list_sessions,
                                   read_session, warn_damaged)
from edge_cer.session.ownership import export_lock

BIDS_VERSION = "1.9.0"
TASK = "cer"
# BIDS columns: onset/duration of the stimulus, trial_type, then the tidy columns (participant/session are in the path).
# The live pipeline's `live` JSON log stays in the database.
BEH_COLUMNS = ("onset", "duration", "trial_type") + tuple(c for c in TIDY_COLUMNS if c not in ("participant", "session"))
_SECONDS_FROM_SPEAKING = "Seconds from the onset of the speaking window"
COLUMN_DESCRIPTIONS = {
    "onset": ("Onset of the stimulus picture, from the session start (session clock, monotonic)", "s"),
    "duration": ("How long the stimulus picture was shown (actual onset of the next phase minus its onset)", "s"),
    "trial_type": ("Condition: <strategy>_<feedback>", None),
    "block": ("Block number in this participant's order; 0 = practice", None),
    "trial": ("Trial number within the session, practice included", None),
    "practice": ("1 for a practice trial, 0 otherwise", None),
    "strategy": ("Regulation strategy cued on this trial", None),
    "feedback": ("Whether an AI picture made from the participant's speech followed (ai) or a blank screen (none)", None),
    "stimulus_id": ("Identifier of the stimulus picture in its norm table", None),
    "stimulus_valence": ("Normative valence of the stimulus (scale of its norm table)", None),
    "stimulus_arousal": ("Normative arousal of the stimulus (scale of its norm table)", None),
    "transcript": ("Final transcript of the spoken reappraisal or description", None),
    "rating_pre": ("Negative affect after viewing the stimulus, before regulating (protocol's scale, SAM-style)", None),
    "rating_post": ("Negative affect after regulating and the feedback phase (protocol's scale, SAM-style)", None),
    "rating_pre_rt_ms": ("Response time of rating_pre from the onset of the rating screen", "ms"),
    "rating_post_rt_ms": ("Response time of rating_post from the onset of the rating screen", "ms"),
    "picture_file": ("Generated picture, relative to the edge-cer data folder", None),
    "picture_sha256": ("SHA-256 of the generated picture file", None),
    "seed": ("Random seed that made the shown picture (the planned seed + 1 per safety-gate retry)", None),
    "strength": ("img2img strength of the picture generation", None),
    "ip_scale": ("IP-Adapter scale of the picture generation", None),
    "steps": ("Scheduler steps of the picture generation (before strength takes its share)", None),
    "engine_manifest_sha256": ("SHA-256 of the picture engine's manifest (which exported models were used)", None),
    "speech_end_s": (f"{_SECONDS_FROM_SPEAKING} to the end of speech (recogniser endpoint)", "s"),
    "transcript_final_s": (f"{_SECONDS_FROM_SPEAKING} to the final transcript", "s"),
    "picture_ready_s": (f"{_SECONDS_FROM_SPEAKING} to the generated picture being stored", "s"),
    "picture_shown_s": (f"{_SECONDS_FROM_SPEAKING} to the feedback picture's onset", "s"),
    "picture_shown": ("1 when a generated picture was shown in the feedback phase, 0 when not (no-feedback trials, "
                      "and AI trials whose picture was blocked, late or not made; see no_picture_reason)", None),
    "transcript_source": ("Where the transcript came from", None),
    "no_picture_reason": ("Why an AI-feedback trial showed no picture", None),
    "prompt": ("The prompt that made the shown picture (built from the transcript by the protocol's [prompt] rules)",
               None),
    "negative_prompt": ("Negative prompt of the picture generation (used when guidance > 1)", None),
    "guidance": ("Classifier-free guidance scale of the picture generation", None),
    "scheduler": ("Scheduler option of the picture generation (empty: the model's own)", None),
    "vae": ("VAE decoder of the picture generation: full, or tiny (the export's TAESD decoder)", None),
    "engine": ("Inference backend that made the picture (placeholder: not AI)", None),
    "provider": ("Execution provider the engine ran on (cpu, cuda, tensorrt, trt-native)", None),
    "safety_reason": ("Why the safety gate blocked pictures on this trial", None),
    "generation_s": ("Generation time of the shown picture", "s"),
    "generation_deadline_missed": ("1 when the final transcript's picture was not ready by the generation deadline "
                                   "([live] deadline_s after the end of speech)", None),
    "feedback_wait_s": ("From the end of the speaking window to the feedback phase's onset (waiting for the picture)",
                        "s"),
    "feedback_duration_s": ("Requested duration of the feedback phase, counted from its actual onset", "s"),
    "feedback_shown_duration_s": ("Actual duration of the feedback phase (next phase's onset minus its onset)", "s"),
    "text_valence": ("Valence of the transcript estimated by edge-cer's affect measures", None),
    "picture_valence": ("Valence of the generated picture estimated by edge-cer's affect measures", None),
    "alignment": ("Agreement of text and picture valence (edge-cer's affect measures)", None),
    "status": ("completed; skipped by the experimenter; or aborted (session ended on this trial)", None),
    "speculative_generations": ("Pictures the live pipeline started from partial transcripts while the participant "
                                "spoke (n/a: no-feedback trial)", None),
    "wasted_generations": ("Speculative generations whose picture was not shown (cancelled or superseded)", None),
    "feedback_source": ("Where the shown picture came from (n/a: no-feedback trial)", None),
    "safety_blocked": ("Generated pictures the safety gate kept from the participant (more negative or redder than "
                       "the stimulus)", None),
}
_LEVELS = {
    "strategy": {"reappraise": "reinterpret the picture to feel less negative", "describe": "describe it objectively",
                 "look": "look without regulating (baseline)"},
    "feedback": {"ai": "AI-generated picture from the speech", "none": "blank screen of equal duration"},
    "feedback_source": {"final": "generated from the final transcript after speech ended",
                        "speculative": "generated from a partial transcript whose prompt equals the final one",
                        "best_ready": "deadline or safety fallback: the newest safe picture of an earlier partial",
                        "none": "no picture was shown (deadline, safety gate or empty transcript; see the note)"},
    "transcript_source": {"live": "heard by the speech recogniser", "scripted": "given by a scripted participant",
                          "typed": "typed on the keyboard"},
    "status": {"completed": "all phases ran", "skipped": "skipped by the experimenter", "aborted": "session aborted"},
}


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_CONTROLS = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape_controls(text: str) -> str:
    """Control characters as visible escapes (tab -> \\t, NUL -> \\x00): one cell stays one cell on one line."""
    def escape(m: re.Match) -> str:
        code = ord(m[0])
        return _NAMED_CONTROLS.get(m[0]) or (f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}")

    return _CONTROL.sub(escape, text)


def _sessions_with_trials(data_dir: Path):
    """(meta, trials) of every readable session with trials; damaged ones and duplicate labels are reported."""
    seen: dict[tuple[str, str], Path] = {}
    for info in list_sessions(data_dir):
        try:
            meta, trials, _ = read_session(info.folder)
        except (sqlite3.DatabaseError, KeyError) as exc:
            warn_damaged(info.folder, exc)
            continue
        key = (info.participant, info.session)
        if key in seen:  # two concurrent starts before edge-cer had participant locks
            warn(f"{info.folder}: sub-{key[0]} ses-{key[1]} again (also {seen[key]}); left out of the exports. Keep "
                 f"the session you want in {info.folder.parent} and move the other out")
            continue
        seen[key] = info.folder
        if trials:
            yield meta, trials


def _stimulus_timing(row: dict) -> tuple[float | None, float | None]:
    onsets = json.loads(row["onsets"] or "{}")
    stimulus, after = onsets.get("stimulus"), onsets.get("rating_pre")
    if not stimulus:
        return None, None
    return stimulus[1], (after[1] - stimulus[1]) if after else None


def _tsv(rows: list[dict], columns: tuple[str, ...]) -> bytes:
    def cell(v) -> str:
        return "n/a" if v is None or v == "" else escape_controls(str(v))

    lines = ["\t".join(columns)] + ["\t".join(cell(r.get(c)) for c in columns) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _json(value) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def export_all(data_dir: str | Path) -> tuple[Path, Path]:
    """Rebuild both exports from the databases; returns (bids folder, trials.csv)."""
    return export_bids(data_dir), export_tidy(data_dir)


def export_bids(data_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the BIDS dataset afresh (built beside `out`, then swapped in) and return its folder."""
    data_dir = Path(data_dir)
    out = Path(out) if out else data_dir / BIDS_DIR
    if out.exists() and not out.is_dir():
        raise EdgeCerError(f"{out}: is a file where the BIDS export goes; move it away and run `edge-cer export-data "
                           f"{data_dir}`")
    with export_lock(data_dir):
        for stale in out.parent.glob(f".{out.name}.new-*"):  # left by a kill; nobody else exports now
            shutil.rmtree(stale, ignore_errors=True)
        staging = out.with_name(f".{out.name}.new-{os.getpid()}")
        _write_bids(data_dir, staging)
        _swap_in(staging, out)
    return out


def _write_bids(data_dir: Path, staging: Path) -> None:
    staging.mkdir(parents=True)
    participants: dict[str, None] = {}
    for meta, trials in _sessions_with_trials(data_dir):
        sub, ses = meta["participant"], meta["session"]
        participants[sub] = None
        rows = []
        for row in trials:
            onset, duration = _stimulus_timing(row)
            rows.append({**row, "onset": onset, "duration": duration, "trial_type": f"{row['strategy']}_{row['feedback']}"})
        beh = staging / f"sub-{sub}" / f"ses-{ses}" / "beh"
        beh.mkdir(parents=True)
        stem = f"sub-{sub}_ses-{ses}_task-{TASK}_beh"
        (beh / f"{stem}.tsv").write_bytes(_tsv(rows, BEH_COLUMNS))
        (beh / f"{stem}.json").write_bytes(_json(_sidecar(meta)))
    (staging / "dataset_description.json").write_bytes(_json({
        "Name": "Cognitive emotion regulation task with AI picture feedback (edge-cer)",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "edge-cer", "Version": version("edge-cer"), "Description": "edge-cer run / demo"}],
    }))
    (staging / "participants.tsv").write_bytes(_tsv([{"participant_id": f"sub-{p}"} for p in participants], ("participant_id",)))
    (staging / "participants.json").write_bytes(_json({
        "participant_id": {"Description": "Random pseudonym; the lab's key file maps it to the participant label"},
    }))
    (staging / "README").write_text(
        "Behavioural data of the edge-cer cognitive emotion regulation (CER) task, exported from the session\n"
        "databases by edge-cer. One beh.tsv per session, one row per trial; see the JSON sidecars for columns.\n"
    )


def _swap_in(staging: Path, out: Path) -> None:
    """`out` becomes the new export in one step: renameat2(RENAME_EXCHANGE) where Linux and the file system offer
    it, else two renames (a kill between them leaves no `out`, which the next rebuild repairs)."""
    if not out.exists():
        staging.rename(out)
    else:
        if not _exchange(staging, out):
            old = staging.with_name(staging.name + "-old")
            out.rename(old)
            staging.rename(out)
            staging = old
        shutil.rmtree(staging)  # now the previous export
    _fsync_dir(out.parent)


def _exchange(a: Path, b: Path) -> bool:
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _sidecar(meta: dict) -> dict:
    protocol = json.loads(meta["protocol_resolved"])
    sidecar = {
        "TaskName": TASK,
        "TaskDescription": "Modified cognitive emotion regulation task: view an aversive picture, rate negative "
        "affect, speak a reappraisal or description when cued, see an AI picture made from it (or a blank screen), "
        "rate negative affect again.",
        "Instructions": protocol["instructions"]["welcome"],
        "ProtocolName": protocol["name"],
        "ProtocolSHA256": meta["protocol_sha256"],
        "Durations": protocol["durations"],
        "TimeScale": protocol["time_scale"],
        "RatingScale": protocol["rating"],
        "SyntheticStimuli": meta["stimuli_synthetic"] == "1",
    }
    for column in BEH_COLUMNS:
        description, units = COLUMN_DESCRIPTIONS[column]
        sidecar[column] = {"Description": description} | ({"Units": units} if units else {})
        if column in _LEVELS:
            sidecar[column]["Levels"] = _LEVELS[column]
    return sidecar


def export_tidy(data_dir: str | Path) -> Path:
    """`DATA_DIR/trials.csv`: every trial of every session, one row each, columns exactly `TIDY_COLUMNS`."""
    data_dir = Path(data_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TIDY_COLUMNS)
    with export_lock(data_dir):
        for _, trials in _sessions_with_trials(data_dir):
            for row in trials:
                writer.writerow("" if row[c] is None else escape_controls(row[c]) if isinstance(row[c], str) else row[c]
                                for c in TIDY_COLUMNS)
        path = data_dir / TIDY_FILE
        atomic_write(path, buffer.getvalue().encode())
    return path


# ---- `edge-cer export-data DATA` ----


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", type=Path, help="the study's data folder (holds sessions/)")


def run(args: argparse.Namespace) -> int:
    if not (args.data_dir / "sessions").is_dir():
        raise EdgeCerError(f"{args.data_dir}: no sessions/ folder here; give the data folder of `edge-cer run --data`")
    bids_dir, tidy = export_all(args.data_dir)
    print(f"rebuilt {bids_dir} and {tidy} from {args.data_dir / 'sessions'}")
    return 0
