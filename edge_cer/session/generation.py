"""What the session engine asks of a picture generator and of a speech recogniser (both injected).

The lead's picture engine (`edge_cer.engine`) and the speech stage provide the real ones; tests and the demo
without engines use `PlaceholderGenerator`, which is recorded as `engine = "placeholder"` in every trial it touches.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image, ImageDraw, ImageOps


@dataclass(frozen=True)
class GeneratedPicture:
    png: bytes | None = None  # the picture itself, or
    path: Path | None = None  # a PNG file the generator wrote (the engine copies it into the session)
    params: dict = field(default_factory=dict)  # seed, strength, ip_scale, steps, engine_manifest_sha256, engine, ...
    timings: dict = field(default_factory=dict)  # seconds per stage, as the generator measured them

    def png_bytes(self) -> bytes:
        return self.png if self.png is not None else Path(self.path).read_bytes()


class PictureGenerator(Protocol):
    def generate(
        self, stimulus_path: Path, prompt: str, *, seed: int, strength: float, ip_scale: float, steps: int
    ) -> GeneratedPicture: ...


@dataclass(frozen=True)
class Transcript:
    text: str
    speech_end_s: float | None = None  # end of speech from the start of the audio, when the recogniser knows it


class Transcriber(Protocol):
    def transcribe(self, wav_path: Path) -> Transcript: ...


class PlaceholderGenerator:
    """Not AI: the stimulus, greyed and mirrored, with the prompt written on it. Deterministic and instant."""

    def generate(self, stimulus_path, prompt, *, seed, strength, ip_scale, steps) -> GeneratedPicture:
        start = time.perf_counter()
        with Image.open(stimulus_path) as image:
            picture = ImageOps.mirror(ImageOps.grayscale(image).convert("RGB")).resize((256, 256))
        ImageDraw.Draw(picture).text((8, 8), f"placeholder: {prompt[:40]}", fill=(255, 255, 255))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        params = dict(seed=seed, strength=strength, ip_scale=ip_scale, steps=steps, engine="placeholder",
                      engine_manifest_sha256="")
        return GeneratedPicture(png=buffer.getvalue(), params=params, timings={"total_s": time.perf_counter() - start})
