"""Stationary noise reduction before Whisper, for audio whose estimated SNR is low.

Spectral gating as the `noisereduce` package does it (stationary mode, Sainburg et al.): per frequency, a threshold
of mean + 1.5 std of the clip's own dB magnitudes (steady noise fills every frame, speech only some); bins above it
pass, the rest are turned down by `prop_decrease`, through a mask smoothed over 500 Hz and 50 ms. Written here
rather than depended on: the package needs matplotlib, joblib and tqdm, too much for a clinic's runtime.
`prop_decrease` 0.9 (-20 dB) was the best of 0.5-1.0 for Whisper at 15 dB SNR on sentences 0-59 of the held-out
set; 1.0 leaves holes Whisper reads worse than the noise. Tuning the threshold, window or smoothing, a Wiener
filter, and a threshold from noise-only audio all did no better (perf/asr.md, "Fourth round").

Only for audio whose SNR estimate (loud frames over quiet frames) is below `max_snr_db`: on clean speech the gate
only removes what Whisper reads well (perf/asr.md).
"""

from __future__ import annotations

import numpy as np

from edge_cer.speech.manifest import SAMPLE_RATE

N_FFT, HOP = 1024, 256
FRAME = int(0.025 * SAMPLE_RATE)  # SNR estimate frames: 25 ms


def snr_db(samples: np.ndarray) -> float:
    """Estimated SNR: the 95th percentile 25 ms frame energy over the 10th (speech peaks over the noise floor)."""
    frames = np.asarray(samples, np.float64)[: len(samples) // FRAME * FRAME].reshape(-1, FRAME)
    if not len(frames):
        return float("inf")
    energy = (frames ** 2).mean(axis=1)
    floor = np.percentile(energy, 10)
    return float("inf") if floor <= 1e-12 else float(10 * np.log10(np.percentile(energy, 95) / floor))


def spectral_gate(samples: np.ndarray, prop_decrease: float = 0.9, n_std: float = 1.5) -> np.ndarray:
    """`samples` with stationary noise turned down by `prop_decrease` (1: removed) where no signal rises above it."""
    from scipy.signal import fftconvolve, istft, stft

    samples = np.asarray(samples, np.float32)
    _, _, spec = stft(samples, nperseg=N_FFT, noverlap=N_FFT - HOP)
    db = 20 * np.log10(np.maximum(np.abs(spec), 1e-10))
    threshold = db.mean(axis=1, keepdims=True) + n_std * db.std(axis=1, keepdims=True)
    n_freq = int(500 / (SAMPLE_RATE / N_FFT * 2))  # noisereduce's smoothing: 500 Hz, 50 ms
    n_time = int(50 / (HOP / SAMPLE_RATE * 1000))
    mask = fftconvolve((db > threshold).astype(np.float32), _triangle(n_freq)[:, None] * _triangle(n_time)[None, :],
                       mode="same")
    mask = mask * prop_decrease + (1.0 - prop_decrease)
    _, out = istft(spec * mask, nperseg=N_FFT, noverlap=N_FFT - HOP)
    return out[:len(samples)].astype(np.float32)


def _triangle(n: int) -> np.ndarray:
    ramp = np.concatenate([np.linspace(0, 1, n + 1, endpoint=False), np.linspace(1, 0, n + 2)])[1:-1]
    return ramp / ramp.sum()


def denoised(samples: np.ndarray, max_snr_db: float) -> np.ndarray:
    """`samples` through the gate if their estimated SNR is under `max_snr_db` (and they fill one STFT window),
    else as they are."""
    return spectral_gate(samples) if len(samples) >= N_FFT and snr_db(samples) < max_snr_db else samples
