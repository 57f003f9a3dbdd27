"""torch modules whose forward() is exactly one exported graph (names and shapes: edge_cer.graphs).

Each wrapper reproduces what diffusers' pipelines compute for that stage, so a graph can be checked against
the diffusers component it came from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edge_cer.graphs import TINY_VAE_DECODER, ModelDims
from export.checkpoint import IPAdapter, SDCheckpoint


def model_dims(ckpt: SDCheckpoint, ip: IPAdapter) -> ModelDims:
    vision = ip.image_encoder.config
    plus = ip.kind == "plus"
    return ModelDims(
        text_hidden=ckpt.text_encoder.config.hidden_size,
        latent_channels=ckpt.vae.config.latent_channels,
        # The pipeline preprocesses the IP picture with the model folder's feature extractor when it has one.
        image_size=ckpt.feature_extractor_size or vision.image_size,
        image_embed_dim=vision.hidden_size if plus else vision.projection_dim,
        image_tokens=(vision.image_size // vision.patch_size) ** 2 + 1 if plus else 1,
        ip_tokens=ip.tokens,
        adapter=ip.kind,
    )


class TextEncoder(torch.nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        # SD pipelines use the final (layer-normed) hidden states of all 77 positions, no attention mask.
        return self.text_encoder(input_ids).last_hidden_state


class ImageEncoder(torch.nn.Module):
    def __init__(self, encoder, kind: str):
        super().__init__()
        self.encoder, self.kind = encoder, kind

    def forward(self, pixel_values):
        if self.kind == "base":
            return self.encoder(pixel_values).image_embeds
        # Plus adapters read the penultimate layer, before post_layernorm.
        return self.encoder(pixel_values, output_hidden_states=True).hidden_states[-2]


class ImageProj(torch.nn.Module):
    def __init__(self, projection):
        super().__init__()
        self.projection = projection

    def forward(self, image_embeds):
        return self.projection(image_embeds)


class _Scale:
    """The ip_scale graph input, shared by every IP attention processor during one forward."""

    value: torch.Tensor | None = None


class IPAttnProcessor(torch.nn.Module):
    """diffusers' IPAdapterAttnProcessor2_0 arithmetic with the scale as a tensor.

    WAR: diffusers skips the image branch when `scale == 0`, a Python branch that tracing would freeze into
    the graph; here the branch always runs and `+ 0 * x` leaves the text result bit-identical.
    Handles the cross-attention layers of SD UNets (3-D hidden states, no group/spatial/cross norm).
    """

    def __init__(self, to_k_ip, to_v_ip, scale: _Scale):
        super().__init__()
        self.to_k_ip, self.to_v_ip, self.scale = to_k_ip, to_v_ip, scale

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        text, ip_tokens = encoder_hidden_states
        b, heads = hidden_states.shape[0], attn.heads

        def split(x):  # (b, n, heads * d) -> (b, heads, n, d)
            return x.view(b, -1, heads, x.shape[-1] // heads).transpose(1, 2)

        def merge(x):
            return x.transpose(1, 2).reshape(b, -1, x.shape[1] * x.shape[3])

        query = split(attn.to_q(hidden_states))
        text_out = F.scaled_dot_product_attention(query, split(attn.to_k(text)), split(attn.to_v(text)))
        ip_out = F.scaled_dot_product_attention(query, split(self.to_k_ip(ip_tokens)), split(self.to_v_ip(ip_tokens)))
        hidden_states = merge(text_out) + self.scale.value * merge(ip_out)
        return attn.to_out[1](attn.to_out[0](hidden_states))


class UNetIP(torch.nn.Module):
    """The UNet with the IP-Adapter inside: projected image tokens and the IP scale are graph inputs."""

    def __init__(self, unet, ip: IPAdapter):
        super().__init__()
        # diffusers' own loader converts the h94 weights (the same path `pipe.load_ip_adapter` takes).
        unet._load_ip_adapter_weights([{"image_proj": ip.image_proj, "ip_adapter": ip.ip_layers}])
        self.image_proj = unet.encoder_hid_proj.image_projection_layers[0]
        self._scale = _Scale()
        procs = {}
        for name, proc in unet.attn_processors.items():
            if hasattr(proc, "to_k_ip"):
                proc = IPAttnProcessor(proc.to_k_ip[0], proc.to_v_ip[0], self._scale)
            procs[name] = proc
        unet.set_attn_processor(procs)
        # Image tokens arrive already projected (the projection runs once per stimulus, see ImageProj).
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = None
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, ip_tokens, ip_scale):
        self._scale.value = ip_scale
        return self.unet(sample, timestep, encoder_hidden_states=(encoder_hidden_states, ip_tokens)).sample


class VaeEncoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        # The posterior's mean: the engine's determinism rule (no sampling in the VAE).
        return self.vae.encode(sample).latent_dist.mean


class VaeDecoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return self.vae.decode(latent_sample).sample


def graph_modules(ckpt: SDCheckpoint, ip: IPAdapter, tiny_vae=None) -> dict[str, torch.nn.Module]:
    """graph name -> module; keys match edge_cer.graphs.sd_graphs. The tiny VAE's decode has the full one's
    signature: latents (divided by its scaling factor, 1.0 for TAESD) -> pixels in [-1, 1]."""
    unet = UNetIP(ckpt.unet, ip)
    tiny = {} if tiny_vae is None else {TINY_VAE_DECODER: VaeDecoder(tiny_vae)}
    return {
        "text_encoder": TextEncoder(ckpt.text_encoder),
        "image_encoder": ImageEncoder(ip.image_encoder, ip.kind),
        "image_proj": ImageProj(unet.image_proj),
        "unet": unet,
        "vae_encoder": VaeEncoder(ckpt.vae),
        "vae_decoder": VaeDecoder(ckpt.vae),
        **tiny,
    }
