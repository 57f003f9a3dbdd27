"""`python -m edge_cer ...` is `edge-cer ...`."""

import sys

from edge_cer.cli import main

if __name__ == "__main__":  # not on a plain import (tools that walk the package import every module)
    sys.exit(main())
