"""FLOPs of one graph call, counted from the ONNX graph at concrete input shapes.

Counts what dominates an SD graph: Conv, ConvTranspose, MatMul/Gemm (which includes unfused attention's two
batched MatMuls) and the fused attention ops of onnxruntime's transformer optimizer (Attention,
MultiHeadAttention). One multiply-add is 2 FLOPs. Normalisations, activations and element-wise ops are left out
(well under 1 % of an SD UNet), so "achieved GFLOP/s" is matrix math per second, comparable to an sgemm peak.

Shapes come from onnxruntime's symbolic shape inference, which knows the contrib ops the optimizer writes; the
weights stay on disk (only their dims are read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Attention", "MultiHeadAttention")


@dataclass
class FlopCount:
    total: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    uncounted: list[str] = field(default_factory=list)  # counted op types whose shapes were unknown

    def add(self, op: str, flops: int) -> None:
        self.total += flops
        self.by_op[op] = self.by_op.get(op, 0) + flops

    def to_dict(self) -> dict:
        return {"gflop": self.total / 1e9, "gflop_by_op": {k: v / 1e9 for k, v in sorted(self.by_op.items())},
                "nodes_without_shapes": self.uncounted}


def count_flops(path: str | Path, input_shapes: dict[str, tuple[int, ...]]) -> FlopCount:
    """FLOPs of one call of the ONNX file at `path` with the given input shapes (all inputs must be named)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(path), load_external_data=False)
    for inp in model.graph.input:
        if inp.name not in input_shapes:
            continue
        dims = inp.type.tensor_type.shape.dim
        for d, size in zip(dims, input_shapes[inp.name]):
            d.Clear()
            d.dim_value = int(size)
    # Weights stored outside the file become shape-only inputs: the inference must not try to read their values.
    for t in [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]:
        model.graph.initializer.remove(t)
        model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes = _known_shapes(inferred.graph)
    count = FlopCount()
    for node in inferred.graph.node:
        if node.op_type not in COUNTED:
            continue
        flops = _node_flops(node, shapes)
        if flops is None:
            count.uncounted.append(node.name or node.op_type)
        else:
            count.add(node.op_type, flops)
    return count


def _known_shapes(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    return shapes


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _node_flops(node: onnx.NodeProto, shapes: dict) -> int | None:
    get = lambda i: shapes.get(node.input[i]) if len(node.input) > i and node.input[i] else None  # noqa: E731
    out = shapes.get(node.output[0])
    if node.op_type == "Conv":
        w = get(1)
        return None if w is None or out is None else 2 * int(np.prod(out)) * int(np.prod(w[1:]))
    if node.op_type == "ConvTranspose":
        x, w = get(0), get(1)  # every input pixel scatters C_out/group * kernel MACs
        return None if x is None or w is None else 2 * int(np.prod(x)) * int(np.prod(w[1:]))
    if node.op_type == "MatMul":
        a = get(0)
        return None if a is None or out is None else 2 * int(np.prod(out)) * a[-1]
    if node.op_type == "Gemm":
        a = get(0)
        k = None if a is None else (a[0] if _attr(node, "transA", 0) else a[1])
        return None if k is None or out is None else 2 * int(np.prod(out)) * k
    if node.op_type == "MultiHeadAttention":  # softmax(Q K^T) V on already-projected Q, K, V
        q, k = get(0), get(1)
        if q is None or out is None:
            return None
        if len(q) == 5:  # packed QKV (B, S, N, 3, H): self-attention
            kv_len, batch, q_len, qk_width = q[1], q[0], q[1], q[2] * q[4]
        elif k is not None:  # K as (B, S, D), packed KV (B, S, N, 2, H) or per-head (B, N, S, H)
            kv_len, batch, q_len, qk_width = (k[2] if len(k) == 4 else k[1]), q[0], q[1], q[2]
        else:
            return None
        return 2 * batch * q_len * kv_len * qk_width + 2 * int(np.prod(out)) * kv_len
    if node.op_type == "Attention":  # packed QKV projection, then self-attention
        x, w = get(0), get(1)
        if x is None or w is None or out is None:
            return None
        qkv = 2 * x[0] * x[1] * w[0] * w[1]
        return qkv + 2 * x[0] * x[1] * x[1] * w[1] // 3 + 2 * int(np.prod(out)) * x[1]
    return None
