"""`edge-cer bench`: per-stage latency of our engines, optionally side by side with diffusers + torch.

    edge-cer bench --engines /work/engines-big/sd15-base --steps 4 --runs 3 --vs-torch \\
        --trace perf/results/sd15-256/trace.json --out perf/results/sd15-256

Writes OUT/result.json, result.md and result.png (perf/README.md explains every figure). Warm-up runs are not
measured. With --vs-torch each measured run of ours is followed by one of diffusers, and ratios are taken pair by
pair, so a load change on a shared machine hits both sides of a pair alike.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from edge_cer.errors import EdgeCerError

# Stages compared pair by pair with diffusers (same work on both sides; diffusers never caches the picture).
COMPARED = ("unet_step", "text_encode", "image_encode", "vae_encode", "vae_decode", "total_cold")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edge_cer.backends import PROVIDER_HELP, PROVIDERS, add_provider_arguments
    from edge_cer.bench.runs import Settings
    from edge_cer.schedulers import SCHEDULERS

    d = Settings()
    p.add_argument("--engines", type=Path, help="export folder (edge-cer export sd)")
    p.add_argument("--out", type=Path, required=True, help="results folder, e.g. perf/results/NAME")
    p.add_argument("--backend", "--provider", dest="backend", action="append", choices=PROVIDERS,
                   help=f"repeat for several (default: cpu); {PROVIDER_HELP}")
    add_provider_arguments(p, provider=False)
    p.add_argument("--vs-torch", action="store_true",
                   help="also run diffusers + torch on the export's source checkpoint, interleaved with ours")
    p.add_argument("--steps", type=int, default=d.steps, help="scheduler steps (img2img runs steps x strength)")
    p.add_argument("--runs", type=int, default=5, help="measured runs per backend")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs first, per backend")
    p.add_argument("--trace", type=Path, help="write a Chrome/Perfetto trace JSON (one span per stage and step)")
    p.add_argument("--threads", type=int, help="intra-op threads for onnxruntime and torch (default: theirs)")
    p.add_argument("--height", type=int, help="default: the export resolution")
    p.add_argument("--width", type=int, help="default: the export resolution")
    p.add_argument("--strength", type=float, default=d.strength)
    p.add_argument("--guidance", type=float, default=d.guidance)
    p.add_argument("--ip-scale", type=float, default=d.ip_scale)
    p.add_argument("--scheduler", choices=tuple(SCHEDULERS),
                   help="replace the model's scheduler on both sides (default: its scheduler_config.json)")
    p.add_argument("--prompt", default=d.prompt)
    p.add_argument("--image", type=Path, help="stimulus picture (default: a synthetic 512x512 picture)")
    p.add_argument("--live", action="store_true",
                   help="speech end -> picture of the live pipeline on recorded or synthesised speech")
    p.add_argument("--asr", type=Path, help="--live: ASR folder (edge-cer export asr)")
    p.add_argument("--audio", type=Path, nargs="*",
                   help="--live: WAV files or folders of them (default: 3 synthesised reappraisals)")


def synthetic_stimulus(size: int = 512):
    """A structured, deterministic picture (gradients and rings) so runs need no stimulus file."""
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size] / size
    rings = 0.5 + 0.5 * np.sin(40 * np.hypot(x - 0.5, y - 0.5))
    rgb = np.stack([x, y, rings], axis=-1)
    return Image.fromarray((255 * rgb).astype(np.uint8))


def check_args(args) -> None:
    if args.live:
        return
    if args.engines is None:
        raise EdgeCerError("--engines DIR is required (an `edge-cer export sd` folder); or pass --live")
    if args.runs < 1 or args.warmup < 0:
        raise EdgeCerError(f"--runs {args.runs} / --warmup {args.warmup}: need runs >= 1 and warmup >= 0")
    if args.steps < 1:
        raise EdgeCerError(f"--steps {args.steps}: must be at least 1")
    if len(set(args.backend or ["cpu"])) > 1 and args.vs_torch:
        devices = {"cpu" if b == "cpu" else "cuda" for b in args.backend}
        if len(devices) > 1:
            raise EdgeCerError("--vs-torch runs torch on the backends' device: bench CPU and GPU backends separately")


def run_live(args) -> int:
    from edge_cer.bench.live import run_live_bench

    if args.engines is None or args.asr is None:
        raise EdgeCerError("--live needs --engines DIR (edge-cer export sd) and --asr DIR (edge-cer export asr)")
    if len(args.backend or ["cpu"]) > 1:
        raise EdgeCerError("--live measures one backend at a time; give one --backend")
    run_live_bench(args.engines, args.asr, audio_files=args.audio or None, synthesize=not args.audio,
                   out=args.out, provider=(args.backend or ["cpu"])[0])
    return 0


def run(args) -> int:
    from rich.console import Console

    from edge_cer.bench import machine, report
    from edge_cer.bench.flops import count_flops
    from edge_cer.bench.runs import EngineRunner, Settings
    from edge_cer.bench.stats import ratio_summary, summarize
    from edge_cer.bench.trace import Trace
    from edge_cer.image import load_image
    from edge_cer.manifest import load_manifest

    check_args(args)
    if args.live:
        return run_live(args)
    console = Console(stderr=True)
    image = load_image(args.image) if args.image else synthetic_stimulus()
    t0 = time.perf_counter()
    manifest = load_manifest(args.engines, verify=True)
    verify_s = time.perf_counter() - t0
    shape = manifest.data["export_shape"]
    s = Settings(prompt=args.prompt, scheduler=args.scheduler, steps=args.steps, strength=args.strength,
                 guidance=args.guidance, ip_scale=args.ip_scale, height=args.height or shape["height"],
                 width=args.width or shape["width"])
    from edge_cer.backends import backend_options

    options = {"threads": args.threads} if args.threads else {}
    options.update(backend_options(args))
    # Every backend loads before any measurement: a missing GPU provider fails here, in one line.
    runners = [EngineRunner(manifest, provider, **options) for provider in args.backend or ["cpu"]]
    info = machine.machine_info(with_reference=args.vs_torch)
    console.print(f"[bold]bench[/] {args.engines} on {info['cpu']} ({info['usable_cpus']} CPUs), "
                  f"load average {info['loadavg_at_start'][0]:.2f}")
    peak_before = machine.sgemm_peak()
    console.print(f"sgemm peak {peak_before['gflops']:.1f} GFLOP/s")
    gpu_peaks = gpu_matmul_peaks(runners, console)
    if gpu_peaks:
        info["gpu"] = machine.gpu_info_or_error()

    trace, backends, ratios = Trace(), {}, {}
    reference = None
    for runner in runners:
        runner.load_seconds = {"verify_manifest_hashes": verify_s, **runner.load_seconds}
        for i in range(args.warmup):
            console.print(f"{runner.name}: warm-up {i + 1}/{args.warmup}")
            runner.run(image, s)
        rss = machine.peak_rss_mib()
        if args.vs_torch and reference is None:
            from edge_cer.bench.reference import DiffusersRunner

            console.print("loading diffusers + torch on the same checkpoint")
            reference = DiffusersRunner(manifest, img2img=s.strength < 1.0,
                                        device="cpu" if runner.device == "cpu" else "cuda", threads=args.threads)
            for i in range(args.warmup):
                console.print(f"{reference.name}: warm-up {i + 1}/{args.warmup}")
                reference.run(image, s)
        ours, theirs = _collect(), _collect()
        for i in range(args.runs):
            got = runner.run(image, s, trace, f"#{i}")
            _extend(ours, got)
            console.print(f"{runner.name}: run {i + 1}/{args.runs}: {1000 * got['total_cold'][0]:.0f} ms, "
                          f"UNet step p50 {1000 * np.median(got['unet_step']):.1f} ms")
            if reference is not None:
                ref = reference.run(image, s, trace, f"#{i}")
                _extend(theirs, ref)
                for stage in COMPARED:
                    if got[stage] and ref.get(stage):
                        ratios.setdefault(stage, []).append(float(np.median(ref[stage]) / np.median(got[stage])))
                console.print(f"{reference.name}: run {i + 1}/{args.runs}: {1000 * ref['total_cold'][0]:.0f} ms, "
                              f"UNet step x{ratios['unet_step'][-1]:.2f} vs ours")
        backends[runner.name] = {"load_seconds": runner.load_seconds, "peak_rss_mib": rss, "backend": runner.describe(),
                                 "stages": {k: summarize(v) for k, v in ours.items()}, "raw": ours}
        runner.unload()
        if reference is not None:
            backends[reference.name] = {"load_seconds": reference.load_seconds, "peak_rss_mib":
                                        machine.peak_rss_mib(), "rss_includes_other": True,
                                        "stages": {k: summarize(v) for k, v in theirs.items()}, "raw": theirs}

    batch = s.unet_batch
    unet_shapes = manifest.graphs["unet"].shapes(batch=batch, height=s.height, width=s.width)
    flops = count_flops(manifest.graph_path("unet"), unet_shapes)
    peak_after = machine.sgemm_peak()
    peak = max(peak_before, peak_after, key=lambda p: p["gflops"])
    graphs = manifest.data["graphs"]
    result = {
        "name": args.out.name,
        "command": "edge-cer " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "settings": s.to_dict(),
        "denoising_steps": len(backends[next(iter(backends))]["raw"]["unet_step"]) // args.runs,
        "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
        "engine": {"path": str(manifest.root), "manifest_sha256": manifest.sha256,
                   "graph_sha256": {n: manifest.data["files"].get(g["file"]) for n, g in graphs.items()},
                   "optimized": {n: g.get("optimized") for n, g in graphs.items()},
                   "precision": {n: g.get("precision") for n, g in graphs.items()}},
        "machine": info,
        "loadavg_at_end": os.getloadavg(),
        "sgemm_peak": peak, "sgemm_peak_runs": [peak_before["gflops"], peak_after["gflops"]],
        "unet": {"batch": batch, "shapes": {k: list(v) for k, v in unet_shapes.items()},
                 "gflop_per_step": flops.total / 1e9, "flops": flops.to_dict(),
                 "achieved": report.achieved(backends, flops.total / 1e9, peak["gflops"], gpu_peaks)},
        "backends": backends,
        "vs_torch": {k: ratio_summary(v) for k, v in ratios.items()},
        "gpu_matmul_peaks": gpu_peaks,
    }
    paths = report.write(result, args.out, trace.spans)
    if args.trace:
        trace.write(args.trace)
        paths["trace"] = args.trace
    console.print(report.markdown(result), markup=False, highlight=False)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}")
    return 0


def gpu_matmul_peaks(runners, console) -> dict[str, dict]:
    """Per GPU backend, the fp16 MatMul peak of its own provider, measured now: what its % of peak is against."""
    from edge_cer.bench import machine
    from edge_cer.errors import EdgeCerError

    peaks = {}
    for runner in runners:
        if runner.device == "cpu":
            continue
        try:
            peaks[runner.name] = machine.matmul_peak(runner.provider)
            console.print(f"{runner.name}: fp16 MatMul peak {peaks[runner.name]['gflops'] / 1000:.1f} TFLOP/s")
        except (EdgeCerError, RuntimeError) as exc:  # onnxruntime's errors derive from RuntimeError
            peaks[runner.name] = {"error": str(exc).splitlines()[0]}
    return peaks


def _collect() -> dict[str, list[float]]:
    from edge_cer.bench.runs import STAGES

    return {k: [] for k in STAGES}


def _extend(into: dict, got: dict) -> None:
    for k, v in got.items():
        into.setdefault(k, []).extend(v)
