"""Picture affect: pixel proxies on pictures built to have known colour, SSIM, and CLIP zero-shot arithmetic."""

import numpy as np
import pytest
from PIL import Image

from edge_cer.affect.picture import ClipZeroShot, picture_proxies, ssim
from edge_cer.errors import EdgeCerError


def solid(rgb, size=(32, 48)):
    return np.broadcast_to(np.asarray(rgb, dtype=np.float32), (*size, 3)).copy()


def test_valdez_mehrabian_coefficients_on_solid_colours():
    grey = picture_proxies(solid([0.5, 0.5, 0.5]))  # B = 0.5, S = 0
    assert grey.pleasure == pytest.approx(0.69 * 0.5)
    assert grey.arousal == pytest.approx(-0.31 * 0.5)
    assert grey.dominance == pytest.approx(-0.76 * 0.5)
    assert grey.colourfulness == pytest.approx(0.0, abs=1e-7)
    assert grey.red_share == 0.0 and grey.warm_share == 0.0
    white = picture_proxies(solid([1.0, 1.0, 1.0]))
    assert white.valence_proxy == pytest.approx(2 * 0.69 / 0.91 - 1)


def test_darker_lowers_valence_and_red_raises_red_share():
    rng = np.random.default_rng(0)
    scene = rng.uniform(0.2, 0.9, (64, 64, 3)).astype(np.float32)
    darker = scene * 0.5
    redder = scene.copy()
    redder[16:48, 16:48] = [0.7, 0.05, 0.05]  # a quarter of the frame turned blood red
    base = picture_proxies(scene)
    assert picture_proxies(darker).valence_proxy < base.valence_proxy
    outside = scene.copy()
    outside[16:48, 16:48] = 0.5  # grey: not red, so this counts the red pixels outside the patch
    assert picture_proxies(redder).red_share == pytest.approx(picture_proxies(outside).red_share + 0.25)


def test_colourfulness_matches_hasler_suesstrunk_on_two_colour_picture():
    half = solid([0.0, 0.0, 0.0], (2, 2))
    half[0] = [1.0, 0.0, 0.0]  # rg = [1, 0], yb = [0.5, 0]
    expected = np.hypot(0.5, 0.25) + 0.3 * np.hypot(0.5, 0.25)
    assert picture_proxies(half).colourfulness == pytest.approx(expected, rel=1e-6)


def test_ssim_identity_uniform_closed_form_and_resize():
    rng = np.random.default_rng(1)
    x = rng.random((40, 40, 3)).astype(np.float32)
    assert ssim(x, x) == pytest.approx(1.0)
    noisy = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
    assert ssim(x, noisy) < 0.9
    # Two uniform pictures: only the luminance term remains, (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.3, 0.6, 0.01**2
    assert ssim(solid([a] * 3), solid([b] * 3)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)
    # A picture of another size is compared after resizing to the reference.
    big = Image.fromarray((x * 255).astype(np.uint8)).resize((80, 80), Image.BILINEAR)
    assert ssim(x, big) > 0.5


def test_clip_zero_shot_with_fabricated_embeddings():
    rng = np.random.default_rng(2)
    text = rng.normal(size=(3, 16))
    entry = {"prompts": ["a happy scene", "a neutral scene", "a photo of blood"], "valence": [1.0, 0.0, -1.0],
             "text_embeds": text.tolist()}
    zs = ClipZeroShot.from_manifest(entry)
    # An image embedding equal to a prompt's (any scale) picks that prompt almost surely at logit scale 100.
    probs = zs.probabilities(np.stack([3 * text[0], text[2]]))
    assert probs.argmax(axis=1).tolist() == [0, 2]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # valence = sum_k p_k v_k, checked against softmax written out.
    img = rng.normal(size=(2, 16))
    cos = (img / np.linalg.norm(img, axis=1, keepdims=True)) @ (text / np.linalg.norm(text, axis=1, keepdims=True)).T
    p = np.exp(100 * cos) / np.exp(100 * cos).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(zs.valence(img), p @ np.array([1.0, 0.0, -1.0]), rtol=1e-9)
    assert zs.concept_scores(text[2])[0]["a photo of blood"] > 0.99


def test_clip_zero_shot_refuses_an_inconsistent_manifest():
    with pytest.raises(EdgeCerError, match="must agree"):
        ClipZeroShot.from_manifest({"prompts": ["a", "b"], "valence": [1, -1], "text_embeds": [[1.0, 0.0]]})
    with pytest.raises(EdgeCerError, match="lacks"):
        ClipZeroShot.from_manifest({"prompts": ["a"]})
    with pytest.raises(ValueError, match="width"):
        ClipZeroShot.from_manifest({"prompts": ["a"], "valence": [0], "text_embeds": [[1.0, 0.0]]}).valence([[1.0]])


def test_hsv_matches_matplotlib_on_random_and_edge_pixels():
    """The gate's HSV is numpy's (the runtime has no matplotlib); it must equal matplotlib.colors.rgb_to_hsv."""
    mpl_colors = pytest.importorskip("matplotlib.colors")
    from edge_cer.affect.picture import rgb_to_hsv

    rgb = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    rgb[0, :8] = [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1]]
    rgb[1] = np.round(rgb[1] * 4) / 4  # ties between channels
    np.testing.assert_array_equal(rgb_to_hsv(rgb), mpl_colors.rgb_to_hsv(rgb))
