"""Load a diffusers SD folder and an h94-layout IP-Adapter, refusing anything unsafe or mismatched up front.

Every check raises EdgeCerError with one line naming the file and the fix, before any export work starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from edge_cer.errors import EdgeCerError
from edge_cer.manifest import sha256_file

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class SDCheckpoint:
    root: Path
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    feature_extractor_size: int | None  # CLIP crop size from model_index's feature_extractor, if any


@dataclass
class IPAdapter:
    path: Path
    kind: str  # "base" | "plus"
    tokens: int
    image_proj: dict[str, torch.Tensor]
    ip_layers: dict[str, torch.Tensor]
    image_encoder: torch.nn.Module
    image_encoder_dir: Path


def refuse_pickle(path: Path, what: str) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise EdgeCerError(
            f"{path}: pickle {what} refused (it can run arbitrary code); use the .safetensors release of the "
            f"same weights or convert it once in a sandbox with safetensors.torch.save_file"
        )


def load_sd(root: Path) -> SDCheckpoint:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = Path(root)
    index = root / "model_index.json"
    if not index.is_file():
        raise EdgeCerError(f"{index}: missing; --model must be a diffusers Stable Diffusion folder (model_index.json, "
                           f"unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    info = json.loads(index.read_text())
    cls = info.get("_class_name", "")
    if "StableDiffusion" not in cls or "XL" in cls or "3" in cls:
        raise EdgeCerError(f"{index}: a {cls or 'non-diffusers'} model; only SD 1.x/2.x-family pipelines "
                           f"(StableDiffusionPipeline layout) can be exported")
    for comp in COMPONENTS:
        if not (root / comp).is_dir():
            raise EdgeCerError(f"{root / comp}: missing component folder; the diffusers folder is incomplete, "
                               f"download the whole pipeline")
    for comp in ("unet", "vae", "text_encoder"):
        folder = root / comp
        if not any(folder.glob("*.safetensors")):
            pickles = [p for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
            if pickles:
                refuse_pickle(pickles[0], "weights")
            raise EdgeCerError(f"{folder}: no .safetensors weights; the folder is incomplete")
    scheduler_config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    try:
        unet = UNet2DConditionModel.from_pretrained(root / "unet", use_safetensors=True)
        vae = AutoencoderKL.from_pretrained(root / "vae", use_safetensors=True)
        text_encoder = CLIPTextModel.from_pretrained(root / "text_encoder", use_safetensors=True)
        tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
    except (OSError, ValueError, KeyError) as exc:
        raise EdgeCerError(f"{root}: cannot load the pipeline ({str(exc).splitlines()[0]}); "
                           f"re-download the folder") from exc
    fe = root / "feature_extractor" / "preprocessor_config.json"
    fe_size = None
    if fe.is_file():
        crop = json.loads(fe.read_text()).get("crop_size")
        fe_size = crop["height"] if isinstance(crop, dict) else crop
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise EdgeCerError(f"{root}: text encoder width {text_encoder.config.hidden_size} != UNet cross-attention "
                           f"{unet.config.cross_attention_dim}; the folder mixes components of different models")
    for m in (unet, vae, text_encoder):
        m.eval().requires_grad_(False)
    return SDCheckpoint(root, unet, vae, text_encoder, tokenizer, scheduler_config, fe_size)


def load_tiny_vae(root: Path, vae) -> torch.nn.Module:
    """A diffusers AutoencoderTiny folder (TAESD), checked against the model's own VAE latents."""
    from diffusers import AutoencoderTiny

    root = Path(root)
    config = root / "config.json"
    if not config.is_file() or json.loads(config.read_text()).get("_class_name") != "AutoencoderTiny":
        raise EdgeCerError(f"{config}: not a diffusers AutoencoderTiny folder; --tiny-vae takes a TAESD folder "
                           f"(config.json with _class_name AutoencoderTiny, diffusion_pytorch_model.safetensors)")
    if not any(root.glob("*.safetensors")):
        pickles = [p for p in root.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            refuse_pickle(pickles[0], "weights")
        raise EdgeCerError(f"{root}: no .safetensors weights; the folder is incomplete")
    try:
        tiny = AutoencoderTiny.from_pretrained(root, use_safetensors=True)
    except (OSError, ValueError, KeyError) as exc:
        raise EdgeCerError(f"{root}: cannot load the tiny VAE ({str(exc).splitlines()[0]}); re-download it") from exc
    if tiny.config.latent_channels != vae.config.latent_channels:
        raise EdgeCerError(f"{root}: a tiny VAE for {tiny.config.latent_channels}-channel latents; the model's VAE "
                           f"has {vae.config.latent_channels} (TAESD is for SD-1.x/2.x, TAESDXL for SDXL)")
    return tiny.eval().requires_grad_(False)


def load_ip_adapter(path: Path, unet, image_encoder_dir: Path | None = None) -> IPAdapter:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = Path(path)
    refuse_pickle(path, "IP-Adapter")
    if not path.is_file():
        raise EdgeCerError(f"{path}: no such IP-Adapter file; pass the .safetensors file (e.g. "
                           f"models/ip-adapter_sd15.safetensors)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise EdgeCerError(f"{path}: not a readable safetensors file ({exc}); re-download it") from exc
    proj = {k[len("image_proj."):]: v for k, v in state.items() if k.startswith("image_proj.")}
    layers = {k[len("ip_adapter."):]: v for k, v in state.items() if k.startswith("ip_adapter.")}
    if not proj or not layers or len(proj) + len(layers) != len(state):
        raise EdgeCerError(f"{path}: unknown IP-Adapter layout (expected only image_proj.* and ip_adapter.* keys, "
                           f"the h94 layout); convert it to that layout")
    if "proj.weight" in proj and "norm.weight" in proj and len(proj) == 4:
        kind, tokens = "base", proj["proj.weight"].shape[0] // proj["norm.weight"].shape[0]
        embed_in = proj["proj.weight"].shape[1]
    elif "latents" in proj and "proj_in.weight" in proj:
        kind, tokens = "plus", proj["latents"].shape[1]
        embed_in = proj["proj_in.weight"].shape[1]
    else:
        raise EdgeCerError(f"{path}: unsupported IP-Adapter type (only the base and plus adapters are supported; "
                           f"full-face and FaceID adapters are not)")

    # Each cross-attention layer needs to_k_ip/to_v_ip mapping the UNet's cross-attention width.
    cross = unet.config.cross_attention_dim
    n_cross = sum(1 for n in unet.attn_processors if n.endswith("attn2.processor"))
    keys = sorted(int(k.split(".")[0]) for k in layers if k.endswith("to_k_ip.weight"))
    if keys != [2 * i + 1 for i in range(n_cross)]:
        raise EdgeCerError(f"{path}: adapter has {len(keys)} cross-attention layers, the UNet has {n_cross}; "
                           f"this adapter belongs to another model")
    in_dim = layers["1.to_k_ip.weight"].shape[1]
    if in_dim != cross:
        raise EdgeCerError(f"{path}: adapter expects cross-attention width {in_dim}, the UNet has {cross}; "
                           f"use the adapter made for this base model")

    enc_dir = Path(image_encoder_dir) if image_encoder_dir else path.parent / "image_encoder"
    if not (enc_dir / "config.json").is_file():
        raise EdgeCerError(f"{enc_dir}: no image encoder (config.json); pass --image-encoder DIR (h94 layout keeps "
                           f"it in models/image_encoder beside the adapter)")
    weights = list(enc_dir.glob("*.safetensors"))
    if not weights:
        pickles = [p for p in enc_dir.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            refuse_pickle(pickles[0], "image encoder")
        raise EdgeCerError(f"{enc_dir}: no .safetensors weights for the image encoder")
    config = CLIPVisionConfig.from_pretrained(enc_dir)
    expected = config.projection_dim if kind == "base" else config.hidden_size
    if embed_in != expected:
        what = "projection_dim" if kind == "base" else "hidden_size"
        raise EdgeCerError(f"{path}: {kind} adapter takes {embed_in}-wide image features, the image encoder in "
                           f"{enc_dir} gives {what}={expected}; use the encoder released with this adapter")
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(enc_dir, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise EdgeCerError(f"{enc_dir}: cannot load the image encoder ({str(exc).splitlines()[0]}); its weights "
                           f"and config.json do not match, re-download it") from exc
    return IPAdapter(path, kind, int(tokens), proj, layers, encoder.eval().requires_grad_(False), enc_dir)


def source_hashes(ckpt: SDCheckpoint, ip: IPAdapter) -> dict:
    """SHA-256 of the source weights and configs, recorded in the manifest (provenance)."""
    model_files = sorted(p for p in ckpt.root.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json",
                                                                                          ".txt"))
    enc_files = sorted(p for p in ip.image_encoder_dir.rglob("*") if p.is_file())
    return {
        "model": {"path": str(ckpt.root), "files": {p.relative_to(ckpt.root).as_posix(): sha256_file(p)
                                                    for p in model_files}},
        "ip_adapter": {"path": str(ip.path), "sha256": sha256_file(ip.path)},
        "image_encoder": {"path": str(ip.image_encoder_dir),
                          "files": {p.relative_to(ip.image_encoder_dir).as_posix(): sha256_file(p) for p in enc_files}},
    }
