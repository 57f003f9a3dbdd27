"""LOGIC TESTS of the TensorRT engine build (export/tensorrt.py) against a fake `tensorrt` module.

They check the calls our code makes (network flags, FP16, profiles, timing cache) and the manifest entry it
returns. They never ran TensorRT or a GPU: see docs/gpu.md, "What has run on hardware".
"""

from __future__ import annotations

import io
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from edge_cer.errors import EdgeCerError
from edge_cer.graphs import ModelDims, sd_graphs
from export.tensorrt import TIMING_CACHE, build_engines, engine_profile, profile_dims
from tests.fake_gpu import TINY_DIMS, install_cudart, install_tensorrt, io_only_export

SPECS = sd_graphs(ModelDims(**TINY_DIMS))


def options(tmp_path, dynamic=False):
    return SimpleNamespace(height=64, width=48, tensorrt_dynamic=dynamic, precision="fp16", out=tmp_path / "out")


def build(tmp_path, dynamic=False):
    root = tmp_path / "export"
    data = io_only_export(root)
    record = build_engines(root, SPECS, data["graphs"], options(tmp_path, dynamic), Console(file=io.StringIO()))
    return root, data, record


def test_static_profile_pins_pixels_and_spans_batch_one_to_two():
    lo, opt, hi = profile_dims("unet", 512, 768, dynamic=False)
    assert lo == {"batch": 1, "height": 512, "width": 768}
    assert opt == {"batch": 2, "height": 512, "width": 768}  # guidance: the UNet runs negative + positive
    assert hi == {"batch": 2, "height": 512, "width": 768}
    assert profile_dims("vae_decoder", 512, 768, dynamic=False)[1]["batch"] == 1


def test_dynamic_profile_covers_256_to_1024_and_the_export_size():
    lo, opt, hi = profile_dims("unet", 512, 512, dynamic=True)
    assert (lo["height"], lo["width"], hi["height"], hi["width"]) == (256, 256, 1024, 1024)
    assert (opt["height"], opt["width"]) == (512, 512)
    lo, _, hi = profile_dims("unet", 64, 1280, dynamic=True)
    assert (lo["height"], hi["width"]) == (64, 1280)


def test_engine_profile_records_latent_shapes_for_every_input():
    profile = engine_profile(SPECS["unet"], 64, 48, dynamic=False)
    assert set(profile) == {"sample", "timestep", "encoder_hidden_states", "ip_tokens", "ip_scale"}
    assert profile["sample"] == {"min": [1, 4, 8, 6], "opt": [2, 4, 8, 6], "max": [2, 4, 8, 6]}
    assert profile["timestep"] == {"min": [1], "opt": [1], "max": [1]}
    vae = engine_profile(SPECS["vae_decoder"], 64, 48, dynamic=True)["latent_sample"]
    assert vae["min"] == [1, 4, 8, 6] and vae["max"] == [2, 4, 128, 128]


def test_build_calls_tensorrt_as_documented_and_records_the_manifest_entry(monkeypatch, tmp_path):
    # Precondition: a fake TensorRT + CUDA runtime and an export folder with one ONNX file per graph.
    rt = install_cudart(monkeypatch, name=b"NVIDIA H100 80GB HBM3", cc=(9, 0))
    trt = install_tensorrt(monkeypatch, rt)
    (tmp_path / "out" / "tensorrt").mkdir(parents=True)
    (tmp_path / "out" / TIMING_CACHE).write_bytes(b"earlier")
    # Under test
    root, data, record = build(tmp_path)
    # Postcondition: explicit-batch networks, FP16, one shared timing cache seeded from the earlier export.
    assert [c[1] for c in trt.log if c[0] == "create_network"] == [0] * len(SPECS)
    builds = [c for c in trt.log if c[0] == "build"]
    assert len(builds) == len(SPECS) and all(flags == ["FP16"] for _, flags, _ in builds)
    unet_shapes = builds[list(SPECS).index("unet")][2]
    assert unet_shapes["sample"] == ((1, 4, 8, 6), (2, 4, 8, 6), (2, 4, 8, 6))
    assert len(trt.timing_caches) == 1 and trt.timing_caches[0].seed == b"earlier"
    assert {c[1:] for c in trt.log if c[0] == "set_timing_cache"} == {(id(trt.timing_caches[0]), False)}
    assert (root / TIMING_CACHE).read_bytes() == b"timing:earlier" and record["timing_cache_seeded"]
    parsed = [c[1] for c in trt.log if c[0] == "parse_from_file"]
    assert parsed == [str(root / data["graphs"][n]["file"]) for n in SPECS]
    assert record["version"] == "10.3.0" and record["flags"] == ["FP16"] and not record["dynamic"]
    assert record["device"] == {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert record["cuda"] == {"runtime": "12.4", "driver": "12.5"}
    for name, entry in record["engines"].items():
        assert entry["file"] == f"tensorrt/{name}.plan" and (root / entry["file"]).stat().st_size == entry["bytes"]
        assert entry["profile"] == engine_profile(SPECS[name], 64, 48, dynamic=False)


def test_missing_tensorrt_is_one_line_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgeCerError, match=r"`tensorrt` is not installed; install it with: pip install 'edge-cer\[gpu\]'"):
        build(tmp_path)


def test_missing_gpu_is_one_line(monkeypatch, tmp_path):
    install_tensorrt(monkeypatch, install_cudart(monkeypatch, devices=0))
    with pytest.raises(EdgeCerError, match=r"no CUDA GPU #0 \(cudaErrorNoDevice\).*edge-cer doctor") as err:
        build(tmp_path)
    assert "\n" not in str(err.value)


def test_missing_cuda_python_is_one_line(monkeypatch, tmp_path):
    install_tensorrt(monkeypatch, None)
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(EdgeCerError, match=r"`cuda-python` is not installed"):
        build(tmp_path)


def test_parser_and_build_failures_name_the_onnx_file(monkeypatch, tmp_path):
    rt = install_cudart(monkeypatch)
    install_tensorrt(monkeypatch, rt, parse_ok=False)
    with pytest.raises(EdgeCerError, match=r"text_encoder/model.onnx: TensorRT's ONNX parser refused it \(In node 0"):
        build(tmp_path)
    install_tensorrt(monkeypatch, rt, build_ok=False)
    with pytest.raises(EdgeCerError, match=r"text_encoder/model.onnx: TensorRT engine build failed"):
        build(tmp_path / "again")


def test_export_options_carry_what_the_build_reads(monkeypatch, tmp_path):
    """The real ExportOptions of `edge-cer export sd`, not a stand-in."""
    pytest.importorskip("torch", reason="export.sd is the export stage (torch)")
    from export.sd import ExportOptions

    install_tensorrt(monkeypatch, install_cudart(monkeypatch))
    root = tmp_path / "export"
    data = io_only_export(root)
    o = ExportOptions(model=tmp_path, ip_adapter=tmp_path / "a.safetensors", out=tmp_path / "out", height=64,
                      width=48, precision="fp16", tensorrt=True, tensorrt_dynamic=True)
    record = build_engines(root, SPECS, data["graphs"], o, Console(file=io.StringIO()))
    assert record["dynamic"] and record["onnx_precision"] == "fp16"
    assert record["engines"]["unet"]["profile"]["sample"]["max"] == [2, 4, 128, 128]


@pytest.mark.slow
def test_export_sd_with_tensorrt_writes_a_verified_manifest(monkeypatch, tmp_path, tiny_model):
    """`edge-cer export sd --tensorrt` end to end on the tiny model, TensorRT and CUDA faked (logic test)."""
    from edge_cer.backends.tensorrt import TensorRTBackend
    from edge_cer.cli import main
    from edge_cer.manifest import load_manifest

    install_tensorrt(monkeypatch, install_cudart(monkeypatch))
    model, adapters = tiny_model("tiny-sd15")
    out = tmp_path / "export"
    assert main(["export", "sd", "--model", str(model), "--ip-adapter", str(adapters["base"]), "--out", str(out),
                 "--height", "64", "--width", "48", "--tensorrt"]) == 0
    manifest = load_manifest(out)  # every plan and the timing cache are hashed with the rest
    assert set(manifest.data["tensorrt"]["engines"]) == set(manifest.data["graphs"])
    assert all(f"tensorrt/{n}.plan" in manifest.data["files"] for n in manifest.data["graphs"])
    assert "tensorrt/timing.cache" in manifest.data["files"]
    backend = TensorRTBackend(manifest, graphs=("unet",))
    backend.load()
    assert backend.infer("unet", {t.name: np.zeros(s, t.dtype) for t, s in (
        (t, manifest.graphs["unet"].shapes(batch=2, height=64, width=48)[t.name])
        for t in manifest.graphs["unet"].inputs)})["out_sample"].shape == (2, 4, 8, 6)
