"""Measure the recogniser on this CPU: RTF, end-of-speech -> final latency, partial interval (real-time replay).

    .venv/bin/python perf/asr.py --asr /tmp/asr_default --out perf/results/asr_default.json

Settings: espeak-ng speech (about 5 s) followed by 1.5 s of silence, replayed in real time through
RecognizerWorker in 100 ms chunks. Warm-up: one full decode before measuring. Latency = wall time of the Final
minus the wall time at which the last speech sample was pushed (the end of speech is read off the waveform: the
last 10 ms above -40 dBFS, independent of the recogniser). Partial interval = wall time between partials whose
text changed; CPU s = process CPU time, which the other jobs on a shared machine inflate far less than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_cer.speech.audio import read_audio
from edge_cer.speech.recognizer import Final, Partial, RecognizerConfig, RecognizerWorker, create_recognizer
from edge_cer.speech.wer import word_error_rate

TEXT = "I can see that the person in the picture is getting help, and things will get better soon."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--asr", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tail-paddings", type=int, default=RecognizerConfig.whisper_tail_paddings,
                        help="Whisper tail paddings in 10 ms frames (sherpa's own default: 1000)")
    parser.add_argument("--threads", type=int, default=RecognizerConfig.num_threads)
    parser.add_argument("--partial-interval", type=float, default=RecognizerConfig.partial_interval,
                        help="vad mode: seconds of new speech between partial re-decodes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", f"{tmp}/s.wav", TEXT], check=True)
        speech = read_audio(f"{tmp}/s.wav")
    audio = np.concatenate([speech, np.zeros(int(1.5 * 16000), np.float32)])
    loud = np.flatnonzero(np.abs(speech[: len(speech) // 160 * 160]).reshape(-1, 160).max(axis=1) > 0.01)
    speech_end = (loud[-1] + 1) * 160 / 16000
    config = RecognizerConfig(num_threads=args.threads, whisper_tail_paddings=args.tail_paddings,
                              partial_interval=args.partial_interval)
    recognizer = create_recognizer(args.asr, config)
    offline = getattr(recognizer, "offline", None)
    # 1. RTF of one offline decode of the whole utterance (burn-in first).
    offline.transcribe(speech)
    start, cpu = time.perf_counter(), time.process_time()
    offline.transcribe(speech)
    rtf = (time.perf_counter() - start) / (len(speech) / 16000)
    rtf_cpu = (time.process_time() - cpu) / (len(speech) / 16000)
    # 2. Real-time replay.
    latencies, intervals, wers = [], [], []
    for _ in range(args.runs):
        events = []
        worker = RecognizerWorker(recognizer, on_event=events.append)
        t0 = time.monotonic()
        for i in range(0, len(audio), 1600):
            time.sleep(max(0.0, t0 + i / 16000 - time.monotonic()))
            worker.push(audio[i:i + 1600])
        worker.close()
        finals = [e for e in events if isinstance(e, Final)]
        latencies.append(finals[-1].wall - (t0 + speech_end))
        intervals += list(np.diff([e.wall for e in events if isinstance(e, Partial)]))
        wers.append(word_error_rate(TEXT, " ".join(f.text for f in finals)))
    result = {"asr": str(args.asr), "mode": recognizer.mode, "utterance_s": round(speech_end, 2),
              "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_1min": round(os.getloadavg()[0], 2), "num_threads": recognizer.config.num_threads,
              "whisper_tail_paddings": config.whisper_tail_paddings, "partial_interval": config.partial_interval,
              "rtf_offline_decode": round(rtf, 3), "rtf_offline_decode_cpu": round(rtf_cpu, 3),
              "final_latency_s": {"p50": round(float(np.median(latencies)), 3), "max": round(max(latencies), 3)},
              "partial_interval_s": {"p50": round(float(np.median(intervals)), 3),
                                     "p95": round(float(np.percentile(intervals, 95)), 3)} if intervals else None,
              "wer": wers, "runs": args.runs}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
