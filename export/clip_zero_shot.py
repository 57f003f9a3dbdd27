"""CLIP text embeddings of the fixed zero-shot prompt set, stored in the manifest so the runtime can score a
picture's valence from the image embeddings it already computes (edge_cer.affect.picture.ClipZeroShot)."""

from __future__ import annotations

from pathlib import Path

import torch

from edge_cer.affect.picture import ZERO_SHOT_PROMPTS
from edge_cer.errors import EdgeCerError
from edge_cer.manifest import hash_tree
from export.checkpoint import IPAdapter, refuse_pickle


def clip_zero_shot(clip_dir: Path, ip: IPAdapter) -> dict:
    from transformers import CLIPModel, CLIPTokenizer

    clip_dir = Path(clip_dir)
    if ip.kind != "base":
        raise EdgeCerError(f"--clip {clip_dir}: zero-shot valence needs projected image embeddings, which only base "
                           f"adapter exports compute; export a base adapter or leave --clip out")
    if not (clip_dir / "config.json").is_file():
        raise EdgeCerError(f"{clip_dir}: not a transformers CLIPModel folder (config.json missing)")
    if not any(clip_dir.glob("*.safetensors")):
        pickles = [p for p in clip_dir.iterdir() if p.suffix.lower() in (".bin", ".pt", ".pth", ".ckpt")]
        if pickles:
            refuse_pickle(pickles[0], "CLIP weights")
        raise EdgeCerError(f"{clip_dir}: no .safetensors weights")
    model = CLIPModel.from_pretrained(clip_dir, use_safetensors=True).eval()
    # Zero-shot scores compare image and text embeddings of ONE model: refuse a CLIP the encoder was not taken from.
    if not torch.equal(model.visual_projection.weight, ip.image_encoder.visual_projection.weight):
        raise EdgeCerError(f"{clip_dir}: its vision tower is not the adapter's image encoder ({ip.image_encoder_dir}); "
                           f"use the CLIP model that encoder comes from")
    tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
    prompts = [p for p, _ in ZERO_SHOT_PROMPTS]
    ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        embeds = model.get_text_features(**ids).pooler_output
    embeds = embeds / embeds.norm(dim=-1, keepdim=True)
    return {
        "prompts": prompts,
        "valence": [v for _, v in ZERO_SHOT_PROMPTS],
        "text_embeds": embeds.tolist(),
        "logit_scale": float(model.logit_scale.detach().exp()),
        "source": {"path": str(clip_dir), "files": hash_tree(clip_dir)},
    }
