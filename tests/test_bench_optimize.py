"""`edge-cer export sd --optimize cpu|gpu`: onnxruntime's stable-diffusion fusions, run at concrete sizes (fast) and
still dynamic afterwards; the fused exports match torch (on CPU for the CPU fusions; the GPU fusions write
CUDA-only ops, which were checked against torch before fusing: nothing here ran them on a GPU)."""

from __future__ import annotations

from collections import Counter

import onnx

from edge_cer.manifest import load_manifest


def _dynamic_inputs(path) -> dict:
    model = onnx.load(str(path), load_external_data=False)
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}


def test_optimize_cpu_fuses_unet_attention(tiny_model, tmp_path):
    """Also the numpy >= 2.4 workaround (scoped get_num_heads) and the concrete sizes the fusions ran at: the
    fused graph keeps its dynamic inputs and matches torch at two other shapes."""
    from export.sd import ExportOptions, export_sd

    model, adapters = tiny_model("tiny-sd15")
    out = export_sd(ExportOptions(model=model, ip_adapter=adapters["base"], out=tmp_path / "fused", height=64,
                                  width=48, optimize="cpu"))
    manifest = load_manifest(out)
    unet = manifest.data["graphs"]["unet"]
    ops = {n.op_type for n in onnx.load(str(manifest.graph_path("unet")), load_external_data=False).graph.node}
    assert {"Attention", "MultiHeadAttention"} & ops  # the fusion ran instead of crashing
    assert unet["optimized"]["nodes_after"] < unet["optimized"]["nodes_before"]
    assert {"Attention", "MultiHeadAttention"} & set(unet["optimized"]["fused_ops"])
    assert unet["validation"]["max_rel_diff"] <= 1e-4  # the export's own check against torch, after fusion
    assert {(1, 64, 48), (2, 80, 32)} == {(s["batch"], s["height"], s["width"]) for s in unet["validation"]["shapes"]}
    assert _dynamic_inputs(manifest.graph_path("unet"))["sample"] == ["batch", 4, "latent_height", "latent_width"]


def test_optimize_gpu_fuses_the_same_at_fixed_sizes_as_symbolically(tiny_model, tmp_path):
    """onnxruntime's GPU diffusion fusions (GroupNorm NHWC, SkipGroupNorm, BiasSplitGelu, BiasAdd,
    MultiHeadAttention, NhwcConv) give the same graph when their shape inference runs at concrete sizes (fast) as
    on the symbolic sizes (slow), and the result keeps its dynamic inputs."""
    import shutil

    from export import onnx_export
    from export.sd import ExportOptions, export_sd

    model, adapters = tiny_model("tiny-sd15")
    out = export_sd(ExportOptions(model=model, ip_adapter=adapters["base"], out=tmp_path / "plain", height=64,
                                  width=48))
    src = load_manifest(out).graph_path("unet")
    fused = {}
    for mode, dims in (("symbolic", None), ("sized", {"batch": 2, "latent_height": 8, "latent_width": 6})):
        path = tmp_path / mode / "model.onnx"
        path.parent.mkdir()
        shutil.copy(src, path)
        steps = []
        record = onnx_export.optimize(path, "unet", use_gpu=True, dims=dims, progress=steps.append)
        assert len(steps) == onnx_export.FUSION_STEPS  # our progress bar, not onnxruntime's tqdm
        assert _dynamic_inputs(path)["sample"] == ["batch", 4, "latent_height", "latent_width"]
        assert not list(path.parent.glob("*.sized.onnx"))
        assert {"GroupNorm", "SkipGroupNorm", "BiasSplitGelu", "BiasAdd", "MultiHeadAttention",
                "NhwcConv"} <= set(record["fused_ops"])
        fused[mode] = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert fused["sized"] == fused["symbolic"]
