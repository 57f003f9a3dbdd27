"""The alternative a lab engineer would otherwise use: diffusers + torch on the same checkpoint.

StableDiffusionImg2ImgPipeline (or StableDiffusionPipeline at strength 1) from the diffusers folder the export
was made from, `load_ip_adapter` with the same h94 file and image encoder (the paths the export manifest records
under `source`), the same prompt, steps, strength, guidance, IP scale and seed. Stages are timed by forward hooks
on the modules, so diffusers runs unchanged. Imports torch: only `edge-cer bench --vs-torch` loads this module.
"""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from edge_cer.bench.runs import Settings
from edge_cer.bench.trace import Span, Trace
from edge_cer.errors import EdgeCerError, require
from edge_cer.manifest import ExportManifest

# module attribute of the pipeline -> stage name
HOOKED = {"text_encoder": "text_encode", "image_encoder": "image_encode", "unet": "unet_step",
          "vae.encoder": "vae_encode", "vae.decoder": "vae_decode"}


class DiffusersRunner:
    def __init__(self, manifest: ExportManifest, img2img: bool, device: str = "cpu", threads: int | None = None):
        torch = require("torch", "export")
        diffusers = require("diffusers", "export")
        if device == "cuda" and not torch.cuda.is_available():
            raise EdgeCerError("--vs-torch on a GPU backend needs a CUDA build of torch with a visible GPU")
        source = manifest.data["source"]
        model, adapter = Path(source["model"]["path"]), Path(source["ip_adapter"]["path"])
        encoder = Path(source["image_encoder"]["path"])
        for p in (model, adapter, encoder):
            if not p.exists():
                raise EdgeCerError(f"{p}: the export's source (manifest `source`) is gone; --vs-torch needs it")
        if threads:
            torch.set_num_threads(threads)
        self.torch, self.device = torch, device
        self.name = f"diffusers-torch-{device}"
        t0 = time.perf_counter()
        cls = diffusers.StableDiffusionImg2ImgPipeline if img2img else diffusers.StableDiffusionPipeline
        pipe = cls.from_pretrained(model, safety_checker=None, requires_safety_checker=False)  # fp32
        pipe.load_ip_adapter(str(adapter.parent), subfolder="", weight_name=adapter.name,
                             image_encoder_folder=str(encoder))
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.img2img = pipe.to(device), img2img
        self.diffusers, self.scheduler_config = diffusers, pipe.scheduler.config
        self.load_seconds = {"load_pipeline": time.perf_counter() - t0}
        self.spans: list[Span] = []
        for attr, stage in HOOKED.items():
            module = pipe
            for part in attr.split("."):
                module = getattr(module, part)
            module.register_forward_pre_hook(lambda *_, stage=stage: self._start(stage))
            module.register_forward_hook(lambda *_, stage=stage: self._stop(stage))
        self._open: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def _start(self, stage: str) -> None:
        self._sync()
        self._open[stage] = time.perf_counter()

    def _stop(self, stage: str) -> None:
        self._sync()
        self.spans.append(Span(stage, self._open.pop(stage), time.perf_counter(), self.name))

    def run(self, image: Image.Image, s: Settings, trace: Trace | None = None, label: str = "") -> dict:
        torch = self.torch
        from edge_cer.schedulers import SCHEDULERS

        pipe = self.pipe
        if s.scheduler:  # our numpy ports carry diffusers' class names
            pipe.scheduler = getattr(self.diffusers, SCHEDULERS[s.scheduler].__name__).from_config(
                self.scheduler_config)
        pipe.set_ip_adapter_scale(s.ip_scale)
        kwargs = dict(prompt=s.prompt, negative_prompt=s.negative_prompt, num_inference_steps=s.steps,
                      guidance_scale=s.guidance, ip_adapter_image=image, output_type="np",
                      generator=torch.Generator(self.device).manual_seed(s.seed))
        if self.img2img:
            kwargs.update(image=image.resize((s.width, s.height), Image.LANCZOS), strength=s.strength)
        else:
            kwargs.update(height=s.height, width=s.width)
        self.spans.clear()
        t0 = time.perf_counter()
        with torch.inference_mode():
            pipe(**kwargs)
        self._sync()
        t1 = time.perf_counter()
        unet = [sp for sp in self.spans if sp.name == "unet_step"]
        # One sample per run for the once-per-picture stages: diffusers calls the text encoder once for the prompt
        # and once for the negative prompt, where ours runs both as one batch.
        ran = {sp.name for sp in self.spans}  # txt2img never calls the VAE encoder
        stages = {stage: [sum(sp.seconds for sp in self.spans if sp.name == stage)] for stage in ran}
        stages["unet_step"] = [sp.seconds for sp in unet]
        # Everything between two UNet calls: scheduler step, guidance, input scaling (diffusers' loop body).
        stages["loop_overhead_step"] = [b.start - a.end for a, b in zip(unet, unet[1:])]
        stages["total_cold"] = [t1 - t0]  # diffusers encodes the picture again on every call: no cache
        if trace is not None:
            trace.add(f"{label} run", t0, t1, self.name, level="run")
            steps = 0
            for span in self.spans:
                name = f"unet step {steps}" if span.name == "unet_step" else span.name
                steps += span.name == "unet_step"
                trace.add(name, span.start, span.end, self.name, level="call")
        return stages
