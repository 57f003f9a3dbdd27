"""Picture generators as the rest of the runtime sees them: a stimulus and a prompt in, a `GeneratedPicture` out.

    generator = EngineGenerator(SDPipeline.from_export("engines/sd15-ip"), negative_prompt="blood")
    picture = generator.generate(Path("stimulus.png"), "he will recover", seed=1, strength=0.6, ip_scale=0.6, steps=20)

`picture.params` holds every argument that made the picture, under the names of `edge-cer generate`'s options, so
a recorded trial regenerates its picture byte for byte. The safety gate is not here (edge_cer.affect.gate): the
live trial gates what a participant may see, and a warm-up picture, which no one sees, is never gated. Which
generator a session uses, with which protocol settings, is decided in one place: edge_cer.runtime.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from edge_cer.image import load_image, png_bytes

if TYPE_CHECKING:  # the session imports GeneratedPicture from here and starts without the pipeline's imports
    from edge_cer.pipeline import SDPipeline


@dataclass(frozen=True)
class GeneratedPicture:
    png: bytes
    params: dict = field(default_factory=dict)  # seed, prompt, strength, ip_scale, steps, guidance, engine, ...
    timings: dict = field(default_factory=dict)  # seconds per stage, as the generator measured them


class PictureGenerator(Protocol):
    def generate(self, stimulus_path: Path, prompt: str, *, seed: int, strength: float, ip_scale: float, steps: int,
                 callback_on_step_end=None) -> GeneratedPicture: ...


class EngineGenerator:
    """`SDPipeline` with the session's fixed settings (guidance, negative prompt, scheduler) bound."""

    def __init__(self, pipeline: SDPipeline, guidance: float = 7.5, negative_prompt: str | None = None,
                 scheduler: str | None = None, provider: str = "cpu"):
        self.pipeline, self.guidance, self.negative_prompt = pipeline, guidance, negative_prompt or None
        self.scheduler, self.provider = scheduler or None, provider

    def precompute(self, stimulus_path: Path) -> None:
        """Image embeddings and stimulus latents, before the participant speaks."""
        self.pipeline.precompute(load_image(stimulus_path))

    def generate(self, stimulus_path: Path, prompt: str, **options) -> GeneratedPicture:
        return self.render(load_image(stimulus_path), prompt, **options)

    def render(self, stimulus: Image.Image, prompt: str, *, seed: int, strength: float, ip_scale: float, steps: int,
               callback_on_step_end=None) -> GeneratedPicture:
        """`generate` on a decoded stimulus (`edge-cer serve` receives pictures, not paths)."""
        start = time.perf_counter()
        out = self.pipeline(stimulus, prompt, self.negative_prompt, steps=steps, strength=strength,
                            guidance=self.guidance, ip_scale=ip_scale, seed=seed, scheduler=self.scheduler,
                            callback_on_step_end=callback_on_step_end)
        # `scheduler` as `edge-cer generate --scheduler` takes it ("": the model's own); the class name stays too.
        params = dict(out.params, scheduler=self.scheduler or "", scheduler_class=out.params["scheduler"],
                      engine=self.pipeline.backend.name, provider=self.provider, interrupted=out.interrupted)
        timings = {f"{stage}_s": sum(v) for stage, v in out.timings.items()}
        timings["total_s"] = time.perf_counter() - start
        return GeneratedPicture(png=png_bytes(out.image), params=params, timings=timings)


class PlaceholderGenerator:
    """Not AI: the stimulus, mirrored and brightened, with the prompt written on it. Deterministic and instant;
    recorded as engine "placeholder" in every trial it touches (rehearsals, tests)."""

    def generate(self, stimulus_path, prompt, *, seed, strength, ip_scale, steps, callback_on_step_end=None):
        start = time.perf_counter()
        with Image.open(stimulus_path) as image:
            # Brighter than the stimulus, same hues: the safety gate's pixel proxies let a rehearsal's pictures pass.
            picture = ImageEnhance.Brightness(ImageOps.mirror(image.convert("RGB"))).enhance(1.3).resize((256, 256))
        ImageDraw.Draw(picture).text((8, 8), f"placeholder: {prompt[:40]}", fill=(255, 255, 255))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        params = dict(prompt=prompt, seed=seed, strength=strength, ip_scale=ip_scale, steps=steps,
                      engine="placeholder", provider="", engine_manifest_sha256="")
        return GeneratedPicture(buffer.getvalue(), params, {"total_s": time.perf_counter() - start})
