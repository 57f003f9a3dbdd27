"""User-facing errors: one line that names the file (or option) and the fix."""


class EdgeCerError(Exception):
    """An error the user can fix. The CLI prints it as one line and exits with status 2."""


class GeneratorLost(EdgeCerError):
    """The picture generator can make no more pictures (its server is gone): the session stops, resumable with
    --resume, rather than record every later AI trial without a picture."""


def require(module: str, extra: str):
    """Import an optional dependency or explain the exact install line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EdgeCerError(
            f"`{module}` is not installed; install it with: pip install 'edge-cer[{extra}]'"
        ) from exc


def warn(message: str) -> None:
    """A problem that is reported and worked around (a damaged session is skipped): one line on stderr, via logging
    so that library callers can route it."""
    import logging

    logging.getLogger("edge_cer").warning("edge-cer: warning: %s", " ".join(message.split()))


def read_user_text(path, option: str, expect: str) -> str:
    """A user's text file, or one line naming it (`option path`) and what to give instead (`expect`): missing, a
    folder, unreadable, or not UTF-8."""
    from pathlib import Path

    path = Path(path)
    name = f"{option} {path}".strip()
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EdgeCerError(f"{name}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                           "save it as UTF-8 text") from None
    except IsADirectoryError:
        raise EdgeCerError(f"{name}: is a folder; give {expect}") from None
    except OSError as exc:
        raise EdgeCerError(f"{name}: cannot read it ({exc.strerror}); give {expect}") from None


def check_text(value: str, where: str) -> str:
    """Text that SQLite, TSV and the tokenizer can hold: valid Unicode (no lone surrogates from undecodable bytes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EdgeCerError(f"{where}: not valid UTF-8 text (undecodable byte {value[exc.start]!r} at character "
                           f"{exc.start}); retype it or fix the terminal's encoding (UTF-8)") from None
    return value
