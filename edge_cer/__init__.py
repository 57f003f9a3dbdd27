"""edge-cer: optimized edge inference for cognitive emotion regulation research.

    from edge_cer import Pipeline, Recognizer, Session

The runtime package never imports torch (tests/test_torch_free.py proves it); the export stage lives in
the separate `export` package and is installed with the `export` extra. The names above load on first use, so
`import edge_cer` stays light.
"""

__version__ = "0.1.0"

# name -> module that defines it
_LAZY = {
    "Pipeline": "edge_cer.api",
    "Recognizer": "edge_cer.api",
    "Session": "edge_cer.session.phases",
}
__all__ = ["Pipeline", "Recognizer", "Session", "__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'edge_cer' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__():
    return sorted(__all__)
