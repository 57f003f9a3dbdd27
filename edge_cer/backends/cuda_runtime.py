"""The few CUDA runtime calls the native TensorRT backend needs, through cuda-python (no torch, no CuPy).

cuda-python returns `(error, *results)` from every call; `call` unwraps that and turns an error into an
exception that names the call. NOT YET RUN ON HARDWARE: written against cuda-python's documented runtime
API and tested with a fake module only (tests/fake_gpu.py).
"""

from __future__ import annotations

import numpy as np

from edge_cer.errors import EdgeCerError


class CudaError(RuntimeError):
    """A CUDA runtime call failed (after the device was found, so not the user's to fix)."""


def cudart():
    """cuda-python's runtime module: `cuda.bindings.runtime` (>= 12.6) or the older `cuda.cudart`."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as exc:
            raise EdgeCerError("`cuda-python` is not installed; install it with: pip install 'edge-cer[gpu]'") from exc
    return runtime


def call(result, what: str = "CUDA call"):
    """Unwrap cuda-python's `(err, *values)`; raise CudaError naming `what` unless err is cudaSuccess."""
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        name = rt.cudaGetErrorName(err)[1]
        raise CudaError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else tuple(values) or None


def device_info(index: int = 0) -> dict:
    """Name, compute capability and memory of one GPU; a one-line EdgeCerError when there is none."""
    rt = cudart()
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess or count <= index:
        reason = rt.cudaGetErrorName(err)[1] if err != rt.cudaError_t.cudaSuccess else f"{count} GPU(s)"
        raise EdgeCerError(f"no CUDA GPU #{index} ({reason.decode() if isinstance(reason, bytes) else reason}); "
                           f"TensorRT needs an NVIDIA GPU and its driver: see `edge-cer doctor`, or use --provider cpu")
    prop = call(rt.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace").rstrip("\0") if isinstance(prop.name, bytes) else str(prop.name)
    return {"index": index, "name": name, "compute_capability": f"{prop.major}.{prop.minor}",
            "memory_bytes": int(prop.totalGlobalMem)}


def versions() -> dict:
    """CUDA runtime and driver versions as "major.minor" strings (CUDA encodes 12040 as 12.4)."""
    rt = cudart()
    fmt = lambda v: f"{v // 1000}.{v % 1000 // 10}"  # noqa: E731
    return {"runtime": fmt(call(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
            "driver": fmt(call(rt.cudaDriverGetVersion(), "cudaDriverGetVersion"))}


class Stream:
    """One CUDA stream; `handle` is the integer TensorRT's execute_async_v3 takes."""

    def __init__(self):
        self.stream = call(cudart().cudaStreamCreate(), "cudaStreamCreate")
        self.handle = int(self.stream)

    def synchronize(self) -> None:
        call(cudart().cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def free(self) -> None:
        call(cudart().cudaStreamDestroy(self.stream), "cudaStreamDestroy")


class DeviceArray:
    """A fixed device allocation of one shape and dtype. Its address never changes, which CUDA graphs need."""

    def __init__(self, shape: tuple[int, ...], dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.ptr = int(call(cudart().cudaMalloc(max(self.nbytes, 1)), f"cudaMalloc({self.nbytes} bytes)"))

    def upload(self, host: np.ndarray, stream: Stream) -> None:
        host = np.ascontiguousarray(host, dtype=self.dtype)
        if host.shape != self.shape:
            raise ValueError(f"upload of {host.shape} into a device buffer of {self.shape}")
        rt = cudart()
        call(rt.cudaMemcpyAsync(self.ptr, host.ctypes.data, self.nbytes,
                                rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.stream), "cudaMemcpyAsync H2D")
        # Pageable host memory: the copy is staged before cudaMemcpyAsync returns, so `host` may be freed.

    def download(self, stream: Stream) -> np.ndarray:
        """Copy to a new host array; waits for the stream (the caller reads it at once)."""
        host = np.empty(self.shape, self.dtype)
        rt = cudart()
        call(rt.cudaMemcpyAsync(host.ctypes.data, self.ptr, self.nbytes,
                                rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.stream), "cudaMemcpyAsync D2H")
        stream.synchronize()
        return host

    def free(self) -> None:
        if self.ptr:
            call(cudart().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class CudaGraph:
    """Records what `work()` enqueues on a stream once, then replays it with one launch.

    The captured kernels keep the buffer addresses of the capture: inputs are uploaded into the same
    buffers before each `launch`, and any change of shape or buffer needs a new capture."""

    def __init__(self, stream: Stream, work):
        rt = cudart()
        call(rt.cudaStreamBeginCapture(stream.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
             "cudaStreamBeginCapture")
        try:
            work()
        finally:
            self.graph = call(rt.cudaStreamEndCapture(stream.stream), "cudaStreamEndCapture")
        self.exec = call(rt.cudaGraphInstantiate(self.graph, 0), "cudaGraphInstantiate")
        self.stream = stream

    def launch(self) -> None:
        call(cudart().cudaGraphLaunch(self.exec, self.stream.stream), "cudaGraphLaunch")

    def free(self) -> None:
        rt = cudart()
        call(rt.cudaGraphExecDestroy(self.exec), "cudaGraphExecDestroy")
        call(rt.cudaGraphDestroy(self.graph), "cudaGraphDestroy")
