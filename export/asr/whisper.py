"""Whisper (a transformers folder or a CTranslate2 folder) -> sherpa-onnx's Whisper format.

sherpa-onnx reads two graphs (see k2-fsa/sherpa-onnx scripts/whisper/export-onnx.py):
  encoder: mel (N, n_mels, T) -> n_layer_cross_k, n_layer_cross_v (n_text_layer, N, T/2, n_text_state),
           with the tokenizer's special ids as metadata (edge_cer.speech.families.WHISPER_ENCODER_KEYS)
  decoder: tokens, in_n_layer_self_k_cache, in_n_layer_self_v_cache, n_layer_cross_k, n_layer_cross_v, offset
           -> logits, out_n_layer_self_k_cache, out_n_layer_self_v_cache
and tokens.txt, one "base64(bytes) id" line per BPE token. T is free (sherpa pads only 10 s past the audio),
so the encoder slices its positional table instead of insisting on 3000 frames as transformers does.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OPSET = 17
CT2_DEFAULT_FFN = 4  # Whisper's MLP is 4 x d_model in every released size


def _attend(q, k, v, n_head: int, mask=None):
    """Scaled dot-product attention over (N, L, D) tensors split into heads."""
    (n, lq, d), lk = q.shape, k.shape[1]
    q = q.view(n, lq, n_head, d // n_head).transpose(1, 2)
    k = k.view(n, lk, n_head, d // n_head).transpose(1, 2)
    v = v.view(n, lk, n_head, d // n_head).transpose(1, 2)
    w = q @ k.transpose(-1, -2) * (d // n_head) ** -0.5
    if mask is not None:
        w = w + mask
    return (w.softmax(-1) @ v).transpose(1, 2).reshape(n, lq, d)


def _self_attention(attn, x, n_head, mask=None):
    return attn.out_proj(_attend(attn.q_proj(x), attn.k_proj(x), attn.v_proj(x), n_head, mask))


class WhisperEncoderGraph(nn.Module):
    """The sherpa encoder graph over a transformers WhisperForConditionalGeneration's weights."""

    input_names = ["mel"]
    output_names = ["n_layer_cross_k", "n_layer_cross_v"]
    dynamic_axes = {"mel": {0: "n_audio", 2: "T"}, "n_layer_cross_k": {1: "n_audio", 2: "T"},
                    "n_layer_cross_v": {1: "n_audio", 2: "T"}}

    def __init__(self, model):
        super().__init__()
        self.encoder, self.decoder = model.model.encoder, model.model.decoder
        self.n_head = model.config.encoder_attention_heads

    def forward(self, mel):
        e = self.encoder
        x = F.gelu(e.conv2(F.gelu(e.conv1(mel)))).permute(0, 2, 1)
        x = x + e.embed_positions.weight[: x.shape[1]]
        for layer in e.layers:
            x = x + _self_attention(layer.self_attn, layer.self_attn_layer_norm(x), self.n_head)
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        x = e.layer_norm(x)
        cross = [layer.encoder_attn for layer in self.decoder.layers]
        return torch.stack([a.k_proj(x) for a in cross]), torch.stack([a.v_proj(x) for a in cross])


class WhisperDecoderGraph(nn.Module):
    """The sherpa decoder graph: one step (or the whole prompt) with a fixed-size self-attention cache.

    sherpa passes the cache at its full n_text_ctx length. Attention reads only the `offset` cached positions plus
    the new ones (gathered, not masked over all n_text_ctx: a step then costs what its context costs, about 20%
    less per token for tiny.en), and the output cache is those rows followed by the input's rows past them.
    Rows past offset+n are never read, so whatever sherpa leaves there cannot reach the logits.
    """

    input_names = ["tokens", "in_n_layer_self_k_cache", "in_n_layer_self_v_cache", "n_layer_cross_k",
                   "n_layer_cross_v", "offset"]
    output_names = ["logits", "out_n_layer_self_k_cache", "out_n_layer_self_v_cache"]
    dynamic_axes = {"tokens": {0: "n_audio", 1: "n_tokens"}, "in_n_layer_self_k_cache": {1: "n_audio"},
                    "in_n_layer_self_v_cache": {1: "n_audio"}, "n_layer_cross_k": {1: "n_audio", 2: "T"},
                    "n_layer_cross_v": {1: "n_audio", 2: "T"}}

    def __init__(self, model):
        super().__init__()
        self.decoder = model.model.decoder
        self.n_head = model.config.decoder_attention_heads

    def forward(self, tokens, k_cache, v_cache, cross_k, cross_v, offset):
        d = self.decoder
        n_ctx, start = k_cache.shape[2], offset[0]
        steps = torch.arange(tokens.shape[1]) + start  # absolute positions of the new tokens
        x = d.embed_tokens(tokens) + d.embed_positions.weight.index_select(0, steps)
        past, later = torch.arange(start), torch.arange(start + tokens.shape[1], n_ctx)
        mask = torch.where(torch.arange(start + tokens.shape[1])[None, :] > steps[:, None], float("-inf"), 0.0)
        new_k, new_v = [], []
        for i, layer in enumerate(d.layers):
            a, h = layer.self_attn, layer.self_attn_layer_norm(x)
            k = torch.cat([k_cache[i].index_select(1, past), a.k_proj(h)], 1)
            v = torch.cat([v_cache[i].index_select(1, past), a.v_proj(h)], 1)
            x = x + a.out_proj(_attend(a.q_proj(h), k, v, self.n_head, mask))
            c = layer.encoder_attn
            x = x + c.out_proj(_attend(c.q_proj(layer.encoder_attn_layer_norm(x)), cross_k[i], cross_v[i], self.n_head))
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
            new_k.append(torch.cat([k, k_cache[i].index_select(1, later)], 1))
            new_v.append(torch.cat([v, v_cache[i].index_select(1, later)], 1))
        logits = d.layer_norm(x) @ d.embed_tokens.weight.T
        return logits, torch.stack(new_k), torch.stack(new_v)


def _ct2_to_transformers(variables: dict[str, np.ndarray]):
    """Map CTranslate2's WhisperSpec variables onto a transformers WhisperForConditionalGeneration."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    def t(name):
        return torch.from_numpy(np.array(variables[name], dtype=np.float32))

    def layers(side):
        return len({k.split("/")[1] for k in variables if re.match(rf"{side}/layer_\d+/", k)})

    vocab, d_model = variables["decoder/embeddings/weight"].shape
    config = WhisperConfig(
        vocab_size=vocab, num_mel_bins=variables["encoder/conv1/weight"].shape[1], d_model=d_model,
        encoder_layers=layers("encoder"), decoder_layers=layers("decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]), decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=CT2_DEFAULT_FFN * d_model, decoder_ffn_dim=CT2_DEFAULT_FFN * d_model,
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0])
    sd = {}

    def linear(dst, src, rows=None, bias=True):
        w = t(f"{src}/weight") if rows is None else t(f"{src}/weight")[rows]
        sd[f"{dst}.weight"] = w
        if bias:
            sd[f"{dst}.bias"] = t(f"{src}/bias") if rows is None else t(f"{src}/bias")[rows]

    def norm(dst, src):
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def attention(dst, src, fused_qkv):
        q, k, v = (slice(i * d_model, (i + 1) * d_model) for i in range(3))
        if fused_qkv:  # self-attention: one [q; k; v] projection (k's bias is CT2's zero padding)
            linear(f"{dst}.q_proj", f"{src}/linear_0", q)
            linear(f"{dst}.k_proj", f"{src}/linear_0", k, bias=False)
            linear(f"{dst}.v_proj", f"{src}/linear_0", v)
            linear(f"{dst}.out_proj", f"{src}/linear_1")
        else:  # cross-attention: q, then a fused [k; v] over the encoder output
            linear(f"{dst}.q_proj", f"{src}/linear_0")
            linear(f"{dst}.k_proj", f"{src}/linear_1", q, bias=False)
            linear(f"{dst}.v_proj", f"{src}/linear_1", k)
            linear(f"{dst}.out_proj", f"{src}/linear_2")

    for side in ("encoder", "decoder"):
        for i in range(layers(side)):
            dst, src = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            attention(f"{dst}.self_attn", f"{src}/self_attention", True)
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            if side == "decoder":
                attention(f"{dst}.encoder_attn", f"{src}/attention", False)
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        sd[f"model.{side}.embed_positions.weight"] = t(f"{side}/position_encodings/encodings")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"CTranslate2 -> transformers mapping incomplete: missing {missing}, unexpected {unexpected}")
    return model.eval()


def load_whisper(src: Path):
    """(transformers model, tokenizer.json path, source kind) for a transformers or CTranslate2 Whisper folder."""
    from edge_cer.errors import EdgeCerError

    src = Path(src)
    tokenizer = src / "tokenizer.json"
    if not tokenizer.is_file():
        raise EdgeCerError(f"{tokenizer}: missing; a Whisper folder needs its tokenizer.json")
    if (src / "model.bin").is_file():
        from export.asr.ctranslate2_reader import read_model_bin

        spec, variables = read_model_bin(src / "model.bin")
        if spec != "WhisperSpec":
            raise EdgeCerError(f"{src / 'model.bin'}: a CTranslate2 {spec}, not a Whisper model")
        return _ct2_to_transformers(variables), tokenizer, "ctranslate2"
    config = src / "config.json"
    if not config.is_file() or json.loads(config.read_text()).get("model_type") != "whisper":
        raise EdgeCerError(f"{src}: neither a CTranslate2 Whisper folder (model.bin) nor a transformers Whisper "
                           "folder (config.json with model_type whisper)")
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(src).eval(), tokenizer, "transformers"


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable-unicode stand-ins for bytes, inverted (the BPE vocabulary is written in them)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes, extra = {}, 0
    for b in range(256):
        if b in printable:
            codes[chr(b)] = b
        else:
            codes[chr(256 + extra)] = b
            extra += 1
    return codes


def tokenizer_metadata(tokenizer_json: Path, model) -> tuple[dict, list[str]]:
    """sherpa's encoder metadata for the special tokens, and tokens.txt lines."""
    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    special = {t["content"]: t["id"] for t in data["added_tokens"]}
    vocab = data["model"]["vocab"]
    eot = special["<|endoftext|>"]
    languages = [(c[2:-2], i) for c, i in special.items() if 2 <= len(c[2:-2]) <= 3 and c[2:-2].isalpha()
                 and c[2:-2].islower() and i > special["<|startoftranscript|>"]]
    multilingual = model.config.vocab_size >= 51865  # the English-only models have 51864 ids
    sot = special["<|startoftranscript|>"]
    sot_sequence = [sot] + ([special["<|en|>"], special["<|transcribe|>"]] if multilingual else [])
    c = model.config
    meta = {"model_type": "whisper", "version": "1", "maintainer": "edge-cer", "n_mels": c.num_mel_bins,
            "n_audio_ctx": c.max_source_positions, "n_audio_state": c.d_model, "n_audio_head": c.encoder_attention_heads,
            "n_audio_layer": c.encoder_layers, "n_vocab": c.vocab_size, "n_text_ctx": c.max_target_positions,
            "n_text_state": c.d_model, "n_text_head": c.decoder_attention_heads, "n_text_layer": c.decoder_layers,
            "sot_sequence": ",".join(map(str, sot_sequence)), "sot": sot, "sot_index": 0, "eot": eot,
            "blank_id": vocab["Ġ"], "is_multilingual": int(multilingual),
            "no_speech": special.get("<|nospeech|>", special.get("<|nocaptions|>")),
            "transcribe": special["<|transcribe|>"], "translate": special["<|translate|>"],
            "sot_prev": special["<|startofprev|>"], "sot_lm": special["<|startoflm|>"],
            "no_timestamps": special["<|notimestamps|>"]}
    if multilingual:
        meta["all_language_tokens"] = ",".join(str(i) for _, i in languages)
        meta["all_language_codes"] = ",".join(code for code, _ in languages)
    to_byte = _byte_decoder()
    lines = [f"{base64.b64encode(bytes(to_byte[ch] for ch in token)).decode()} {i}"
             for token, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i < eot]
    return meta, lines


def export_whisper(model, tokenizer_json: Path, out: Path) -> dict:
    """Write out/{encoder,decoder}.onnx and out/tokens.txt; return the manifest entry."""
    from export.asr.test_models import _add_metadata

    out.mkdir(parents=True, exist_ok=True)
    meta, token_lines = tokenizer_metadata(tokenizer_json, model)
    c = model.config
    encoder, decoder = WhisperEncoderGraph(model), WhisperDecoderGraph(model)
    mel = torch.zeros(1, c.num_mel_bins, 2 * c.max_source_positions)
    with torch.no_grad():
        cross_k, cross_v = encoder(mel)
        cache = torch.zeros(c.decoder_layers, 1, c.max_target_positions, c.d_model)
        tokens = torch.tensor([[meta["sot"]] * 3])
        for graph, args, name in ((encoder, (mel,), "encoder"),
                                  (decoder, (tokens, cache, cache, cross_k, cross_v, torch.zeros(1, dtype=torch.int64)),
                                   "decoder")):
            torch.onnx.export(graph, args, str(out / f"{name}.onnx"), input_names=graph.input_names,
                              output_names=graph.output_names, dynamic_axes=graph.dynamic_axes, opset_version=OPSET,
                              dynamo=False)
    _add_metadata(out / "encoder.onnx", meta)
    (out / "tokens.txt").write_text("\n".join(token_lines) + "\n", encoding="utf-8")
    return {"family": "whisper", "files": {"encoder": f"{out.name}/encoder.onnx", "decoder": f"{out.name}/decoder.onnx",
                                           "tokens": f"{out.name}/tokens.txt"}, "options": {"language": "en" if meta["is_multilingual"] else ""}}


def quantize_int8(entry: dict, root: Path) -> dict:
    """Dynamic int8 MatMul weights (what sherpa-onnx publishes as *.int8.onnx); returns the updated entry."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    files = dict(entry["files"])
    for role, rel in entry["files"].items():
        if rel.endswith(".onnx"):
            src = root / rel
            dst = src.with_suffix(".int8.onnx")
            quantize_dynamic(model_input=str(src), model_output=str(dst), op_types_to_quantize=["MatMul"],
                             weight_type=QuantType.QInt8)
            src.unlink()
            files[role] = dst.relative_to(root).as_posix()
    return {**entry, "files": files, "options": {**entry.get("options", {}), "int8": True}}
