"""Stable Diffusion + IP-Adapter img2img / txt2img on exported graphs, torch-free.

Reads as diffusers' `StableDiffusionImg2ImgPipeline.__call__` does, step by step, so a parity review can go
line by line (../shared/DIFFUSERS-PARITY.md). strength < 1 is img2img; strength == 1 is txt2img.

    pipe = SDPipeline.from_export("engines/tiny-sd15", provider="cpu")
    out = pipe(load_image("stimulus.png"), "the man is being helped", strength=0.6, ip_scale=0.6, seed=0)
    save_png(out.image, "supportive.png")
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from edge_cer.backends import Backend, create_backend
from edge_cer.errors import EdgeCerError
from edge_cer.graphs import TINY_VAE_DECODER
from edge_cer.image import clip_pixels, init_image, rgb
from edge_cer.manifest import ExportManifest, load_manifest
from edge_cer.rng import TorchGenerator
from edge_cer.schedulers import LCMScheduler, img2img_timesteps, load_scheduler_config, scheduler_from_config
from edge_cer.tokenizer import CLIPTokenizer

log = logging.getLogger(__name__)


@dataclass
class GenerationOutput:
    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    params: dict
    timings: dict[str, list[float]]  # stage -> seconds per call (unet: one entry per step)
    interrupted: bool = False


@dataclass
class StageTimer:
    """Per-stage wall time on one monotonic clock (perf_counter)."""

    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[stage].append(time.perf_counter() - t0)


@dataclass
class ImageEmbeds:
    """Projected IP-Adapter tokens for one picture: the positive, and the negative used under guidance."""

    positive: np.ndarray
    negative: np.ndarray


VAE_DECODERS = ("full", "tiny")  # the export's AutoencoderKL decoder, or its AutoencoderTiny (TAESD) one


class SDPipeline:
    def __init__(self, manifest: ExportManifest, backend: Backend, vae: str = "full"):
        """`vae="tiny"` decodes with the export's tiny VAE decoder (`export sd --tiny-vae`), as diffusers does with
        `vae=AutoencoderTiny...`: latents / its scaling factor (1.0 for TAESD)."""
        self.manifest, self.backend = manifest, backend
        model = manifest.data["model"]
        self.dims = manifest.dims
        self.vae_scaling_factor = np.float32(model["vae_scaling_factor"])
        if vae not in VAE_DECODERS:
            raise EdgeCerError(f"--vae {vae}: choose {' or '.join(VAE_DECODERS)}")
        if vae == "tiny" and "tiny_vae" not in model:
            raise EdgeCerError(f"{manifest.root}: has no tiny VAE decoder; re-export with `edge-cer export sd "
                               f"--tiny-vae DIR` (a diffusers AutoencoderTiny folder) or use the full VAE")
        self.vae = vae
        self.decoder, self.decoder_scaling = (TINY_VAE_DECODER, np.float32(model["tiny_vae"]["scaling_factor"])) \
            if vae == "tiny" else ("vae_decoder", self.vae_scaling_factor)
        self.preprocess = model["image_preprocess"]
        self.tokenizer = CLIPTokenizer(manifest.tokenizer_dir, model["pad_token"])
        self.scheduler_config = load_scheduler_config(manifest.scheduler_config_path)
        self._embeds_cache: dict[str, ImageEmbeds] = {}
        self._latents_cache: dict[tuple, np.ndarray] = {}

    @classmethod
    def from_export(cls, root, provider: str = "cpu", verify: bool = True, vae: str = "full",
                    **backend_options) -> "SDPipeline":
        manifest = load_manifest(root, verify=verify)
        backend = create_backend(manifest, provider, **backend_options)
        backend.load()
        return cls(manifest, backend, vae)

    # -- helpers, each one stage of diffusers' pipeline ---------------------------------------------------------

    def check_inputs(self, height: int, width: int, strength: float, steps: int, guidance: float, ip_scale: float):
        multiple = self.manifest.data["model"]["spatial_multiple"]
        if height % multiple or width % multiple or height <= 0 or width <= 0:
            raise EdgeCerError(f"--height/--width {height}x{width}: must be positive multiples of {multiple} "
                               f"for {self.manifest.root}")
        if not 0.0 < strength <= 1.0:
            raise EdgeCerError(f"--strength {strength}: must be in (0, 1]")
        if steps < 1:
            raise EdgeCerError(f"--steps {steps}: must be at least 1")
        if not np.isfinite(guidance) or not np.isfinite(ip_scale):
            raise EdgeCerError("--guidance and --ip-scale must be finite numbers")

    def encode_prompt(self, prompt: str, negative_prompt: str | None, do_cfg: bool) -> np.ndarray:
        """Text embeddings; under guidance the batch is [negative, positive] and a missing negative is ""."""
        texts = [negative_prompt or "", prompt] if do_cfg else [prompt]
        ids = self.tokenizer(texts)
        return self.backend.infer("text_encoder", {"input_ids": ids})["last_hidden_state"]

    def prepare_ip_adapter_image_embeds(self, image: Image.Image) -> ImageEmbeds:
        """Projected image tokens for a picture, computed once per picture and cached.

        Negative tokens follow diffusers: base adapters project zeros shaped like the image embedding (so they are
        LayerNorm(proj.bias), not zeros); plus adapters encode an all-zero *normalised* pixel tensor."""
        image = rgb(image)  # any mode (greyscale, RGBA, palette), as diffusers' load_image gives it
        key = hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()
        if key in self._embeds_cache:
            return self._embeds_cache[key]
        pixels = self._clip_pixels(image)
        if self.dims.adapter == "base":
            embeds = self.backend.infer("image_encoder", {"pixel_values": pixels})["image_embeds"]
            negative = np.zeros_like(embeds)
        else:
            both = np.concatenate([pixels, np.zeros_like(pixels)])
            embeds, negative = np.split(self.backend.infer("image_encoder", {"pixel_values": both})["image_embeds"], 2)
        tokens = self.backend.infer("image_proj", {"image_embeds": np.concatenate([negative, embeds])})["ip_tokens"]
        result = ImageEmbeds(positive=tokens[1:], negative=tokens[:1])
        self._embeds_cache[key] = result
        return result

    def clip_image_embeds(self, image: Image.Image) -> np.ndarray:
        """Projected CLIP image embeddings of any picture (base-adapter exports), for zero-shot picture affect with
        the manifest's `clip_zero_shot` prompts."""
        if self.dims.adapter != "base":
            raise EdgeCerError(f"{self.manifest.root}: a plus-adapter export computes no projected image embeddings; "
                               f"CLIP zero-shot affect needs a base-adapter export")
        return self.backend.infer("image_encoder", {"pixel_values": self._clip_pixels(rgb(image))})["image_embeds"]

    def _clip_pixels(self, image: Image.Image) -> np.ndarray:
        """CLIP preprocessing with the export's recorded size and normalisation."""
        return clip_pixels(image, self.preprocess["size"], self.preprocess["mean"], self.preprocess["std"])

    def encode_init_latents(self, image: Image.Image, height: int, width: int) -> np.ndarray:
        """VAE posterior mean of the stimulus times the scaling factor, cached per picture and size."""
        image = rgb(image)
        key = (hashlib.sha256(image.tobytes()).hexdigest(), image.size, height, width)
        if key not in self._latents_cache:
            mean = self.backend.infer("vae_encoder", {"sample": init_image(image, height, width)})["latent_mean"]
            self._latents_cache[key] = mean * self.vae_scaling_factor
        return self._latents_cache[key]

    def decode_latents(self, latents: np.ndarray) -> np.ndarray:
        sample = self.backend.infer(self.decoder, {"latent_sample": latents / self.decoder_scaling})["sample"]
        image = np.clip(sample / 2 + 0.5, 0.0, 1.0)
        return image[0].transpose(1, 2, 0).astype(np.float32)

    def precompute(self, image: Image.Image, height: int | None = None, width: int | None = None) -> None:
        """Warm the per-stimulus caches before the participant speaks."""
        height, width = self._size(height, width)
        self.prepare_ip_adapter_image_embeds(image)
        self.encode_init_latents(image, height, width)

    def _size(self, height, width) -> tuple[int, int]:
        shape = self.manifest.data["export_shape"]
        return height or shape["height"], width or shape["width"]

    # -- the pipeline -------------------------------------------------------------------------------------------

    def __call__(
        self,
        image: Image.Image,
        prompt: str,
        negative_prompt: str | None = None,
        *,
        steps: int = 25,
        strength: float = 0.6,
        guidance: float = 7.5,
        ip_scale: float = 0.6,
        seed: int = 0,
        noise: np.ndarray | None = None,
        scheduler: str | None = None,
        height: int | None = None,
        width: int | None = None,
        callback_on_step_end: Callable[[int, int], bool] | None = None,
    ) -> GenerationOutput:
        timer = StageTimer()
        height, width = self._size(height, width)
        latent_shape = (1, self.dims.latent_channels, height // 8, width // 8)

        # 1. Check inputs
        self.check_inputs(height, width, strength, steps, guidance, ip_scale)
        if noise is not None and noise.shape != latent_shape:
            raise EdgeCerError(f"--noise has shape {noise.shape}; this engine at {width}x{height} needs {latent_shape}")
        do_cfg = guidance > 1.0  # diffusers: strictly greater; no unconditional pass otherwise

        # 2. Encode the prompt (and the negative prompt under guidance)
        with timer("text_encode"):
            prompt_embeds = self.encode_prompt(prompt, negative_prompt, do_cfg)

        # 3. Encode the IP-Adapter picture (cached per picture)
        with timer("image_encode"):
            ip = self.prepare_ip_adapter_image_embeds(image)
            ip_tokens = np.concatenate([ip.negative, ip.positive]) if do_cfg else ip.positive

        # 4. Timesteps: the model's own scheduler (or --scheduler), the img2img tail for strength < 1
        sched = scheduler_from_config(self.scheduler_config, scheduler)
        if strength < 1.0:
            timesteps = img2img_timesteps(sched, steps, strength)
        else:
            sched.set_timesteps(steps)
            timesteps = sched.timesteps

        # 5. Initial latents: noised stimulus latents (img2img) or pure noise (txt2img). One generator, as
        #    diffusers' `generator=torch.manual_seed(seed)`: the initial draw, then LCM's per-step draws.
        generator = TorchGenerator(seed)
        if noise is None:
            noise = generator.randn(latent_shape)
        if strength < 1.0:
            with timer("vae_encode"):
                init_latents = self.encode_init_latents(image, height, width)
            latents = sched.add_noise(init_latents, noise, timesteps[:1])
        else:
            latents = noise * np.float32(sched.init_noise_sigma)
        latents = latents.astype(np.float32)

        # 6. Denoising loop
        ip_scale_arr = np.array([ip_scale], dtype=np.float32)
        # LCM re-noises between steps; the other schedulers are deterministic given the initial noise.
        renoise = isinstance(sched, LCMScheduler)
        interrupted = False
        for i, t in enumerate(timesteps):
            t0 = time.perf_counter()
            latent_model_input = np.concatenate([latents] * 2) if do_cfg else latents
            latent_model_input = sched.scale_model_input(latent_model_input, t)
            t1 = time.perf_counter()
            noise_pred = self.backend.infer("unet", {
                "sample": latent_model_input.astype(np.float32, copy=False),
                "timestep": np.array([t], dtype=np.float32),
                "encoder_hidden_states": prompt_embeds,
                "ip_tokens": ip_tokens,
                "ip_scale": ip_scale_arr,
            })["out_sample"]
            t2 = time.perf_counter()
            if do_cfg:
                # Classifier-free guidance, Imagen (Saharia et al. 2022) eq. (2) as diffusers writes it.
                noise_pred_uncond, noise_pred_text = noise_pred[:1], noise_pred[1:]
                noise_pred = noise_pred_uncond + np.float32(guidance) * (noise_pred_text - noise_pred_uncond)
            fresh = generator.randn(latents.shape) if renoise else None
            latents = sched.step(noise_pred, t, latents, noise=fresh).prev_sample.astype(np.float32)
            t3 = time.perf_counter()
            timer.times["unet"].append(t2 - t1)
            timer.times["loop_overhead"].append((t1 - t0) + (t3 - t2))
            if callback_on_step_end is not None and callback_on_step_end(i, len(timesteps)) is False:
                interrupted = True
                break
        if not np.isfinite(latents).all():
            raise EdgeCerError("the UNet produced NaN/Inf latents (fp16 overflow?); use an fp32 export or lower "
                               "--guidance")

        # 7. Decode
        with timer("vae_decode"):
            picture = self.decode_latents(latents)
        if not np.isfinite(picture).all():
            raise EdgeCerError("the VAE decoder produced NaN/Inf (fp16 overflow); export the VAE in fp32")

        params = dict(prompt=prompt, negative_prompt=negative_prompt, steps=steps, strength=strength,
                      guidance=guidance, ip_scale=ip_scale, seed=seed, scheduler=type(sched).__name__,
                      height=height, width=width, denoising_steps=len(timesteps), vae=self.vae,
                      engine_manifest_sha256=self.manifest.sha256)
        return GenerationOutput(picture, params, dict(timer.times), interrupted)
