"""Latency statistics as trtexec reports them: percentiles with n, mean, stdev, min, max (milliseconds)."""

from __future__ import annotations

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def summarize(seconds: list[float]) -> dict:
    """Summary of one stage's samples. Percentiles interpolate linearly (numpy's default), so with small n the
    upper ones sit between the largest samples: read them together with n."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {"n": 0}
    summary = {"n": int(ms.size), "mean_ms": float(ms.mean()),
               "stdev_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
               "min_ms": float(ms.min()), "max_ms": float(ms.max())}
    summary.update({f"p{p}_ms": float(v) for p, v in zip(PERCENTILES, np.percentile(ms, PERCENTILES))})
    return summary


def ratio_summary(ratios: list[float]) -> dict:
    """Pairwise speed-ups (reference time / our time), one per interleaved pair; geometric mean as the centre."""
    r = np.asarray(ratios, dtype=np.float64)
    if r.size == 0:
        return {"n": 0}
    return {"n": int(r.size), "geomean": float(np.exp(np.log(r).mean())), "min": float(r.min()),
            "max": float(r.max()), "pairs": [float(x) for x in r]}
