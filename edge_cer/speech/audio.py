"""Audio sources for the recogniser: a file (replayed in real time or as fast as possible), an array, a microphone.

Every source yields mono float32 chunks in [-1, 1] at the model rate (16 kHz), so the recogniser never sees
anything else. Replayed in real time (`realtime=True`, `paced`), a chunk is delivered as a microphone delivers
it: once its *last* sample has been spoken, never at its first (which made every latency look up to a chunk
shorter than a participant lives it). Files are read block by block, so a 10-minute recording costs no more memory than a 10-second one.
Resampling uses a polyphase filter (scipy.signal.resample_poly). Multi-channel audio is refused unless the
caller asks to mix it down: a stereo lab recording may hold the experimenter on the other channel.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from edge_cer.errors import EdgeCerError
from edge_cer.speech.manifest import SAMPLE_RATE

# 32 ms (one Silero window): the end of speech reaches the recogniser at most one block late. With sherpa's
# examples' 100 ms blocks the audio-clock delay to the final was 0.48 s p50 / 0.53 s p95, with 32 ms 0.43 / 0.46
# (perf/asr.md): only the smaller block leaves room for the 0.5 s target.
CHUNK_SECONDS = 0.032
MAX_AUDIO_SECONDS = 3600.0  # a whole session at most; longer is the wrong file (a day of recording)
BLOCK_SECONDS = 10.0  # file read/resample block: bounded memory, negligible filter edge effects


def to_model_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resample float32 samples to 16 kHz (no-op when already there)."""
    if sample_rate == SAMPLE_RATE:
        return np.asarray(samples, np.float32)
    from scipy.signal import resample_poly

    ratio = Fraction(SAMPLE_RATE, sample_rate)
    return resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)


def to_mono(samples: np.ndarray, source: str, mix_down: bool) -> np.ndarray:
    if samples.ndim == 1:
        return samples
    if samples.shape[1] == 1:
        return samples[:, 0]
    if not mix_down:
        raise EdgeCerError(f"{source}: {samples.shape[1]} channels; record mono, or mix down explicitly "
                           "(--mix-down / mix_down=True)")
    return samples.mean(axis=1)


def _chunks(samples: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    for i in range(0, len(samples), chunk):
        yield samples[i:i + chunk]


def paced(chunks: Iterable[np.ndarray], start: float | None = None) -> Iterator[np.ndarray]:
    """Deliver 16 kHz chunks at microphone timing: each when its last sample has been spoken, the first sample
    having been spoken at `start` (`time.monotonic()`; default: when the first chunk is asked for)."""
    sent = 0
    for chunk in chunks:
        start = time.monotonic() if start is None else start
        sent += len(chunk)
        time.sleep(max(0.0, start + sent / SAMPLE_RATE - time.monotonic()))
        yield chunk


def array_source(samples: np.ndarray, sample_rate: int, mix_down: bool = False,
                 chunk_seconds: float = CHUNK_SECONDS, realtime: bool = False) -> Iterator[np.ndarray]:
    """Chunks of an in-memory recording (float in [-1, 1], or int16/int32 PCM); with `realtime`, at
    microphone timing (`paced`)."""
    samples = np.asarray(samples)
    if samples.dtype.kind in "iu":
        if samples.dtype == np.uint8:  # 8-bit WAV is unsigned around 128
            samples = (samples.astype(np.float32) - 128.0) / 128.0
        else:
            samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
    samples = to_model_rate(to_mono(samples.astype(np.float32), "array", mix_down), sample_rate)
    chunks = _chunks(samples, int(chunk_seconds * SAMPLE_RATE))
    yield from paced(chunks) if realtime else chunks


def file_source(path: str | Path, realtime: bool = False, mix_down: bool = False,
                chunk_seconds: float = CHUNK_SECONDS) -> Iterator[np.ndarray]:
    """Chunks of a WAV/FLAC/OGG file; with `realtime`, at microphone timing (`paced`): each chunk once its last
    sample would have been spoken."""
    import soundfile as sf

    path = Path(path)
    info = check_audio_file(path)
    chunk = int(chunk_seconds * SAMPLE_RATE)
    sent = 0

    def pieces() -> Iterator[np.ndarray]:
        nonlocal sent
        # soundfile scales every PCM width (8-bit unsigned included) to float in [-1, 1].
        for block in sf.blocks(str(path), blocksize=int(BLOCK_SECONDS * info.samplerate), dtype="float32",
                               always_2d=True):
            for piece in _chunks(to_model_rate(to_mono(block, str(path), mix_down), info.samplerate), chunk):
                sent += len(piece)
                yield piece

    try:
        yield from paced(pieces()) if realtime else pieces()
    except sf.LibsndfileError as exc:
        raise EdgeCerError(f"{path}: the audio data is corrupt after {sent / SAMPLE_RATE:.1f} s ({exc})") from exc


def speech_end_s(samples: np.ndarray) -> float:
    """Seconds into clean (synthesised) mono 16 kHz speech where its last sample above 0.01 ends; 0.0 if none."""
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return (loud[-1] + 1) / SAMPLE_RATE if len(loud) else 0.0


def check_audio_file(path: Path):
    """soundfile's header info of a readable recording no longer than MAX_AUDIO_SECONDS (header only: fast)."""
    import soundfile as sf

    if not path.is_file():
        raise EdgeCerError(f"{path}: {'is a folder' if path.is_dir() else 'no such audio file'}; check the path "
                           "(a WAV or FLAC file)")
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise EdgeCerError(f"{path}: not a readable audio file ({exc}); convert it to WAV or FLAC") from exc
    if info.duration > MAX_AUDIO_SECONDS:
        raise EdgeCerError(f"{path}: {info.duration:.0f} s of audio, over the {MAX_AUDIO_SECONDS:.0f} s limit of edge-cer "
                           "(one recording per utterance or session); cut it to the part to transcribe")
    return info


def read_audio(path: str | Path, mix_down: bool = False) -> np.ndarray:
    """A whole file as mono float32 at 16 kHz."""
    pieces = list(file_source(path, mix_down=mix_down))
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def microphone_source(device: int | str | None = None, chunk_seconds: float = CHUNK_SECONDS) -> Iterator[np.ndarray]:
    """Chunks from a microphone (PortAudio through sounddevice), until the caller stops iterating."""
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice raises OSError when the PortAudio library is absent
        raise EdgeCerError(f"no PortAudio library ({exc}); install it: sudo apt-get install libportaudio2") from exc
    try:
        info = sd.query_devices(device, kind="input")
    except (ValueError, sd.PortAudioError) as exc:
        raise EdgeCerError(f"no microphone ({exc}); plug one in, or list devices with "
                           "`python -m sounddevice` and pass --device") from exc
    rate = int(info["default_samplerate"])
    arrived: queue.Queue[np.ndarray] = queue.Queue()
    with sd.InputStream(device=device, channels=1, samplerate=rate, dtype="float32",
                        blocksize=int(chunk_seconds * rate), callback=lambda data, *_: arrived.put(data[:, 0].copy())):
        while True:
            yield to_model_rate(arrived.get(), rate)
