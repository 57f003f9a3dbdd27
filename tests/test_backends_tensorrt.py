"""LOGIC TESTS of the native TensorRT backend (edge_cer/backends/tensorrt.py) with fake `tensorrt` and
`cuda.bindings.runtime` modules: version/GPU checks, buffer shapes, the call order, CUDA-graph reuse and
the refusal of shapes an engine was not built for. They never ran TensorRT or a GPU (docs/gpu.md)."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from rich.console import Console

from edge_cer.backends import create_backend
from edge_cer.backends.shapes import call_shapes
from edge_cer.backends.tensorrt import TensorRTBackend
from edge_cer.errors import EdgeCerError
from edge_cer.manifest import ExportManifest
from export.tensorrt import build_engines
from tests.fake_gpu import install_cudart, install_tensorrt, io_only_export, unet_feeds


@pytest.fixture
def gpu(monkeypatch):
    rt = install_cudart(monkeypatch)
    return rt, install_tensorrt(monkeypatch, rt)


def built_manifest(tmp_path, dynamic=False) -> ExportManifest:
    """An export folder whose engines the fake TensorRT built with export/tensorrt.py."""
    from types import SimpleNamespace

    root = tmp_path / "export"
    data = io_only_export(root)
    o = SimpleNamespace(height=64, width=48, tensorrt_dynamic=dynamic, precision="fp32", out=tmp_path / "out")
    data["tensorrt"] = build_engines(root, ExportManifest(root, data).graphs, data["graphs"], o,
                                     Console(file=io.StringIO()))
    return ExportManifest(root, data)


def test_buffers_follow_the_call_shapes_and_data_round_trips(gpu, tmp_path):
    rt, trt = gpu
    backend = create_backend(built_manifest(tmp_path), "trt-native", graphs=("unet",))
    assert isinstance(backend, TensorRTBackend)
    backend.load()
    feeds = unet_feeds()
    out = backend.infer("unet", feeds)["out_sample"]
    np.testing.assert_array_equal(out, 2 * feeds["sample"])  # the fake engine's rule, through device memory
    e = backend.engines["unet"]
    assert {n: b.shape for n, b in e.buffers.items()} == call_shapes(backend.manifest.graphs["unet"],
                                                                     {k: v.shape for k, v in feeds.items()})
    assert e.buffers["sample"].nbytes == 2 * 4 * 8 * 6 * 4
    assert ("set_input_shape", "sample", (2, 4, 8, 6)) in trt.log
    assert set(e.context.addresses) == set(e.buffers) and all(e.context.addresses[n] == b.ptr
                                                            for n, b in e.buffers.items())


def test_cuda_graph_is_captured_once_and_replayed_with_new_inputs(gpu, tmp_path):
    rt, _ = gpu
    backend = TensorRTBackend(built_manifest(tmp_path), graphs=("unet",))
    backend.load()
    backend.infer("unet", unet_feeds(seed=0))
    ctx = backend.engines["unet"].context
    assert ctx.executions == 1 and backend.engines["unet"].graph is not None  # one plain run, then capture
    second = unet_feeds(seed=1)
    out = backend.infer("unet", second)["out_sample"]
    assert rt.launches == 1 and ctx.executions == 2  # the replay ran the captured work on the new inputs
    np.testing.assert_array_equal(out, 2 * second["sample"])
    # A new shape (guidance off: batch 1) frees the old buffers and graph, then captures again.
    old = list(backend.engines["unet"].buffers.values())
    out = backend.infer("unet", unet_feeds(batch=1))["out_sample"]
    assert out.shape == (1, 4, 8, 6) and rt.launches == 1 and ctx.executions == 3
    assert all(b.ptr == 0 for b in old) and len(rt.memory) == len(old)  # freed, and only the new ones live
    backend.unload()
    assert rt.memory == {} and rt.streams == set()


def test_without_cuda_graph_every_call_executes(gpu, tmp_path):
    rt, _ = gpu
    backend = TensorRTBackend(built_manifest(tmp_path), graphs=("unet",), cuda_graph=False)
    backend.load()
    for seed in range(3):
        backend.infer("unet", unet_feeds(seed=seed))
    assert backend.engines["unet"].context.executions == 3 and rt.launches == 0


def test_engine_built_for_another_shape_is_refused_in_one_line(gpu, tmp_path):
    backend = TensorRTBackend(built_manifest(tmp_path), graphs=("unet",))
    backend.load()
    with pytest.raises(EdgeCerError, match=r"unet.plan: engine built for sample \(1, 4, 8, 6\) to \(2, 4, 8, 6\), "
                                           r"requested \(2, 4, 16, 6\); re-export with") as err:
        backend.infer("unet", unet_feeds(lh=16))
    assert "\n" not in str(err.value)


def test_dynamic_engine_accepts_other_sizes_in_its_range(gpu, tmp_path):
    backend = TensorRTBackend(built_manifest(tmp_path, dynamic=True), graphs=("unet",))
    backend.load()
    assert backend.infer("unet", unet_feeds(lh=64, lw=96))["out_sample"].shape == (2, 4, 64, 96)
    with pytest.raises(EdgeCerError, match="engine built for sample"):
        backend.infer("unet", unet_feeds(lh=136))  # 1088 px, over the 1024 px range


@pytest.mark.parametrize("field, value, says", [("version", "10.0.1", "TensorRT 10.0.1"),
                                                ("compute_capability", "8.9", "compute capability 8.9")])
def test_engines_from_another_tensorrt_or_gpu_are_refused(gpu, tmp_path, field, value, says):
    manifest = built_manifest(tmp_path)
    record = manifest.data["tensorrt"]
    (record if field == "version" else record["device"])[field] = value
    with pytest.raises(EdgeCerError, match=f"engines built with .*{says}.*rebuild them here"):
        TensorRTBackend(manifest).load()


def test_export_without_engines_and_missing_libraries_give_one_line_errors(monkeypatch, tmp_path):
    data = io_only_export(tmp_path / "export")
    with pytest.raises(EdgeCerError, match=r"has no TensorRT engines; re-export with `edge-cer export sd \.\.\. --tensorrt`"):
        TensorRTBackend(ExportManifest(tmp_path / "export", data))
    data["tensorrt"] = {"version": "10.3.0", "device": {"compute_capability": "9.0"}, "engines": {}}
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgeCerError, match=r"pip install 'edge-cer\[gpu\]'"):
        TensorRTBackend(ExportManifest(tmp_path / "export", data)).load()
    install_tensorrt(monkeypatch, install_cudart(monkeypatch, devices=0))
    with pytest.raises(EdgeCerError, match=r"no CUDA GPU #0"):
        TensorRTBackend(ExportManifest(tmp_path / "export", data)).load()
