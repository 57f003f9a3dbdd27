"""`edge-cer export sd --optimize cpu`: onnxruntime's UNet attention fusion runs under numpy >= 2.4 (the scoped
get_num_heads workaround in export/onnx_export.py) and the fused export still matches torch."""

from __future__ import annotations

import onnx


def test_optimize_cpu_fuses_unet_attention(tiny_model, tmp_path):
    from export.sd import ExportOptions, export_sd
    from edge_cer.manifest import load_manifest

    model, adapters = tiny_model("tiny-sd15")
    out = export_sd(ExportOptions(model=model, ip_adapter=adapters["base"], out=tmp_path / "fused", height=64,
                                  width=48, optimize="cpu"))
    manifest = load_manifest(out)
    unet = manifest.data["graphs"]["unet"]
    ops = {n.op_type for n in onnx.load(str(manifest.graph_path("unet")), load_external_data=False).graph.node}
    assert {"Attention", "MultiHeadAttention"} & ops  # the fusion ran instead of crashing
    assert unet["optimized"]["nodes_after"] < unet["optimized"]["nodes_before"]
    assert unet["validation"]["max_rel_diff"] <= 1e-4  # the export's own check against torch, after fusion
