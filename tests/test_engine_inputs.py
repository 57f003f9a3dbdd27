"""Inputs prepared exactly as diffusers / transformers prepare them, and the engine's bad-input errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from edge_cer.errors import EdgeCerError
from edge_cer.image import CLIP_MEAN, CLIP_STD, clip_pixels, init_image, load_image


def _pictures(tmp_path):
    """Grayscale, RGBA with hidden colour under transparency, a JPEG with EXIF rotation, a tall odd size."""
    rng = np.random.default_rng(0)
    out = {}
    gray = Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8), "L")
    out["gray.png"] = gray
    rgba = rng.integers(0, 255, (40, 40, 4), dtype=np.uint8)
    rgba[:20, :, 3] = 0
    out["rgba.png"] = Image.fromarray(rgba, "RGBA")
    out["tall.png"] = Image.fromarray(rng.integers(0, 255, (97, 33, 3), dtype=np.uint8))
    paths = {}
    for name, im in out.items():
        im.save(tmp_path / name)
        paths[name] = tmp_path / name
    jpeg = Image.fromarray(rng.integers(0, 255, (30, 60, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise
    jpeg.save(tmp_path / "rotated.jpg", exif=exif, quality=90)
    paths["rotated.jpg"] = tmp_path / "rotated.jpg"
    return paths


def test_pictures_are_prepared_as_diffusers_prepares_them(tmp_path):
    pytest.importorskip("diffusers")
    from diffusers.image_processor import VaeImageProcessor
    from diffusers.utils import load_image as diffusers_load_image
    from transformers import CLIPImageProcessor

    clip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    vae = VaeImageProcessor(vae_scale_factor=8)
    for name, path in _pictures(tmp_path).items():
        ours, theirs = load_image(path), diffusers_load_image(str(path))
        assert ours.mode == "RGB" and np.array_equal(np.asarray(ours), np.asarray(theirs)), name
        want = clip(theirs, return_tensors="np").pixel_values
        np.testing.assert_allclose(clip_pixels(ours, 32, CLIP_MEAN, CLIP_STD), want, atol=1e-5, err_msg=name)
        stretched = theirs.resize((48, 64), Image.LANCZOS)
        want = vae.preprocess(stretched).numpy()
        np.testing.assert_allclose(init_image(ours, 64, 48), want, atol=1e-6, err_msg=name)
    # EXIF orientation is applied: the 60x30 JPEG stands upright as 30x60.
    assert load_image(tmp_path / "rotated.jpg").size == (30, 60)


@pytest.mark.parametrize("preset", ["tiny-sd15", "tiny-sd2"])
def test_tokenizer_matches_transformers(tiny_model, tiny_export, preset, caplog):
    from transformers import CLIPTokenizer as Reference

    from edge_cer.manifest import load_manifest
    from edge_cer.tokenizer import CLIPTokenizer

    model, _ = tiny_model(preset)
    reference = Reference.from_pretrained(model / "tokenizer")
    m = load_manifest(tiny_export(preset, "base"))
    ours = CLIPTokenizer(m.tokenizer_dir, m.data["model"]["pad_token"])
    long = "the man is being helped and " * 20
    texts = ["The man is being helped, he will recover!", "", "  Mixed   CASE\twhitespace  ", "naïve café", long]
    with caplog.at_level(logging.WARNING):
        got = ours(texts)
    want = reference(texts, padding="max_length", max_length=77, truncation=True).input_ids
    assert got.shape == (5, 77) and np.array_equal(got, np.array(want))
    assert "truncated" in caplog.text and "helped" in caplog.text


def test_generate_refuses_bad_input(tiny_export, stimulus_png, tmp_path, capsys):
    from edge_cer.cli import main

    engines = str(tiny_export("tiny-sd15", "base"))
    capsys.readouterr()  # the fixture's export progress, when this test builds it
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff garbage")
    base = ["generate", "--engines", engines, "--prompt", "calm", "--out", str(tmp_path / "o.png")]
    cases = [
        (["--image", str(empty)], "empty.png: empty file"),
        (["--image", str(corrupt)], "corrupt.jpg: not a readable picture"),
        (["--image", str(stimulus_png), "--steps", "3", "--strength", "0.2"], "runs no denoising step"),
        (["--image", str(stimulus_png), "--provider", "cuda"], "CUDAExecutionProvider is not available"),
        (["--image", str(stimulus_png), "--height", "60"], "must be positive multiples of 16"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)
    assert not (tmp_path / "o.png").exists()


def test_generate_writes_png_and_npy(tiny_export, stimulus_png, tmp_path):
    from edge_cer.cli import main

    out, npy = tmp_path / "o.png", tmp_path / "o.npy"
    assert main(["generate", "--engines", str(tiny_export("tiny-sd15", "base")), "--image", str(stimulus_png),
                 "--prompt", "calm", "--out", str(out), "--save-npy", str(npy), "--steps", "4"]) == 0
    picture = np.load(npy)
    assert picture.dtype == np.float32 and picture.shape == (64, 48, 3)
    assert 0.0 <= picture.min() and picture.max() <= 1.0
    assert np.array_equal(np.asarray(Image.open(out)), (picture * 255).round().astype(np.uint8))


def test_nan_from_the_unet_is_reported_not_saved(tiny_export, stimulus_png):
    """fp16 overflow shows up as NaN/Inf latents: refused with a clear error."""
    from edge_cer.pipeline import SDPipeline

    pipe = SDPipeline.from_export(tiny_export("tiny-sd15", "base"))
    real = pipe.backend.infer

    def overflowing(graph, feeds):
        out = real(graph, feeds)
        if graph == "unet":
            out["out_sample"] = np.full_like(out["out_sample"], np.inf)
        return out

    pipe.backend.infer = overflowing
    with pytest.raises(EdgeCerError, match="NaN/Inf latents"):
        pipe(load_image(stimulus_png), "calm", steps=3)
