"""The machine a benchmark ran on: CPU, cores, load, versions, memory, the onnxruntime really imported, the GPU,
and measured matmul peaks (numpy's fp32 sgemm for CPU backends; an fp16 MatMul graph on the backend's own
ONNX Runtime provider for GPU backends), so "% of peak" compares like with like."""

from __future__ import annotations

import os
import platform
import resource
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

VERSIONED = ("edge-cer", "numpy", "onnx")  # onnxruntime: onnxruntime_info(), the module actually imported
REFERENCE_VERSIONED = ("torch", "diffusers", "transformers")
# Variables that change which BLAS/OpenMP kernels and how many threads run.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD extensions that decide which kernels onnxruntime's MLAS and OpenBLAS pick."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c")))
    except OSError:
        pass
    return []


def package_versions(names) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_info(with_reference: bool = False) -> dict:
    import onnxruntime as ort

    names = VERSIONED + (REFERENCE_VERSIONED if with_reference else ())
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "loadavg_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(names),
        "onnxruntime": onnxruntime_info(),
        "onnxruntime_providers": ort.get_available_providers(),
        "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
    }


def blas_info() -> dict:
    """Which BLAS numpy calls and the kernel it selected (threadpoolctl, when installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"note": "threadpoolctl not installed; kernel unknown"}
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            return {k: pool.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
    return {}


def sgemm_peak(n: int = 2048, seconds: float = 2.0) -> dict:
    """Best fp32 matrix-multiply throughput numpy's BLAS reaches on this machine, all its threads.

    The best of repeated n x n products over about `seconds` (the machine is shared: the best run is the least
    disturbed one). On CPUs where OPENBLAS_CORETYPE is forced (an older-OpenBLAS workaround), OpenBLAS runs an
    older, slower kernel: the env and the kernel are recorded next to the figure."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    np.matmul(a, b)  # warm: thread pool start, page faults
    best, runs, t_end = float("inf"), 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end or runs < 3:
        t0 = time.perf_counter()
        np.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return {"gflops": 2 * n**3 / best / 1e9, "n": n, "runs": runs, "best_ms": best * 1000, "blas": blas_info(),
            "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}


def onnxruntime_info() -> dict:
    """The onnxruntime this process imported: its own version and path, not a distribution's metadata (with
    onnxruntime and onnxruntime-gpu both installed, the metadata of one describes the files of the other)."""
    from importlib.metadata import packages_distributions

    import onnxruntime as ort

    claimed = sorted(set(packages_distributions().get("onnxruntime", [])))
    return {"version": ort.__version__, "module": ort.__file__, "distributions": package_versions(claimed),
            "providers": ort.get_available_providers()}


def gpu_info_or_error() -> list[dict] | dict:
    """nvidia-smi's view of the GPUs, with clocks at the time of the run."""
    from edge_cer.backends import gpu_info

    try:
        return gpu_info.nvidia_smi()
    except gpu_info.GpuQueryError as exc:
        return {"error": str(exc)}


def matmul_model(n: int, dtype: str) -> bytes:
    """Y = A @ B, n x n, in one dtype: the largest dense kernel a provider runs."""
    from onnx import TensorProto, helper

    t = {"float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT}[dtype]
    io = [helper.make_tensor_value_info(name, t, [n, n]) for name in "ABY"]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["Y"])], "matmul_peak", io[:2], io[2:])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def matmul_peak(provider: str, n: int = 8192, dtype: str = "float16", seconds: float = 2.0) -> dict:
    """Best MatMul throughput of one ONNX Runtime provider: inputs and output stay on the device (IO binding),
    each timed run ends when Run has synchronised. The best of repeated runs over about `seconds`."""
    import onnxruntime as ort

    from edge_cer.backends import rtx
    from edge_cer.backends.ort import new_session, preload_gpu_libraries, session_options

    device = "cpu" if provider == "cpu" else "cuda"
    if device == "cuda":
        preload_gpu_libraries()
    rtx_device = rtx.prepare() if provider == "tensorrt-rtx" else None
    with tempfile.TemporaryDirectory() as cache:  # TensorRT engines for this graph are not worth keeping
        session = new_session(matmul_model(n, dtype), provider, Path(cache), session_options(), rtx_device=rtx_device)
        rng = np.random.default_rng(0)
        a, b = (ort.OrtValue.ortvalue_from_numpy(rng.standard_normal((n, n)).astype(dtype), device, 0)
                for _ in range(2))
        binding = session.io_binding()
        binding.bind_ortvalue_input("A", a)
        binding.bind_ortvalue_input("B", b)
        binding.bind_output("Y", device)
        session.run_with_iobinding(binding)  # warm: kernel selection, engine build
        best, runs, t_end = float("inf"), 0, time.perf_counter() + seconds
        while time.perf_counter() < t_end or runs < 3:
            t0 = time.perf_counter()
            session.run_with_iobinding(binding)
            best = min(best, time.perf_counter() - t0)
            runs += 1
        providers = session.get_providers()
    return {"gflops": 2 * n**3 / best / 1e9, "n": n, "dtype": dtype, "provider": providers[0], "runs": runs,
            "best_ms": best * 1000}
