"""`edge-cer export triton-repo`: an edge-cer export as a model repository for NVIDIA Triton's own container.

    edge-cer export triton-repo --engines engines/sd15-ip --out triton-models [--backend tensorrt]
    docker run --gpus all -p 8001:8001 -v $PWD/triton-models:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
        tritonserver --model-repository=/models              # docs/serve.md has the whole recipe

    REPO/<graph>/config.pbtxt, 1/model.onnx (+ .data)     ONNX Runtime backend (or 1/model.plan: TensorRT)
    REPO/edge_cer_generate/1/model.py, export/, edge_cer/  the pipeline: python backend, BLS calls to the graphs
    REPO/edge_cer_precompute, edge_cer_info (, edge_cer_clip_embeds)   forward to edge_cer_generate

The pipeline model is the runtime's own numpy pipeline (`SDPipeline` + `GenerationService`) whose backend sends
each graph call to the graph models, so its clients are `edge-cer serve`'s (`--server grpc://HOST:8001`). Graphs
whose tensors all lead with the batch dimension get Triton's dynamic batcher across concurrent pictures; the UNet
(per-call `timestep`, `ip_scale`) and the TensorRT plans take their shapes whole (max_batch_size 0).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from edge_cer.errors import EdgeCerError
from edge_cer.manifest import MANIFEST, load_manifest
from edge_cer.serve.protocol import CLIP_EMBEDS, GENERATE, INFO, INPUTS, OUTPUTS, PRECOMPUTE

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
PIPELINE_FILES = "export"  # the manifest, tokenizer and scheduler config, beside the pipeline's model.py
MODEL_PY = "from edge_cer.serve.triton_model import TritonPythonModel  # noqa: F401 - Triton's entry point\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines", type=Path, required=True, help="export folder (edge-cer export sd)")
    p.add_argument("--out", type=Path, required=True, help="model repository folder to create")
    p.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                   help="tensorrt serves the export's TensorRT plans (edge-cer export sd --tensorrt)")
    p.add_argument("--trt-accelerator", action="store_true",
                   help="onnxruntime backend: run the graphs through ONNX Runtime's TensorRT execution provider")
    p.add_argument("--kind", choices=("gpu", "cpu"), default="gpu", help="where the graph instances run")
    p.add_argument("--instances", type=int, default=1, help="instances per graph and of the pipeline")
    p.add_argument("--max-batch", type=int, default=8, help="dynamic batching limit of the batchable graphs")
    p.add_argument("--force", action="store_true", help="replace an existing repository at --out")


def run(args: argparse.Namespace) -> int:
    write_repository(args.engines, args.out, backend=args.backend, trt_accelerator=args.trt_accelerator,
                     kind=args.kind, instances=args.instances, max_batch=args.max_batch, force=args.force)
    print(f"model repository: {args.out} (tritonserver --model-repository={args.out.resolve()}; see docs/serve.md)")
    return 0


def write_repository(engines: Path, out: Path, *, backend: str = "onnxruntime", trt_accelerator: bool = False,
                     kind: str = "gpu", instances: int = 1, max_batch: int = 8, force: bool = False) -> Path:
    manifest = load_manifest(engines)  # verified: the repository serves exactly the hashed files
    if backend == "tensorrt" and "tensorrt" not in manifest.data:
        raise EdgeCerError(f"--backend tensorrt: {engines} has no TensorRT plans; export with `edge-cer export sd "
                           "--tensorrt` on the serving GPU, or use --backend onnxruntime")
    if out.exists():
        if not force:
            raise EdgeCerError(f"--out {out}: exists; choose a new folder or pass --force to replace it")
        if any(out.iterdir()) and not (out / GENERATE / "config.pbtxt").is_file():
            raise EdgeCerError(f"--out {out}: not a repository written by edge-cer; refusing to replace it")
        shutil.rmtree(out)
    instance_kind = f"KIND_{kind.upper()}"
    graph_files = set()
    for name, spec in manifest.graphs.items():
        version = out / name / "1"
        version.mkdir(parents=True)
        if backend == "tensorrt":
            source = manifest.engine_path(name)
            shutil.copy2(source, version / "model.plan")
            graph_files.add(source.relative_to(engines).as_posix())
            config = _config(name, "tensorrt", 0, None, instances, instance_kind)
        else:
            for source in sorted(manifest.graph_path(name).parent.iterdir()):  # model.onnx (+ external data)
                shutil.copy2(source, version / source.name)
                graph_files.add(source.relative_to(engines).as_posix())
            batched = all(t.shape[0] == "batch" for t in spec.inputs + spec.outputs)
            config = _config(name, "onnxruntime", max_batch if batched else 0, spec, instances, instance_kind,
                             trt_accelerator)
        (out / name / "config.pbtxt").write_text(config)
    _write_pipeline(manifest, out, graph_files, instances)
    return out


def _write_pipeline(manifest, out: Path, graph_files: set[str], instances: int) -> None:
    import edge_cer

    models = [GENERATE, PRECOMPUTE, INFO] + ([CLIP_EMBEDS] if manifest.data.get("clip_zero_shot") else [])
    for model in models:
        version = out / model / "1"
        version.mkdir(parents=True)
        (version / "model.py").write_text(MODEL_PY)
        # The pipeline's code travels with it: the container needs only numpy, tokenizers and pillow.
        shutil.copytree(Path(edge_cer.__file__).parent, version / "edge_cer",
                        ignore=shutil.ignore_patterns("__pycache__", "tui", "analysis", "bench"))
        # One instance holds the pipeline and its stimulus cache; the others forward to it.
        count = instances if model == GENERATE else 1
        (out / model / "config.pbtxt").write_text(_config(model, "python", 1, None, count, "KIND_CPU"))
    export = out / GENERATE / "1" / PIPELINE_FILES
    for rel in [MANIFEST, *manifest.data["files"]]:
        if rel not in graph_files and not rel.startswith("tensorrt/"):
            (export / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(manifest.root / rel, export / rel)


def _config(name: str, backend: str, max_batch: int, spec, count: int, kind: str, trt: bool = False) -> str:
    """config.pbtxt (Triton's ModelConfig in protobuf text format)."""
    lines = [f'name: "{name}"', f'backend: "{backend}"', f"max_batch_size: {max_batch}"]
    if backend == "python":
        io = {"input": [(n, "TYPE_STRING", [1]) for n in INPUTS], "output": [(n, "TYPE_STRING", [1]) for n in OUTPUTS]}
    elif spec is not None:
        dims = lambda t: [d if isinstance(d, int) else -1 for d in t.shape[1 if max_batch else 0:]]  # noqa: E731
        io = {"input": [(t.name, TRITON_TYPES[t.dtype], dims(t)) for t in spec.inputs],
              "output": [(t.name, TRITON_TYPES[t.dtype], dims(t)) for t in spec.outputs]}
    else:  # TensorRT plans: Triton reads names, types and shapes from the engine
        io = {}
    for kind_of, tensors in io.items():
        entries = ",\n".join(f'  {{ name: "{n}" data_type: {t} dims: [ {", ".join(map(str, d))} ] }}'
                             for n, t, d in tensors)
        lines.append(f"{kind_of} [\n{entries}\n]")
    if max_batch:
        lines.append("dynamic_batching {\n  max_queue_delay_microseconds: 2000\n  default_queue_policy { "
                     "timeout_action: REJECT allow_timeout_override: true max_queue_size: 64 }\n}")
    lines.append(f"instance_group [ {{ count: {count} kind: {kind} }} ]")
    if trt:
        lines.append('optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" '
                     'parameters { key: "precision_mode" value: "FP16" } } ] } }')
    return "\n".join(lines) + "\n"
