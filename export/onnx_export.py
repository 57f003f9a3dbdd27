"""torch module -> checked, validated (and optionally optimised / fp16) ONNX file, one graph at a time."""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import partialmethod
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import patch

import numpy as np
import onnx
import torch

from edge_cer.graphs import GraphSpec

OPSET = 17
# protobuf cannot hold a model over 2 GiB; past this many bytes of weights, use one external data file.
EXTERNAL_DATA_BYTES = 1_800_000_000
TOLERANCE = {"fp32": 1e-4, "fp16": 3e-2}


@dataclass
class Validation:
    shapes: list[dict]  # the symbolic sizes each check ran at
    max_abs_diff: float
    max_rel_diff: float  # max |onnx - torch| / max(1, max |torch|), per output

    def to_dict(self) -> dict:
        return {"shapes": self.shapes, "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff}


def sample_inputs(spec: GraphSpec, dims: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs shaped for `dims`; ids within the CLIP vocabulary, scales and timesteps in range."""
    rng = np.random.default_rng(seed)
    shapes = spec.shapes(**dims)
    out = {}
    for t in spec.inputs:
        shape = shapes[t.name]
        if t.dtype == "int64":
            out[t.name] = rng.integers(0, 49408, size=shape, dtype=np.int64)
        elif t.name == "timestep":
            out[t.name] = np.array([rng.uniform(1, 999)], dtype=np.float32)
        elif t.name == "ip_scale":
            out[t.name] = np.array([0.7], dtype=np.float32)
        else:
            out[t.name] = rng.standard_normal(shape, dtype=np.float32)
    return out


def export_graph(module: torch.nn.Module, spec: GraphSpec, dims: dict, path: Path, force_external: bool = False):
    """Trace `module` at `dims` and write `path` (+ `path.data` for large graphs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(torch.from_numpy(a) for a in sample_inputs(spec, dims).values())
    # Tracer warnings flag Python branches on shapes (diffusers' upsample-size check, CLIP's causal mask); the
    # export is checked on a second shape instead, which catches any branch that froze wrongly.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=OPSET, do_constant_folding=True,
            input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
            dynamic_axes=spec.dynamic_axes(),
        )
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    if force_external or params > EXTERNAL_DATA_BYTES or _has_loose_tensors(path):
        consolidate_external_data(path)


def _has_loose_tensors(path: Path) -> bool:
    """The TorchScript exporter writes one file per tensor next to a >2 GB model."""
    return any(p != path and not p.name.endswith(".data") for p in path.parent.iterdir())


def consolidate_external_data(path: Path) -> None:
    """Rewrite the model with all weights in ONE external file (`model.onnx.data`), as optimum does."""
    model = onnx.load(str(path), load_external_data=True)
    for p in path.parent.iterdir():
        if p != path:
            p.unlink()
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def check(path: Path) -> None:
    # The path form of the checker handles external data and models over 2 GiB.
    onnx.checker.check_model(str(path), full_check=True)


def validate(module: torch.nn.Module, spec: GraphSpec, path: Path, shapes: list[dict],
             precision: str) -> Validation | None:
    """Run the ONNX file (ONNX Runtime, CPU; CUDA for graphs with CUDA-only fused ops) and the torch module on each
    shape; refuse a mismatch. None when the graph holds CUDA-only ops and this onnxruntime has no CUDA."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if cuda_only_ops(path):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return None
        providers.insert(0, "CUDAExecutionProvider")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=providers)
    worst_abs = worst_rel = 0.0
    for i, dims in enumerate(shapes):
        feeds = sample_inputs(spec, dims, seed=100 + i)
        got = session.run(None, feeds)
        with torch.no_grad():
            want = module(*(torch.from_numpy(a) for a in feeds.values()))
        want = want if isinstance(want, (tuple, list)) else (want,)
        for name, g, w in zip((t.name for t in spec.outputs), got, want):
            w = w.numpy()
            expected = spec.shapes(**dims)[name]
            if g.shape != expected:
                raise RuntimeError(f"{path}: output {name} has shape {g.shape}, expected {expected} at {dims}")
            diff = float(np.abs(g.astype(np.float64) - w).max())
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, diff / max(1.0, float(np.abs(w).max())))
    if not worst_rel <= TOLERANCE[precision]:  # also catches NaN
        raise RuntimeError(f"{path}: ONNX output differs from torch by {worst_rel:.3g} (relative), over the "
                           f"{precision} tolerance {TOLERANCE[precision]}")
    return Validation(shapes, worst_abs, worst_rel)


# What ONNX Runtime's CPU provider cannot run: the CUDA contrib ops the GPU fusions write.
CUDA_ONLY_OPS = {"GroupNorm", "SkipGroupNorm", "BiasSplitGelu", "NhwcConv", "BiasAdd"}
FUSION_STEPS = 18  # the steps UnetOnnxModel._optimize reports to its progress bar


def optimize(path: Path, model_type: str, use_gpu: bool, dims: dict[str, int] | None = None,
             progress=None) -> dict:
    """onnxruntime's transformer optimizer, as its stable-diffusion optimize_pipeline applies it (attention ->
    MultiHeadAttention, LayerNorm / GELU fusions; for GPU also GroupNorm (NHWC), SkipGroupNorm, BiasSplitGelu,
    BiasAdd and NhwcConv, the CUDA contrib kernels). Returns node counts before and after, fused op counts, seconds.

    `dims` (symbolic dim -> size) makes the fusions see concrete shapes: their symbolic shape inference otherwise
    works in sympy on the dynamic sizes (an SD-2.1-topology UNet: a third less CPU time, docs/gpu.md). Only the
    copy being optimised gets the sizes; the result gets the original dynamic inputs and outputs back, and the
    export validates it at other shapes. `progress(advance)` is called per fusion step of a UNet."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    # onnxruntime.transformers puts its folder on sys.path and its modules import each other by top-level name:
    # the classes the optimizer uses are these, not onnxruntime.transformers.fusion_attention_unet's (...).
    from fusion_attention_unet import FusionAttentionUnet
    from onnx_model_unet import UnetOnnxModel

    started = time.perf_counter()
    original = onnx.load(str(path), load_external_data=False)
    options = FusionOptions(model_type)
    if not use_gpu:
        # GroupNorm / BiasSplitGelu / NhwcConv fusions produce CUDA-only contrib ops.
        options.enable_group_norm = False
        options.enable_skip_group_norm = False
        options.enable_bias_splitgelu = False
        options.enable_nhwc_conv = False
        options.enable_bias_add = False
        # MultiHeadAttention on CPU takes separate Q, K, V ("Packed QKV ... not implemented for CPU").
        options.enable_packed_qkv = False
        options.enable_packed_kv = False
    source = _with_sizes(original, path, dims) if dims else path
    fixed = partialmethod(_get_num_heads, upstream=FusionAttentionUnet.get_num_heads)
    # UnetOnnxModel.optimize draws a tqdm bar over the export's own; report its steps to `progress` instead.
    steps = SimpleNamespace(update=progress or (lambda n=1: None))
    try:
        with patch.object(FusionAttentionUnet, "get_num_heads", fixed), \
                patch.object(UnetOnnxModel, "optimize", lambda self, opts=None: self._optimize(opts, steps)):
            model = optimize_model(str(source), model_type=model_type, opt_level=0, use_gpu=use_gpu,
                                   optimization_options=options).model
    finally:
        if source != path:
            source.unlink()
    if dims:
        _restore_io(model, original)
    _save(model, path)
    ops = Counter(n.op_type for n in model.graph.node)
    fused = {op: ops[op] for op in sorted(FUSED_OPS) if ops[op]}
    return {"nodes_before": len(original.graph.node), "nodes_after": len(model.graph.node), "fused_ops": fused,
            "target": "gpu" if use_gpu else "cpu", "seconds": round(time.perf_counter() - started, 1)}


FUSED_OPS = CUDA_ONLY_OPS | {"MultiHeadAttention", "Attention", "LayerNormalization", "SkipLayerNormalization",
                             "FastGelu", "Gelu", "BiasGelu", "QuickGelu"}


def _with_sizes(model: onnx.ModelProto, path: Path, dims: dict[str, int]) -> Path:
    """A copy of `model` beside `path` (so a relative external-data location still resolves) whose dynamic inputs
    and outputs have the sizes in `dims`."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in list(model.graph.input) + list(model.graph.output):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param in dims:
                d.dim_value = dims[d.dim_param]
    copy = path.with_name(path.stem + ".sized.onnx")
    onnx.save_model(model, str(copy))
    return copy


def _restore_io(model: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """The original (dynamic) input and output types, and no intermediate shapes inferred at the fixed sizes."""
    types = {v.name: v.type for v in list(original.graph.input) + list(original.graph.output)}
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name in types:
            value.type.CopyFrom(types[value.name])
    del model.graph.value_info[:]


def cuda_only_ops(path: Path) -> list[str]:
    return sorted({n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node} & CUDA_ONLY_OPS)


def _get_num_heads(self, reshape_q, is_torch2: bool = False, *, upstream) -> int:
    """WAR: onnxruntime's `FusionAttentionUnet.get_num_heads` (transformers/fusion_attention_unet.py) calls int()
    on the shape-(1,) head-count constant of torch-2 graphs, which numpy >= 2.4 refuses ("only 0-dimensional
    arrays can be converted"). The same lookup with `.item()`; the other branch is upstream's, unchanged."""
    if not is_torch2:
        return upstream(self, reshape_q, is_torch2)
    concat = self.model.get_parent(reshape_q, 1)
    if concat is not None and concat.op_type == "Concat" and len(concat.input) == 4:
        heads = self.model.get_constant_value(concat.input[2])
        if isinstance(heads, np.ndarray) and heads.size == 1 and heads.item() > 0:
            return int(heads.item())
    return 0


def to_fp16(path: Path) -> None:
    """fp16 weights and math, fp32 inputs/outputs (so the runtime feeds the same arrays at any precision)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(path), load_external_data=True)
    # Resize takes its scales in fp32 only (the UNet/VAE upsamplers): keep Resize and the Constant nodes that
    # feed it in fp32, or the converter rewrites the scales to fp16 and the graph no longer loads.
    resize_inputs = {i for n in model.graph.node if n.op_type == "Resize" for i in n.input}
    keep = [n.name for n in model.graph.node if n.op_type == "Constant" and set(n.output) & resize_inputs]
    model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                     op_block_list=DEFAULT_OP_BLOCK_LIST + ["Resize"], node_block_list=keep)
    _save(model, path)


def _save(model: onnx.ModelProto, path: Path) -> None:
    external = any(p.name.endswith(".data") for p in path.parent.iterdir())
    for p in path.parent.iterdir():
        p.unlink()
    if external or model.ByteSize() > EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def file_size(path: Path) -> int:
    return sum(os.path.getsize(p) for p in path.parent.iterdir())
