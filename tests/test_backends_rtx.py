"""`--provider tensorrt-rtx`: TensorRT for RTX through ONNX Runtime's plugin-EP API.

LOGIC TESTS: a fake plugin module and a patched onnxruntime record what our code registers and asks for. The
real wheel (onnxruntime-ep-nv-tensorrt-rtx) was never loaded here: no RTX card, no GPU."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import onnxruntime
import pytest

from edge_cer.backends import ort as ort_backend
from edge_cer.backends import rtx
from edge_cer.backends.ort import OrtBackend
from edge_cer.errors import EdgeCerError
from tests.fake_gpu import unet_feeds
from tests.test_backends_ort import REAL_SESSION, manifest  # noqa: F401 - the fixture

RTX_4090 = [{"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}]
H200 = [{"name": "NVIDIA H200", "compute_capability": "9.0"}]


@pytest.mark.parametrize("cc, ok", [("7.5", False), ("8.0", False), ("8.6", True), ("8.9", True), ("9.0", False),
                                    ("10.0", False), ("12.0", True), ("12.1", True)])
def test_supported_compute_capabilities_follow_the_wheels_rule(cc, ok):
    assert rtx.supported(cc) is ok


def test_a_data_centre_card_is_refused_in_one_line():
    with pytest.raises(EdgeCerError) as err:
        rtx.check_card(H200)
    assert str(err.value) == ("--provider tensorrt-rtx: TensorRT for RTX supports compute capability 8.6, 8.9 and "
                              "12.0+ (RTX 30xx-50xx); NVIDIA H200 is 9.0; use --provider cuda or tensorrt")
    rtx.check_card(RTX_4090)
    rtx.check_card([])  # no nvidia-smi: the plugin's device list decides


class FakeOptions:
    def __init__(self, real):
        self.real, self.devices = real, None

    def add_provider_for_devices(self, devices, options):
        self.devices = (devices, options)


@pytest.fixture
def plugin(monkeypatch):
    calls = SimpleNamespace(registered=[], sessions=[])
    module = types.ModuleType(rtx.MODULE)
    module.get_library_path = lambda: "/site/onnxruntime_ep_nv_tensorrt_rtx/libonnxruntime_providers_nv_tensorrt_rtx.so"
    monkeypatch.setitem(sys.modules, rtx.MODULE, module)
    monkeypatch.setattr(rtx, "_registered", set())
    monkeypatch.setattr(rtx.gpu_info, "nvidia_smi", lambda: RTX_4090)
    monkeypatch.setattr(onnxruntime, "register_execution_provider_library",
                        lambda name, path: calls.registered.append((name, path)))
    device = SimpleNamespace(ep_name=rtx.EP_NAME, device=SimpleNamespace(vendor_id=0x10DE))
    monkeypatch.setattr(onnxruntime, "get_ep_devices",
                        lambda: [SimpleNamespace(ep_name="CPUExecutionProvider"), device])
    real_options = ort_backend.session_options
    monkeypatch.setattr(ort_backend, "session_options", lambda *a, **k: FakeOptions(real_options(*a, **k)))

    class Session:
        def __init__(self, path, opts, providers=None):
            assert providers is None  # plugin EPs come through the options, not the providers list
            calls.sessions.append((path, opts.devices))
            self.real = REAL_SESSION(path, opts.real, providers=["CPUExecutionProvider"])

        def get_providers(self):
            return [rtx.EP_NAME, "CPUExecutionProvider"]

        def __getattr__(self, name):
            return getattr(self.real, name)

    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    calls.device = device
    return calls


def test_sessions_run_on_the_registered_plugin_with_the_cache_in_the_export(plugin, manifest):  # noqa: F811
    backend = OrtBackend(manifest, "tensorrt-rtx", graphs=("unet",))
    backend.load()
    backend.device = "cpu"  # the fake sessions are CPU sessions
    assert plugin.registered == [(rtx.EP_NAME, sys.modules[rtx.MODULE].get_library_path())]
    backend.infer("unet", unet_feeds())
    (path, (devices, options)), = plugin.sessions
    assert devices == [plugin.device]
    assert options == {"nv_runtime_cache_path": str(manifest.root / "tensorrt-rtx-cache"), "enable_cuda_graph": "1"}
    assert (manifest.root / "tensorrt-rtx-cache").is_dir()
    OrtBackend(manifest, "tensorrt-rtx").load()
    assert len(plugin.registered) == 1  # once per process


def test_refusals_name_the_fix(plugin, manifest, monkeypatch):  # noqa: F811
    monkeypatch.setattr(rtx.gpu_info, "nvidia_smi", lambda: H200)
    with pytest.raises(EdgeCerError, match="NVIDIA H200 is 9.0; use --provider cuda or tensorrt"):
        OrtBackend(manifest, "tensorrt-rtx").load()
    assert plugin.registered == []  # refused before loading the library
    monkeypatch.setattr(rtx.gpu_info, "nvidia_smi", lambda: [])
    monkeypatch.setattr(onnxruntime, "get_ep_devices", lambda: [])
    with pytest.raises(EdgeCerError, match="found no supported GPU"):
        OrtBackend(manifest, "tensorrt-rtx").load()
    monkeypatch.setitem(sys.modules, rtx.MODULE, None)  # not installed
    monkeypatch.setattr(rtx, "_registered", set())
    with pytest.raises(EdgeCerError, match=r"onnxruntime-ep-nv-tensorrt-rtx is not installed; "
                                           r"pip install 'edge-cer\[rtx\]'"):
        OrtBackend(manifest, "tensorrt-rtx").load()
