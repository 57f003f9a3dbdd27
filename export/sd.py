"""`edge-cer export sd`: SD + IP-Adapter -> validated ONNX graphs (+ TensorRT engines) + manifest.json.

Everything is written into a temporary folder beside --out and renamed into place at the end, so a failure
(bad input, disk full, Ctrl-C) never leaves a half-written export behind.
"""

from __future__ import annotations

import errno
import json
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from edge_cer.errors import EdgeCerError
from edge_cer.graphs import TINY_VAE_DECODER, VAE_DOWNSAMPLE, sd_graphs
from edge_cer.image import CLIP_MEAN, CLIP_STD
from edge_cer.manifest import (FORMAT, FORMAT_VERSION, MANIFEST, SCHEDULER_CONFIG, TOKENIZER_DIR, hash_tree,
                               is_export_dir, sha256_file, write_json_atomic)
from export import onnx_export
from export.checkpoint import load_ip_adapter, load_sd, load_tiny_vae, refuse_pickle, source_hashes
from export.finetune import read_provenance
from export.models import graph_modules, model_dims

OPTIMIZER_TYPES = {"text_encoder": "clip", "image_encoder": "clip", "unet": "unet", "vae_encoder": "vae",
                   "vae_decoder": "vae"}


@dataclass
class ExportOptions:
    model: Path
    ip_adapter: Path
    out: Path
    image_encoder: Path | None = None
    clip: Path | None = None  # the full CLIP model of the image encoder: zero-shot prompt embeddings
    tiny_vae: Path | None = None  # a diffusers AutoencoderTiny (TAESD) folder: its decoder is exported too
    precision: str = "fp32"
    vae_precision: str = "auto"  # auto: fp32 where the VAE's config says force_upcast (diffusers' fp16 rule)
    height: int = 512
    width: int = 512
    optimize: str = "none"  # none | cpu | gpu
    tensorrt: bool = False
    tensorrt_dynamic: bool = False
    force: bool = False
    force_external_data: bool = False  # tests: exercise the external-data path on tiny graphs


def spatial_multiple(unet) -> int:
    """Pixels must be a multiple of this: the VAE's 8 times the UNet's 2x downsamplings."""
    return VAE_DOWNSAMPLE * 2 ** (len(unet.config.block_out_channels) - 1)


def check_options(o: ExportOptions) -> None:
    """Everything that can be refused without loading a model (which takes seconds to minutes)."""
    refuse_pickle(o.ip_adapter, "IP-Adapter")
    if not o.ip_adapter.is_file():
        raise EdgeCerError(f"--ip-adapter {o.ip_adapter}: no such file; give the h94-layout .safetensors file")
    if o.precision not in ("fp32", "fp16"):
        raise EdgeCerError(f"--precision {o.precision}: use fp32 or fp16")
    if o.vae_precision not in ("auto", "fp32", "fp16"):
        raise EdgeCerError(f"--vae-precision {o.vae_precision}: use auto, fp32 or fp16")
    if o.out.exists() and not o.force:
        if not o.out.is_dir() or any(o.out.iterdir()):
            what = "an edge-cer export" if is_export_dir(o.out) else "not an edge-cer export"
            raise EdgeCerError(f"{o.out}: already exists ({what}); choose another --out or pass --force to replace it")
    if o.out.exists() and o.force and o.out.is_dir() and any(o.out.iterdir()) and not is_export_dir(o.out):
        raise EdgeCerError(f"{o.out}: exists and is not an edge-cer export; --force only replaces earlier exports")
    if o.tensorrt:  # fail before minutes of ONNX export, not after
        from edge_cer.backends import cuda_runtime
        from edge_cer.errors import require

        require("tensorrt", "gpu")
        cuda_runtime.device_info(0)


def export_sd(o: ExportOptions, console: Console | None = None) -> Path:
    console = console or Console(stderr=True)
    check_options(o)
    o.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{o.out.name}.", suffix=".partial", dir=o.out.parent))
    try:
        _export_into(o, tmp, console)
        if o.out.exists():
            old = o.out.with_name(f".{o.out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            o.out.rename(old)
            tmp.rename(o.out)
            shutil.rmtree(old)
        else:
            tmp.rename(o.out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise EdgeCerError(f"{o.out.parent}: disk full during export; nothing was written to {o.out}. "
                               f"Free space (an SD-1.5 fp32 export needs about 5 GB) and re-run") from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return o.out


def _export_into(o: ExportOptions, tmp: Path, console: Console) -> None:
    started = time.perf_counter()
    ckpt = load_sd(o.model)
    ip = load_ip_adapter(o.ip_adapter, ckpt.unet, o.image_encoder)
    multiple = spatial_multiple(ckpt.unet)
    for name, v in (("--height", o.height), ("--width", o.width)):
        if v <= 0 or v % multiple:
            raise EdgeCerError(f"{name} {v}: must be a positive multiple of {multiple} for {o.model}")
    tiny_vae = load_tiny_vae(o.tiny_vae, ckpt.vae) if o.tiny_vae else None
    dims = model_dims(ckpt, ip)
    specs = sd_graphs(dims, tiny_vae=tiny_vae is not None)
    modules = graph_modules(ckpt, ip, tiny_vae)
    precisions = graph_precisions(o, specs, {"vae_encoder": ckpt.vae, "vae_decoder": ckpt.vae,
                                             TINY_VAE_DECODER: tiny_vae})
    export_shape = {"batch": 2, "height": o.height, "width": o.width}
    # Two shapes per graph: the export resolution without guidance, and another batch and aspect ratio.
    check_shapes = [{"batch": 1, "height": o.height, "width": o.width},
                    {"batch": 2, "height": o.height + multiple, "width": max(multiple, o.width - multiple)}]

    graphs = {}
    progress = Progress(TextColumn("[bold]{task.description:<28}"), BarColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), console=console, transient=False)
    with progress:
        for name, spec in specs.items():
            task = progress.add_task(f"export {name}", total=4, info="")
            path = tmp / spec.file
            t0 = time.perf_counter()
            onnx_export.export_graph(modules[name], spec, export_shape, path, force_external=o.force_external_data)
            progress.update(task, advance=1, info="checker")
            onnx_export.check(path)
            entry = spec.describe(**export_shape)
            if o.optimize != "none" and name in OPTIMIZER_TYPES:
                if o.optimize == "gpu":  # its fused ops run on CUDA only: check against torch before fusing
                    progress.update(task, info="validate before fusion")
                    entry["validation_before_fusion"] = onnx_export.validate(
                        modules[name], spec, path, check_shapes, "fp32").to_dict()
                progress.update(task, info="optimize", total=4 + onnx_export.FUSION_STEPS * (name == "unet"))
                entry["optimized"] = onnx_export.optimize(
                    path, OPTIMIZER_TYPES[name], use_gpu=o.optimize == "gpu", dims=optimize_dims(spec, o, multiple),
                    progress=lambda n=1, task=task: progress.update(task, advance=n))
            precision = precisions[name]
            progress.update(task, advance=1, info=precision)
            if precision == "fp16":
                onnx_export.to_fp16(path)
            progress.update(task, advance=1, info="validate vs torch")
            checked = onnx_export.validate(modules[name], spec, path, check_shapes, precision)
            entry["validation"] = checked.to_dict() if checked else {
                "not_run": f"{', '.join(onnx_export.cuda_only_ops(path))} run on CUDA only and this onnxruntime "
                           f"has no CUDA; see validation_before_fusion"}
            entry.update(precision=precision, opset=onnx_export.OPSET, bytes=onnx_export.file_size(path),
                         export_seconds=round(time.perf_counter() - t0, 2))
            graphs[name] = entry
            diff = entry["validation"].get("max_rel_diff")
            progress.update(task, advance=1, info="checked before fusion" if diff is None else f"max diff {diff:.1e}")

    ckpt.tokenizer.save_pretrained(tmp / TOKENIZER_DIR)  # writes tokenizer.json for the `tokenizers` library
    (tmp / SCHEDULER_CONFIG).parent.mkdir(parents=True)
    # Copied as text: DPM configs may hold -Infinity, which json.dumps would rewrite.
    shutil.copyfile(o.model / "scheduler" / "scheduler_config.json", tmp / SCHEDULER_CONFIG)

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_unix": int(time.time()),
        "model": {
            "dims": dims.to_dict(),
            "adapter": {"type": ip.kind, "tokens": ip.tokens, "file": ip.path.name},
            "prediction_type": ckpt.scheduler_config.get("prediction_type", "epsilon"),
            "vae_scaling_factor": float(ckpt.vae.config.scaling_factor),
            **({} if tiny_vae is None else {"tiny_vae": {
                "scaling_factor": float(tiny_vae.config.scaling_factor), "folder": o.tiny_vae.name,
                "weights_sha256": {p.name: sha256_file(p) for p in sorted(o.tiny_vae.glob("*.safetensors"))}}}),
            "spatial_multiple": multiple,
            "pad_token": ckpt.tokenizer.pad_token,
            "image_preprocess": {"size": dims.image_size, "resample": "bicubic", "mean": CLIP_MEAN, "std": CLIP_STD},
        },
        "export_shape": {"height": o.height, "width": o.width},
        "scheduler": json.loads((tmp / SCHEDULER_CONFIG).read_text()),
        "graphs": graphs,
        "source": source_hashes(ckpt, ip),
        "tools": _tool_versions(),
    }
    if training := read_provenance(ip.path):  # a fine-tuned adapter: data hash, steps, seed (export.finetune)
        manifest["model"]["adapter"]["training"] = training
    if o.clip:
        from export.clip_zero_shot import clip_zero_shot

        manifest["clip_zero_shot"] = clip_zero_shot(o.clip, ip)
    if o.tensorrt:
        from export.tensorrt import build_engines

        manifest["tensorrt"] = build_engines(tmp, specs, graphs, o, console)
    manifest["files"] = hash_tree(tmp)
    write_json_atomic(tmp / MANIFEST, manifest)
    console.print(f"[green]exported[/] {len(graphs)} graphs in {time.perf_counter() - started:.1f} s -> {o.out}")


def optimize_dims(spec, o: ExportOptions, multiple: int) -> dict[str, int]:
    """Concrete sizes the optimizer's shape inference works at: the export size, made non-square and batch 2 so
    no two dynamic sizes coincide (a reshape that only looks useless at one shape is not removed)."""
    width = o.width + multiple if o.width == o.height else o.width
    sizes = {"batch": 2, "height": o.height, "width": width}
    sizes.update(latent_height=o.height // VAE_DOWNSAMPLE, latent_width=width // VAE_DOWNSAMPLE)
    return {d: sizes[d] for d in spec.dynamic}


def graph_precisions(o: ExportOptions, specs: dict, vaes: dict) -> dict[str, str]:
    """Per graph: --precision, except the VAE graphs under fp16 with --vae-precision auto, which stay fp32 where the
    VAE's own config says `force_upcast` (diffusers' flag for VAEs whose activations overflow fp16: SD-1.x/2.x's
    AutoencoderKL; TAESD's is False)."""
    out = {}
    for name in specs:
        vae = vaes.get(name)
        if o.precision == "fp16" and vae is not None and o.vae_precision != "fp16":
            out[name] = "fp32" if o.vae_precision == "fp32" or vae.config.get("force_upcast", False) else "fp16"
        else:
            out[name] = o.precision
    return out


def _tool_versions() -> dict:
    tools = {"python": platform.python_version()}
    for pkg in ("edge-cer", "torch", "diffusers", "transformers", "onnx", "onnxruntime"):
        try:
            tools[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - a missing tool is recorded, not fatal
            tools[pkg] = None
    return tools
