"""`edge-cer generate`: one supportive picture from a stimulus and a reappraisal, on exported engines.

    edge-cer generate --engines engines/sd15-ip --image stimulus.jpg \\
        --prompt "the man is being helped, he will recover" --out supportive.png --seed 0

Semantics are diffusers' StableDiffusionImg2ImgPipeline (strength < 1) / StableDiffusionPipeline (strength 1) with
`ip_adapter_image=IN`, `set_ip_adapter_scale(ip_scale)` and the model's own scheduler config.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge_cer.backends import add_provider_arguments, backend_options
from edge_cer.errors import EdgeCerError, check_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines", type=Path, required=True, help="export folder (edge-cer export sd)")
    p.add_argument("--image", type=Path, required=True, help="stimulus picture: img2img init and IP-Adapter image")
    p.add_argument("--prompt", required=True, help="the (spoken) reappraisal")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.add_argument("--save-npy", type=Path, help="also write the float32 (H, W, 3) picture in [0, 1]")
    p.add_argument("--negative-prompt", help="used only when --guidance > 1")
    p.add_argument("--seed", type=int, default=0, help="same noise as diffusers' generator=torch.manual_seed(N)")
    p.add_argument("--steps", type=int, default=25, help="scheduler steps before --strength takes its share")
    p.add_argument("--strength", type=float, default=0.6, help="img2img strength; 1.0 = text-to-image")
    p.add_argument("--ip-scale", type=float, default=0.6, help="IP-Adapter scale (0 disables the image prompt)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance; <= 1 turns it off")
    p.add_argument("--scheduler", choices=("euler", "ddim", "lcm", "dpm++2m"),
                   help="replace the model's scheduler (default: its own scheduler_config.json)")
    p.add_argument("--noise", type=Path, help="float32 .npy of shape (1, 4, H/8, W/8): replaces the seeded noise")
    p.add_argument("--height", type=int, help="default: the export resolution")
    p.add_argument("--width", type=int, help="default: the export resolution")
    p.add_argument("--vae", choices=("full", "tiny"), default="full",
                   help="tiny: the export's tiny VAE decoder (export sd --tiny-vae), a fraction of the decode time")
    add_provider_arguments(p)
    p.add_argument("--json", action="store_true", help="print parameters and per-stage timings as JSON")


def load_noise(path: Path) -> np.ndarray:
    try:
        noise = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EdgeCerError(f"{path}: not a readable .npy array ({exc}); save it with numpy.save") from exc
    if noise.dtype != np.float32:
        raise EdgeCerError(f"{path}: dtype {noise.dtype}; --noise must be float32 (noise.astype('float32'))")
    return noise


def run(args) -> int:
    from rich.console import Console

    from edge_cer.image import load_image, save_png
    from edge_cer.perf_table import stage_table
    from edge_cer.pipeline import SDPipeline

    check_text(args.prompt, "--prompt")
    check_text(args.negative_prompt or "", "--negative-prompt")
    image = load_image(args.image)  # bad pictures fail before the engines load
    noise = load_noise(args.noise) if args.noise else None
    if not args.out.parent.is_dir():
        raise EdgeCerError(f"{args.out.parent}: no such folder for --out")
    pipe = SDPipeline.from_export(args.engines, provider=args.provider, vae=args.vae, **backend_options(args))
    out = pipe(image, args.prompt, args.negative_prompt, steps=args.steps, strength=args.strength,
               guidance=args.guidance, ip_scale=args.ip_scale, seed=args.seed, noise=noise, scheduler=args.scheduler,
               height=args.height, width=args.width)
    save_png(out.image, args.out)
    if args.save_npy:
        np.save(args.save_npy, out.image.astype(np.float32))
    if args.json:
        print(json.dumps({"out": str(args.out), "params": out.params, "timings_s": out.timings}))
    else:
        Console().print(stage_table(out.timings, title=f"{args.out}  ({out.params['denoising_steps']} denoising steps)"))
    return 0
