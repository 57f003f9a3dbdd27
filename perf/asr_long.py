"""Decode cost of long utterances: one Whisper decode of 5-20 s of speech, greedy and with the finals' beam.

    .venv/bin/python perf/asr_long.py --asr /tmp/asr_default

The speech is held-out us150 sentences run together (perf/asr_eval.py synthesises and caches them first). Prints
the minimum wall time of 3 decodes per length and beam; perf/asr.md "Long utterances" has the table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edge_cer.speech.audio import read_audio
from edge_cer.speech.manifest import SAMPLE_RATE, load_asr_folder
from edge_cer.speech.recognizer import RecognizerConfig, create_recognizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asr", type=Path, required=True, help="ASR folder (edge-cer export asr --default)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge_cer_asr_eval"), help="asr_eval.py's WAV cache")
    args = parser.parse_args()
    whisper = create_recognizer(load_asr_folder(args.asr), RecognizerConfig()).offline
    speech = np.concatenate([read_audio(args.cache / "us150" / f"{i:03d}.wav") for i in range(8)])
    for seconds in (5, 10, 15, 20):
        audio = speech[: seconds * SAMPLE_RATE]
        for beam in (1, RecognizerConfig.whisper_beam_size):
            whisper.transcribe(audio, beam_size=beam)  # warm-up
            times = []
            for _ in range(3):
                start = time.perf_counter()
                whisper.transcribe(audio, beam_size=beam)
                times.append(time.perf_counter() - start)
            print(f"{seconds:>2} s audio, beam {beam}: {min(times):.3f} s", flush=True)


if __name__ == "__main__":
    main()
