"""Native TensorRT backend: runs the engines `edge-cer export sd --tensorrt` built (tensorrt/<graph>.plan).

NOT YET RUN ON HARDWARE. Written against the TensorRT 10 Python API (Runtime, deserialize_cuda_engine,
create_execution_context, set_input_shape, set_tensor_address, execute_async_v3) and cuda-python; its logic
(checks, buffer shapes, call order, CUDA-graph reuse) is tested with fake `tensorrt`/`cudart` modules.

    backend = TensorRTBackend(manifest)        # or create_backend(manifest, "trt-native")
    backend.load()                             # checks TensorRT version + GPU, deserialises every engine
    out = backend.infer("unet", feeds)["out_sample"]
    backend.unload()

Buffers are allocated per graph for the shapes of the first call and kept while the shapes stay the same
(the UNet runs at one shape for a whole generation), so the captured CUDA graph can be replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_cer.backends import cuda_runtime as cuda
from edge_cer.backends.shapes import call_shapes, check_profile
from edge_cer.errors import EdgeCerError, require
from edge_cer.manifest import MANIFEST, ExportManifest


@dataclass
class _Engine:
    """One deserialised engine, its context and (for the current shapes) its buffers and CUDA graph."""

    engine: object
    context: object
    shapes: dict = field(default_factory=dict)  # tensor name -> shape of the allocated buffers
    buffers: dict = field(default_factory=dict)  # tensor name -> DeviceArray
    graph: cuda.CudaGraph | None = None

    def free(self) -> None:
        if self.graph is not None:
            self.graph.free()
            self.graph = None
        for buf in self.buffers.values():
            buf.free()
        self.buffers.clear()
        self.shapes = {}


class TensorRTBackend:
    name = "tensorrt-native"

    def __init__(self, manifest: ExportManifest, graphs: tuple[str, ...] | None = None, cuda_graph: bool = True,
                 device: int = 0):
        if "tensorrt" not in manifest.data:
            raise EdgeCerError(f"{manifest.root}: has no TensorRT engines; re-export with "
                               f"`edge-cer export sd ... --tensorrt`, or use --provider cuda/tensorrt")
        self.manifest, self.device, self.use_cuda_graph = manifest, device, cuda_graph
        self.record = manifest.data["tensorrt"]
        self.graph_names = graphs or tuple(self.record["engines"])
        self.engines: dict[str, _Engine] = {}
        self.stream: cuda.Stream | None = None

    def load(self) -> None:
        trt = require("tensorrt", "gpu")
        info = cuda.device_info(self.device)
        check_compatible(self.record, trt.__version__, info["compute_capability"], self.manifest.root)
        self.stream = cuda.Stream()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        for name in self.graph_names:
            path = self.manifest.engine_path(name)
            engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise EdgeCerError(f"{path}: TensorRT could not deserialise it (see the log above); rebuild with "
                                   f"`edge-cer export sd --tensorrt` on this machine")
            self.engines[name] = _Engine(engine, engine.create_execution_context())

    def allocate_buffers(self, graph: str, shapes: dict[str, tuple[int, ...]]) -> None:
        """Device buffers for every input and output of `graph` at these shapes (all tensors, from the
        GraphSpec); refuses shapes outside the engine's recorded profile."""
        trt = require("tensorrt", "gpu")
        e = self.engines[graph]
        spec = self.manifest.graphs[graph]
        check_profile(str(self.manifest.engine_path(graph)), self.record["engines"][graph]["profile"],
                      {t.name: shapes[t.name] for t in spec.inputs})
        e.free()
        for t in spec.inputs:
            e.context.set_input_shape(t.name, shapes[t.name])
        for i in range(e.engine.num_io_tensors):
            name = e.engine.get_tensor_name(i)
            if name not in shapes or tuple(e.context.get_tensor_shape(name)) != tuple(shapes[name]):
                raise EdgeCerError(f"{self.manifest.engine_path(graph)}: tensor {name!r} does not match "
                                   f"{self.manifest.root / MANIFEST}; rebuild with `edge-cer export sd --tensorrt`")
            dtype = trt.nptype(e.engine.get_tensor_dtype(name))
            e.buffers[name] = cuda.DeviceArray(shapes[name], dtype)
            e.context.set_tensor_address(name, e.buffers[name].ptr)
        e.shapes = shapes

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        e = self.engines[graph]
        spec = self.manifest.graphs[graph]
        shapes = call_shapes(spec, {k: v.shape for k, v in feeds.items()})
        if shapes != e.shapes:
            self.allocate_buffers(graph, shapes)
        for t in spec.inputs:
            e.buffers[t.name].upload(feeds[t.name], self.stream)
        if e.graph is not None:
            e.graph.launch()
        else:
            self._execute(graph)
            if self.use_cuda_graph:
                # Captured after one plain run, as TensorRT asks: the first run does its lazy setup.
                e.graph = cuda.CudaGraph(self.stream, lambda: self._execute(graph))
        return {t.name: e.buffers[t.name].download(self.stream) for t in spec.outputs}

    def _execute(self, graph: str) -> None:
        if not self.engines[graph].context.execute_async_v3(self.stream.handle):
            raise cuda.CudaError(f"TensorRT execute_async_v3 failed for {self.manifest.engine_path(graph)}")

    def unload(self) -> None:
        for e in self.engines.values():
            e.free()
        self.engines.clear()
        if self.stream is not None:
            self.stream.free()
            self.stream = None


def check_compatible(record: dict, trt_version: str, compute_capability: str, root) -> None:
    """Engines only run on the TensorRT version and GPU architecture they were built with."""
    built = (record["version"], record["device"]["compute_capability"])
    if built != (trt_version, compute_capability):
        raise EdgeCerError(
            f"{root}: engines built with TensorRT {built[0]} for compute capability {built[1]}, this machine has "
            f"TensorRT {trt_version} and compute capability {compute_capability}; rebuild them here with "
            f"`edge-cer export sd --tensorrt` (or use --provider tensorrt, which builds its own)"
        )
