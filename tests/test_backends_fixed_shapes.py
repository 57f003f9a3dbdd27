"""Fixed free dimensions: the optimised graphs lose their shape subgraphs (what keeps every node on the GPU and
lets CUDA graphs capture), one session per size, CUDA-graph defaults and the GPU-library errors.

The op counts and the numerics run for real on CPU (ONNX Runtime's graph optimiser is the same code for every
provider); the CUDA parts are LOGIC TESTS with a patched onnxruntime and did not run on a GPU."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime
import pytest

from edge_cer.backends import ort as ort_backend
from edge_cer.backends.ort import OrtBackend, session_options
from edge_cer.errors import EdgeCerError
from edge_cer.manifest import load_manifest
from tests.test_backends_ort import PatchedSession, manifest  # noqa: F401 - the fixture

SHAPE_OPS = {"Shape", "Size", "ConstantOfShape"}  # every shape subgraph starts at one of these


def optimised_ops(path, tmp_path, dims=None) -> tuple[Counter, onnx.ModelProto]:
    out = tmp_path / f"optimised-{bool(dims)}.onnx"
    onnxruntime.InferenceSession(str(path), session_options(dims=dims, optimized_model=out),
                                 providers=["CPUExecutionProvider"])
    model = onnx.load(str(out))
    return Counter(n.op_type for n in model.graph.node), model


def test_fixed_dims_fold_every_shape_subgraph_of_the_unet(tiny_export, tmp_path):
    manifest = load_manifest(tiny_export("tiny-sd15", "base"))
    path = manifest.graph_path("unet")
    dynamic, _ = optimised_ops(path, tmp_path)
    assert sum(dynamic[op] for op in SHAPE_OPS) > 20  # the exported UNet computes its reshapes at run time
    dims = {"batch": 2, "latent_height": 8, "latent_width": 6}
    fixed, model = optimised_ops(path, tmp_path, dims)
    assert not {op: fixed[op] for op in SHAPE_OPS if fixed[op]}
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape"]
    assert reshapes and all(n.input[1] in constants for n in reshapes)  # every target shape folded to a constant
    assert sum(fixed.values()) < 0.7 * sum(dynamic.values())


def test_fixed_shape_sessions_match_the_dynamic_session(tiny_export):
    manifest = load_manifest(tiny_export("tiny-sd15", "base"))
    dynamic = OrtBackend(manifest, "cpu", graphs=("unet", "vae_decoder"))
    fixed = OrtBackend(manifest, "cpu", graphs=("unet", "vae_decoder"), fixed_shapes=True, io_binding=True)
    dynamic.load()
    fixed.load()
    assert fixed.sessions == {}  # opened at their first size
    rng = np.random.default_rng(0)
    for batch, lh, lw in ((2, 8, 6), (1, 8, 6), (2, 8, 6), (1, 4, 10)):
        feeds = {"sample": rng.standard_normal((batch, 4, lh, lw), np.float32),
                 "timestep": np.array([500.0], np.float32),
                 "encoder_hidden_states": rng.standard_normal((batch, 77, 32), np.float32),
                 "ip_tokens": rng.standard_normal((batch, 4, 32), np.float32),
                 "ip_scale": np.array([0.6], np.float32)}
        np.testing.assert_allclose(fixed.infer("unet", feeds)["out_sample"],
                                   dynamic.infer("unet", feeds)["out_sample"], rtol=1e-5, atol=1e-5)
    latents = rng.standard_normal((1, 4, 8, 6), np.float32)
    np.testing.assert_allclose(fixed.infer("vae_decoder", {"latent_sample": latents})["sample"],
                               dynamic.infer("vae_decoder", {"latent_sample": latents})["sample"], rtol=1e-5,
                               atol=1e-5)
    assert sorted(fixed.sessions) == [
        ("unet", (("batch", 1), ("latent_height", 4), ("latent_width", 10))),
        ("unet", (("batch", 1), ("latent_height", 8), ("latent_width", 6))),
        ("unet", (("batch", 2), ("latent_height", 8), ("latent_width", 6))),
        ("vae_decoder", (("batch", 1), ("height", 64), ("latent_height", 8), ("latent_width", 6), ("width", 48))),
    ]
    assert fixed.sessions[sorted(fixed.sessions)[2]].get_inputs()[0].shape == [2, 4, 8, 6]


@pytest.fixture
def cuda_ort(monkeypatch):
    monkeypatch.setattr(ort_backend, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", PatchedSession)
    monkeypatch.setattr(PatchedSession, "opened", [])
    monkeypatch.setattr(onnxruntime, "preload_dlls", lambda: None, raising=False)
    ort_backend.preload_gpu_libraries.cache_clear()
    yield PatchedSession
    ort_backend.preload_gpu_libraries.cache_clear()


def cuda_backend(manifest, **options) -> OrtBackend:  # noqa: F811
    backend = OrtBackend(manifest, "cuda", graphs=("unet",), **options)
    backend.load()
    backend.device = "cpu"  # the patched sessions are CPU sessions: bind host buffers
    return backend


def test_cuda_defaults_to_fixed_shapes_and_a_cuda_graph_per_size(cuda_ort, manifest):  # noqa: F811
    from tests.fake_gpu import unet_feeds

    backend = cuda_backend(manifest)
    assert backend.fixed_shapes and backend.io_binding and "unet" in backend.cuda_graphs
    assert cuda_ort.opened == []
    backend.infer("unet", unet_feeds(seed=0))
    backend.infer("unet", unet_feeds(seed=1))
    out = backend.infer("unet", unet_feeds(batch=1))["out_sample"]  # a new size: a new session, no error
    np.testing.assert_allclose(out, unet_feeds(batch=1)["sample"] * 0.5 + 3.0, rtol=1e-6)
    assert len(cuda_ort.opened) == 2
    assert all(providers[0][1]["enable_cuda_graph"] is True for _, providers in cuda_ort.opened)


def test_a_session_that_cannot_take_a_cuda_graph_is_reopened_without_one(cuda_ort, manifest, monkeypatch):  # noqa: F811
    from tests.fake_gpu import unet_feeds

    real_init = PatchedSession.__init__

    def refuse_graphs(self, path, opts, providers=None):
        if providers[0][1].get("enable_cuda_graph"):
            PatchedSession.opened.append((path, providers))
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : This session cannot use the CUDA Graph feature\n"
                               "  as requested by the user as all compute graph nodes have not been partitioned")
        real_init(self, path, opts, providers)

    monkeypatch.setattr(PatchedSession, "__init__", refuse_graphs)
    backend = cuda_backend(manifest)
    backend.infer("unet", unet_feeds())
    assert backend.cuda_graphs_dropped == {"unet": "[ONNXRuntimeError] : 1 : FAIL : This session cannot use the "
                                                   "CUDA Graph feature | as requested by the user as all compute "
                                                   "graph nodes have not been partitioned"}
    assert [bool(p[0][1].get("enable_cuda_graph")) for _, p in cuda_ort.opened] == [True, False]
    backend.infer("unet", unet_feeds(batch=1))  # known not to take one: no second try
    assert [bool(p[0][1].get("enable_cuda_graph")) for _, p in cuda_ort.opened] == [True, False, False]
    with pytest.raises(EdgeCerError, match=r"model.onnx: onnxruntime could not open it with CUDAExecutionProvider: "
                                           r".*; CUDA graphs need every node on the GPU: pass --no-cuda-graphs$"):
        cuda_backend(manifest, cuda_graphs=True).infer("unet", unet_feeds())
    cuda_ort.opened.clear()
    cuda_backend(manifest, cuda_graphs=False).infer("unet", unet_feeds())
    assert [bool(p[0][1].get("enable_cuda_graph")) for _, p in cuda_ort.opened] == [False]


def test_missing_cuda_libraries_name_the_pip_extras(cuda_ort, manifest, monkeypatch):  # noqa: F811
    from tests.fake_gpu import unet_feeds

    def preload():
        print("Failed to load libcudnn.so.9: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(onnxruntime, "preload_dlls", preload)
    monkeypatch.setattr(cuda_ort, "reports", ["CPUExecutionProvider"])
    with pytest.raises(EdgeCerError, match=r"model.onnx: onnxruntime fell back to \['CPUExecutionProvider'\] instead "
                                           r"of CUDAExecutionProvider; CUDA/cuDNN libraries missing \(Failed to load "
                                           r"libcudnn.so.9: .*\); pip install 'edge-cer\[gpu\]' \(onnxruntime-gpu "
                                           r"with its cuda and cudnn extras\)"):
        cuda_backend(manifest).infer("unet", unet_feeds())


def test_cli_options_reach_the_backend():
    import argparse

    from edge_cer.backends import add_provider_arguments, backend_options

    p = argparse.ArgumentParser()
    add_provider_arguments(p)
    assert backend_options(p.parse_args([])) == {}
    assert backend_options(p.parse_args(["--no-cuda-graphs"])) == {"cuda_graphs": False}
    assert backend_options(p.parse_args(["--cuda-graphs", "--provider", "cuda"])) == {"cuda_graphs": True}
    assert p.parse_args(["--provider", "tensorrt-rtx"]).provider == "tensorrt-rtx"
