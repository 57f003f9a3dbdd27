"""What the CLI does with an exception that is not an `EdgeCerError`: one line for the user, the traceback in a file.

    edge-cer run: error: the disk is full (writing .../session.sqlite3); free some space and run it again ...
    edge-cer run: internal error: KeyError: 'files' (a bug in edge-cer); the traceback is in ~/.local/state/...

Errors of the machine or the user's files that Python raises as `OSError` / `sqlite3` errors (a full disk, a
read-only folder, a missing file) are user errors (exit 2); anything else is a bug (exit 1). Either way the
traceback goes to `$EDGE_CER_LOG_DIR` (default `$XDG_STATE_HOME/edge-cer/logs`, i.e. ~/.local/state/edge-cer/logs).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path

USER_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EIO: "input/output error (a failing disk or a removed drive)",
}
RESUME_HINT = "; free some space or fix the permissions and run the command again (a session continues with --resume)"


def log_dir() -> Path:
    if "EDGE_CER_LOG_DIR" in os.environ:
        return Path(os.environ["EDGE_CER_LOG_DIR"])
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "edge-cer" / "logs"


def write_traceback(command: str, argv: list[str], exc: BaseException) -> Path | None:
    """The full traceback (with the command line and versions) in a new file; None if no folder is writable."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    text = (f"edge-cer {command} failed at {stamp} UTC, pid {os.getpid()}\nargv: {argv!r}\n"
            f"python {sys.version.split()[0]} on {sys.platform}\n\n"
            + "".join(traceback.format_exception(exc)))
    for folder in (log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"edge-cer-{command}-{stamp}-{os.getpid()}.log"
            path.write_text(text, errors="backslashreplace")
            return path
        except OSError:
            continue
    return None


def environment_problem(exc: BaseException) -> str | None:
    """What is wrong with the machine or the user's files (a full disk, a read-only folder), or None for a bug."""
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
        return f"{where + ': ' if where else ''}{USER_ERRNOS[exc.errno]}"
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc)
        if "disk is full" in message:
            return f"{USER_ERRNOS[errno.ENOSPC]} (SQLite: {message})"
        if "readonly" in message or "disk I/O error" in message or "unable to open" in message:
            return f"a session database cannot be written (SQLite: {message}; a full or failing disk?)"
    if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in str(exc) or "not a database" in str(exc)):
        return f"a session database is damaged (SQLite: {exc}); restore its folder from a backup"
    return None


def describe(command: str, argv: list[str], exc: BaseException) -> tuple[str, int]:
    """(one line for stderr, exit status) for an unexpected exception; the traceback goes to a log file."""
    log = write_traceback(command, argv, exc)
    where = f"the traceback is in {log}" if log else "no log folder was writable for the traceback"
    problem = environment_problem(exc)
    if problem is not None:
        return f"edge-cer {command}: error: {problem}{RESUME_HINT} ({where})", 2
    summary = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return (f"edge-cer {command}: internal error: {summary} — a bug in edge-cer; {where}, "
            "please attach it to a report"), 1
