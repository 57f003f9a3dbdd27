"""Spoken reappraisals as a participant gives them: espeak-ng sentences with capitals, commas, full stops and
apostrophes, preceded by silence, delivered as a microphone does (each chunk after its last sample)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from edge_cer.speech.audio import file_source, read_audio

SENTENCES = ("The man isn't hurt, he's being helped, and he'll recover soon.",
             "They're actors on a film set, and nobody is in danger.")
LEADING_SILENCE_S, TRAILING_SILENCE_S = 0.6, 1.5
RATE = 16000


def speak(text: str, path: Path) -> Path:
    """espeak-ng (en-us, 150 wpm) with leading and trailing silence, 16 kHz mono."""
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
    speech = read_audio(path)
    silence = lambda s: np.zeros(int(s * RATE), np.float32)  # noqa: E731
    sf.write(path, np.concatenate([silence(LEADING_SILENCE_S), speech, silence(TRAILING_SILENCE_S)]), RATE)
    return path


def microphone(paths):
    """An `audio_source` for the terminal UI: each call opens the microphone on the next recording."""
    recordings = iter(paths)

    def source():
        return file_source(next(recordings), realtime=True)

    return source
