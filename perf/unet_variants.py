"""Which onnxruntime CPU settings pay for the UNet on this machine: each variant against the baseline, interleaved.

    .venv/bin/python perf/unet_variants.py --engines /work/engines-big/sd15-base \\
        --variant fused=/work/engines-big/trial/unet-fused/model.onnx --height 256 --width 256 --reps 3 \\
        --out perf/results/unet_variants_sd15_256.json

Baseline: what OrtBackend does (ORT_ENABLE_ALL, onnxruntime's default threads, memory arena on). Variants: one
setting changed each (threads 1, ORT_ENABLE_EXTENDED / BASIC, arena off) and any other UNet file given with
--variant NAME=PATH (e.g. the transformer optimizer's fused graph). Only two sessions are alive at a time (an
SD-1.5 UNet session holds about 3.5 GB), and the pair alternates call by call, so load drift on a shared machine
hits both. Speed-up = baseline p50 / variant p50. Same feeds for both; outputs are compared (max abs diff).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_cer.bench.machine import machine_info
from edge_cer.bench.stats import summarize
from edge_cer.manifest import load_manifest

LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}


def session(path: Path, level: str = "all", threads: int = 0, arena: bool = True) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = LEVELS[level]
    opts.intra_op_num_threads = threads
    opts.enable_cpu_mem_arena = arena
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def feeds(manifest, batch: int, height: int, width: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = manifest.graphs["unet"].shapes(batch=batch, height=height, width=width)
    out = {name: rng.standard_normal(shapes[name], dtype=np.float32)
           for name in ("sample", "encoder_hidden_states", "ip_tokens")}
    out.update(timestep=np.array([500.0], np.float32), ip_scale=np.array([0.6], np.float32))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--engines", type=Path, required=True)
    p.add_argument("--variant", action="append", default=[], help="NAME=PATH of another UNet ONNX file")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch", type=int, default=2, help="2 = classifier-free guidance")
    p.add_argument("--reps", type=int, default=3, help="timed calls per session, after one warm-up call")
    p.add_argument("--only", nargs="*", help="run only these variant names")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    manifest = load_manifest(args.engines, verify=False)
    unet = manifest.graph_path("unet")
    x = feeds(manifest, args.batch, args.height, args.width)
    variants = {"threads=1": dict(path=unet, threads=1), "opt=extended": dict(path=unet, level="extended"),
                "opt=basic": dict(path=unet, level="basic"), "arena=off": dict(path=unet, arena=False)}
    for spec in args.variant:
        name, path = spec.split("=", 1)
        variants[name] = dict(path=Path(path))
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only}
    result = {"command": "perf/unet_variants.py " + " ".join(os.sys.argv[1:]), "machine": machine_info(),
              "shape": {"batch": args.batch, "height": args.height, "width": args.width}, "variants": {}}
    for name, cfg in variants.items():
        t0 = time.perf_counter()
        sessions = {"baseline": session(unet), name: session(**cfg)}
        load_s = time.perf_counter() - t0
        times = {k: [] for k in sessions}
        outs = {k: s.run(None, x)[0] for k, s in sessions.items()}  # warm-up, and the outputs to compare
        for _ in range(args.reps):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, x)
                times[k].append(time.perf_counter() - t)
        base, var = summarize(times["baseline"]), summarize(times[name])
        entry = {"baseline": base, "variant": var, "speedup_p50": base["p50_ms"] / var["p50_ms"],
                 "max_abs_diff": float(np.abs(outs["baseline"] - outs[name]).max()), "load_both_s": load_s,
                 "loadavg": os.getloadavg()}
        result["variants"][name] = entry
        print(f"{name:>16}: baseline p50 {base['p50_ms']:.0f} ms, variant p50 {var['p50_ms']:.0f} ms, "
              f"x{entry['speedup_p50']:.2f}, max |diff| {entry['max_abs_diff']:.1e}", flush=True)
        del sessions
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
