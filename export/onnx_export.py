"""torch module -> checked, validated (and optionally optimised / fp16) ONNX file, one graph at a time."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import partialmethod
from pathlib import Path
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


def validate(module: torch.nn.Module, spec: GraphSpec, path: Path, shapes: list[dict], precision: str) -> Validation:
    """Run the ONNX file (ONNX Runtime, CPU) and the torch module on each shape; refuse a mismatch."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
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


def optimize(path: Path, model_type: str, use_gpu: bool) -> dict:
    """onnxruntime's transformer optimizer (attention / LayerNorm / GELU fusions; GroupNorm fusions only for GPU,
    where the CUDA contrib kernels exist). Returns node counts before and after."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    # onnxruntime.transformers puts its folder on sys.path and its modules import each other by top-level name:
    # the class the optimizer uses is this one, not onnxruntime.transformers.fusion_attention_unet's.
    from fusion_attention_unet import FusionAttentionUnet

    before = len(onnx.load(str(path), load_external_data=False).graph.node)
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
    fixed = partialmethod(_get_num_heads, upstream=FusionAttentionUnet.get_num_heads)
    with patch.object(FusionAttentionUnet, "get_num_heads", fixed):
        model = optimize_model(str(path), model_type=model_type, opt_level=0, use_gpu=use_gpu,
                               optimization_options=options)
    _save(model.model, path)
    return {"nodes_before": before, "nodes_after": len(model.model.graph.node)}


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
