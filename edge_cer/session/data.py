"""Session data on disk: the one module that knows the schema and every file name.

    DATA_DIR/
      participant-keys.tsv            label -> pseudonym (the only place a lab label is written; --key-file moves it)
      sessions/<session code>/        random code: no participant identifier in any file name
        session.sqlite3               the source of truth (WAL, synchronous=FULL, append-only tables)
        session.lock                  held with flock by the one process writing the session
        pictures/trial-007.png        generated pictures, written atomically

Every table is append-only (triggers refuse UPDATE and DELETE). `events` gets a row at every phase boundary and
every response, `trials` one row per finished trial (its primary key is the trial number, so a trial can be
recorded once only), `meta` the protocol text, the plan and who/what, once at creation.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edge_cer.errors import EdgeCerError, warn

SCHEMA_VERSION = 3  # 2: the live columns; 3: provenance and feedback timing (added in place when reopened)
KEY_FILE = "participant-keys.tsv"
SESSIONS_DIR = "sessions"
DB_FILE = "session.sqlite3"
LOCK_FILE = "session.lock"
PICTURES_DIR = "pictures"
TIDY_FILE = "trials.csv"
BIDS_DIR = "bids"

# The tidy export's columns, in this order; the analysis code relies on exactly these.
TIDY_COLUMNS = (
    "participant", "session", "block", "trial", "practice", "strategy", "feedback", "stimulus_id",
    "stimulus_valence", "stimulus_arousal", "transcript", "rating_pre", "rating_post", "rating_pre_rt_ms",
    "rating_post_rt_ms", "picture_file", "picture_sha256", "seed", "strength", "ip_scale", "steps",
    "engine_manifest_sha256", "speech_end_s", "transcript_final_s", "picture_ready_s", "picture_shown_s",
    "text_valence", "picture_valence", "alignment", "status",
    # What was shown and why (schema 3): whether a picture appeared, where the transcript came from, where the
    # picture came from, why there was none; every parameter that made it (the rest are above); the safety gate;
    # timing: generation latency, the deadline, the wait after speaking, feedback duration requested and actual.
    "picture_shown", "transcript_source", "feedback_source", "no_picture_reason",
    "prompt", "negative_prompt", "guidance", "scheduler", "vae", "engine", "provider",
    "speculative_generations", "wasted_generations", "safety_blocked", "safety_reason",
    "generation_s", "generation_deadline_missed", "feedback_wait_s", "feedback_duration_s", "feedback_shown_duration_s",
)
# Filled by `trial_annotators` (the affect measures) just before a trial row is written.
ANNOTATION_COLUMNS = ("text_valence", "picture_valence", "alignment")
# Handed in by the session's driver with the picture (edge_cer.live): how many generations ran and were wasted, where
# the shown picture came from, what the safety gate blocked and why, the deadline, and `live` (JSON: every
# generation and gate decision).
DRIVER_COLUMNS = ("speculative_generations", "wasted_generations", "feedback_source", "safety_blocked",
                  "safety_reason", "generation_deadline_missed", "live")
# Kept in the database beyond the tidy columns: all onsets, everything the generator reported, the live log.
EXTRA_COLUMNS = ("stimulus_dominance", "onsets", "generation", "attempt", "note", "live")
TRIAL_STATUSES = ("completed", "skipped", "aborted")

_PSEUDONYM_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: codes are read aloud and retyped
_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, attempt INTEGER NOT NULL, trial INTEGER, phase TEXT, kind TEXT NOT NULL,
    requested_ns INTEGER, actual_ns INTEGER NOT NULL, wall_utc TEXT NOT NULL, detail TEXT);
CREATE TABLE trials (trial INTEGER PRIMARY KEY, {", ".join(c for c in TIDY_COLUMNS + EXTRA_COLUMNS if c != "trial")},
    CHECK (status IN {TRIAL_STATUSES}));
""" + "".join(
    f"CREATE TRIGGER {t}_no_{op} BEFORE {op.upper()} ON {t} BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END;\n"
    for t in ("meta", "events", "trials") for op in ("update", "delete")
)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_code(length: int = 8) -> str:
    """A random pseudonym or session code: letters first, so BIDS labels and spreadsheets keep it a string."""
    return secrets.choice(_PSEUDONYM_ALPHABET[:23]) + "".join(
        secrets.choice(_PSEUDONYM_ALPHABET) for _ in range(length - 1)
    )


def check_label(label: str) -> str:
    """A participant label is a lab code such as `P017`: no names, no paths."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", label or ""):
        raise EdgeCerError(
            f"--participant {label!r}: use a short code of letters and digits (e.g. P017), no spaces or path characters"
        )
    if not re.search(r"\d", label) or re.search(r"[A-Za-z]{4,}", label):
        raise EdgeCerError(
            f"--participant {label!r}: looks like a name; use a study code such as P017 (never a participant's name)"
        )
    return label


def check_writable(data_dir: Path, min_free_bytes: int) -> None:
    """Refuse a read-only or nearly full data folder before the first trial, not in the middle of one."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-probe-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        raise EdgeCerError(f"--data {data_dir}: cannot write there ({exc.strerror}); choose a writable folder") from exc
    free = shutil.disk_usage(data_dir).free
    if free < min_free_bytes:
        raise EdgeCerError(
            f"--data {data_dir}: only {free / 1e6:.0f} MB free, the session needs {min_free_bytes / 1e6:.0f} MB; "
            "free some space or choose another disk"
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """tmp + fsync + rename + fsync(dir): after a crash the file is either absent or complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


# ---- the key file and the locks: edge_cer.session.ownership ----


# ---- sessions ----


@dataclass(frozen=True)
class SessionInfo:
    code: str
    folder: Path
    participant: str
    session: str
    state: str  # "running" (never finished: resumable), "completed" or "aborted"


def sessions_dir(data_dir: Path) -> Path:
    return Path(data_dir) / SESSIONS_DIR


def list_sessions(data_dir: Path) -> list[SessionInfo]:
    """Every session in a data folder, in creation order."""
    infos = []
    root = sessions_dir(data_dir)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or not (folder / DB_FILE).is_file():
            continue
        try:
            con = _connect(folder / DB_FILE)
            try:
                meta = dict(con.execute("SELECT key, value FROM meta"))
                end = con.execute("SELECT detail FROM events WHERE kind = 'session_end'").fetchone()
            finally:
                con.close()
            state = json.loads(end[0])["state"] if end else "running"
            infos.append(SessionInfo(folder.name, folder, meta["participant"], meta["session"], state))
        except (sqlite3.DatabaseError, KeyError, ValueError, TypeError) as exc:
            warn_damaged(folder, exc)
    return sorted(infos, key=lambda i: (i.participant, i.session))


def warn_damaged(folder: Path, exc: Exception) -> None:
    """One damaged session must not stop the study: it is reported with the repair and skipped."""
    warn(f"{folder / DB_FILE}: damaged ({type(exc).__name__}: {exc}); skipped by every command. Restore the folder "
         f"from a backup, or move it out of {folder.parent} if that session is lost")


def _connect(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db, isolation_level=None, timeout=10)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    return con


class SessionStore:
    """One session's database and pictures, held exclusively by this process until `close()`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.held = []  # further locks (the participant's) released by close()
        self._lock_fd = _lock(self.folder / LOCK_FILE)
        self._con = _connect(self.folder / DB_FILE)
        self.meta = dict(self._con.execute("SELECT key, value FROM meta"))
        have = {row[1] for row in self._con.execute("PRAGMA table_info(trials)")}
        for column in (c for c in TIDY_COLUMNS + EXTRA_COLUMNS if c not in have):  # an older session, resumed
            self._con.execute(f"ALTER TABLE trials ADD COLUMN {column}")

    @classmethod
    def create(cls, data_dir: Path, meta: dict[str, str]) -> SessionStore:
        """A new session folder with its schema and meta in one transaction, published by a rename."""
        code = new_code()
        staging = sessions_dir(data_dir) / f".new-{code}"
        try:
            (staging / PICTURES_DIR).mkdir(parents=True)
            con = _connect(staging / DB_FILE)
            try:
                con.executescript(
                    "BEGIN;"
                    + _SCHEMA
                    + "".join(f"INSERT INTO meta VALUES ({_q(k)}, {_q(v)});" for k, v in
                              {**meta, "session_code": code, "schema_version": str(SCHEMA_VERSION),
                               "created_utc": utc_now()}.items())
                    + "COMMIT;"
                )
            finally:
                con.close()
            final = sessions_dir(data_dir) / code
            staging.rename(final)
            _fsync_dir(final.parent)
        except BaseException:  # a full disk or a kill: nothing half-created stays behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(final)

    # -- reading --

    @property
    def code(self) -> str:
        return self.meta["session_code"]

    def finished_trials(self) -> set[int]:
        return {t for (t,) in self._con.execute("SELECT trial FROM trials")}

    def end_state(self) -> str | None:
        row = self._con.execute("SELECT detail FROM events WHERE kind = 'session_end'").fetchone()
        return json.loads(row[0])["state"] if row else None

    def attempts(self) -> int:
        return self._con.execute("SELECT COALESCE(MAX(attempt), 0) FROM events").fetchone()[0]

    def last_event(self) -> dict | None:
        row = self._con.execute("SELECT trial, phase, kind, wall_utc FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return dict(zip(("trial", "phase", "kind", "wall_utc"), row)) if row else None

    def first_wall_utc(self) -> str | None:
        row = self._con.execute("SELECT wall_utc FROM events ORDER BY seq LIMIT 1").fetchone()
        return row[0] if row else None

    # -- appending (each call is one committed, fsynced transaction) --

    def log_event(self, attempt: int, trial: int | None, phase: str | None, kind: str, actual_ns: int,
                  requested_ns: int | None = None, **detail) -> None:
        self._con.execute(
            "INSERT INTO events (attempt, trial, phase, kind, requested_ns, actual_ns, wall_utc, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (attempt, trial, phase, kind, requested_ns, actual_ns, utc_now(), json.dumps(detail) if detail else None),
        )

    def write_trial(self, row: dict) -> None:
        unknown = set(row) - set(TIDY_COLUMNS + EXTRA_COLUMNS)
        if unknown:
            raise ValueError(f"trial row has unknown columns {sorted(unknown)}")
        if row.get("status") not in TRIAL_STATUSES:
            raise ValueError(f"trial status {row.get('status')!r} is not one of {TRIAL_STATUSES}")
        values = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()}
        columns = ", ".join(values)
        self._con.execute(f"INSERT INTO trials ({columns}) VALUES ({', '.join('?' * len(values))})", tuple(values.values()))

    def write_picture(self, trial: int, png: bytes) -> tuple[str, str]:
        """Store a picture atomically; returns its path relative to the data folder and its SHA-256."""
        path = self.folder / PICTURES_DIR / f"trial-{trial:03d}.png"
        atomic_write(path, png)
        return str(path.relative_to(self.folder.parent.parent)), hashlib.sha256(png).hexdigest()

    def close(self) -> None:
        self._con.close()
        os.close(self._lock_fd)
        for lock in self.held:
            lock.release()


def read_session(folder: Path) -> tuple[dict[str, str], list[dict], list[dict]]:
    """meta, trial rows (by trial number) and events of a session, read-only, without taking its lock."""
    con = sqlite3.connect(f"file:{Path(folder) / DB_FILE}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        meta = dict(tuple(r) for r in con.execute("SELECT key, value FROM meta"))
        trials = [dict(r) for r in con.execute("SELECT * FROM trials ORDER BY trial")]
        events = [dict(r) for r in con.execute("SELECT * FROM events ORDER BY seq")]
    finally:
        con.close()
    return meta, trials, events


def _q(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _lock(path: Path) -> int:
    """An exclusive flock: the kernel drops it when the process dies, so a crash never leaves a stale lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise EdgeCerError(
                f"session {path.parent.name} is already open in another process (pid {holder or '?'}); "
                "finish or close that one first"
            ) from exc
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
