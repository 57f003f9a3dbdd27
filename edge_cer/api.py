"""The Python API in the ecosystem's words: diffusers' argument names for pictures, any picture or recording as input.

    from edge_cer import Pipeline, Recognizer

    pipe = Pipeline.from_pretrained("engines/sd15-ip")
    picture = pipe("the man is being helped", image="stimulus.jpg", num_inference_steps=25, guidance_scale=7.5,
                   strength=0.6, ip_adapter_scale=0.6, generator=0).images[0]      # a PIL image
    text = Recognizer.from_pretrained("engines/asr").transcribe("speech.wav").text

The numbers are the engine's (edge_cer.pipeline.SDPipeline, edge_cer.speech.recognizer); this module only adapts
names and inputs: a picture of any mode (greyscale, RGBA, palette), a path or an array becomes RGB, and a recording
at any sample rate is resampled to the models' 16 kHz.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edge_cer.errors import EdgeCerError
from edge_cer.image import load_image, rgb, to_uint8
from edge_cer.pipeline import GenerationOutput, SDPipeline


@dataclass
class PipelineOutput:
    """As diffusers' `StableDiffusionPipelineOutput`: `images`, a list of PIL pictures; `output` keeps the float
    picture, the parameters and the per-stage timings."""

    images: list[Image.Image]
    output: GenerationOutput


class Pipeline:
    """SD + IP-Adapter img2img on an export folder, called as a diffusers pipeline is."""

    def __init__(self, sd: SDPipeline):
        self.sd = sd

    @classmethod
    def from_pretrained(cls, export_dir: str | Path, provider: str = "cpu", **backend_options) -> Pipeline:
        """`export_dir`: a folder written by `edge-cer export sd` (verified against its manifest)."""
        return cls(SDPipeline.from_export(export_dir, provider=provider, **backend_options))

    def __call__(
        self,
        prompt: str,
        image,
        negative_prompt: str | None = None,
        *,
        num_inference_steps: int = 25,
        strength: float = 0.6,
        guidance_scale: float = 7.5,
        ip_adapter_scale: float = 0.6,
        generator=None,
        seed: int | None = None,
        height: int | None = None,
        width: int | None = None,
        scheduler: str | None = None,
        callback_on_step_end: Callable[[int, int], bool] | None = None,
    ) -> PipelineOutput:
        """`image` is both the img2img init and the IP-Adapter picture (a path, PIL image or array of any mode).
        `generator`: a seed, or a fresh `torch.manual_seed(n)` (only its initial seed is read); `seed` is the same."""
        out = self.sd(rgb_picture(image), prompt, negative_prompt, steps=num_inference_steps, strength=strength,
                      guidance=guidance_scale, ip_scale=ip_adapter_scale, seed=_seed(generator, seed),
                      scheduler=scheduler, height=height, width=width, callback_on_step_end=callback_on_step_end)
        return PipelineOutput([Image.fromarray(to_uint8(out.image))], out)


def _seed(generator, seed: int | None) -> int:
    if generator is not None and seed is not None:
        raise EdgeCerError("pass generator= or seed=, not both")
    if generator is None:
        return 0 if seed is None else int(seed)
    if hasattr(generator, "initial_seed"):  # torch.Generator, without importing torch
        return int(generator.initial_seed())
    if isinstance(generator, (int, np.integer)):
        return int(generator)
    raise EdgeCerError(f"generator={generator!r}: give a seed (int) or torch.manual_seed(n)")


def rgb_picture(image) -> Image.Image:
    """A path, a PIL image of any mode, or an (H, W), (H, W, 1|3|4) array (uint8, or float in [0, 1]) as RGB.

    Transparency is dropped, not composited, as diffusers' `load_image` does."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return rgb(image)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise EdgeCerError(f"picture array of shape {array.shape}; give (H, W), (H, W, 3) or (H, W, 4)")
    if array.dtype != np.uint8:
        array = to_uint8(np.clip(array.astype(np.float32), 0.0, 1.0))
    return rgb(Image.fromarray(array))


class Recognizer:
    """Speech to text over an ASR folder (`edge-cer export asr`): whole recordings at any sample rate, or the
    sherpa-onnx stream verbs of `recognizer` (16 kHz; edge_cer.speech.audio resamples live sources)."""

    def __init__(self, recognizer):
        self.recognizer = recognizer

    @classmethod
    def from_pretrained(cls, asr_dir: str | Path, **config) -> Recognizer:
        """`config`: fields of edge_cer.speech.recognizer.RecognizerConfig (num_threads, endpoint rules, ...)."""
        from edge_cer.speech.recognizer import RecognizerConfig, create_recognizer

        return cls(create_recognizer(asr_dir, RecognizerConfig(**config)))

    def transcribe(self, audio, sample_rate: int | None = None, mix_down: bool = False):
        """`audio`: a WAV/FLAC/OGG path, or samples (float in [-1, 1] or integer PCM) with their `sample_rate`.
        Returns a Transcript: `.text` and `.finals` (each utterance with its timestamps)."""
        from edge_cer.speech.audio import array_source, file_source
        from edge_cer.speech.transcribe import transcribe_source

        if isinstance(audio, (str, Path)):
            return transcribe_source(self.recognizer, file_source(audio, mix_down=mix_down))
        if sample_rate is None:
            raise EdgeCerError("transcribe(samples): give sample_rate= as well (any rate; it is resampled to 16 kHz)")
        return transcribe_source(self.recognizer, array_source(audio, sample_rate, mix_down=mix_down))
