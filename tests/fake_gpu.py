"""Fake `tensorrt` and `cuda.bindings.runtime` modules for LOGIC TESTS of the GPU paths (no GPU, no TensorRT).

They record the calls our code makes (names, shapes, flags) and behave just enough like the real APIs for
data to flow: "device" memory is host memory owned by the fake (so cudaMemcpyAsync is a memmove), stream
capture records enqueued work instead of running it, and a graph launch replays it. A fake engine computes
each output as 2 * its first input of the same shape (else the sum of that input). Nothing here says the
real libraries behave this way on hardware; it checks that our code drives them as documented.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import sys
import types
from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto, helper

NP_OF_ONNX = {TensorProto.FLOAT: "float32", TensorProto.INT64: "int64", TensorProto.FLOAT16: "float16"}
ONNX_OF_NP = {v: k for k, v in NP_OF_ONNX.items()}


class Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100


class FakeCudart(types.ModuleType):
    """cuda-python's runtime module: every call returns (err, *values)."""

    cudaError_t = Err
    cudaMemcpyKind = enum.IntEnum("cudaMemcpyKind", "cudaMemcpyHostToDevice cudaMemcpyDeviceToHost")
    cudaStreamCaptureMode = enum.IntEnum("cudaStreamCaptureMode", "cudaStreamCaptureModeGlobal")

    def __init__(self, devices: int = 1, name: bytes = b"Fake GPU", cc: tuple[int, int] = (9, 0)):
        super().__init__("cuda.bindings.runtime")
        self.devices, self.name, self.cc = devices, name, cc
        self.memory: dict[int, np.ndarray] = {}
        self.streams: set[int] = set()
        self.capturing: dict[int, list] = {}  # stream -> work recorded during capture
        self.calls: list[tuple] = []
        self.launches = 0

    def _log(self, *call):
        self.calls.append(call)

    def cudaGetErrorName(self, err):
        return Err.cudaSuccess, Err(err).name.encode()

    def cudaGetDeviceCount(self):
        return (Err.cudaSuccess, self.devices) if self.devices else (Err.cudaErrorNoDevice, 0)

    def cudaGetDeviceProperties(self, index):
        return Err.cudaSuccess, SimpleNamespace(name=self.name, major=self.cc[0], minor=self.cc[1],
                                                totalGlobalMem=80 * 2**30)

    def cudaRuntimeGetVersion(self):
        return Err.cudaSuccess, 12040

    def cudaDriverGetVersion(self):
        return Err.cudaSuccess, 12050

    def cudaStreamCreate(self):
        handle = 0x5000 + len(self.streams) + 1
        self.streams.add(handle)
        return Err.cudaSuccess, handle

    def cudaStreamSynchronize(self, stream):
        return (Err.cudaSuccess,)

    def cudaStreamDestroy(self, stream):
        self.streams.remove(stream)
        return (Err.cudaSuccess,)

    def cudaMalloc(self, nbytes):
        buf = np.zeros(nbytes, np.uint8)
        self.memory[buf.ctypes.data] = buf
        return Err.cudaSuccess, buf.ctypes.data

    def cudaFree(self, ptr):
        del self.memory[ptr]
        return (Err.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        self._log("memcpy", kind.name, nbytes)
        ctypes.memmove(dst, src, nbytes)
        return (Err.cudaSuccess,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing[stream] = []
        return (Err.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):
        return Err.cudaSuccess, ("graph", self.capturing.pop(stream))

    def cudaGraphInstantiate(self, graph, flags):
        return Err.cudaSuccess, ("exec", graph[1])

    def cudaGraphLaunch(self, exec_, stream):
        self.launches += 1
        for work in exec_[1]:
            work()
        return (Err.cudaSuccess,)

    def cudaGraphExecDestroy(self, exec_):
        return (Err.cudaSuccess,)

    def cudaGraphDestroy(self, graph):
        return (Err.cudaSuccess,)

    def enqueue(self, stream: int, work) -> None:
        """Run work now, or record it while the stream is being captured."""
        if stream in self.capturing:
            self.capturing[stream].append(work)
        else:
            work()


def install_cudart(monkeypatch, **kwargs) -> FakeCudart:
    rt = FakeCudart(**kwargs)
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, rt
    for name, mod in (("cuda", cuda), ("cuda.bindings", bindings), ("cuda.bindings.runtime", rt)):
        _register(monkeypatch, name, mod)
    return rt


def write_io_onnx(spec, path) -> None:
    """An ONNX file that declares a GraphSpec's inputs and outputs (symbolic dims as dim_param), no nodes:
    all the fake parser reads."""
    vi = lambda t: helper.make_tensor_value_info(t.name, ONNX_OF_NP[t.dtype], list(t.shape))  # noqa: E731
    graph = helper.make_graph([], spec.name, [vi(t) for t in spec.inputs], [vi(t) for t in spec.outputs])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph), str(path))


class FakeTensorRT(types.ModuleType):
    """The TensorRT 10 Python API surface our code uses. A "plan" is JSON: the parsed IO, flags, profiles."""

    __version__ = "10.3.0"

    class Logger:
        WARNING = "WARNING"

        def __init__(self, level):
            self.level = level

    BuilderFlag = enum.Enum("BuilderFlag", "FP16 TF32 STRICT_TYPES")
    DataType = enum.Enum("DataType", "FLOAT HALF INT64")
    TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")

    def __init__(self, cudart: FakeCudart | None = None, parse_ok: bool = True, build_ok: bool = True):
        super().__init__("tensorrt")
        self.cudart, self.parse_ok, self.build_ok = cudart, parse_ok, build_ok
        self.log: list[tuple] = []
        self.timing_caches: list[FakeTimingCache] = []
        trt = self

        class Builder:
            def __init__(self, logger):
                trt.log.append(("Builder",))

            def create_network(self, flags):
                trt.log.append(("create_network", flags))
                return SimpleNamespace(io=None)

            def create_builder_config(self):
                return FakeConfig(trt)

            def create_optimization_profile(self):
                return FakeProfile()

            def build_serialized_network(self, network, config):
                trt.log.append(("build", sorted(f.name for f in config.flags), config.profiles[0].shapes))
                if not trt.build_ok:
                    return None
                return json.dumps({"io": network.io, "flags": sorted(f.name for f in config.flags)}).encode()

        class OnnxParser:
            def __init__(self, network, logger):
                self.network, self.num_errors = network, 0

            def parse_from_file(self, path):
                trt.log.append(("parse_from_file", path))
                if not trt.parse_ok:
                    self.num_errors = 1
                    return False
                g = onnx.load(path, load_external_data=False).graph
                io = lambda vs: {v.name: [NP_OF_ONNX[v.type.tensor_type.elem_type],  # noqa: E731
                                          [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]]
                                 for v in vs}
                self.network.io = {"inputs": io(g.input), "outputs": io(g.output)}
                return True

            def get_error(self, i):
                return "In node 0 (importConv): UNSUPPORTED_NODE"

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                return FakeEngine(trt, json.loads(data)["io"])

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime

    def init_libnvinfer_plugins(self, logger, namespace):
        return True

    def nptype(self, dtype):
        return {"FLOAT": np.float32, "HALF": np.float16, "INT64": np.int64}[dtype.name]


class FakeTimingCache:
    def __init__(self, seed: bytes):
        self.seed = seed

    def serialize(self) -> bytes:
        return b"timing:" + self.seed


class FakeConfig:
    def __init__(self, trt):
        self.trt, self.flags, self.profiles, self.cache = trt, set(), [], None

    def set_flag(self, flag):
        self.flags.add(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def create_timing_cache(self, seed):
        self.trt.timing_caches.append(FakeTimingCache(bytes(seed)))
        return self.trt.timing_caches[-1]

    def set_timing_cache(self, cache, ignore_mismatch):
        self.trt.log.append(("set_timing_cache", id(cache), ignore_mismatch))
        self.cache = cache
        return True


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class FakeEngine:
    def __init__(self, trt, io):
        self.trt, self.io = trt, io
        self.names = list(io["inputs"]) + list(io["outputs"])
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_dtype(self, name):
        dtype = {**self.io["inputs"], **self.io["outputs"]}[name][0]
        return self.trt.DataType[{"float32": "FLOAT", "float16": "HALF", "int64": "INT64"}[dtype]]

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine, self.input_shapes, self.addresses, self.executions = engine, {}, {}, 0

    def set_input_shape(self, name, shape):
        self.engine.trt.log.append(("set_input_shape", name, tuple(shape)))
        self.input_shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        if name in self.input_shapes:
            return self.input_shapes[name]
        dims = {}
        for n, (_, sym) in self.engine.io["inputs"].items():
            dims.update({d: s for d, s in zip(sym, self.input_shapes[n]) if isinstance(d, str)})
        return tuple(dims.get(d, -1) if isinstance(d, str) else d for d in self.engine.io["outputs"][name][1])

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def _array(self, name, shape):
        dtype = self.engine.trt.nptype(self.engine.get_tensor_dtype(name))
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return np.frombuffer((ctypes.c_uint8 * n).from_address(self.addresses[name]), dtype).reshape(shape)

    def execute_async_v3(self, stream_handle):
        def work():
            self.executions += 1
            first = next(iter(self.engine.io["inputs"]))
            x = self._array(first, self.input_shapes[first])
            for name in self.engine.io["outputs"]:
                out = self._array(name, self.get_tensor_shape(name))
                out[...] = 2 * x if out.shape == x.shape else x.sum()

        self.engine.trt.cudart.enqueue(stream_handle, work)
        return True


def install_tensorrt(monkeypatch, cudart: FakeCudart, **kwargs) -> FakeTensorRT:
    trt = FakeTensorRT(cudart, **kwargs)
    _register(monkeypatch, "tensorrt", trt)
    return trt


def _register(monkeypatch, name: str, module) -> None:
    # A spec, as real modules have: importlib.util.find_spec (used by torch, among others) requires one.
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    monkeypatch.setitem(sys.modules, name, module)


# Small SD-shaped dims (base adapter) for IO-only exports; sizes are arbitrary but consistent.
TINY_DIMS = dict(text_hidden=32, latent_channels=4, image_size=32, image_embed_dim=16, image_tokens=1, ip_tokens=4,
                 adapter="base")


def unet_feeds(batch=2, lh=8, lw=6, seed=0) -> dict:
    """Seeded UNet inputs at TINY_DIMS; timestep 3 and ip_scale 0.5 so a test graph's output is predictable."""
    rng = np.random.default_rng(seed)
    return {"sample": rng.standard_normal((batch, TINY_DIMS["latent_channels"], lh, lw), np.float32),
            "timestep": np.array([3.0], np.float32),
            "encoder_hidden_states": rng.standard_normal((batch, 77, TINY_DIMS["text_hidden"]), np.float32),
            "ip_tokens": rng.standard_normal((batch, TINY_DIMS["ip_tokens"], TINY_DIMS["text_hidden"]), np.float32),
            "ip_scale": np.array([0.5], np.float32)}


def io_only_export(root, height: int = 64, width: int = 48) -> dict:
    """An export folder's manifest data whose graphs are IO-only ONNX files (for the fake TensorRT parser)."""
    from edge_cer.graphs import ModelDims, sd_graphs

    dims = ModelDims(**TINY_DIMS)
    graphs = {}
    for name, spec in sd_graphs(dims).items():
        write_io_onnx(spec, root / spec.file)
        graphs[name] = {"file": spec.file, "precision": "fp32"}
    return {"model": {"dims": dims.to_dict(), "adapter": {"type": "base"}}, "graphs": graphs,
            "export_shape": {"height": height, "width": width}}
