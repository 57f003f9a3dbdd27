"""Who may write what in a data folder: the key file (lab label -> pseudonym), the study lock around it, and one
lock per participant.

    DATA/participant-keys.tsv          label, pseudonym, created_utc; one line per participant (--key-file moves it)
    DATA/.participant-keys.tsv.lock    the study lock: held while the key file is read and appended to
    DATA/locks/<pseudonym>.lock        the participant lock: held from before the session is created to its end
    DATA/.export.lock                  held while bids/ and trials.csv are rebuilt (edge_cer.session.bids)

Locks are `flock`s, so the kernel drops them when a process dies and a crash never leaves a stale lock. A lock file
holds who has it (pid, start time, host), so a refusal names them. A damaged key-file line is reported and skipped;
only the participant it may belong to is refused, with the line to repair.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import time
from datetime import datetime
from pathlib import Path

from edge_cer.errors import EdgeCerError, warn
from edge_cer.session.data import new_code, utc_now

KEY_HEADER = "label\tpseudonym\tcreated_utc"
LOCKS_DIR = "locks"
EXPORT_LOCK = ".export.lock"
STUDY_LOCK_WAIT_S = 30.0  # the study lock is held for one read-and-append; a longer wait means a hung process
EXPORT_LOCK_WAIT_S = 300.0  # rebuilding a large study's exports takes seconds, never minutes
_PSEUDONYM = re.compile(r"[a-z2-9]{4,32}")
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,16}")


def _try_flock(path: Path) -> int | None:
    """An open fd holding an exclusive flock on `path`, or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _sign(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\t{datetime.now().astimezone().isoformat(timespec='seconds')}\t"
                  f"{socket.gethostname()}\n".encode(), 0)


def _holder(path: Path) -> str:
    """'process 4242 since 10:31 on lab-pc-2', from the lock file's text (written by the holder)."""
    try:
        pid, started, host = (path.read_text().strip().split("\t") + ["?", "?", "?"])[:3]
        since = datetime.fromisoformat(started)
        when = since.strftime("%H:%M" if since.date() == datetime.now().astimezone().date() else "%Y-%m-%d %H:%M")
    except (OSError, ValueError):
        return "another process"
    return f"process {pid} since {when}" + (f" on {host}" if host != socket.gethostname() else "")


class FileLock:
    """An exclusive flock held until `release()` (or the process's end)."""

    def __init__(self, fd: int):
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _wait_flock(path: Path, wait_s: float, what: str) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while (fd := _try_flock(path)) is None:
        if time.monotonic() > deadline:
            raise EdgeCerError(f"{what}: held by {_holder(path)} for over {wait_s:.0f} s; "
                               "stop that process if it hangs, then run this again")
        time.sleep(0.01)
    _sign(fd)
    return FileLock(fd)


def study_lock(key_file: Path) -> FileLock:
    """The lock around the key file; waits while another start reads or appends it (milliseconds)."""
    return _wait_flock(key_file.with_name(f".{key_file.name}.lock"), STUDY_LOCK_WAIT_S, str(key_file))


def export_lock(data_dir: Path) -> FileLock:
    """One exporter at a time per data folder (two sessions ending together export one after the other)."""
    return _wait_flock(Path(data_dir) / EXPORT_LOCK, EXPORT_LOCK_WAIT_S, f"{data_dir} exports")


def lock_participant(data_dir: Path, pseudonym: str, label: str) -> FileLock:
    """The participant's lock, or a refusal naming who holds it. Take it before creating anything of theirs."""
    folder = Path(data_dir) / LOCKS_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"{pseudonym}.lock"
    fd = _try_flock(path)
    if fd is None:
        raise EdgeCerError(f"participant {label} is running in {_holder(path)}; wait for that session to end "
                           "(a crashed run frees the lock by itself: then continue it with --resume)")
    _sign(fd)
    return FileLock(fd)


# ---- the key file ----


def read_keys(key_file: Path, label: str | None = None) -> dict[str, str]:
    """label -> pseudonym. Damaged lines (torn, binary, a label given twice) are reported and skipped; if one may be
    `label`'s own entry, `label` is refused, so a participant never silently gets a second pseudonym."""
    key_file = Path(key_file)
    if key_file.is_dir():
        raise EdgeCerError(f"--key-file {key_file}: is a folder; give the key file's path (a TSV), "
                           "or leave --key-file out to use DATA/participant-keys.tsv")
    if not key_file.exists():
        return {}
    try:
        raw_lines = key_file.read_bytes().split(b"\n")
    except OSError as exc:
        raise EdgeCerError(f"--key-file {key_file}: cannot read it ({exc.strerror}); fix its permissions") from exc
    keys: dict[str, str] = {}
    damaged: list[tuple[int, str, str]] = []  # (line number, first field, problem)
    for number, raw in enumerate(raw_lines, start=1):
        text = raw.decode(errors="replace").rstrip("\r")
        if not text.strip() or (number == 1 and text == KEY_HEADER):
            continue
        fields = text.split("\t")
        problem = _line_problem(raw, fields)
        if problem is None and keys.get(fields[0], fields[1]) != fields[1]:
            problem = f"gives {fields[0]} a second pseudonym ({fields[1]}; an earlier line gave {keys[fields[0]]})"
        if problem is None:
            keys[fields[0]] = fields[1]
        else:
            damaged.append((number, fields[0], problem))
    for number, first, problem in damaged:
        keys.pop(first, None)  # a label with a damaged line: its good-looking line may be the stale one
        repair = f"repair it from a backup of {key_file.name}, or delete it if that participant never ran a session"
        if label is not None and (first == label or (label not in keys and not _LABEL.fullmatch(first))):
            raise EdgeCerError(f"{key_file} line {number}: {problem}; it may be {label}'s entry, so {label} cannot "
                               f"start until it is fixed: {repair}")
        warn(f"{key_file} line {number}: {problem}; skipped, the others run; {repair}")
    return keys


def _line_problem(raw: bytes, fields: list[str]) -> str | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "is not UTF-8 text (binary damage)"
    if len(fields) < 2:
        return "has no tab-separated pseudonym (a torn or hand-edited line)"
    if not _LABEL.fullmatch(fields[0].strip()):
        return f"label {fields[0][:20]!r} is not a participant code"
    if not _PSEUDONYM.fullmatch(fields[1]):
        return f"pseudonym {fields[1][:20]!r} is not an edge-cer code (torn line?)"
    return None


def claim_participant(data_dir: Path, key_file: Path, label: str, create: bool = True) -> tuple[str, FileLock]:
    """(pseudonym, the participant's lock), taken under the study lock before anything of theirs is created. With
    `create`, a first-time label gets a new pseudonym appended to the key file (fsynced); otherwise it is refused."""
    key_file = Path(key_file)
    with study_lock(key_file):
        keys = read_keys(key_file, label)
        if label not in keys and not create:
            raise EdgeCerError(f"--resume: participant {label} has no session in {key_file}; start one without --resume")
        pseudonym = keys.get(label) or _append_key(key_file, label)
        return pseudonym, lock_participant(data_dir, pseudonym, label)


def _append_key(key_file: Path, label: str) -> str:
    pseudonym = new_code()
    fd = os.open(key_file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"  # a torn last line stays a line of its own
        f.write(b"\n" * torn + (f"{KEY_HEADER}\n" if size == 0 else "").encode()
                + f"{label}\t{pseudonym}\t{utc_now()}\n".encode())
        f.flush()
        os.fsync(f.fileno())
    return pseudonym
