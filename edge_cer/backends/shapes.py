"""Concrete shapes for one call of a graph, read from its GraphSpec: what a backend must allocate.

GPU backends preallocate output buffers (ONNX Runtime IO binding, TensorRT device buffers), so they need
the output shapes before running. The feeds fix the symbolic sizes (batch, latent_height, ...); the
GraphSpec turns those into every output's shape.
"""

from __future__ import annotations

from edge_cer.errors import EdgeCerError
from edge_cer.graphs import VAE_DOWNSAMPLE, GraphSpec


def resolve_dims(spec: GraphSpec, feed_shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Symbolic dimension -> size, from the shapes of the feeds; refuses feeds that contradict the graph."""
    missing = [t.name for t in spec.inputs if t.name not in feed_shapes]
    if missing:
        raise ValueError(f"graph {spec.name!r}: missing inputs {missing}")
    dims: dict[str, int] = {}
    for t in spec.inputs:
        shape = tuple(feed_shapes[t.name])
        if len(shape) != len(t.shape):
            raise ValueError(f"graph {spec.name!r} input {t.name!r}: rank {len(shape)}, expected {t.shape}")
        for want, got in zip(t.shape, shape):
            clash = want != got if isinstance(want, int) else dims.setdefault(want, got) != got
            if clash:
                raise ValueError(f"graph {spec.name!r} input {t.name!r}: shape {shape} does not fit {t.shape} "
                                 f"(other inputs fix {dims})")
    # Decoder-side graphs see only latents; their pixel outputs are 8x larger.
    for px, lat in (("height", "latent_height"), ("width", "latent_width")):
        if lat in dims and px not in dims:
            dims[px] = dims[lat] * VAE_DOWNSAMPLE
    return dims


def call_shapes(spec: GraphSpec, feed_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Shapes of every input and output of one call."""
    return spec.shapes(**resolve_dims(spec, feed_shapes))


def check_profile(where: str, profile: dict[str, dict[str, list]], feed_shapes: dict[str, tuple]) -> None:
    """Refuse shapes outside an engine's optimisation profile (as recorded in the manifest), in one line."""
    for name, shape in feed_shapes.items():
        lo, hi = profile[name]["min"], profile[name]["max"]
        if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
            span = f"{tuple(lo)}" if lo == hi else f"{tuple(lo)} to {tuple(hi)}"
            raise EdgeCerError(
                f"{where}: engine built for {name} {span}, requested {tuple(shape)}; re-export with "
                f"`edge-cer export sd --tensorrt --height H --width W` for this size (or --tensorrt-dynamic)"
            )
