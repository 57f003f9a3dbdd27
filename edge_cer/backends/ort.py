"""ONNX Runtime backend: CPU, CUDA EP or TensorRT EP over the exported ONNX files.

GPU providers run through IO binding: each graph gets device buffers (OrtValues) for its inputs and outputs,
kept while the call shapes stay the same, so inputs are copied into place and outputs are written on the
device and copied back once. With `cuda_graphs` (graphs whose shapes are static for a whole generation,
the UNet by default) ONNX Runtime captures the first run as a CUDA graph and replays it; that needs those
fixed buffers. NOT YET RUN ON HARDWARE: the CUDA/TensorRT EP paths are written against ONNX Runtime's
documented API; the IO-binding logic is tested on CPU and the provider chain with a patched onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_cer.backends.shapes import call_shapes
from edge_cer.errors import EdgeCerError
from edge_cer.manifest import TENSORRT_DIR, ExportManifest

EP_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
# ONNX Runtime's type strings -> numpy (after diffusers' ORT_TO_NP_TYPE), for the output buffers.
ORT_TO_NP_TYPE = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                  "tensor(int32)": np.int32, "tensor(double)": np.float64}
DEFAULT_CUDA_GRAPHS = ("unet",)  # the graph run once per step at one shape; the others run once per picture


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def provider_chain(provider: str, manifest: ExportManifest, cuda_graph: bool = False) -> list:
    """The providers list for InferenceSession. GPU providers keep CPU only as the home of the few ops they
    lack; a session that lost the requested provider is refused in `OrtBackend.load` (onnxruntime falls back
    silently). A CUDA graph needs every node on the GPU provider, so `cuda_graph` is for whole-GPU graphs."""
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    cuda = {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}
    if provider == "cuda":
        if cuda_graph:
            cuda["enable_cuda_graph"] = True
        return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    if provider == "tensorrt":
        cache = manifest.root / TENSORRT_DIR / "ort-ep-cache"
        trt = {
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }
        if cuda_graph:
            trt["trt_cuda_graph_enable"] = True
        return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    raise EdgeCerError(f"--provider {provider}: unknown ONNX Runtime provider; choose cpu, cuda or tensorrt")


def _check_interface(path, session, spec) -> None:
    """A file swapped for another graph (even with the manifest re-hashed) is refused at load, not mid-generation."""
    if spec is None:
        return
    have = sorted((a.name, len(a.shape)) for a in session.get_inputs() + session.get_outputs())
    want = sorted((t.name, len(t.shape)) for t in spec.inputs + spec.outputs)
    if have != want:
        raise EdgeCerError(f"{path}: its inputs and outputs {have} are not those of the {spec.name} graph {want}; "
                           "the file was replaced, re-run `edge-cer export sd`")


@dataclass
class _Bound:
    """One graph's IO binding at one set of call shapes."""

    binding: object
    shapes: dict
    inputs: dict  # name -> OrtValue on the device, refilled in place each call
    outputs: dict  # name -> OrtValue on the device, written by the run
    dtypes: dict  # input name -> numpy dtype the graph takes


class OrtBackend:
    def __init__(self, manifest: ExportManifest, provider: str = "cpu", threads: int | None = None,
                 graphs: tuple[str, ...] | None = None, io_binding: bool | None = None,
                 cuda_graphs: tuple[str, ...] | None = None):
        """io_binding defaults to on for GPU providers (it is what keeps outputs on the device);
        cuda_graphs (GPU providers only) names the graphs to capture, default DEFAULT_CUDA_GRAPHS."""
        if provider not in EP_NAMES:
            raise EdgeCerError(f"--provider {provider}: unknown ONNX Runtime provider; choose cpu, cuda or tensorrt")
        self.name = f"onnxruntime-{provider}"
        self.manifest, self.provider, self.threads = manifest, provider, threads
        self.graph_names = graphs or tuple(manifest.data["graphs"])
        gpu = provider != "cpu"
        self.io_binding = gpu if io_binding is None else io_binding
        self.cuda_graphs = (DEFAULT_CUDA_GRAPHS if cuda_graphs is None else tuple(cuda_graphs)) if gpu else ()
        if self.cuda_graphs and not self.io_binding:
            raise EdgeCerError("cuda_graphs need io_binding (fixed device buffers); drop one of the two options")
        self.device = "cuda" if gpu else "cpu"
        self.sessions: dict = {}
        self.bound: dict[str, _Bound] = {}

    def load(self) -> None:
        import onnxruntime as ort

        wanted = EP_NAMES[self.provider]
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
        for name in self.graph_names:
            path = self.manifest.graph_path(name)
            chain = provider_chain(self.provider, self.manifest, cuda_graph=name in self.cuda_graphs)
            try:
                session = ort.InferenceSession(str(path), opts, providers=chain)
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unexported exception types
                captured = name in self.cuda_graphs
                hint = " (CUDA graphs need every node on the GPU: pass cuda_graphs=())" if captured else ""
                raise EdgeCerError(f"{path}: onnxruntime could not open it with {wanted}{hint}: "
                                   f"{str(exc).splitlines()[0]}; re-run `edge-cer export sd` (or copy the whole "
                                   "export folder)") from exc
            if wanted not in session.get_providers():
                raise EdgeCerError(
                    f"{path}: onnxruntime fell back to {session.get_providers()} instead of "
                    f"{wanted}; check the CUDA/cuDNN/TensorRT libraries (`edge-cer doctor`)"
                )
            _check_interface(path, session, self.manifest.graphs.get(name))
            self.sessions[name] = session

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[graph]
        if self.io_binding:
            return self._infer_bound(graph, feeds)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def _infer_bound(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shapes = call_shapes(self.manifest.graphs[graph], {k: v.shape for k, v in feeds.items()})
        bound = self.bound.get(graph)
        if bound is None or bound.shapes != shapes:
            if bound is not None and graph in self.cuda_graphs:
                raise EdgeCerError(
                    f"{self.manifest.graph_path(graph)}: its CUDA graph was captured for {bound.shapes}, now called "
                    f"with {shapes}; keep one size per backend or create the backend with cuda_graphs=()"
                )
            bound = self.bound[graph] = self._bind(graph, shapes)
        for name, value in bound.inputs.items():
            # update_inplace copies raw bytes: a wrong dtype would be garbage, not an error.
            if feeds[name].dtype != bound.dtypes[name]:
                raise ValueError(f"graph {graph!r} input {name!r}: {feeds[name].dtype}, expected {bound.dtypes[name]}")
            value.update_inplace(np.ascontiguousarray(feeds[name]))
        self.sessions[graph].run_with_iobinding(bound.binding)
        # A CPU OrtValue's numpy() is a view of the buffer the next call overwrites.
        return {name: v.numpy().copy() if self.device == "cpu" else v.numpy() for name, v in bound.outputs.items()}

    def _bind(self, graph: str, shapes: dict) -> _Bound:
        import onnxruntime as ort

        session = self.sessions[graph]
        binding = session.io_binding()
        inputs, outputs = {}, {}
        for io, store, bind in ((session.get_inputs(), inputs, binding.bind_ortvalue_input),
                                (session.get_outputs(), outputs, binding.bind_ortvalue_output)):
            for arg in io:
                store[arg.name] = ort.OrtValue.ortvalue_from_shape_and_type(
                    shapes[arg.name], ORT_TO_NP_TYPE[arg.type], self.device, 0)
                bind(arg.name, store[arg.name])
        dtypes = {arg.name: np.dtype(ORT_TO_NP_TYPE[arg.type]) for arg in session.get_inputs()}
        return _Bound(binding, shapes, inputs, outputs, dtypes)

    def unload(self) -> None:
        self.bound.clear()
        self.sessions.clear()
