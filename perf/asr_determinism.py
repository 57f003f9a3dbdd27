"""Run-to-run differences in final text: the same held-out audio, --repeats times, up to three ways.

    .venv/bin/python perf/asr_determinism.py --asr /tmp/asr_default --sentences 60 --repeats 20 \
        --ways file bursts --out perf/results/asr_determinism_full.json

Per sentence (--condition of perf/asr_eval.py, default us150) and repeat: `transcribe_file` without partials, with
partials, and a `RecognizerWorker` fed uneven bursts (20-250 ms, a fresh random split each repeat, as fast as it
takes them: its coalescing varies run to run, as live). Reports the distinct final texts per sentence over all
runs; 1 everywhere means no difference. `--ways` picks among `file`, `partials` (the costly one: a partial
re-decode every 0.2 s of audio) and `bursts`. Live at microphone timing is compared with the file by perf/asr.py
(`same_as_file`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from edge_cer.speech.audio import read_audio
from edge_cer.speech.recognizer import Final, RecognizerWorker, create_recognizer
from edge_cer.speech.transcribe import transcribe_file

sys.path.insert(0, str(Path(__file__).parent))
from asr_eval import CONDITIONS, SENTENCES, synthesise  # noqa: E402  (perf/ is scripts, not a package)


def bursts(recognizer, audio: np.ndarray, rng) -> str:
    events = []
    worker = RecognizerWorker(recognizer, on_event=events.append)
    cuts = np.cumsum(rng.integers(320, 4000, size=len(audio) // 320))
    for chunk in np.split(audio, cuts[cuts < len(audio)]):
        worker.push(chunk)
    worker.close()
    return " ".join(e.text for e in events if isinstance(e, Final))


WAYS = {
    "file": lambda recognizer, path, audio, rng: transcribe_file(recognizer, path).text,
    "partials": lambda recognizer, path, audio, rng: transcribe_file(recognizer, path, partials=True).text,
    "bursts": lambda recognizer, path, audio, rng: bursts(recognizer, audio, rng),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--asr", type=Path, required=True)
    parser.add_argument("--sentences", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--condition", default="us150", choices=list(CONDITIONS), help="perf/asr_eval.py's")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge_cer_asr_eval"))
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    recognizer = create_recognizer(args.asr)
    rng = np.random.default_rng(0)
    rows, loads, cpu = [], [os.getloadavg()[0]], time.process_time()
    for i, text in enumerate(SENTENCES.read_text(encoding="utf-8").splitlines()[:args.sentences]):
        path = synthesise(args.condition, i, text, args.cache)
        audio = read_audio(path)
        texts = {way: [] for way in args.ways}
        for _ in range(args.repeats):
            for way in args.ways:
                texts[way].append(WAYS[way](recognizer, path, audio, rng))
        every = [t for way in args.ways for t in texts[way]]
        rows.append({"index": i, "runs": len(every), "distinct": sorted(set(every)),
                     "distinct_per_way": {way: len(set(t)) for way, t in texts.items()}})
        loads.append(os.getloadavg()[0])
        print(json.dumps(rows[-1]), flush=True)
    result = {"asr": str(args.asr), "condition": args.condition, "sentences": len(rows), "repeats": args.repeats,
              "ways": args.ways, "cpu_s": round(time.process_time() - cpu, 1),
              "load_1min": {"min": min(loads), "max": max(loads)}, "runs": sum(r["runs"] for r in rows),
              "sentences_with_differences": sum(len(r["distinct"]) > 1 for r in rows),
              "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
