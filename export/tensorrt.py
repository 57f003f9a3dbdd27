"""`edge-cer export sd --tensorrt`: TensorRT engines from the exported ONNX graphs, recorded in the manifest.

NOT YET RUN ON HARDWARE (no TensorRT build is installable on our machines). Written against the TensorRT 10
Python API: Builder, create_network(0) (explicit batch is the only mode), OnnxParser.parse_from_file (reads
external data beside the file), a builder config with BuilderFlag.FP16, one optimisation profile per engine,
a timing cache shared by all engines and saved as tensorrt/timing.cache, build_serialized_network. The
profiles, config choices and manifest entries are tested with a fake `tensorrt` module.

Profiles: batch 1-2 everywhere (guidance doubles the batch); the optimum is the batch the pipeline runs.
Spatial sizes are static at the export resolution by default, or 256-1024 px with --tensorrt-dynamic.
"""

from __future__ import annotations

import time
from pathlib import Path

from edge_cer.backends import cuda_runtime as cuda
from edge_cer.errors import EdgeCerError, require
from edge_cer.graphs import GraphSpec
from edge_cer.manifest import TENSORRT_DIR

TIMING_CACHE = f"{TENSORRT_DIR}/timing.cache"
BATCH_RANGE = (1, 2)
# The pipeline runs these on negative + positive together under guidance; the others one picture at a time.
OPT_BATCH = {"unet": 2, "image_proj": 2}
DYNAMIC_PIXELS = (256, 1024)  # SD 1.5 was trained at 512 px, SD 2.x at 768: this covers both with margin
FLAGS = ("FP16",)  # fp16 kernels wherever TensorRT finds them faster; inputs and outputs stay float32


def engine_file(name: str) -> str:
    return f"{TENSORRT_DIR}/{name}.plan"


def profile_dims(name: str, height: int, width: int, dynamic: bool) -> tuple[dict, dict, dict]:
    """(min, opt, max) symbolic sizes for GraphSpec.profile. Dynamic ranges always include the export size."""
    lo, hi = BATCH_RANGE
    opt_batch = OPT_BATCH.get(name, lo)
    if not dynamic:
        return ({"batch": lo, "height": height, "width": width}, {"batch": opt_batch, "height": height, "width": width},
                {"batch": hi, "height": height, "width": width})
    small, large = DYNAMIC_PIXELS
    return ({"batch": lo, "height": min(small, height), "width": min(small, width)},
            {"batch": opt_batch, "height": height, "width": width},
            {"batch": hi, "height": max(large, height), "width": max(large, width)})


def engine_profile(spec: GraphSpec, height: int, width: int, dynamic: bool) -> dict[str, dict[str, list[int]]]:
    """The manifest's record of one engine's profile: input -> {"min", "opt", "max"} shapes."""
    shapes = spec.profile(*profile_dims(spec.name, height, width, dynamic))
    return {name: dict(zip(("min", "opt", "max"), map(list, s))) for name, s in shapes.items()}


def build_engines(root: Path, specs: dict[str, GraphSpec], graphs: dict, o, console) -> dict:
    """Build tensorrt/<graph>.plan for every exported graph in `root`; returns the manifest's "tensorrt" entry.

    `o` carries height, width, tensorrt_dynamic, precision and out (an earlier export's timing cache at
    out/tensorrt/timing.cache seeds this one: same GPU and TensorRT, much faster builds)."""
    trt = require("tensorrt", "gpu")
    device = cuda.device_info(0)
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    (root / TENSORRT_DIR).mkdir(exist_ok=True)
    previous = Path(o.out) / TIMING_CACHE
    seed = previous.read_bytes() if previous.is_file() else b""
    cache = None
    engines = {}
    for name, spec in specs.items():
        t0 = time.perf_counter()
        onnx_path = root / graphs[name]["file"]
        profile = engine_profile(spec, o.height, o.width, o.tensorrt_dynamic)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EdgeCerError(f"{onnx_path}: TensorRT's ONNX parser refused it ({errors}); "
                               f"check the TensorRT version (>= 10) or export without --tensorrt")
        config = builder.create_builder_config()
        for flag in FLAGS:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        trt_profile = builder.create_optimization_profile()
        for tensor, shapes in profile.items():
            trt_profile.set_shape(tensor, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(trt_profile)
        cache = cache or config.create_timing_cache(seed)
        config.set_timing_cache(cache, ignore_mismatch=False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EdgeCerError(f"{onnx_path}: TensorRT engine build failed (see its log above); try "
                               f"--precision fp32, a smaller --tensorrt-dynamic range, or export without --tensorrt")
        path = root / engine_file(name)
        path.write_bytes(plan)
        engines[name] = {"file": engine_file(name), "onnx": graphs[name]["file"], "profile": profile,
                         "bytes": path.stat().st_size, "build_seconds": round(time.perf_counter() - t0, 1)}
        console.print(f"tensorrt {name}: {engines[name]['bytes'] / 2**20:.1f} MiB "
                      f"in {engines[name]['build_seconds']} s")
    (root / TIMING_CACHE).write_bytes(cache.serialize())
    return {
        "version": trt.__version__,
        "device": {"name": device["name"], "compute_capability": device["compute_capability"]},
        "cuda": cuda.versions(),
        "flags": list(FLAGS),
        "onnx_precision": o.precision,
        "dynamic": bool(o.tensorrt_dynamic),
        "timing_cache": TIMING_CACHE,
        "timing_cache_seeded": bool(seed),
        "engines": engines,
    }
