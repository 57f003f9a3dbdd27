"""`python -m edge_cer ...` is `edge-cer ...`."""

import sys

from edge_cer.cli import main

sys.exit(main())
