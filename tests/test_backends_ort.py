"""ONNX Runtime backend: the provider chain, the refusal of a silent CPU fallback, and IO binding.

IO binding runs for real on CPU here (the same code binds CUDA OrtValues on a GPU). The CUDA/TensorRT EP
tests are LOGIC TESTS with a patched onnxruntime whose sessions claim a GPU provider; none of them ran on
a GPU (docs/gpu.md)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper, save

from edge_cer.backends import ort as ort_backend
from edge_cer.backends.ort import OrtBackend, provider_chain
from edge_cer.errors import EdgeCerError
from edge_cer.graphs import ModelDims, sd_graphs
from edge_cer.manifest import ExportManifest
from tests.fake_gpu import TINY_DIMS, unet_feeds

DIMS = ModelDims(**TINY_DIMS)
REAL_SESSION = onnxruntime.InferenceSession  # before the patches below replace it


@pytest.fixture
def manifest(tmp_path) -> ExportManifest:
    """An export folder with a real one-op "unet" (out_sample = sample * ip_scale + timestep) and a
    text_encoder path that only the patched sessions open."""
    spec = sd_graphs(DIMS)["unet"]
    vi = lambda t: helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape))  # noqa: E731
    nodes = [helper.make_node("Mul", ["sample", "ip_scale"], ["scaled"]),
             helper.make_node("Add", ["scaled", "timestep"], ["out_sample"])]
    graph = helper.make_graph(nodes, "unet", [vi(t) for t in spec.inputs], [vi(t) for t in spec.outputs])
    (tmp_path / "unet").mkdir()
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
         str(tmp_path / spec.file))
    data = {"model": {"dims": DIMS.to_dict()},
            "graphs": {"text_encoder": {"file": "text_encoder/model.onnx"}, "unet": {"file": spec.file}}}
    return ExportManifest(tmp_path, data)


def test_provider_chains(manifest):
    assert provider_chain("cpu", manifest.root) == ["CPUExecutionProvider"]
    cuda = provider_chain("cuda", manifest.root)
    assert [p[0] if isinstance(p, tuple) else p for p in cuda] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert "enable_cuda_graph" not in cuda[0][1]
    assert provider_chain("cuda", manifest.root, cuda_graph=True)[0][1]["enable_cuda_graph"] is True
    trt = provider_chain("tensorrt", manifest.root, cuda_graph=True)
    assert [p[0] if isinstance(p, tuple) else p for p in trt] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert trt[0][1]["trt_fp16_enable"] and trt[0][1]["trt_cuda_graph_enable"]
    assert trt[0][1]["trt_engine_cache_path"] == str(manifest.root / "tensorrt" / "ort-ep-cache")


def test_io_binding_on_cpu_matches_a_plain_run(manifest):
    plain = OrtBackend(manifest, "cpu", graphs=("unet",))
    bound = OrtBackend(manifest, "cpu", graphs=("unet",), io_binding=True)
    plain.load()
    bound.load()
    first = bound.infer("unet", unet_feeds(seed=0))["out_sample"]
    np.testing.assert_allclose(first, plain.infer("unet", unet_feeds(seed=0))["out_sample"], rtol=0, atol=0)
    np.testing.assert_allclose(first, unet_feeds(seed=0)["sample"] * 0.5 + 3.0, rtol=1e-6)
    binding = bound.bound["unet", ()].binding
    second = bound.infer("unet", unet_feeds(seed=1))["out_sample"]
    assert bound.bound["unet", ()].binding is binding  # same shapes: the buffers are reused, refilled in place
    np.testing.assert_allclose(first, unet_feeds(seed=0)["sample"] * 0.5 + 3.0, rtol=1e-6)  # not overwritten
    np.testing.assert_allclose(second, unet_feeds(seed=1)["sample"] * 0.5 + 3.0, rtol=1e-6)
    third = bound.infer("unet", unet_feeds(batch=1, lh=4, lw=10))["out_sample"]  # new shapes: bound again
    assert third.shape == (1, 4, 4, 10) and bound.bound["unet", ()].shapes["out_sample"] == (1, 4, 4, 10)
    feeds = unet_feeds(batch=1, lh=4, lw=10)
    feeds["sample"] = feeds["sample"].astype(np.float64)
    with pytest.raises(ValueError, match="'sample': float64, expected float32"):
        bound.infer("unet", feeds)


def test_unavailable_gpu_provider_lists_what_is_available(manifest):
    with pytest.raises(EdgeCerError, match=r"--provider cuda: CUDAExecutionProvider is not available in this "
                                           r"onnxruntime \(available: .*CPUExecutionProvider.*\); install onnxruntime-gpu"):
        OrtBackend(manifest, "cuda").load()
    with pytest.raises(EdgeCerError, match="--provider rocm: unknown"):
        OrtBackend(manifest, "rocm")


class PatchedSession:
    """A real CPU session that reports the providers it was asked for (or `reports`), to drive the GPU logic."""

    opened: list = []
    reports: list | None = None
    fail_with: Exception | None = None

    def __init__(self, path, opts, providers=None):
        PatchedSession.opened.append((path, providers))
        if self.fail_with is not None:
            raise self.fail_with
        self.asked = [p[0] if isinstance(p, tuple) else p for p in providers]
        self.real = REAL_SESSION(path, opts, providers=["CPUExecutionProvider"]) \
            if path.endswith("unet/model.onnx") else None
        self.spec = sd_graphs(DIMS)[Path(path).parent.name]

    def get_providers(self):
        return self.reports if self.reports is not None else self.asked

    def __getattr__(self, name):
        if self.real is None and name in ("get_inputs", "get_outputs"):  # a graph only opened: its spec's interface
            tensors = self.spec.inputs if name == "get_inputs" else self.spec.outputs
            return lambda: [SimpleNamespace(name=t.name, shape=t.shape) for t in tensors]
        return getattr(self.real, name)


@pytest.fixture
def gpu_ort(monkeypatch):
    monkeypatch.setattr(ort_backend, "available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", PatchedSession)
    monkeypatch.setattr(PatchedSession, "opened", [])
    return PatchedSession


def test_silent_cpu_fallback_is_refused(gpu_ort, manifest, monkeypatch):
    monkeypatch.setattr(gpu_ort, "reports", ["CPUExecutionProvider"])
    with pytest.raises(EdgeCerError, match=r"model.onnx: onnxruntime fell back to \['CPUExecutionProvider'\] "
                                           r"instead of TensorrtExecutionProvider; .*edge-cer doctor"):
        OrtBackend(manifest, "tensorrt", fixed_shapes=False).load()


def test_cuda_graphs_only_for_the_named_graphs(gpu_ort, manifest):
    OrtBackend(manifest, "cuda", fixed_shapes=False, cuda_graphs=("unet",)).load()
    options = {path.split("/")[-2]: providers[0][1] for path, providers in gpu_ort.opened}
    assert options["unet"].get("enable_cuda_graph") is True and "enable_cuda_graph" not in options["text_encoder"]
    gpu_ort.opened.clear()
    OrtBackend(manifest, "cuda", fixed_shapes=False, cuda_graphs=()).load()
    assert not any("enable_cuda_graph" in providers[0][1] for _, providers in gpu_ort.opened)
    with pytest.raises(EdgeCerError, match="cuda_graphs need io_binding"):
        OrtBackend(manifest, "cuda", io_binding=False)


def test_captured_cuda_graph_refuses_a_new_shape(gpu_ort, manifest):
    backend = OrtBackend(manifest, "cuda", graphs=("unet",), fixed_shapes=False)
    backend.load()
    backend.device = "cpu"  # this logic test binds host OrtValues: there is no CUDA device here
    backend.infer("unet", unet_feeds(seed=0))
    out = backend.infer("unet", unet_feeds(seed=1))["out_sample"]
    np.testing.assert_allclose(out, unet_feeds(seed=1)["sample"] * 0.5 + 3.0, rtol=1e-6)
    with pytest.raises(EdgeCerError, match=r"unet/model.onnx: its CUDA graph was captured for .* --no-cuda-graphs"):
        backend.infer("unet", unet_feeds(batch=1))


def test_session_that_cannot_take_a_cuda_graph_names_the_fix(gpu_ort, manifest, monkeypatch):
    monkeypatch.setattr(gpu_ort, "fail_with", RuntimeError("CUDA graph is not supported: 2 nodes on CPU\nmore"))
    with pytest.raises(EdgeCerError, match=r"could not open it with CUDAExecutionProvider: CUDA graph is not "
                                           r"supported: 2 nodes on CPU \| more; CUDA graphs need every node on the "
                                           r"GPU: pass --no-cuda-graphs$"):
        OrtBackend(manifest, "cuda", graphs=("unet",), fixed_shapes=False, cuda_graphs=True).load()


def test_io_binding_matches_plain_runs_on_every_exported_graph(tiny_export):
    """The real tiny export: output shapes for binding come from the GraphSpecs, for all six graphs."""
    from edge_cer.manifest import load_manifest

    manifest = load_manifest(tiny_export("tiny-sd15", "plus"))
    plain, bound = OrtBackend(manifest, "cpu"), OrtBackend(manifest, "cpu", io_binding=True)
    plain.load()
    bound.load()
    rng = np.random.default_rng(0)
    step = manifest.data["model"]["spatial_multiple"]  # another size than the export's, as a user may run
    for name, spec in manifest.graphs.items():
        shapes = spec.shapes(batch=2, height=manifest.data["export_shape"]["height"] + step, width=step)
        feeds = {t.name: (rng.integers(0, 100, shapes[t.name]) if t.dtype == "int64"
                          else rng.standard_normal(shapes[t.name])).astype(t.dtype) for t in spec.inputs}
        want, got = plain.infer(name, feeds), bound.infer(name, feeds)
        assert want.keys() == got.keys()
        for out in want:
            np.testing.assert_allclose(got[out], want[out], rtol=1e-5, atol=1e-5, err_msg=f"{name}.{out}")
