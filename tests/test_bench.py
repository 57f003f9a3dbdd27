"""`edge-cer bench` on the tiny engines (a smoke test: no timing assertions), the FLOP counter on graphs whose
FLOPs are known by hand, and the statistics."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from edge_cer.bench.flops import count_flops
from edge_cer.bench.stats import ratio_summary, summarize
from edge_cer.cli import main


def _bench(tiny_export, tmp_path, *extra):
    out = tmp_path / "tiny"
    rc = main(["bench", "--engines", str(tiny_export("tiny-sd15", "base")), "--steps", "4", "--strength", "0.5",
               "--runs", "2", "--warmup", "1", "--out", str(out), *extra])
    assert rc == 0
    return out, json.loads((out / "result.json").read_text())


def test_bench_tiny_engines(tiny_export, tmp_path):
    trace_path = tmp_path / "trace.json"
    out, result = _bench(tiny_export, tmp_path, "--trace", str(trace_path))
    ours = result["backends"]["onnxruntime-cpu"]
    # 4 steps at strength 0.5 = 2 denoising steps, each run one sample per step
    assert result["denoising_steps"] == 2
    assert ours["stages"]["unet_step"]["n"] == 4 and ours["stages"]["loop_overhead_step"]["n"] == 4
    for stage in ("tokenize", "text_encode", "image_encode", "vae_encode", "vae_decode", "speech_end_to_picture"):
        assert ours["stages"][stage]["n"] == 2, stage
        assert ours["stages"][stage]["p50_ms"] <= ours["stages"][stage]["p99_ms"]
    # the cold total holds everything the warm-cache generation does, plus the picture's encoders
    assert ours["stages"]["total_cold"]["p50_ms"] > ours["stages"]["speech_end_to_picture"]["p50_ms"]
    assert ours["peak_rss_mib"] > 0 and ours["load_seconds"]["load_sessions"] > 0
    assert result["unet"]["batch"] == 2 and result["unet"]["flops"]["nodes_without_shapes"] == []
    assert result["unet"]["gflop_per_step"] > 0 and result["sgemm_peak"]["gflops"] > 0
    assert result["engine"]["manifest_sha256"] and result["machine"]["onnxruntime"]["version"] == onnxruntime.__version__
    assert result["gpu_matmul_peaks"] == {} and "gpu" not in result["machine"]
    assert result["backends"]["onnxruntime-cpu"]["backend"]["fixed_shapes"] is False
    assert "| UNet step | 4 |" in (out / "result.md").read_text()
    assert (out / "result.png").read_bytes()[:4] == b"\x89PNG"
    events = json.loads(trace_path.read_text())["traceEvents"]
    names = [e["name"] for e in events if e["ph"] == "X"]
    assert names.count("unet step 0") == names.count("unet step 1") == 2 and "vae_decoder" in names


def test_bench_vs_torch_pairs(tiny_export, tmp_path):
    pytest.importorskip("diffusers", reason="--vs-torch runs diffusers + torch (the export extra)")
    _, result = _bench(tiny_export, tmp_path, "--vs-torch")
    torch_side = result["backends"]["diffusers-torch-cpu"]
    assert torch_side["stages"]["unet_step"]["n"] == 4  # the same denoising steps as ours
    for stage in ("text_encode", "image_encode", "vae_encode", "vae_decode", "total_cold"):  # one per run
        assert torch_side["stages"][stage]["n"] == 2, stage
    for stage in ("unet_step", "vae_decode", "total_cold"):
        assert result["vs_torch"][stage]["n"] == 2 and result["vs_torch"][stage]["geomean"] > 0
    assert "diffusers-torch-cpu" in result["unet"]["achieved"]


@pytest.mark.parametrize("backend", ["cuda", "tensorrt"])
def test_gpu_backend_refused_on_cpu_build(tiny_export, tmp_path, capsys, backend):
    import onnxruntime as ort

    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()):
        pytest.skip("this onnxruntime has GPU providers")
    engines = str(tiny_export("tiny-sd15", "base"))
    capsys.readouterr()  # the fixture's export log
    rc = main(["bench", "--engines", engines, "--backend", backend, "--out", str(tmp_path / "gpu")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is not available in this onnxruntime" in err[0]
    assert not (tmp_path / "gpu").exists()


def _save(tmp_path, nodes, inputs, outputs, initializers=(), domain_ops=False):
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if domain_ops else [])
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    return path


def test_flops_conv_matmul_gemm(tmp_path):
    f = TensorProto.FLOAT
    w = helper.make_tensor("w", f, (8, 3, 3, 3), np.zeros(8 * 27, np.float32))
    b = helper.make_tensor("b", f, (16, 5), np.zeros(80, np.float32))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),  # (N, 8, 10, 12)
             helper.make_node("MatMul", ["c", "m"], ["y"]),  # (N, 8, 10, 12) @ (12, 16)
             helper.make_node("Reshape", ["y", "shape"], ["r"]),
             helper.make_node("Gemm", ["r", "b"], ["z"])]  # (N*80, 16) @ (16, 5)
    shape = helper.make_tensor("shape", TensorProto.INT64, (2,), [-1, 16])
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", f, ("N", 3, 10, 12)),
                                   helper.make_tensor_value_info("m", f, (12, 16))],
                 [helper.make_tensor_value_info("z", f, None)], [w, b, shape])
    got = count_flops(path, {"x": (2, 3, 10, 12), "m": (12, 16)})
    conv = 2 * (2 * 8 * 10 * 12) * (3 * 3 * 3)
    matmul = 2 * (2 * 8 * 10 * 16) * 12
    gemm = 2 * (2 * 8 * 10 * 5) * 16
    assert got.by_op == {"Conv": conv, "MatMul": matmul, "Gemm": gemm}
    assert got.total == conv + matmul + gemm and got.uncounted == []


def test_flops_fused_attention(tmp_path):
    """onnxruntime's MultiHeadAttention (what the UNet fusion writes): Q K^T and attention x V."""
    f = TensorProto.FLOAT
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["o"], domain="com.microsoft", num_heads=4)
    path = _save(tmp_path, [node], [helper.make_tensor_value_info(n, f, ("B", n.upper(), 64)) for n in "qkv"],
                 [helper.make_tensor_value_info("o", f, None)], domain_ops=True)
    got = count_flops(path, {"q": (2, 100, 64), "k": (2, 77, 64), "v": (2, 77, 64)})
    assert got.total == 2 * (2 * 100 * 77 * 64) * 2


def test_flops_packed_qkv_attention(tmp_path):
    """The UNet fusion's self-attention: one packed (B, S, N, 3, H) input."""
    f = TensorProto.FLOAT
    node = helper.make_node("MultiHeadAttention", ["qkv"], ["o"], domain="com.microsoft", num_heads=8)
    path = _save(tmp_path, [node], [helper.make_tensor_value_info("qkv", f, ("B", "S", 8, 3, 40))],
                 [helper.make_tensor_value_info("o", f, None)], domain_ops=True)
    got = count_flops(path, {"qkv": (2, 1024, 8, 3, 40)})
    assert got.total == 2 * (2 * 1024 * 1024 * 320) * 2 and got.uncounted == []


def test_stats():
    s = summarize([0.001 * x for x in range(1, 101)])
    assert s["n"] == 100 and s["p50_ms"] == pytest.approx(50.5) and s["p99_ms"] == pytest.approx(99.01)
    assert s["mean_ms"] == pytest.approx(50.5) and s["stdev_ms"] == pytest.approx(29.011, rel=1e-4)
    assert summarize([])["n"] == 0
    r = ratio_summary([2.0, 0.5, 1.0])
    assert r["geomean"] == pytest.approx(1.0) and r["min"] == 0.5 and r["n"] == 3


def test_matmul_peak_runs_an_fp16_graph_on_the_provider():
    """The GPU peak's code path (fp16 MatMul graph, IO binding, best of runs), here on the CPU provider."""
    from edge_cer.bench.machine import matmul_peak

    peak = matmul_peak("cpu", n=128, seconds=0.05)
    assert peak["provider"] == "CPUExecutionProvider" and peak["dtype"] == "float16" and peak["runs"] >= 3
    assert peak["gflops"] == pytest.approx(2 * 128**3 / peak["best_ms"] / 1e6)


def test_gpu_backends_are_measured_against_their_own_peak():
    from edge_cer.bench.report import achieved

    step = {"n": 3, "p50_ms": 10.0, "min_ms": 8.0}
    backends = {n: {"stages": {"unet_step": step}} for n in ("onnxruntime-cpu", "onnxruntime-cuda",
                                                              "diffusers-torch-cuda")}
    got = achieved(backends, 100.0, peak_gflops=500.0, gpu_peaks={"onnxruntime-cuda": {"gflops": 400_000.0}})
    assert got["onnxruntime-cpu"]["percent_of_peak"] == pytest.approx(100 * 10_000 / 500)
    assert got["onnxruntime-cuda"]["percent_of_peak"] == pytest.approx(100 * 10_000 / 400_000)
    assert got["diffusers-torch-cuda"]["peak_gflops"] == 400_000.0
    assert "onnxruntime-cuda" not in achieved(backends, 100.0, 500.0, {"onnxruntime-cuda": {"error": "no GPU"}})
