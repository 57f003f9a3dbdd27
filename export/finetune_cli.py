"""`edge-cer finetune`: fine-tune an IP-Adapter on reappraisal pairs, and evaluate it (docs/finetune.md).

    edge-cer finetune synthetic-pairs --out pairs/ --count 24
    edge-cer finetune check-pairs pairs/
    edge-cer finetune ip-adapter --model models/tiny-sd15 \\
        --ip-adapter models/tiny-sd15-ip/models/ip-adapter_sd15.safetensors \\
        --pairs pairs/ --out models/tiny-sd15-ip/models/ip-adapter_sd15_cer.safetensors --steps 40 --resolution 64
    edge-cer finetune eval --model models/tiny-sd15 --before models/tiny-sd15-ip/models/ip-adapter_sd15.safetensors \\
        --after models/tiny-sd15-ip/models/ip-adapter_sd15_cer.safetensors --pairs heldout/ --out report/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_cer.errors import EdgeCerError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="finetune_command", required=True, metavar="WHAT")
    fmt = parser.formatter_class  # edge_cer.cli.HelpFormatter: each default said once

    p = sub.add_parser("ip-adapter", help="train an h94 IP-Adapter's projection and IP key/value layers on pairs",
                       description="train an h94 IP-Adapter's projection and IP key/value layers on pairs",
                       formatter_class=fmt)
    p.add_argument("--model", type=Path, required=True, help="diffusers StableDiffusionPipeline folder (frozen)")
    p.add_argument("--ip-adapter", type=Path, required=True, help="h94 .safetensors adapter to start from")
    p.add_argument("--image-encoder", type=Path, help="default: image_encoder/ beside --ip-adapter (h94 layout)")
    p.add_argument("--pairs", type=Path, required=True, help="pairs folder (pairs.csv: source,text,target,licence)")
    p.add_argument("--out", type=Path, required=True,
                   help="fine-tuned adapter .safetensors; its checkpoint is OUT.checkpoint.safetensors")
    p.add_argument("--steps", type=int, default=1000,
                   help="total optimiser steps, counting those a resumed checkpoint already ran")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate, constant (IP-Adapter's)")
    p.add_argument("--batch", type=int, default=4, help="pairs per step")
    p.add_argument("--resolution", type=int, default=512, help="square side the target pictures are encoded at")
    p.add_argument("--seed", type=int, default=0, help="seeds batches, noise, timesteps and dropout")
    p.add_argument("--train-scale", type=float, default=1.0, help="IP-Adapter scale while training")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from OUT.checkpoint.safetensors if it exists")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ...")
    p.add_argument("--json", action="store_true", help="print the run's summary (losses, s/step, peak memory) as JSON")

    p = sub.add_parser("eval", help="before vs after on held-out pairs: SSIM to source, alignment, loss",
                       description="before vs after on held-out pairs: SSIM to source, text-picture alignment "
                                   "and loss, into report.json + report.html", formatter_class=fmt)
    p.add_argument("--model", type=Path, required=True, help="diffusers StableDiffusionPipeline folder")
    p.add_argument("--before", type=Path, required=True, help="the adapter before fine-tuning")
    p.add_argument("--after", type=Path, required=True, help="the fine-tuned adapter")
    p.add_argument("--image-encoder", type=Path, help="default: image_encoder/ beside --before (h94 layout)")
    p.add_argument("--pairs", type=Path, required=True, help="held-out pairs folder (not used in training)")
    p.add_argument("--out", type=Path, required=True, help="report folder (report.json, report.html, pictures)")
    p.add_argument("--clip", type=Path, help="the full CLIP model of the image encoder: CLIP zero-shot picture "
                                             "valence (base adapters); default: the pixel valence proxy")
    p.add_argument("--resolution", type=int, default=512, help="picture side for generation and loss")
    p.add_argument("--steps", type=int, default=25, help="scheduler steps (img2img, as `edge-cer generate`)")
    p.add_argument("--strength", type=float, default=0.6)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--ip-scale", type=float, default=0.6)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("check-pairs", help="validate a pairs folder; one line per problem",
                       description="validate a pairs folder; one line per problem", formatter_class=fmt)
    p.add_argument("pairs", type=Path)

    p = sub.add_parser("synthetic-pairs", help="write a synthetic pairs set (shapes: dark/red -> light/calm)",
                       description="write a synthetic pairs set for tests and demos (CC0, made here)",
                       formatter_class=fmt)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--count", type=int, default=12)
    p.add_argument("--size", type=int, default=64, help="picture side in pixels")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    if args.finetune_command == "check-pairs":
        from export.finetune_pairs import pair_problems

        pairs, problems = pair_problems(args.pairs)
        for line in problems:
            print(line)
        if problems:
            raise EdgeCerError(f"{args.pairs}: {len(problems)} problem(s); fix the lines above")
        print(f"{args.pairs}: {len(pairs)} pairs, all readable")
        return 0
    if args.finetune_command == "synthetic-pairs":
        from export.finetune_pairs import build_synthetic_pairs

        print(build_synthetic_pairs(args.out, args.count, args.size, args.seed))
        return 0
    if args.finetune_command == "eval":
        from export.finetune_eval import EvalOptions, evaluate

        report = evaluate(EvalOptions(
            model=args.model, before=args.before, after=args.after, image_encoder=args.image_encoder,
            pairs=args.pairs, out=args.out, clip=args.clip, resolution=args.resolution, steps=args.steps,
            strength=args.strength, guidance=args.guidance, ip_scale=args.ip_scale, seed=args.seed))
        print(json.dumps(report["summary"], indent=2))
        return 0

    from export.finetune import TrainOptions, train

    result = train(TrainOptions(
        model=args.model, ip_adapter=args.ip_adapter, image_encoder=args.image_encoder, pairs=args.pairs,
        out=args.out, steps=args.steps, lr=args.lr, batch=args.batch, resolution=args.resolution, seed=args.seed,
        train_scale=args.train_scale, checkpoint_every=args.checkpoint_every, resume=args.resume, device=args.device))
    if args.json:
        summary = result.to_dict()
        summary.pop("step_losses")
        print(json.dumps(summary))
    return 0
