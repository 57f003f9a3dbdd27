"""Opt-in (`pytest -m slow`): the architecture-true SD-1.5 UNet + IP-Adapter (real configs, random weights).

3.4 GB of fp32 UNet weights exceed protobuf's 2 GB limit, so this is the external-data path end to end: export,
checker, validation against torch on two shapes, manifest hashes, and one engine run. About 10 minutes and
~14 GB of RAM on a 2-core machine."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_architecture_true_sd15_exports_with_external_data(tmp_path, stimulus_png):
    pytest.importorskip("torch")
    from edge_cer.image import load_image
    from edge_cer.manifest import load_manifest
    from edge_cer.pipeline import SDPipeline
    from export.factory import build
    from export.sd import ExportOptions, export_sd

    model, adapters = build("sd15", tmp_path / "models")
    out = export_sd(ExportOptions(model=model, ip_adapter=adapters["base"], out=tmp_path / "sd15", height=256,
                                  width=256))
    m = load_manifest(out)
    unet = m.data["graphs"]["unet"]
    assert unet["bytes"] > 3_000_000_000
    assert sorted(p.name for p in (out / "unet").iterdir()) == ["model.onnx", "model.onnx.data"]
    assert unet["validation"]["max_rel_diff"] <= 1e-4
    assert m.data["model"]["dims"] == {"text_hidden": 768, "latent_channels": 4, "image_size": 224,
                                       "image_embed_dim": 1024, "image_tokens": 1, "ip_tokens": 4, "adapter": "base"}
    # SD-1.5 ships a PNDM config, which has no numpy port: the engine needs --scheduler.
    picture = SDPipeline.from_export(out)(load_image(stimulus_png), "calm", steps=2, strength=1.0, guidance=1.0,
                                          scheduler="euler").image
    assert picture.shape == (256, 256, 3)
