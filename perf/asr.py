"""Live recogniser at microphone timing: end of speech -> final (p50/p95 over sentences), partial interval, WER.

    .venv/bin/python perf/asr.py --asr /tmp/asr_default --out perf/results/asr_live.json
    .venv/bin/python perf/asr.py --asr /tmp/asr_default --vad-min-silence 0.5 --out ...   # an endpoint setting

Each of --sentences held-out sentences (perf/asr_sentences.txt, --condition of perf/asr_eval.py, default us150:
espeak-ng en-us at 150 wpm, 0.5 s of silence before, 1.0 s after, plus 0.5 s more here) is replayed through
`RecognizerWorker` as a microphone delivers it: --chunk-seconds chunks (default: the sources' 32 ms), each pushed
once its *last* sample has been spoken (edge_cer.speech.audio.paced). Latency = wall time of the utterance's last
Final minus the wall time its last speech sample was spoken (read off the waveform: the last sample above 0.01,
independent of the recogniser; for a noisy condition, off its noise-free twin's). Partial interval = wall time
between two consecutive Partials of one utterance (no Final between them; pauses inside the utterance included);
`partial_change_interval_s` counts only Partials whose text changed (vad mode re-emits an unchanged text: its `t`
says how far the decode reached). Warm-up: one sentence, not counted. `same_as_file`: sentences whose live final
text equals `transcribe_file`'s on the same audio (determinism).
Load-independent figures beside the wall times: `audio_delay_s`, the end of speech -> the end of the chunk that
carried the endpoint (Final.t_final rounded up to a chunk; the latency on an idle CPU if the final's decode,
started at the pause, is done by then), and `cpu_s`, the process CPU time per sentence (all decodes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from edge_cer.speech.audio import CHUNK_SECONDS, array_source, paced, read_audio, speech_end_s
from edge_cer.speech.recognizer import Final, Partial, RecognizerConfig, RecognizerWorker, create_recognizer
from edge_cer.speech.transcribe import transcribe_file
from edge_cer.speech.wer import word_error_rate

sys.path.insert(0, str(Path(__file__).parent))
from asr_eval import CONDITIONS, SENTENCES, clean_twin, synthesise  # noqa: E402  (perf/ is scripts, not a package)

EXTRA_TRAIL = 0.5  # s of silence after the condition's 1.0 s: room for the slowest final


def replay(recognizer, audio: np.ndarray, chunk_seconds: float) -> tuple[float, list]:
    """Push `audio` at microphone timing; (wall time of its first sample, the events)."""
    events = []
    worker = RecognizerWorker(recognizer, on_event=events.append)
    start = time.monotonic()
    for chunk in paced(array_source(audio, 16000, chunk_seconds=chunk_seconds), start):
        worker.push(chunk)
    worker.close()
    return start, events


def partial_intervals(events: list, changed_only: bool = False) -> list[float]:
    """Wall seconds between consecutive Partials of each utterance (a Final ends an utterance)."""
    intervals, previous, text = [], None, None
    for event in events:
        if isinstance(event, Final):
            previous, text = None, None
        elif not changed_only or event.text != text:
            if previous is not None:
                intervals.append(event.wall - previous)
            previous, text = event.wall, event.text
    return intervals


def _percentiles(values: list[float]) -> dict:
    return {"p50": round(float(np.median(values)), 3), "p95": round(float(np.percentile(values, 95)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--asr", type=Path, required=True)
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--condition", default="us150", choices=list(CONDITIONS), help="perf/asr_eval.py's")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge_cer_asr_eval"))
    parser.add_argument("--chunk-seconds", type=float, default=CHUNK_SECONDS, help="microphone block")
    parser.add_argument("--vad-min-silence", type=float, default=RecognizerConfig.vad_min_silence)
    parser.add_argument("--threads", type=int, default=RecognizerConfig.num_threads)
    parser.add_argument("--beam", type=int, default=RecognizerConfig.whisper_beam_size, help="finals' beam width")
    args = parser.parse_args()
    config = RecognizerConfig(num_threads=args.threads, vad_min_silence=args.vad_min_silence,
                              whisper_beam_size=args.beam)
    recognizer = create_recognizer(args.asr, config)
    texts = SENTENCES.read_text(encoding="utf-8").splitlines()[:args.sentences + 1]
    latencies, intervals, changes, rows, loads = [], [], [], [], []
    for i, text in enumerate(texts):
        path = synthesise(args.condition, i, text, args.cache)
        audio = read_audio(path)
        audio = np.concatenate([audio, np.zeros(int(EXTRA_TRAIL * 16000), np.float32)])
        speech_end = speech_end_s(read_audio(synthesise(clean_twin(args.condition), i, text, args.cache)))
        cpu = time.process_time()
        start, events = replay(recognizer, audio, args.chunk_seconds)
        cpu = time.process_time() - cpu
        if i == 0:
            continue  # warm-up
        finals = [e for e in events if isinstance(e, Final)]
        latency = finals[-1].wall - (start + speech_end) if finals else None
        intervals += partial_intervals(events)
        changes += partial_intervals(events, changed_only=True)
        hypothesis = " ".join(f.text for f in finals)
        loads.append(os.getloadavg()[0])
        chunk = args.chunk_seconds
        delay = np.ceil(finals[-1].t_final / chunk - 1e-9) * chunk - speech_end if finals else None
        rows.append({"index": i, "latency_s": latency, "audio_delay_s": delay, "cpu_s": cpu, "finals": len(finals),
                     "partials": sum(isinstance(e, Partial) for e in events), "load_1min": loads[-1],
                     "text": hypothesis,
                     "wer": word_error_rate(text, hypothesis),
                     "same_as_file": hypothesis == transcribe_file(recognizer, path).text})
        if latency is not None:
            latencies.append(latency)
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "asr": str(args.asr), "condition": args.condition, "mode": recognizer.mode, "sentences": len(rows),
        "chunk_seconds": args.chunk_seconds,
        "vad_min_silence": args.vad_min_silence, "num_threads": args.threads, "cpus": os.cpu_count(),
        "load_1min": {"min": round(min(loads), 2), "max": round(max(loads), 2)},
        "final_latency_s": {**_percentiles(latencies), "max": round(max(latencies), 3),
                            "within_0.5": int(sum(x <= 0.5 for x in latencies))},
        "audio_delay_s": _percentiles([r["audio_delay_s"] for r in rows if r["audio_delay_s"] is not None]),
        "cpu_s_per_sentence": _percentiles([r["cpu_s"] for r in rows]),
        "partial_interval_s": {**_percentiles(intervals), "max": round(max(intervals), 3),
                               "within_0.32": f"{sum(x <= 0.32 for x in intervals)}/{len(intervals)}"}
        if intervals else None,
        "partial_change_interval_s": _percentiles(changes) if changes else None,
        "wer_mean": round(float(np.mean([r["wer"] for r in rows])), 4),
        "same_as_file": sum(r["same_as_file"] for r in rows), "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
