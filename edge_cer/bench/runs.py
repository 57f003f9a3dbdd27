"""One measured generation on our engines, split into the stages the issue names.

A run starts from a fresh per-stimulus cache, so the stimulus' image embeddings and latents are measured cold
(what `precompute` costs before the participant speaks), and then the generation itself runs with them cached:
that call is speech end -> picture once the final transcript is known.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from PIL import Image

from edge_cer.bench.trace import RecordingBackend, Trace
from edge_cer.manifest import ExportManifest

# Every stage a run reports, in pipeline order. `*_step` stages have one sample per denoising step.
STAGES = ("tokenize", "text_encode", "image_encode", "image_encode_cached", "vae_encode", "vae_encode_cached",
          "unet_step", "loop_overhead_step", "vae_decode", "speech_end_to_picture", "total_cold")


@dataclass(frozen=True)
class Settings:
    """The generation every backend runs; defaults are the session engine's (img2img with guidance)."""

    prompt: str = "the man is being helped, he will recover"
    negative_prompt: str | None = None
    steps: int = 25
    strength: float = 0.6
    guidance: float = 7.5
    ip_scale: float = 0.6
    seed: int = 0
    scheduler: str | None = None  # None: the model's own scheduler_config.json (as `edge-cer generate`)
    height: int = 512
    width: int = 512

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def unet_batch(self) -> int:
        return 2 if self.guidance > 1.0 else 1  # the pipeline's rule for classifier-free guidance


class EngineRunner:
    """Our pipeline on one backend, with load times and a span per graph call."""

    def __init__(self, manifest: ExportManifest, provider: str = "cpu", **backend_options):
        from edge_cer.backends import create_backend

        self.manifest, self.provider = manifest, provider
        t0 = time.perf_counter()
        self.backend = RecordingBackend(create_backend(manifest, provider, **backend_options))
        self.backend.load()
        self.name = self.backend.name
        self.device = "cpu" if provider == "cpu" else "cuda"
        # "cold" = first session creation in this process; the OS file cache is left as it is.
        self.load_seconds = {"load_sessions": time.perf_counter() - t0}

    def run(self, image: Image.Image, s: Settings, trace: Trace | None = None, label: str = "") -> dict:
        from edge_cer.pipeline import SDPipeline

        pipe = SDPipeline(self.manifest, self.backend)  # a new pipeline is an empty per-stimulus cache
        self.backend.calls.clear()
        t0 = time.perf_counter()
        pipe.prepare_ip_adapter_image_embeds(image)
        t1 = time.perf_counter()
        pipe.encode_init_latents(image, s.height, s.width)
        t2 = time.perf_counter()
        out = pipe(image, s.prompt, s.negative_prompt, steps=s.steps, strength=s.strength, guidance=s.guidance,
                   ip_scale=s.ip_scale, seed=s.seed, scheduler=s.scheduler, height=s.height, width=s.width)
        t3 = time.perf_counter()
        text_infer = [c.seconds for c in self.backend.calls if c.name == "text_encoder"]
        stages = {
            "tokenize": [out.timings["text_encode"][0] - text_infer[-1]],
            "text_encode": out.timings["text_encode"],
            "image_encode": [t1 - t0],
            "image_encode_cached": out.timings["image_encode"],
            "vae_encode": [t2 - t1],
            "vae_encode_cached": out.timings.get("vae_encode", []),
            "unet_step": out.timings["unet"],
            "loop_overhead_step": out.timings["loop_overhead"],
            "vae_decode": out.timings["vae_decode"],
            "speech_end_to_picture": [t3 - t2],
            "total_cold": [t3 - t0],
        }
        if trace is not None:
            trace.add(f"{label} run", t0, t3, self.name, level="run")
            trace.add("precompute (cold caches)", t0, t2, self.name, level="phase")
            trace.add("speech end -> picture", t2, t3, self.name, level="phase")
            steps = 0
            for call in self.backend.calls:
                name = f"unet step {steps}" if call.name == "unet" else call.name
                steps += call.name == "unet"
                trace.add(name, call.start, call.end, self.name, level="call")
        return stages

    def describe(self) -> dict:
        """How the backend ran its sessions (fixed sizes, CUDA graphs and those dropped), where it says."""
        describe = getattr(self.backend.inner, "describe", None)
        return describe() if describe else {"provider": self.provider}

    def unload(self) -> None:
        self.backend.unload()
