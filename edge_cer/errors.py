"""User-facing errors: one line that names the file (or option) and the fix."""


class EdgeCerError(Exception):
    """An error the user can fix. The CLI prints it as one line and exits with status 2."""


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
