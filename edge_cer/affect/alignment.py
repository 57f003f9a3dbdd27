"""Per-trial alignment of spoken and pictured valence, and relief.

    alignment = 1 - |text_valence - picture_valence| / 2      in [0, 1]; 1 = same valence, 0 = opposite extremes
    relief    = rating_pre - rating_post                      negative affect 1-9, so > 0 means the trial helped

Both valences are on [-1, 1] (VADER compound; CLIP zero-shot valence or the rescaled pleasure proxy). A missing
input gives NaN, never a default.
"""

from __future__ import annotations

import numpy as np


def alignment(text_valence, picture_valence):
    """Elementwise on scalars or arrays; NaN where either valence is missing."""
    t = np.asarray(text_valence, dtype=np.float64)
    p = np.asarray(picture_valence, dtype=np.float64)
    out = 1.0 - np.abs(t - p) / 2.0
    return float(out) if out.ndim == 0 else out


def relief(rating_pre, rating_post):
    """Pre minus post negative affect, elementwise; NaN where either rating is missing."""
    out = np.asarray(rating_pre, dtype=np.float64) - np.asarray(rating_post, dtype=np.float64)
    return float(out) if out.ndim == 0 else out
