"""edge-cer: optimized edge inference for cognitive emotion regulation research.

The runtime package never imports torch (tests/test_torch_free.py proves it); the export stage lives in
the separate `export` package and is installed with the `export` extra.
"""

__version__ = "0.1.0"
