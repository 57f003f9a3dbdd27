"""The tiny VAE decoder option: diffusers' AutoencoderTiny (TAESD layout) from the factory, exported beside the full
decoder, chosen per generation; its decode matches diffusers' own AutoencoderTiny."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_cer.errors import EdgeCerError
from edge_cer.manifest import load_manifest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_vae_export(tiny_model, tmp_path_factory):
    from export.sd import ExportOptions, export_sd

    model, adapters = tiny_model("tiny-sd15")
    out = tmp_path_factory.mktemp("tiny-vae") / "export"
    return export_sd(ExportOptions(model=model, ip_adapter=adapters["base"], out=out, height=64, width=48,
                                   tiny_vae=model.parent / "tiny-sd15-taesd"))


def test_decode_matches_diffusers_autoencoder_tiny(tiny_model, tiny_vae_export):
    from diffusers import AutoencoderTiny

    from edge_cer.backends import create_backend
    from edge_cer.pipeline import SDPipeline

    model, _ = tiny_model("tiny-sd15")
    manifest = load_manifest(tiny_vae_export)
    assert manifest.data["graphs"]["vae_decoder_tiny"]["validation"]["max_rel_diff"] <= 1e-4
    backend = create_backend(manifest, "cpu")
    backend.load()
    pipe = SDPipeline(manifest, backend, vae="tiny")
    latents = np.random.default_rng(0).standard_normal((1, 4, 8, 6)).astype(np.float32) * 0.8
    ours = pipe.decode_latents(latents)
    reference = AutoencoderTiny.from_pretrained(model.parent / "tiny-sd15-taesd", use_safetensors=True).eval()
    with torch.no_grad():  # diffusers' SD pipeline: vae.decode(latents / scaling_factor), then postprocess
        sample = reference.decode(torch.from_numpy(latents) / reference.config.scaling_factor).sample
    want = (sample / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert ours.shape == (64, 48, 3)
    np.testing.assert_allclose(ours, want, atol=1e-4, rtol=0)
    full = SDPipeline(manifest, backend).decode_latents(latents)
    assert np.abs(full - ours).max() > 0.05  # a different decoder really ran


def test_generation_with_either_decoder(tiny_vae_export, stimulus_png):
    from edge_cer.image import load_image
    from edge_cer.pipeline import SDPipeline

    image = load_image(stimulus_png)
    pipe = SDPipeline.from_export(tiny_vae_export, vae="tiny")
    out = pipe(image, "the man is being helped.", steps=4, seed=3)
    assert out.params["vae"] == "tiny" and out.image.shape == (64, 48, 3) and np.isfinite(out.image).all()


def test_refusals(tiny_export, tmp_path):
    from edge_cer.pipeline import SDPipeline

    with pytest.raises(EdgeCerError, match=r"has no tiny VAE decoder; re-export with `edge-cer export sd --tiny-vae"):
        SDPipeline.from_export(tiny_export("tiny-sd15", "base"), vae="tiny")
    from export.checkpoint import load_tiny_vae

    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(EdgeCerError, match="not a diffusers AutoencoderTiny folder"):
        load_tiny_vae(tmp_path, None)


def test_factory_tiny_vae_has_taesd_architecture(tmp_path):
    """The real presets get diffusers' AutoencoderTiny defaults, which are TAESD's own architecture."""
    from export.factory import build_tiny_vae

    config = json.loads((build_tiny_vae("sd-turbo", tmp_path / "taesd") / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderTiny"
    assert config["decoder_block_out_channels"] == [64, 64, 64, 64] and config["num_decoder_blocks"] == [3, 3, 3, 1]
    assert config["encoder_block_out_channels"] == [64, 64, 64, 64] and config["num_encoder_blocks"] == [1, 3, 3, 3]
    assert config["latent_channels"] == 4 and config["scaling_factor"] == 1.0 and config["latent_magnitude"] == 3
    assert (tmp_path / "taesd" / "diffusion_pytorch_model.safetensors").is_file()


def test_protocol_field(tmp_path):
    from edge_cer.session.protocol import load_protocol

    path = tmp_path / "p.toml"
    path.write_text('[generation]\nvae = "tiny"\n')
    assert load_protocol(path).generation.vae == "tiny"
    path.write_text('[generation]\nvae = "small"\n')
    with pytest.raises(EdgeCerError, match=r'\[generation\] vae = \'small\'.*use "full" or "tiny"'):
        load_protocol(path)
