"""The whole torch-free engine against the diffusers pipeline it replaces (../shared/DIFFUSERS-PARITY.md).

Reference: StableDiffusionImg2ImgPipeline (strength < 1) or StableDiffusionPipeline (strength 1) loaded from the
same diffusers folder, `load_ip_adapter` with the same h94 file, `ip_adapter_image` = the stimulus, the VAE
posterior taken by its mean, `generator=torch.manual_seed(seed)`. Pass: max |engine - diffusers| <= 1e-3 on the
[0, 1] picture.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import ADAPTER_FILES, TINY_HEIGHT, TINY_WIDTH

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

TOLERANCE = 1e-3
SCHEDULER_CLASSES = {"euler": "EulerDiscreteScheduler", "ddim": "DDIMScheduler", "lcm": "LCMScheduler",
                     "dpm++2m": "DPMSolverMultistepScheduler"}

# (preset, adapter, scheduler, strength, guidance, ip_scale, steps): every scheduler, both prediction types,
# both adapters, img2img and txt2img, guidance on and off, IP scale 0 included.
CASES = [
    ("tiny-sd15", "base", None, 0.6, 7.5, 0.6, 10),
    ("tiny-sd15", "base", None, 1.0, 7.5, 0.0, 6),
    ("tiny-sd15", "plus", None, 0.75, 5.0, 1.0, 8),
    ("tiny-sd15", "plus", "dpm++2m", 1.0, 1.0, 0.5, 5),
    ("tiny-sd15", "base", "ddim", 0.5, 1.0, 0.8, 10),
    ("tiny-sd15", "base", "lcm", 0.8, 1.0, 0.6, 4),
    ("tiny-sd2", "base", None, 0.6, 7.5, 0.6, 10),
    ("tiny-sd2", "plus", None, 1.0, 3.0, 0.7, 5),
    ("tiny-sd2", "plus", "euler", 0.7, 7.5, 0.0, 7),
    ("tiny-sd2", "base", "dpm++2m", 0.6, 4.0, 1.0, 10),
    ("tiny-sd2", "plus", "lcm", 1.0, 1.0, 0.5, 3),
]

_pipes: dict = {}


def _reference_pipe(model_dir, adapter_file, img2img: bool):
    key = (str(model_dir), str(adapter_file), img2img)
    if key not in _pipes:
        cls = diffusers.StableDiffusionImg2ImgPipeline if img2img else diffusers.StableDiffusionPipeline
        pipe = cls.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
        pipe.load_ip_adapter(str(adapter_file.parent), subfolder="", weight_name=adapter_file.name)
        pipe.set_progress_bar_config(disable=True)
        _pipes[key] = (pipe, pipe.scheduler.config)
    return _pipes[key]


def run_diffusers(model_dir, adapter_file, image, prompt, negative, *, scheduler, strength, guidance, ip_scale,
                  steps, seed, monkeypatch):
    from PIL import Image

    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as img2img_module

    img2img = strength < 1.0
    pipe, config = _reference_pipe(model_dir, adapter_file, img2img)
    cls = getattr(diffusers, SCHEDULER_CLASSES[scheduler]) if scheduler else type(pipe.scheduler)
    pipe.scheduler = cls.from_config(config)
    pipe.set_ip_adapter_scale(ip_scale)
    # The engine's determinism rule: the VAE posterior by its mean, not a sample.
    monkeypatch.setattr(img2img_module, "retrieve_latents",
                        lambda enc, generator=None, sample_mode="sample": enc.latent_dist.mode())
    kwargs = dict(prompt=prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=guidance,
                  ip_adapter_image=image, generator=torch.manual_seed(seed), output_type="np")
    if img2img:
        kwargs.update(image=image.resize((TINY_WIDTH, TINY_HEIGHT), Image.LANCZOS), strength=strength)
    else:
        kwargs.update(height=TINY_HEIGHT, width=TINY_WIDTH)
    with torch.no_grad():
        return pipe(**kwargs).images[0]


@pytest.mark.parametrize("preset,adapter,scheduler,strength,guidance,ip_scale,steps", CASES)
def test_engine_matches_diffusers(tiny_model, tiny_export, stimulus_png, monkeypatch,
                                  preset, adapter, scheduler, strength, guidance, ip_scale, steps):
    from edge_cer.image import load_image
    from edge_cer.pipeline import SDPipeline

    model_dir, adapters = tiny_model(preset)
    pipe = SDPipeline.from_export(tiny_export(preset, adapter))
    image = load_image(stimulus_png)
    prompt, negative, seed = "the man is being helped, he will recover", "blood, injury", 1234
    out = pipe(image, prompt, negative, steps=steps, strength=strength, guidance=guidance, ip_scale=ip_scale,
               seed=seed, scheduler=scheduler)
    want = run_diffusers(model_dir, adapters[adapter], image, prompt, negative, scheduler=scheduler,
                         strength=strength, guidance=guidance, ip_scale=ip_scale, steps=steps, seed=seed,
                         monkeypatch=monkeypatch)
    assert out.image.shape == want.shape == (TINY_HEIGHT, TINY_WIDTH, 3)
    diff = np.abs(out.image - want).max()
    assert diff <= TOLERANCE, f"max abs diff {diff:.2e} vs diffusers"
    # A picture that ignored the model would still be in range; make sure the comparison is not vacuous.
    assert want.std() > 1e-3


def test_noise_file_replaces_seeded_noise(tiny_model, tiny_export, stimulus_png, monkeypatch):
    """--noise: the given array is the pipeline's single initial noise draw."""
    from edge_cer.image import load_image
    from edge_cer.pipeline import SDPipeline
    from edge_cer.rng import torch_randn

    pipe = SDPipeline.from_export(tiny_export("tiny-sd15", "base"))
    image = load_image(stimulus_png)
    noise = np.random.default_rng(7).standard_normal((1, 4, TINY_HEIGHT // 8, TINY_WIDTH // 8), dtype=np.float32)
    a = pipe(image, "calm", steps=6, strength=0.7, seed=5, noise=noise).image
    b = pipe(image, "calm", steps=6, strength=0.7, seed=99, noise=noise).image
    c = pipe(image, "calm", steps=6, strength=0.7, seed=5).image
    d = pipe(image, "calm", steps=6, strength=0.7, seed=0, noise=torch_randn(noise.shape, 5)).image
    assert np.array_equal(a, b)  # the seed no longer matters
    assert not np.allclose(a, c)
    assert np.array_equal(c, d)  # --seed N is exactly the torch draw for N
