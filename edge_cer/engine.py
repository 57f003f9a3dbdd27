"""The picture engine as the session engine sees it: `PictureGenerator` over `SDPipeline`.

    generator = load_generator("engines/sd15-ip", provider="cpu")   # behind the safety gate
    picture = generator.generate(Path("stimulus.png"), "he will recover", seed=1, strength=0.6, ip_scale=0.6, steps=20)
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from PIL import Image

from edge_cer.image import load_image, to_uint8
from edge_cer.pipeline import SDPipeline
from edge_cer.session.generation import GeneratedPicture


class EngineGenerator:
    def __init__(self, pipeline: SDPipeline, guidance: float = 7.5, negative_prompt: str | None = None,
                 scheduler: str | None = None):
        self.pipeline, self.guidance, self.negative_prompt, self.scheduler = pipeline, guidance, negative_prompt, scheduler

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
        buffer = io.BytesIO()
        Image.fromarray(to_uint8(out.image)).save(buffer, format="PNG")
        params = dict(out.params, engine=self.pipeline.backend.name, interrupted=out.interrupted)
        timings = {f"{stage}_s": sum(v) for stage, v in out.timings.items()}
        timings["total_s"] = time.perf_counter() - start
        return GeneratedPicture(png=buffer.getvalue(), params=params, timings=timings)


def load_generator(engines: str | Path, provider: str = "cpu", gated: bool = True, vae: str = "full",
                   backend_options: dict | None = None, **options):
    """The engine as a session's picture generator; `gated` (the default) puts it behind the safety gate, so no
    picture more negative than its stimulus reaches a participant (edge_cer.live.gate). `vae` is the protocol's
    [generation] vae; `backend_options` come from edge_cer.backends.backend_options (--cuda-graphs)."""
    from edge_cer.live.gate import GatedGenerator

    pipeline = SDPipeline.from_export(engines, provider=provider, vae=vae, **(backend_options or {}))
    generator = EngineGenerator(pipeline, **options)
    return GatedGenerator(generator) if gated else generator
