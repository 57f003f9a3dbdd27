"""NVIDIA TensorRT for RTX as an ONNX Runtime plugin execution provider (`--provider tensorrt-rtx`).

The `onnxruntime-ep-nv-tensorrt-rtx` wheel (`pip install 'edge-cer[rtx]'`) carries the EP library and the
TensorRT-RTX runtime inside it; ONNX Runtime's plugin-EP API loads it:

    register_execution_provider_library(EP_NAME, library)   # once per process
    devices = [d for d in get_ep_devices() if d.ep_name == EP_NAME]
    session_options.add_provider_for_devices(devices[:1], {"nv_runtime_cache_path": ..., ...})

TensorRT for RTX builds engines for GeForce/RTX cards only. The wheel's own header
(tensorrt_rtx_provider_options.h, 0.5.0: `IsComputeCapabilitySupported`) accepts compute capability 8.6, 8.9
and 12.0 or newer (RTX 30xx, 40xx, 50xx); data-centre Hopper (9.0, the H200) is refused here in one line
instead of failing deep inside session creation. NOT YET RUN ON HARDWARE: written against the wheel's
documented usage and tested with a fake onnxruntime (tests/test_backends_rtx.py).
"""

from __future__ import annotations

from pathlib import Path

from edge_cer.backends import gpu_info
from edge_cer.errors import EdgeCerError

EP_NAME = "NvTensorRTRTXExecutionProvider"
MODULE = "onnxruntime_ep_nv_tensorrt_rtx"
CACHE_DIR = "tensorrt-rtx-cache"  # inside the export folder: engines are built once per card and export
_registered: set[str] = set()


def supported(cc: str) -> bool:
    """The wheel's rule: 8.6, 8.9, or 12.0 and newer."""
    major, minor = (int(p) for p in cc.split("."))
    return major * 10 + minor >= 120 or (major, minor) in ((8, 6), (8, 9))


def check_card(gpus: list[dict]) -> None:
    """Refuse a card TensorRT for RTX does not build for, naming it and the providers that do run there."""
    cc = gpu_info.compute_capability(gpus)
    if cc is not None and not supported(cc):
        raise EdgeCerError(
            f"--provider tensorrt-rtx: TensorRT for RTX supports compute capability 8.6, 8.9 and 12.0+ "
            f"(RTX 30xx-50xx); {gpus[0].get('name', 'this GPU')} is {cc}; use --provider cuda or tensorrt")


def register() -> None:
    """Load the plugin library into ONNX Runtime once per process."""
    import onnxruntime as ort

    if EP_NAME in _registered:
        return
    try:
        import onnxruntime_ep_nv_tensorrt_rtx as plugin
    except ImportError as exc:
        raise EdgeCerError("--provider tensorrt-rtx: onnxruntime-ep-nv-tensorrt-rtx is not installed; "
                           "pip install 'edge-cer[rtx]' (an RTX 30xx-50xx card and CUDA 13 driver)") from exc
    if not hasattr(ort, "register_execution_provider_library"):
        raise EdgeCerError(f"--provider tensorrt-rtx: onnxruntime {ort.__version__} has no plugin-EP API; "
                           f"pip install -U onnxruntime-gpu")
    try:
        ort.register_execution_provider_library(EP_NAME, plugin.get_library_path())
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unexported types
        raise EdgeCerError(f"--provider tensorrt-rtx: {plugin.__file__}: onnxruntime could not load the EP "
                           f"library: {gpu_info.one_line(str(exc))}") from exc
    _registered.add(EP_NAME)


def device():
    """The first device the plugin offers (it lists only the GPUs it supports)."""
    import onnxruntime as ort

    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise EdgeCerError("--provider tensorrt-rtx: the TensorRT for RTX EP found no supported GPU "
                           "(an RTX 30xx-50xx card with a CUDA 13 driver); run `edge-cer doctor`")
    return devices[0]


def provider_options(root: Path, cuda_graph: bool) -> dict[str, str]:
    """Options for add_provider_for_devices (plugin EPs take strings); the engine cache lives in the export."""
    cache = Path(root) / CACHE_DIR
    try:
        cache.mkdir(exist_ok=True)
    except OSError as exc:
        raise EdgeCerError(f"{cache}: cannot create the TensorRT for RTX engine cache ({exc.strerror}); "
                           f"make {root} writable") from exc
    options = {"nv_runtime_cache_path": str(cache)}
    if cuda_graph:
        options["enable_cuda_graph"] = "1"
    return options


def prepare(gpus: list[dict] | None = None):
    """The device sessions are created for: refuses an unsupported card first, then loads the plugin."""
    if gpus is None:
        try:
            gpus = gpu_info.nvidia_smi()
        except gpu_info.GpuQueryError:
            gpus = []  # unknown card: the plugin's own device list decides
    check_card(gpus)
    register()
    return device()
