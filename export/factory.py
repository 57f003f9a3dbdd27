"""Seeded random-weight SD + IP-Adapter models, saved in the public layouts a real user has.

    <out>/<preset>/                         a diffusers StableDiffusionPipeline folder
    <out>/<preset>-ip/models/ip-adapter_sd15.safetensors          h94 layout, base adapter (4 tokens)
    <out>/<preset>-ip/models/ip-adapter-plus_sd15.safetensors     h94 layout, plus adapter (Resampler, 16 tokens)
    <out>/<preset>-ip/models/image_encoder/                       CLIPVisionModelWithProjection

    <out>/<preset>-taesd/                   a diffusers AutoencoderTiny folder (TAESD's layout and, for the real
                                            presets, its architecture): the tiny VAE decoder option

Presets: `tiny-sd15` / `tiny-sd2` (seconds to build; the test models) and `sd15` / `sd21` / `sd-turbo`
(architecture-true: the real configs with random weights, for honest latency and the >2 GB external-data path).
Random weights give noise pictures, but real shapes, real timings and real numerics.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edge_cer.image import CLIP_MEAN, CLIP_STD


# Scheduler configs as the public checkpoints ship them.
_SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
EULER_SD15 = dict(_class_name="EulerDiscreteScheduler", **_SD_BETAS, steps_offset=1, timestep_spacing="leading",
                  prediction_type="epsilon", interpolation_type="linear", use_karras_sigmas=False)
PNDM_SD15 = dict(_class_name="PNDMScheduler", **_SD_BETAS, set_alpha_to_one=False, skip_prk_steps=True,
                 steps_offset=1, clip_sample=False, trained_betas=None)
DDIM_SD21_V = dict(_class_name="DDIMScheduler", **_SD_BETAS, clip_sample=False, set_alpha_to_one=False,
                   steps_offset=1, skip_prk_steps=True, prediction_type="v_prediction")
EULER_TURBO = dict(_class_name="EulerDiscreteScheduler", **_SD_BETAS, steps_offset=1, timestep_spacing="trailing",
                   prediction_type="epsilon", interpolation_type="linear", use_karras_sigmas=False)


@dataclass(frozen=True)
class Preset:
    unet: dict
    vae: dict
    text: dict  # CLIPTextConfig kwargs (vocab and special ids are the real CLIP tokenizer's)
    vision: dict  # CLIPVisionConfig kwargs of the adapter's image encoder
    scheduler: dict
    pad_token: str  # "<|endoftext|>" (SD-1.x, OpenAI CLIP) or "!" (SD-2.x, OpenCLIP)
    plus_hidden: int = 768  # Resampler width (a multiple of 64: heads = width / 64)
    # Text tower of the full CLIP model whose vision tower is the image encoder (for zero-shot picture valence).
    clip_text: dict = field(default_factory=lambda: dict(_OPENCLIP_H_TEXT, num_hidden_layers=24))
    vae_scaling: float = 0.18215
    # AutoencoderTiny kwargs; {} is diffusers' default, TAESD's own architecture (madebyollin/taesd).
    tiny_vae: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


_TINY_UNET = dict(
    block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups=8,
)
# Four blocks so the VAE downsamples by 8 like every real SD VAE (the runtime relies on it).
_TINY_VAE = dict(
    block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
)
# TAESD's block structure (8x up/downsampling) at a fraction of its 64 channels.
_TINY_TAESD = dict(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                   num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))
_TINY_VISION = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3,
                    image_size=32, patch_size=8, projection_dim=24, hidden_act="gelu")

_TINY_CLIP_TEXT = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                       hidden_act="gelu")

_SD_VAE = dict(
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
)
_SD_BLOCKS = dict(
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
_SD21_UNET = dict(**_SD_BLOCKS, sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                  use_linear_projection=True)
_OPENCLIP_H_TEXT = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                        hidden_act="gelu", projection_dim=512)
# ViT-H/14 (laion2B), the image encoder of h94's SD-1.5 adapters.
_VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
              image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")

PRESETS: dict[str, Preset] = {
    "tiny-sd15": Preset(
        unet=dict(**_TINY_UNET, cross_attention_dim=32, attention_head_dim=8),
        vae=_TINY_VAE,
        text=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3,
                  hidden_act="quick_gelu"),
        vision=_TINY_VISION, scheduler=EULER_SD15, pad_token="<|endoftext|>", plus_hidden=64, clip_text=_TINY_CLIP_TEXT,
        tiny_vae=_TINY_TAESD,
    ),
    # SD-2 shape: linear projections, per-block head dims, v-prediction, OpenCLIP's "!" padding.
    "tiny-sd2": Preset(
        unet=dict(**_TINY_UNET, cross_attention_dim=48, attention_head_dim=(2, 4), use_linear_projection=True),
        vae=_TINY_VAE,
        text=dict(hidden_size=48, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, hidden_act="gelu"),
        vision=_TINY_VISION, scheduler=DDIM_SD21_V, pad_token="!", plus_hidden=64, clip_text=_TINY_CLIP_TEXT,
        tiny_vae=_TINY_TAESD,
    ),
    "sd15": Preset(
        unet=dict(**_SD_BLOCKS, sample_size=64, cross_attention_dim=768, attention_head_dim=8),
        vae=_SD_VAE,
        text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                  hidden_act="quick_gelu", projection_dim=768),
        vision=_VIT_H, scheduler=PNDM_SD15, pad_token="<|endoftext|>",
    ),
    "sd21": Preset(unet=_SD21_UNET, vae={**_SD_VAE, "sample_size": 768}, text=_OPENCLIP_H_TEXT, vision=_VIT_H,
                   scheduler=DDIM_SD21_V, pad_token="!"),
    # SD-Turbo: the SD-2.1 architecture at 512², distilled for 1-4 steps with Euler "trailing".
    "sd-turbo": Preset(unet={**_SD21_UNET, "sample_size": 64}, vae=_SD_VAE, text=_OPENCLIP_H_TEXT, vision=_VIT_H,
                       scheduler=EULER_TURBO, pad_token="!"),
}


def clip_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's BPE vocabulary and merges, built the way OpenAI's CLIP builds them, from the
    `bpe_simple_vocab_16e6.txt.gz` inside the open_clip_torch wheel (read as a file: importing open_clip
    would import torchvision)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    try:
        path = importlib.metadata.distribution("open_clip_torch").locate_file("open_clip/bpe_simple_vocab_16e6.txt.gz")
        lines = gzip.open(path).read().decode("utf-8").split("\n")
    except (importlib.metadata.PackageNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(
            "the CLIP BPE vocabulary comes from the open_clip_torch wheel: pip install --no-deps open_clip_torch"
        ) from exc
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    symbols += [s + "</w>" for s in symbols]
    symbols += ["".join(m) for m in merges]
    symbols += ["<|startoftext|>", "<|endoftext|>"]
    return {s: i for i, s in enumerate(symbols)}, merges


def build_tokenizer(pad_token: str):
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=77)


def build_pipeline_folder(preset: str, out: Path, seed: int = 0) -> Path:
    """A diffusers StableDiffusionPipeline folder with seeded random weights (safetensors)."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    p = PRESETS[preset]
    tokenizer = build_tokenizer(p.pad_token)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**p.unet)
    _jitter_norms(unet, seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**p.vae, scaling_factor=p.vae_scaling)
    _jitter_norms(vae, seed + 1)
    torch.manual_seed(seed + 2)
    text_config = CLIPTextConfig(
        **p.text, vocab_size=len(tokenizer), max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    text_encoder = CLIPTextModel(text_config)
    size = p.vision["image_size"]
    feature_extractor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), do_convert_rgb=True,
    )
    scheduler = _scheduler_from_dict(p.scheduler)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=feature_extractor, image_encoder=None, requires_safety_checker=False,
    )
    out = Path(out)
    pipe.save_pretrained(out, safe_serialization=True)
    # Keep the scheduler config as the checkpoint would ship it (diffusers adds its own keys).
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(p.scheduler, indent=2) + "\n")
    _write_slow_tokenizer_files(out / "tokenizer", p.pad_token)
    return out


def build_tiny_vae(preset: str, out: Path, seed: int = 0) -> Path:
    """A diffusers AutoencoderTiny folder (config.json + safetensors) with seeded random weights; TAESD's
    architecture for the real presets. Its scaling factor is 1.0: TAESD decodes the UNet's latents as they are."""
    from diffusers import AutoencoderTiny

    p = PRESETS[preset]
    torch.manual_seed(seed + 3)
    vae = AutoencoderTiny(**p.tiny_vae, latent_channels=p.vae["latent_channels"])
    vae.save_pretrained(out, safe_serialization=True)
    return Path(out)


def _write_slow_tokenizer_files(folder: Path, pad_token: str) -> None:
    """Published SD folders ship vocab.json + merges.txt (no tokenizer.json); mirror that layout so the
    export stage is tested on what users have."""
    vocab, merges = clip_vocabulary()
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def build_clip(preset: str, out: Path, seed: int = 0):
    """A full CLIP model (a transformers CLIPModel folder, as laion's CLIP-ViT-H-14 ships): its vision half is the
    adapter's image encoder, its text half gives the zero-shot prompt embeddings (`export sd --clip`)."""
    from transformers import CLIPConfig, CLIPModel

    p = PRESETS[preset]
    torch.manual_seed(seed + 10)
    config = CLIPConfig(text_config=dict(p.clip_text, vocab_size=49408, max_position_embeddings=77),
                        vision_config=p.vision, projection_dim=p.vision["projection_dim"])
    clip = CLIPModel(config)
    clip.save_pretrained(out, safe_serialization=True)
    build_tokenizer("!").save_pretrained(out)
    return clip


def build_ip_adapters(preset: str, out: Path, clip, seed: int = 0) -> dict[str, Path]:
    """h94-layout IP-Adapter files (base + plus) and their image encoder (the vision half of the CLIPModel
    `clip`), matched to the preset's UNet."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.embeddings import ImageProjection, IPAdapterPlusImageProjection
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    p = PRESETS[preset]
    models = Path(out) / "models"
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**p.vision))
    vision = {k: v for k, v in clip.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
    encoder.load_state_dict(vision, strict=True)
    encoder.save_pretrained(models / "image_encoder", safe_serialization=True)

    cross = p.unet["cross_attention_dim"]
    with torch.device("meta"):  # only the attention layout is needed, not weights
        layout = UNet2DConditionModel(**p.unet)
    attn = _ip_attention_layers(layout)

    torch.manual_seed(seed + 11)
    base_proj = ImageProjection(image_embed_dim=p.vision["projection_dim"], cross_attention_dim=cross,
                                num_image_text_embeds=4)
    _jitter_norms(base_proj, seed + 11)
    torch.manual_seed(seed + 12)
    plus_proj = IPAdapterPlusImageProjection(
        embed_dims=p.vision["hidden_size"], output_dims=cross, hidden_dims=p.plus_hidden,
        heads=p.plus_hidden // 64, num_queries=16,
    )
    _jitter_norms(plus_proj, seed + 12)

    files = {}
    for kind, proj, to_h94 in (("base", base_proj, _base_proj_to_h94), ("plus", plus_proj, _plus_proj_to_h94)):
        torch.manual_seed(seed + 20 + len(files))
        state = {f"image_proj.{k}": v for k, v in to_h94(proj.state_dict()).items()}
        for i, hidden in enumerate(attn):  # h94 numbers attention processors; cross-attention ones are odd
            for name in ("to_k_ip", "to_v_ip"):
                state[f"ip_adapter.{2 * i + 1}.{name}.weight"] = torch.nn.Linear(cross, hidden, bias=False).weight
        path = models / ("ip-adapter_sd15.safetensors" if kind == "base" else "ip-adapter-plus_sd15.safetensors")
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))
        files[kind] = path
    return files


def _ip_attention_layers(unet) -> list[int]:
    """Hidden size of each cross-attention layer in `unet.attn_processors` order (diffusers' convention)."""
    blocks = list(unet.config.block_out_channels)
    sizes = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            sizes.append(blocks[-1])
        elif name.startswith("up_blocks"):
            sizes.append(blocks[::-1][int(name.split(".")[1])])
        else:
            sizes.append(blocks[int(name.split(".")[1])])
    return sizes


def _base_proj_to_h94(sd: dict) -> dict:
    return {k.replace("image_embeds.", "proj."): v for k, v in sd.items()}


# diffusers' IPAdapterPlusImageProjectionBlock names -> the original Resampler's, per layer, by prefix.
_RESAMPLER_NAMES = (("ln0.", "0.norm1."), ("ln1.", "0.norm2."), ("attn.to_q.", "0.to_q."),
                    ("attn.to_out.0.", "0.to_out."), ("ff.0.", "1.0."), ("ff.1.net.0.proj.", "1.1."),
                    ("ff.1.net.2.", "1.3."))


def _plus_proj_to_h94(sd: dict) -> dict:
    """The inverse of diffusers' `_convert_ip_adapter_image_proj_to_diffusers` for plus adapters (which loads
    the result with strict=True, so an unmapped name cannot pass unnoticed)."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".", 2)
        if parts[0] != "layers":
            out[k] = v
            continue
        i, rest = parts[1], parts[2]
        if rest == "attn.to_k.weight":  # the Resampler keeps k and v in one matrix
            out[f"layers.{i}.0.to_kv.weight"] = torch.cat([v, sd[f"layers.{i}.attn.to_v.weight"]], dim=0)
        elif rest != "attn.to_v.weight":
            old, new = next((o, n) for o, n in _RESAMPLER_NAMES if rest.startswith(o))
            out[f"layers.{i}.{new}{rest[len(old):]}"] = v
    return out


def _jitter_norms(module: torch.nn.Module, seed: int) -> None:
    """Default init leaves norm weights at 1 and biases at 0, which hides wiring mistakes (e.g. a missing
    LayerNorm bias); perturb them so parity tests see every parameter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)) and m.weight is not None:
                m.weight.add_(0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.add_(0.1 * torch.randn(m.bias.shape, generator=g))


def _scheduler_from_dict(config: dict):
    import diffusers

    return getattr(diffusers, config["_class_name"]).from_config(config)


def build(preset: str, out: Path, seed: int = 0) -> tuple[Path, dict[str, Path]]:
    """Build a preset's pipeline folder, its full CLIP model (`<preset>-clip/`), its tiny VAE (`<preset>-taesd/`)
    and its adapters under `out`; returns (model dir, {kind: adapter file})."""
    out = Path(out)
    model = build_pipeline_folder(preset, out / preset, seed)
    build_tiny_vae(preset, out / f"{preset}-taesd", seed)
    clip = build_clip(preset, out / f"{preset}-clip", seed)
    adapters = build_ip_adapters(preset, out / f"{preset}-ip", clip, seed)
    return model, adapters
