"""Backends run exported graphs; they know nothing about diffusion.

Every backend has the same small lifecycle (after demoDiffusion's Engine): `load()` creates sessions or
deserialises engines once, `infer(graph, feeds)` runs one graph on numpy arrays and returns its outputs by
name, `unload()` frees them. The pipeline never asks which backend it has.

    backend = create_backend(manifest, "cpu")
    backend.load()
    out = backend.infer("text_encoder", {"input_ids": ids})["last_hidden_state"]
"""

from __future__ import annotations

import argparse
from typing import Protocol

import numpy as np

from edge_cer.errors import EdgeCerError
from edge_cer.manifest import ExportManifest

PROVIDERS = ("cpu", "cuda", "tensorrt", "tensorrt-rtx", "trt-native")
PROVIDER_HELP = ("cuda/tensorrt need onnxruntime-gpu (edge-cer[gpu]); tensorrt-rtx needs edge-cer[rtx] and an "
                 "RTX 30xx-50xx card; trt-native needs engines built with --tensorrt")


class Backend(Protocol):
    name: str

    def load(self) -> None: ...

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def unload(self) -> None: ...


def add_provider_arguments(parser: argparse.ArgumentParser, provider: bool = True) -> None:
    """The backend options every command that runs the picture engine offers (generate, bench, the runtime);
    `provider=False` when the command declares its own --provider (bench takes several)."""
    if provider:
        parser.add_argument("--provider", choices=PROVIDERS, default="cpu", help=PROVIDER_HELP)
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                        help="GPU providers: replay CUDA graphs of the fixed-size sessions (default: on where a "
                             "session takes one; --cuda-graphs insists, --no-cuda-graphs turns them off)")


def backend_options(args: argparse.Namespace) -> dict:
    """create_backend options from the arguments add_provider_arguments declared."""
    cuda_graphs = getattr(args, "cuda_graphs", None)
    return {} if cuda_graphs is None else {"cuda_graphs": cuda_graphs}


def create_backend(manifest: ExportManifest, provider: str = "cpu", **options) -> Backend:
    """`cpu`, `cuda`, `tensorrt` and `tensorrt-rtx` run the ONNX files through ONNX Runtime's execution
    providers; `trt-native` runs the TensorRT engines built by `edge-cer export sd --tensorrt`."""
    if provider in ("cpu", "cuda", "tensorrt", "tensorrt-rtx"):
        from edge_cer.backends.ort import OrtBackend

        return OrtBackend(manifest, provider, **options)
    if provider == "trt-native":
        from edge_cer.backends.tensorrt import TensorRTBackend

        if "cuda_graphs" in options:  # one engine, one graph: on or off
            options["cuda_graph"] = bool(options.pop("cuda_graphs"))
        return TensorRTBackend(manifest, **options)
    raise EdgeCerError(f"--provider {provider}: unknown; choose one of {', '.join(PROVIDERS)}")
