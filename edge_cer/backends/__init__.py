"""Backends run exported graphs; they know nothing about diffusion.

Every backend has the same small lifecycle (after demoDiffusion's Engine): `load()` creates sessions or
deserialises engines once, `infer(graph, feeds)` runs one graph on numpy arrays and returns its outputs by
name, `unload()` frees them. The pipeline never asks which backend it has.

    backend = create_backend(manifest, "cpu")
    backend.load()
    out = backend.infer("text_encoder", {"input_ids": ids})["last_hidden_state"]
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edge_cer.errors import EdgeCerError
from edge_cer.manifest import ExportManifest

PROVIDERS = ("cpu", "cuda", "tensorrt", "trt-native")


class Backend(Protocol):
    name: str

    def load(self) -> None: ...

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def unload(self) -> None: ...


def create_backend(manifest: ExportManifest, provider: str = "cpu", **options) -> Backend:
    """`cpu`, `cuda` and `tensorrt` run the ONNX files through ONNX Runtime's execution providers;
    `trt-native` runs the TensorRT engines built by `edge-cer export sd --tensorrt`."""
    if provider in ("cpu", "cuda", "tensorrt"):
        from edge_cer.backends.ort import OrtBackend

        return OrtBackend(manifest, provider, **options)
    if provider == "trt-native":
        from edge_cer.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(manifest, **options)
    raise EdgeCerError(f"--provider {provider}: unknown; choose one of {', '.join(PROVIDERS)}")
