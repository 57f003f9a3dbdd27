"""`edge-cer export`: the export stage's commands. Imports torch only when a command runs.

    edge-cer export test-models --preset tiny-sd15 --out models/
    edge-cer export sd --model models/tiny-sd15 --ip-adapter models/tiny-sd15-ip/models/ip-adapter_sd15.safetensors \\
        --out engines/tiny-sd15 --height 64 --width 64
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

# sub-command -> module offering add_arguments(parser) / run(args)
SUBCOMMANDS = {
    "sd": ("export.cli", "Stable Diffusion + IP-Adapter -> ONNX (+ TensorRT) with a verified manifest"),
    "test-models": ("export.cli", "build seeded random-weight SD + IP-Adapter models in the public layouts"),
    "asr": ("export.asr.cli", "speech models for sherpa-onnx (Whisper conversion, streaming folders)"),
    "triton-repo": ("edge_cer.serve.triton_repo", "an export as a model repository for NVIDIA Triton's container"),
}
PRESET_NAMES = ("tiny-sd15", "tiny-sd2", "sd15", "sd21", "sd-turbo")  # export.factory.PRESETS, without torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="export_command", required=True, metavar="WHAT")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=parser.formatter_class)
        p.set_defaults(_export_module=module)
        if module == __name__:
            {"sd": _add_sd_arguments, "test-models": _add_test_model_arguments}[name](p)
        else:
            try:
                importlib.import_module(module).add_arguments(p)
            except ImportError as exc:
                p.set_defaults(_import_error=exc)


def _add_sd_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="diffusers StableDiffusionPipeline folder")
    p.add_argument("--ip-adapter", type=Path, required=True, help="h94-layout IP-Adapter .safetensors (base or plus)")
    p.add_argument("--image-encoder", type=Path, help="CLIP image encoder folder (default: image_encoder/ beside "
                                                      "the adapter file, the h94 layout)")
    p.add_argument("--clip", type=Path, help="the full CLIP model (transformers CLIPModel folder) the image encoder "
                                             "comes from: stores zero-shot valence prompt embeddings (base adapters)")
    p.add_argument("--tiny-vae", type=Path, help="a diffusers AutoencoderTiny folder (TAESD, e.g. madebyollin/taesd "
                                                 "for SD-1.x/2.x): exports its decoder beside the full one")
    p.add_argument("--out", type=Path, required=True, help="export folder to create")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp16 keeps fp32 inputs/outputs; meant for GPU backends")
    p.add_argument("--vae-precision", choices=("auto", "fp32", "fp16"), default="auto",
                   help="with --precision fp16: auto keeps a VAE fp32 where its config says force_upcast (SD-1.x/2.x "
                        "VAEs overflow fp16); the tiny VAE runs fp16")
    p.add_argument("--height", type=int, default=512, help="export (and TensorRT static) height in pixels")
    p.add_argument("--width", type=int, default=512, help="export (and TensorRT static) width in pixels")
    p.add_argument("--optimize", choices=("none", "cpu", "gpu"), default="none",
                   help="run onnxruntime's transformer optimizer for this target")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (needs tensorrt + a GPU)")
    p.add_argument("--tensorrt-dynamic", action="store_true",
                   help="TensorRT profiles over 256-1024 px and batch 1-2 instead of static --height/--width")
    p.add_argument("--force", action="store_true", help="replace an existing edge-cer export at --out")


def _add_test_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=PRESET_NAMES, default="tiny-sd15",
                   help="tiny-*: seconds to build, for tests; sd15/sd21/sd-turbo: real configs, random weights")
    p.add_argument("--out", type=Path, required=True, help="folder for <preset>/ and <preset>-ip/")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    if getattr(args, "_import_error", None) is not None:
        raise args._import_error  # edge_cer.cli reports it as one line with the extra's install command
    if args._export_module != __name__:
        return importlib.import_module(args._export_module).run(args)
    if args.export_command == "test-models":
        from export.factory import build

        model, adapters = build(args.preset, args.out, args.seed)
        print(f"model: {model}")
        print(f"full CLIP model (for --clip): {model.parent / (args.preset + '-clip')}")
        print(f"tiny VAE (for --tiny-vae): {model.parent / (args.preset + '-taesd')}")
        for kind, path in adapters.items():
            print(f"ip-adapter ({kind}): {path}")
        return 0

    from export.sd import ExportOptions, export_sd

    export_sd(ExportOptions(
        model=args.model, ip_adapter=args.ip_adapter, image_encoder=args.image_encoder, clip=args.clip, tiny_vae=args.tiny_vae, out=args.out,
        precision=args.precision, vae_precision=args.vae_precision, height=args.height, width=args.width,
        optimize=args.optimize,
        tensorrt=args.tensorrt, tensorrt_dynamic=args.tensorrt_dynamic, force=args.force,
    ))
    return 0
