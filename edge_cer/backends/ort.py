"""ONNX Runtime backend: CPU, CUDA EP or TensorRT EP over the exported ONNX files."""

from __future__ import annotations

import numpy as np

from edge_cer.errors import EdgeCerError
from edge_cer.manifest import ExportManifest

EP_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def provider_chain(provider: str, manifest: ExportManifest, threads: int | None = None) -> list:
    """The providers list for InferenceSession. GPU providers keep CPU only as the home of the few ops they
    lack; a session that lost the requested provider is refused in `OrtBackend.load` (onnxruntime falls back
    silently)."""
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if provider == "cuda":
        return [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}),
                "CPUExecutionProvider"]
    if provider == "tensorrt":
        cache = manifest.root / "tensorrt" / "ort-ep-cache"
        trt = {
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }
        return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", {}), "CPUExecutionProvider"]
    raise EdgeCerError(f"--provider {provider}: unknown ONNX Runtime provider; choose cpu, cuda or tensorrt")


class OrtBackend:
    def __init__(self, manifest: ExportManifest, provider: str = "cpu", threads: int | None = None,
                 graphs: tuple[str, ...] | None = None):
        self.name = f"onnxruntime-{provider}"
        self.manifest, self.provider, self.threads = manifest, provider, threads
        self.graph_names = graphs or tuple(manifest.data["graphs"])
        self.sessions: dict = {}

    def load(self) -> None:
        import onnxruntime as ort

        wanted = EP_NAMES[self.provider] if self.provider in EP_NAMES else None
        have = available_providers()
        if wanted not in have:
            raise EdgeCerError(
                f"--provider {self.provider}: {wanted} is not available in this onnxruntime "
                f"(available: {', '.join(have)}); install onnxruntime-gpu (pip install 'edge-cer[gpu]') or use --provider cpu"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
        chain = provider_chain(self.provider, self.manifest)
        for name in self.graph_names:
            session = ort.InferenceSession(str(self.manifest.graph_path(name)), opts, providers=chain)
            if wanted not in session.get_providers():
                raise EdgeCerError(
                    f"{self.manifest.graph_path(name)}: onnxruntime fell back to {session.get_providers()} instead of "
                    f"{wanted}; check the CUDA/cuDNN/TensorRT libraries (`edge-cer doctor`)"
                )
            self.sessions[name] = session

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[graph]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def unload(self) -> None:
        self.sessions.clear()
