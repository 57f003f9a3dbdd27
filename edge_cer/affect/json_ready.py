"""Plain, valid JSON out of scores: decision logs and analysis results must load in any JSON reader."""

from __future__ import annotations

import math

import numpy as np


def json_ready(value):
    """Recursively: NaN/inf -> None, numpy scalars -> Python, tuples -> lists; json.dumps(allow_nan=False) accepts it."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
