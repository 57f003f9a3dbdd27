"""ONNX Runtime backend: CPU, CUDA EP, TensorRT EP or TensorRT for RTX (plugin EP) over the exported ONNX files.

Fixed shapes (GPU default): a graph's session is created for one set of sizes (batch, latent height/width...)
with ONNX Runtime's free-dimension overrides, so the shape arithmetic around attention reshapes (Shape, Gather,
Concat, ...) folds to constants when the session is created and every node can live on the GPU; a new size
opens one more session. Exported dynamic graphs otherwise leave those subgraphs on the CPU, which blocks CUDA
graphs (measured on an H200: 1014 UNet nodes on the CPU; with fixed sizes none, and a CUDA graph).

GPU providers run through IO binding: each session gets device buffers (OrtValues) for its inputs and outputs,
so inputs are copied into place and outputs are written on the device and copied back once. CUDA graphs
(DEFAULT_CUDA_GRAPHS, the graphs on the speech-end -> picture path) replay the captured first run; a session
that cannot take one is reopened without it and the reason kept in `cuda_graphs_dropped`, unless CUDA graphs
were asked for explicitly. NOT YET RUN ON HARDWARE in this form: written against ONNX Runtime's documented API;
IO binding and fixed shapes run on CPU in the tests, the GPU provider logic with a patched onnxruntime.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_cer.backends import rtx
from edge_cer.backends.gpu_info import one_line
from edge_cer.backends.shapes import call_shapes, resolve_dims
from edge_cer.errors import EdgeCerError
from edge_cer.manifest import TENSORRT_DIR, ExportManifest

log = logging.getLogger(__name__)

EP_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
            "tensorrt-rtx": rtx.EP_NAME}
# ONNX Runtime's type strings -> numpy (after diffusers' ORT_TO_NP_TYPE), for the output buffers.
ORT_TO_NP_TYPE = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                  "tensor(int32)": np.int32, "tensor(double)": np.float64}
# Run at one size for a whole generation and on every trial: worth a captured graph each.
DEFAULT_CUDA_GRAPHS = ("unet", "text_encoder", "vae_decoder", "vae_decoder_tiny")
GPU_INSTALL = "pip install 'edge-cer[gpu]' (onnxruntime-gpu with its cuda and cudnn extras)"


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


@functools.cache
def preload_gpu_libraries() -> tuple[str, ...]:
    """onnxruntime.preload_dlls(): CUDA and cuDNN from the nvidia-* pip wheels, found without LD_LIBRARY_PATH.
    It prints what it cannot load; that goes into our error messages instead of stdout."""
    import onnxruntime as ort

    if not hasattr(ort, "preload_dlls"):  # onnxruntime < 1.21
        return ()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - a failed preload is reported with the session error
            print(f"Failed to load: {exc}")
    return tuple(line.strip() for line in printed.getvalue().splitlines() if line.startswith("Failed to load"))


def missing_libraries_hint() -> str:
    failed = preload_gpu_libraries()
    if not failed:
        return "check the CUDA/cuDNN/TensorRT libraries (`edge-cer doctor`)"
    return f"CUDA/cuDNN libraries missing ({one_line('; '.join(failed), 160)}); {GPU_INSTALL}"


def provider_chain(provider: str, root: Path, cuda_graph: bool = False) -> list:
    """The providers list for InferenceSession. GPU providers keep CPU only as the home of the few ops they
    lack; a session that lost the requested provider is refused (onnxruntime falls back silently)."""
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    cuda = {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}
    if provider == "cuda":
        if cuda_graph:
            cuda["enable_cuda_graph"] = True
        return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    if provider == "tensorrt":
        cache = Path(root) / TENSORRT_DIR / "ort-ep-cache"
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
    raise EdgeCerError(f"--provider {provider}: unknown ONNX Runtime provider; choose {', '.join(EP_NAMES)}")


def session_options(threads: int | None = None, dims: dict[str, int] | None = None,
                    optimized_model: Path | None = None):
    """SessionOptions with full graph optimisation and `dims` fixed (free-dimension overrides by name);
    `optimized_model` writes the optimised graph there (what the tests count ops in)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    for name, size in (dims or {}).items():
        opts.add_free_dimension_override_by_name(name, size)
    if optimized_model is not None:
        opts.optimized_model_filepath = str(optimized_model)
    return opts


def new_session(model, provider: str, root: Path, opts, cuda_graph: bool = False, rtx_device=None):
    """An InferenceSession of `model` (path or bytes) on `provider`: plugin EPs (tensorrt-rtx, after
    rtx.prepare()) through the session options, built-in ones through the providers list."""
    import onnxruntime as ort

    if provider == "tensorrt-rtx":
        opts.add_provider_for_devices([rtx_device], rtx.provider_options(root, cuda_graph))
        return ort.InferenceSession(model, opts)
    return ort.InferenceSession(model, opts, providers=provider_chain(provider, root, cuda_graph=cuda_graph))


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
    """One session's IO binding at one set of call shapes."""

    binding: object
    shapes: dict
    inputs: dict  # name -> OrtValue on the device, refilled in place each call
    outputs: dict  # name -> OrtValue on the device, written by the run
    dtypes: dict  # input name -> numpy dtype the graph takes


class OrtBackend:
    def __init__(self, manifest: ExportManifest, provider: str = "cpu", threads: int | None = None,
                 graphs: tuple[str, ...] | None = None, io_binding: bool | None = None,
                 cuda_graphs: bool | tuple[str, ...] | None = None, fixed_shapes: bool | None = None):
        """io_binding and fixed_shapes default to on for GPU providers. cuda_graphs (GPU providers only): None
        captures DEFAULT_CUDA_GRAPHS where a session takes one; True insists on them; False or () turns them
        off; a tuple names the graphs, insisting."""
        if provider not in EP_NAMES:
            raise EdgeCerError(f"--provider {provider}: unknown ONNX Runtime provider; choose {', '.join(EP_NAMES)}")
        self.name = f"onnxruntime-{provider}"
        self.manifest, self.provider, self.threads = manifest, provider, threads
        self.graph_names = graphs or tuple(manifest.data["graphs"])
        gpu = provider != "cpu"
        self.io_binding = gpu if io_binding is None else io_binding
        self.fixed_shapes = gpu if fixed_shapes is None else fixed_shapes
        self.insist_on_cuda_graphs = cuda_graphs is not None
        if not gpu or cuda_graphs is False:
            self.cuda_graphs: tuple[str, ...] = ()
        elif cuda_graphs is None or cuda_graphs is True:
            self.cuda_graphs = DEFAULT_CUDA_GRAPHS
        else:
            self.cuda_graphs = tuple(cuda_graphs)
        if self.cuda_graphs and not self.io_binding:
            raise EdgeCerError("cuda_graphs need io_binding (fixed device buffers); drop one of the two options")
        self.cuda_graphs_dropped: dict[str, str] = {}  # graph -> why its session could not take a CUDA graph
        self.device = "cuda" if gpu else "cpu"
        self.sessions: dict[tuple, object] = {}  # (graph, fixed dims) -> InferenceSession; dims () when dynamic
        self.bound: dict[tuple, _Bound] = {}
        self._rtx_device = None

    def load(self) -> None:
        """Checks the provider; opens every session now for dynamic shapes, else each at its first size."""
        wanted = EP_NAMES[self.provider]
        if self.provider == "tensorrt-rtx":
            self._rtx_device = rtx.prepare()
        elif self.provider != "cpu":
            have = available_providers()
            if wanted not in have:
                raise EdgeCerError(
                    f"--provider {self.provider}: {wanted} is not available in this onnxruntime "
                    f"(available: {', '.join(have)}); install onnxruntime-gpu ({GPU_INSTALL}) or use --provider cpu"
                )
            preload_gpu_libraries()
        if not self.fixed_shapes:
            for name in self.graph_names:
                self._open(name, ())

    def describe(self) -> dict:
        """How the sessions run, for bench results."""
        return {"provider": self.provider, "fixed_shapes": self.fixed_shapes, "io_binding": self.io_binding,
                "cuda_graphs": list(self.cuda_graphs), "cuda_graphs_dropped": dict(self.cuda_graphs_dropped),
                "sessions": [f"{g} {dict(d)}" for g, d in self.sessions]}

    def _key(self, graph: str, feeds: dict[str, np.ndarray]) -> tuple:
        if not self.fixed_shapes:
            return graph, ()
        spec = self.manifest.graphs[graph]
        dims = resolve_dims(spec, {k: v.shape for k, v in feeds.items()})
        key = graph, tuple(sorted((d, dims[d]) for d in spec.dynamic if d in dims))
        if key not in self.sessions:
            self._open(*key)
        return key

    def _open(self, graph: str, dims: tuple) -> None:
        path = self.manifest.graph_path(graph)
        wanted = EP_NAMES[self.provider]
        capture = graph in self.cuda_graphs and graph not in self.cuda_graphs_dropped
        opts = session_options(self.threads, dict(dims))
        try:
            session = new_session(str(path), self.provider, self.manifest.root, opts, capture, self._rtx_device)
        except EdgeCerError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unexported exception types
            why = one_line(str(exc))
            if capture and not self.insist_on_cuda_graphs:
                log.warning("%s: opened without a CUDA graph: %s", path, why)
                self.cuda_graphs_dropped[graph] = why
                return self._open(graph, dims)
            fix = ("CUDA graphs need every node on the GPU: pass --no-cuda-graphs" if capture else
                   "re-run `edge-cer export sd` (or copy the whole export folder)")
            raise EdgeCerError(f"{path}: onnxruntime could not open it with {wanted}: {why}; {fix}") from exc
        if wanted not in session.get_providers():
            raise EdgeCerError(f"{path}: onnxruntime fell back to {session.get_providers()} instead of {wanted}; "
                               f"{missing_libraries_hint()}")
        _check_interface(path, session, self.manifest.graphs.get(graph))
        self.sessions[graph, dims] = session

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = self._key(graph, feeds)
        if self.io_binding:
            return self._infer_bound(key, feeds)
        session = self.sessions[key]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def _infer_bound(self, key: tuple, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        graph = key[0]
        shapes = call_shapes(self.manifest.graphs[graph], {k: v.shape for k, v in feeds.items()})
        bound = self.bound.get(key)
        if bound is None or bound.shapes != shapes:
            if bound is not None and graph in self.cuda_graphs:  # only dynamic sessions see a second shape
                raise EdgeCerError(
                    f"{self.manifest.graph_path(graph)}: its CUDA graph was captured for {bound.shapes}, now called "
                    f"with {shapes}; keep one size per backend, or use fixed shapes, or --no-cuda-graphs"
                )
            bound = self.bound[key] = self._bind(key, shapes)
        for name, value in bound.inputs.items():
            # update_inplace copies raw bytes: a wrong dtype would be garbage, not an error.
            if feeds[name].dtype != bound.dtypes[name]:
                raise ValueError(f"graph {graph!r} input {name!r}: {feeds[name].dtype}, expected {bound.dtypes[name]}")
            value.update_inplace(np.ascontiguousarray(feeds[name]))
        self.sessions[key].run_with_iobinding(bound.binding)
        # A CPU OrtValue's numpy() is a view of the buffer the next call overwrites.
        return {name: v.numpy().copy() if self.device == "cpu" else v.numpy() for name, v in bound.outputs.items()}

    def _bind(self, key: tuple, shapes: dict) -> _Bound:
        import onnxruntime as ort

        session = self.sessions[key]
        binding = session.io_binding()
        inputs, outputs = {}, {}
        for io_args, store, bind in ((session.get_inputs(), inputs, binding.bind_ortvalue_input),
                                     (session.get_outputs(), outputs, binding.bind_ortvalue_output)):
            for arg in io_args:
                store[arg.name] = ort.OrtValue.ortvalue_from_shape_and_type(
                    shapes[arg.name], ORT_TO_NP_TYPE[arg.type], self.device, 0)
                bind(arg.name, store[arg.name])
        dtypes = {arg.name: np.dtype(ORT_TO_NP_TYPE[arg.type]) for arg in session.get_inputs()}
        return _Bound(binding, shapes, inputs, outputs, dtypes)

    def unload(self) -> None:
        self.bound.clear()
        self.sessions.clear()
