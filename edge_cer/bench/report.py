"""A bench result written three ways: result.json (everything), result.md (the tables), result.png (plots)."""

from __future__ import annotations

import json
from pathlib import Path

from edge_cer.bench.runs import STAGES

STAGE_LABELS = {
    "tokenize": "tokenise", "text_encode": "tokenise + text encode", "image_encode": "image encode (cold)",
    "image_encode_cached": "image encode (cached)", "vae_encode": "VAE encode (cold)",
    "vae_encode_cached": "VAE encode (cached)", "unet_step": "UNet step", "loop_overhead_step":
    "scheduler + guidance / step", "vae_decode": "VAE decode", "speech_end_to_picture": "speech end -> picture",
    "total_cold": "total, cold caches",
}


def achieved(backends: dict, gflop_per_step: float, peak_gflops: float, gpu_peaks: dict | None = None) -> dict:
    """UNet GFLOP/s and % of peak per backend: at the p50 step (the typical one) and at the fastest step (the
    least disturbed one on a shared machine, as the best-of peak is). CPU backends against the sgemm peak, a GPU
    backend against the fp16 MatMul peak of its own provider (diffusers on CUDA against the first one)."""
    gpu = {n: p["gflops"] for n, p in (gpu_peaks or {}).items() if "gflops" in p}
    out = {}
    for name, b in backends.items():
        step = b["stages"]["unet_step"]
        peak = gpu.get(name, next(iter(gpu.values()), None)) if name.endswith(("cuda", "tensorrt", "tensorrt-rtx")) \
            else peak_gflops
        if step["n"] and peak:
            typical, fastest = (gflop_per_step * 1000 / step[k] for k in ("p50_ms", "min_ms"))
            out[name] = {"gflops": typical, "percent_of_peak": 100 * typical / peak, "peak_gflops": peak,
                         "fastest_step_gflops": fastest, "fastest_step_percent_of_peak": 100 * fastest / peak}
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.3f}"


def markdown(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    lines = [f"# bench {result['name']}", "",
             f"`{result['command']}`", "",
             f"{m['cpu']}, {m['usable_cpus']} CPUs, load average at start {m['loadavg_at_start'][0]:.2f} / end "
             f"{result['loadavg_at_end'][0]:.2f}; onnxruntime {m['onnxruntime']['version']} "
             f"(`{m['onnxruntime']['module']}`), numpy {m['versions']['numpy']}"
             + (f", torch {m['versions'].get('torch')}, diffusers {m['versions'].get('diffusers')}"
                if m['versions'].get('torch') else ""), "",
             f"{s['height']}x{s['width']}, {result['denoising_steps']} denoising steps ({s['steps']} x strength "
             f"{s['strength']}), guidance {s['guidance']} (UNet batch {result['unet']['batch']}), IP scale "
             f"{s['ip_scale']}; {result['runs']} measured runs after {result['warmup']} warm-up; engine manifest "
             f"`{result['engine']['manifest_sha256'][:12]}`", ""]
    for name, b in result["backends"].items():
        lines += [f"## {name}", "", "| stage | n | p50 ms | p90 ms | p95 ms | p99 ms | mean ms | stdev ms |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for stage in STAGES:
            st = b["stages"].get(stage)
            if st and st["n"]:
                lines.append(f"| {STAGE_LABELS[stage]} | {st['n']} | " + " | ".join(
                    _ms(st[k]) for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "stdev_ms")) + " |")
        load = ", ".join(f"{k} {v:.2f} s" for k, v in b["load_seconds"].items())
        lines += ["", f"load (cold): {load}; peak RSS {b['peak_rss_mib']:.0f} MiB"
                  + (" (process total, both frameworks loaded)" if b.get("rss_includes_other") else ""), ""]
    u = result["unet"]
    lines += ["## UNet math", "",
              f"- {u['gflop_per_step']:.1f} GFLOP per UNet step (batch {u['batch']}, counted from the ONNX graph)",
              f"- measured fp32 sgemm peak: {result['sgemm_peak']['gflops']:.1f} GFLOP/s "
              f"(numpy {result['sgemm_peak']['blas'].get('internal_api', '?')} "
              f"{result['sgemm_peak']['blas'].get('architecture', '')}, n={result['sgemm_peak']['n']})"]
    runs = result["sgemm_peak_runs"]
    if min(runs) < 0.8 * max(runs) or any(e["fastest_step_percent_of_peak"] > 100 for e in u["achieved"].values()):
        lines.append(f"- **warning**: the sgemm peak measured {runs[0]:.0f} before and {runs[1]:.0f} GFLOP/s after "
                     "the runs: the machine's load changed (or held through both), so % of peak is unreliable here")
    gpus = m.get("gpu")
    if isinstance(gpus, dict):  # nvidia-smi failed: its one-line error
        lines.append(f"- GPU: nvidia-smi failed: {gpus['error']}")
    for g in gpus if isinstance(gpus, list) else []:
        lines.append(f"- GPU {g.get('name')} (cc {g.get('compute_capability')}, driver {g.get('driver')}): SM clock "
                     f"{g.get('sm_clock')} of max {g.get('max_sm_clock')}, memory clock {g.get('memory_clock')}")
    for name, p in result.get("gpu_matmul_peaks", {}).items():
        lines.append(f"- {name}: " + (f"measured {p['dtype']} MatMul peak {p['gflops']:.0f} GFLOP/s (n={p['n']}, "
                                      f"{p['provider']})" if "gflops" in p else f"MatMul peak failed: {p['error']}"))
    for name, eff in u["achieved"].items():
        lines.append(f"- {name}: {eff['gflops']:.1f} GFLOP/s at the p50 step = {eff['percent_of_peak']:.0f} % "
                     f"of the measured peak ({eff['peak_gflops']:.0f} GFLOP/s); fastest step "
                     f"{eff['fastest_step_gflops']:.1f} GFLOP/s = "
                     f"{eff['fastest_step_percent_of_peak']:.0f} %")
    if result.get("vs_torch"):
        lines += ["", "## vs diffusers + torch (interleaved, pair by pair: torch time / our time)", "",
                  "| stage | pairs | geomean | min | max |", "|---|---:|---:|---:|---:|"]
        for stage, r in result["vs_torch"].items():
            lines.append(f"| {STAGE_LABELS[stage]} | {r['n']} | {r['geomean']:.2f}x | {r['min']:.2f}x | "
                         f"{r['max']:.2f}x |")
    return "\n".join(lines) + "\n"


def plot(result: dict, trace_spans: list, path: Path) -> None:
    """UNet-step histogram per backend, and the timeline of each backend's last run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, timeline) = plt.subplots(2, 1, figsize=(10, 7))
    for name, b in result["backends"].items():
        steps = [1000 * x for x in b["raw"]["unet_step"]]
        hist.hist(steps, bins=min(30, max(5, len(steps))), alpha=0.6, label=f"{name} (n={len(steps)})")
    hist.set(xlabel="UNet step (ms)", ylabel="count", title=f"{result['name']}: UNet step latency")
    hist.legend()
    tracks = list(dict.fromkeys(s.track for s in trace_spans))
    for row, track in enumerate(tracks):
        mine = [s for s in trace_spans if s.track == track]
        last = max(s.start for s in mine if s.args.get("level") == "run")
        for s in mine:
            if s.args.get("level") == "call" and s.start >= last:
                colour = "tab:orange" if s.name.startswith("unet") else "tab:blue"
                timeline.broken_barh([(s.start - last, s.seconds)], (row - 0.4, 0.8), color=colour, edgecolor="k")
    timeline.set_yticks(range(len(tracks)), tracks)
    timeline.set(xlabel="seconds from the start of the last run (orange: UNet steps)", title="last run, per call")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(result: dict, out: Path, trace_spans: list) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "result.json", "md": out / "result.md", "png": out / "result.png"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["md"].write_text(markdown(result))
    plot(result, trace_spans, paths["png"])
    return paths
