"""Does decoding with a draft change Whisper's text? Plain greedy vs drafted decodes on espeak-ng sentences.

    .venv/bin/python perf/asr_draft.py --asr /tmp/asr_default --out perf/results/asr_draft_int8.json

Each sentence is decoded whole without a draft, and as a live segment is: partials at 40, 60 and 80% of the audio,
each drafted by the one before, then the whole drafted by the last partial. Reports how many drafted texts equal
the plain ones, the WER of each against the sentence, and the CPU time per whole decode.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_cer.speech.audio import read_audio
from edge_cer.speech.manifest import load_asr_folder
from edge_cer.speech.whisper import Whisper
from edge_cer.speech.wer import word_error_rate

SENTENCES = [
    "I can see that the person in the picture is getting help, and things will get better soon.",
    "The storm has passed and the family is safe now.",
    "This situation is hard, but people are working together to fix it.",
    "Maybe the dog is only sleeping and its owner will come back in a minute.",
    "Nobody was hurt.",
    "The firefighters arrived quickly and everyone got out of the building.",
    "It looks scary, but the doctor says he will recover.",
    "They have each other, and that makes them stronger.",
    "This happened a long time ago and the town has been rebuilt.",
    "The child is crying, but her mother is right there to comfort her.",
    "I remind myself that this is only a photograph.",
    "Even in a difficult moment there are people who care and who help.",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--asr", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    whisper = Whisper(load_asr_folder(args.asr).model("offline"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(SENTENCES):
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", f"{tmp}/{i}.wav", text], check=True)
            audio = read_audio(f"{tmp}/{i}.wav")
            cpu = time.process_time()
            plain = whisper.transcribe(audio)
            plain_cpu = time.process_time() - cpu
            draft = ()
            for fraction in (0.4, 0.6, 0.8):
                draft = whisper.transcribe(audio[: int(len(audio) * fraction)], draft=draft).tokens
            cpu = time.process_time()
            drafted = whisper.transcribe(audio, draft=draft)
            rows.append({"text": text, "plain": plain.text, "drafted": drafted.text, "plain_cpu_s": plain_cpu,
                         "drafted_cpu_s": time.process_time() - cpu})
    result = {"asr": str(args.asr), "sentences": len(rows),
              "identical": sum(r["plain"] == r["drafted"] for r in rows),
              "wer_plain": round(float(np.mean([word_error_rate(r["text"], r["plain"]) for r in rows])), 3),
              "wer_drafted": round(float(np.mean([word_error_rate(r["text"], r["drafted"]) for r in rows])), 3),
              "cpu_s_plain": round(sum(r["plain_cpu_s"] for r in rows), 3),
              "cpu_s_drafted": round(sum(r["drafted_cpu_s"] for r in rows), 3), "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
