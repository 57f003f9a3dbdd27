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
