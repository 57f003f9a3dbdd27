"""What each endpoint setting costs: end of speech -> endpoint on the audio clock, split sentences, WER, CPU.

    .venv/bin/python perf/asr_endpoint.py --asr /tmp/asr_default --sentences 60 --out perf/results/asr_endpoint.json

Each setting (a RecognizerConfig change, or a microphone block) decodes the held-out sentences (--condition of
perf/asr_eval.py, default us150) from the file, once per sentence. The endpoint's audio time (`Final.t_final` of
the sentence's last final) does not depend on the CPU or on how the audio was chunked (the VAD reads the same
512-sample windows), so this needs no quiet machine: `audio_delay_s` = that time rounded up to the end of its microphone
block, minus the end of speech read off the waveform (last sample above 0.01; for a noisy condition, off its
noise-free twin's) — the latency of an idle CPU whose
final decode, started at the pause, is done by then (perf/asr.py measures wall time). `split`: sentences cut into
more than one final (one sentence, one final is intended); `cpu_s`: process CPU per sentence (all of its decodes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_cer.speech.audio import read_audio, speech_end_s
from edge_cer.speech.recognizer import RecognizerConfig, create_recognizer
from edge_cer.speech.transcribe import transcribe_file
from edge_cer.speech.wer import word_error_rate

sys.path.insert(0, str(Path(__file__).parent))
from asr_eval import CONDITIONS, SENTENCES, clean_twin, synthesise  # noqa: E402  (perf/ is scripts, not a package)

DEFAULT = RecognizerConfig()
# name -> (config changes, microphone block in s)
SETTINGS = {
    "default": ({}, 0.032),
    "block 100 ms": ({}, 0.1),
    "vad_min_silence 0.2": ({"vad_min_silence": 0.2}, 0.032),
    "vad_min_silence 0.25": ({"vad_min_silence": 0.25}, 0.032),
    "vad_min_silence 0.4": ({"vad_min_silence": 0.4}, 0.032),
    "vad_min_silence 0.5": ({"vad_min_silence": 0.5}, 0.032),
    "vad_threshold 0.35": ({"vad_threshold": 0.35}, 0.032),
    "vad_threshold 0.65": ({"vad_threshold": 0.65}, 0.032),
}


def _percentiles(values) -> dict:
    return {"p50": round(float(np.median(values)), 3), "p95": round(float(np.percentile(values, 95)), 3),
            "max": round(float(np.max(values)), 3)}


def measure(asr: Path, changes: dict, block: float, items: list) -> dict:
    recognizer = create_recognizer(asr, replace(DEFAULT, **changes))
    delays, splits, errors, cpus = [], 0, [], []
    for text, path, speech_end in items:
        cpu = time.process_time()
        transcript = transcribe_file(recognizer, path)
        cpus.append(time.process_time() - cpu)
        errors.append(word_error_rate(text, transcript.text))
        splits += len(transcript.finals) > 1
        if transcript.finals:
            delays.append(np.ceil(transcript.finals[-1].t_final / block - 1e-9) * block - speech_end)
    return {"changes": changes, "block_s": block, "audio_delay_s": _percentiles(delays),
            "no_final": len(items) - len(delays), "split": splits, "wer_mean": round(float(np.mean(errors)), 4), "cpu_s": _percentiles(cpus)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--asr", type=Path, required=True)
    parser.add_argument("--sentences", type=int, default=60)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--condition", default="us150", choices=list(CONDITIONS))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge_cer_asr_eval"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    items = []
    for i, text in enumerate(SENTENCES.read_text(encoding="utf-8").splitlines()[:args.sentences]):
        path = synthesise(args.condition, i, text, args.cache)
        clean = read_audio(synthesise(clean_twin(args.condition), i, text, args.cache))
        items.append((text, path, speech_end_s(clean)))
    result = {"asr": str(args.asr), "condition": args.condition, "sentences": len(items),
              "load_1min": os.getloadavg()[0], "settings": {}}
    for name in args.settings:
        result["settings"][name] = measure(args.asr, *SETTINGS[name], items)
        print(json.dumps({name: result["settings"][name]}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
