"""Tiny seeded random-weight streaming models in sherpa-onnx's formats, for CI.

Each graph has exactly the inputs, outputs and metadata sherpa-onnx reads (see edge_cer.speech.families), so
sherpa's own streaming, endpointing and partial/final logic runs on them. Random weights would emit tokens on
silence too, so every model adds one designed piece: an energy gate that pushes the blank logit up when the
chunk's mean log-mel energy is below SILENCE_LOG_ENERGY. Silence then decodes to blanks (and ends the utterance
by sherpa's trailing-silence rules) while any sound decodes to random letters.
"""

from __future__ import annotations

import string
from pathlib import Path

import onnx
import torch
from torch import nn

from edge_cer.speech.families import NEMO_CTC_KEYS, TRANSDUCER_ENCODER_KEYS, ZIPFORMER2_CTC_KEYS

FEATURE_DIM = 80  # sherpa's default fbank
SUBSAMPLING = 4  # sherpa hard-codes 4 when turning output frames into timestamps
CHUNK_FRAMES = 32  # feature frames consumed per chunk (320 ms): output frames = 8
# log(FLT_EPSILON) = -15.9 is the fbank of digital silence; speech at any usual level is far above -10.
SILENCE_LOG_ENERGY = -10.0
GATE_SLOPE = 4.0
LETTERS = list(string.ascii_lowercase) + ["'"]


def _energy(frames: torch.Tensor) -> torch.Tensor:
    """Mean log-mel energy per output frame: (N, T', SUBSAMPLING * FEATURE_DIM) -> (N, T', 1)."""
    return frames.mean(dim=-1, keepdim=True)


def _gate(energy: torch.Tensor) -> torch.Tensor:
    return GATE_SLOPE * (SILENCE_LOG_ENERGY - energy)


class LstmTransducerEncoder(nn.Module):
    """icefall lstm_transducer_stateless2's streaming signature: (x, h, c) -> (encoder_out, next_h, next_c)."""

    def __init__(self, d_model: int, rnn_hidden: int, layers: int, joiner_dim: int):
        super().__init__()
        self.embed = nn.Linear(SUBSAMPLING * FEATURE_DIM, d_model)
        self.gates = nn.ModuleList(nn.Linear(2 * d_model, 4 * rnn_hidden) for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(rnn_hidden, d_model) for _ in range(layers))  # LSTMP projection
        self.out = nn.Linear(d_model, joiner_dim - 1)  # last channel carries the energy

    def forward(self, x, h, c):
        frames = x[:, :CHUNK_FRAMES].reshape(x.shape[0], CHUNK_FRAMES // SUBSAMPLING, -1)
        y = torch.tanh(self.embed(frames / 16.0))
        next_h, next_c = [], []
        for layer, (gates, proj) in enumerate(zip(self.gates, self.proj)):
            hl, cl, outs = h[layer], c[layer], []
            for t in range(y.shape[1]):  # unrolled: the chunk length is fixed
                i, f, g, o = gates(torch.cat([y[:, t], hl], dim=-1)).chunk(4, dim=-1)
                cl = torch.sigmoid(f) * cl + torch.sigmoid(i) * torch.tanh(g)
                hl = proj(torch.sigmoid(o) * torch.tanh(cl))
                outs.append(hl)
            y = torch.stack(outs, dim=1)
            next_h.append(hl)
            next_c.append(cl)
        return torch.cat([self.out(y), _energy(frames)], dim=-1), torch.stack(next_h), torch.stack(next_c)


# One zipformer2 stack, small: sherpa sizes every cached state from these (online-zipformer2-*-model.cc).
ZIPFORMER2 = {"encoder_dims": 32, "query_head_dims": 8, "value_head_dims": 4, "num_heads": 2, "num_encoder_layers": 1,
              "cnn_module_kernels": 7, "left_context_len": 8}
ZIPFORMER2_EMBED_STATE = (128, 3, 19)  # sherpa's fixed encoder_embed cache shape (batch first)
# Zipformer (v1, icefall pruned_transducer_stateless7_streaming): one value per encoder stack, comma-separated in
# the metadata. Two stacks of different sizes, so a state put in the wrong slot fails.
ZIPFORMER = {"encoder_dims": (32, 24), "attention_dims": (16, 12), "num_encoder_layers": (1, 2),
             "cnn_module_kernels": (7, 5), "left_context_len": (8, 4)}
# Conformer (icefall pruned_transducer_stateless5 streaming): two caches over all layers.
CONFORMER = {"num_encoder_layers": 2, "left_context": 8, "encoder_dim": 32, "cnn_module_kernel": 7,
             "pad_length": 7}


def zipformer2_state_shapes() -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape with batch 1, batch axis) of each cached state, in sherpa's order: six per layer, then the
    embedding cache and processed_lens."""
    z, shapes = ZIPFORMER2, []
    key, value = z["query_head_dims"] * z["num_heads"], z["value_head_dims"] * z["num_heads"]
    left, d, half = z["left_context_len"], z["encoder_dims"], z["cnn_module_kernels"] // 2
    for i in range(z["num_encoder_layers"]):
        shapes += [(f"cached_key_{i}", (left, 1, key), 1), (f"cached_nonlin_attn_{i}", (1, 1, left, 3 * d // 4), 1),
                   (f"cached_val1_{i}", (left, 1, value), 1), (f"cached_val2_{i}", (left, 1, value), 1),
                   (f"cached_conv1_{i}", (1, d, half), 0), (f"cached_conv2_{i}", (1, d, half), 0)]
    return shapes + [("embed_states", (1, *ZIPFORMER2_EMBED_STATE), 0), ("processed_lens", (1,), 0)]


def zipformer_state_shapes() -> list[tuple[str, tuple[int, ...], int]]:
    """Zipformer v1's seven caches per stack, each kind for all stacks before the next kind (sherpa's
    GetEncoderInitStates in online-zipformer-transducer-model.cc)."""
    z = ZIPFORMER
    stacks = list(zip(z["num_encoder_layers"], z["encoder_dims"], z["attention_dims"], z["cnn_module_kernels"],
                      z["left_context_len"]))
    kinds = {
        "cached_len": (lambda n, d, a, k, left: (n, 1), 1),
        "cached_avg": (lambda n, d, a, k, left: (n, 1, d), 1),
        "cached_key": (lambda n, d, a, k, left: (n, left, 1, a), 2),
        "cached_val": (lambda n, d, a, k, left: (n, left, 1, a // 2), 2),
        "cached_val2": (lambda n, d, a, k, left: (n, left, 1, a // 2), 2),
        "cached_conv1": (lambda n, d, a, k, left: (n, 1, d, k - 1), 1),
        "cached_conv2": (lambda n, d, a, k, left: (n, 1, d, k - 1), 1),
    }
    return [(f"{kind}_{i}", shape(*stack), axis) for kind, (shape, axis) in kinds.items()
            for i, stack in enumerate(stacks)]


def conformer_state_shapes() -> list[tuple[str, tuple[int, ...], int]]:
    """The conformer's attention and convolution caches, then the frames processed so far (read, not returned)."""
    c = CONFORMER
    return [("attn_cache", (c["num_encoder_layers"], c["left_context"], 1, c["encoder_dim"]), 2),
            ("cnn_cache", (c["num_encoder_layers"], c["cnn_module_kernel"] - 1, 1, c["encoder_dim"]), 2),
            ("processed_lens", (1,), 0)]


# Integer states: frame counters, advanced by the chunk's output frames; every other state is a float cache.
COUNTERS = ("processed_lens", "cached_len")


def _is_counter(name: str) -> bool:
    return name.startswith(COUNTERS)


class CachedEncoder(nn.Module):
    """The streaming signature (x, *states) -> (out, *next states) of the zipformer, zipformer2 and conformer
    encoders and the zipformer2 CTC model (out: encoder frames with the energy last, or log-probs with blank 0
    gated by energy). Each float cache is read and written back (decayed) and each counter advanced, so the states
    travel through sherpa as in icefall's export. States past `returned` are read only (the conformer's frames
    processed so far): they mask the caches before the first chunk, as icefall's conformer masks its left context.
    """

    def __init__(self, out_dim: int, ctc: bool, shapes: list, returned: int, d_model: int = 32):
        super().__init__()
        self.embed = nn.Linear(SUBSAMPLING * FEATURE_DIM, d_model)
        self.out = nn.Linear(d_model, out_dim if ctc else out_dim - 1)
        self.ctc, self.shapes, self.returned = ctc, shapes, returned

    def forward(self, x, *states):
        frames = x[:, :CHUNK_FRAMES].reshape(x.shape[0], CHUNK_FRAMES // SUBSAMPLING, -1)
        y = torch.tanh(self.embed(frames / 16.0))
        next_states = []
        for (name, shape, axis), s in list(zip(self.shapes, states))[:self.returned]:
            if _is_counter(name):
                next_states.append(s + y.shape[1])
                continue
            for processed in states[self.returned:]:  # (N,): 1 where a chunk was already processed
                seen = (processed > 0).to(s.dtype)
                s = s * seen.reshape([-1 if i == axis else 1 for i in range(len(shape))])
            next_states.append(0.5 * s)
        out = self.out(y)
        if self.ctc:
            gate = torch.cat([_gate(_energy(frames)), torch.zeros_like(out[..., 1:])], dim=-1)
            return (torch.log_softmax(out + gate, dim=-1), *next_states)
        return (torch.cat([out, _energy(frames)], dim=-1), *next_states)


def _export_cached(path: Path, out_dim: int, ctc: bool, shapes: list, out_name: str, next_names: list[str],
                   meta: dict) -> None:
    """Export a CachedEncoder for `shapes` (name, shape, batch axis) with the chunk metadata sherpa reads."""
    names = [name for name, _, _ in shapes]
    module = CachedEncoder(out_dim, ctc, shapes, returned=len(next_names))
    T = CHUNK_FRAMES + 7  # icefall pads each chunk by 7 frames of right context
    states = [torch.zeros(shape, dtype=torch.int64 if _is_counter(name) else torch.float32)
              for name, shape, _ in shapes]
    dynamic = {"x": {0: "N"}, out_name: {0: "N"}}
    for (name, _, axis), next_name in zip(shapes, next_names + [None] * len(shapes)):
        dynamic[name] = {axis: "N"}
        if next_name:
            dynamic[next_name] = {axis: "N"}
    with torch.no_grad():
        _export(module, (torch.zeros(1, T, FEATURE_DIM), *states), path, ["x", *names], [out_name, *next_names],
                {"T": T, "decode_chunk_len": CHUNK_FRAMES, **meta}, dynamic)


def _export_zipformer2(path: Path, out_dim: int, ctc: bool, out_name: str, meta: dict) -> None:
    shapes = zipformer2_state_shapes()
    _export_cached(path, out_dim, ctc, shapes, out_name, [f"new_{name}" for name, _, _ in shapes],
                   {**{k: str(v) for k, v in ZIPFORMER2.items()}, **meta})


class TransducerDecoder(nn.Module):
    def __init__(self, vocab_size: int, context_size: int, joiner_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, joiner_dim)
        self.context_size = context_size

    def forward(self, y):
        return self.embed(y).mean(dim=1)


class TransducerJoiner(nn.Module):
    def __init__(self, joiner_dim: int, vocab_size: int):
        super().__init__()
        self.out = nn.Linear(joiner_dim - 1, vocab_size)

    def forward(self, encoder_out, decoder_out):
        logits = self.out(torch.tanh(encoder_out[:, :-1] + decoder_out[:, :-1]))
        blank = torch.zeros_like(logits[:, :1])  # blank is id 0 for sherpa's transducers
        return logits + torch.cat([blank + _gate(encoder_out[:, -1:]), torch.zeros_like(logits[:, 1:])], dim=-1)


class NeMoCtcModel(nn.Module):
    """NeMo cache-aware streaming CTC signature: (audio_signal, length, cache_last_channel, cache_last_time,
    cache_last_channel_len) -> (logprobs, encoded_lengths, next caches...). The blank is the last id."""

    def __init__(self, d_model: int, vocab_size: int, cache_frames: int):
        super().__init__()
        self.embed = nn.Linear(SUBSAMPLING * FEATURE_DIM, d_model)
        self.mix = nn.Linear(2 * d_model, d_model)
        self.out = nn.Linear(d_model, vocab_size + 1)
        self.cache_frames = cache_frames

    def forward(self, audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len):
        x = audio_signal.transpose(1, 2)[:, :CHUNK_FRAMES]
        frames = x.reshape(x.shape[0], CHUNK_FRAMES // SUBSAMPLING, -1)
        y = torch.tanh(self.embed(frames / 16.0))
        context = cache_last_channel[:, 0].mean(dim=1, keepdim=True) + cache_last_time[:, 0, :, 0].unsqueeze(1)
        y = torch.tanh(self.mix(torch.cat([y, context.expand_as(y)], dim=-1)))
        logits = self.out(y)
        gate = torch.cat([torch.zeros_like(logits[..., :-1]), _gate(_energy(frames))], dim=-1)
        next_channel = torch.cat([cache_last_channel[:, 0], y], dim=1)[:, -self.cache_frames:].unsqueeze(1)
        next_time = torch.stack([y[:, -1], y[:, -2]], dim=-1).unsqueeze(1)
        encoded_len = torch.clamp(torch.div(length, SUBSAMPLING, rounding_mode="floor"), max=y.shape[1])
        return (torch.log_softmax(logits + gate, dim=-1), encoded_len, next_channel, next_time,
                cache_last_channel_len + y.shape[1])


def _add_metadata(path: Path, meta: dict) -> None:
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, str(path))


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], meta: dict,
            dynamic: dict | None = None) -> None:
    torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs,
                      opset_version=17, dynamo=False, dynamic_axes=dynamic)
    _add_metadata(path, meta)


def build_transducer(out: Path, seed: int = 0) -> dict:
    """A 3-file LSTM transducer (model_type `lstm`) plus tokens.txt; returns the manifest entry."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    d_model, rnn_hidden, layers, joiner_dim = 32, 48, 2, 24
    enc = LstmTransducerEncoder(d_model, rnn_hidden, layers, joiner_dim)
    T = CHUNK_FRAMES + 7  # icefall pads each chunk by 7 frames of right context
    encoder_meta = {"model_type": "lstm", "num_encoder_layers": layers, "T": T, "decode_chunk_len": CHUNK_FRAMES,
                    "rnn_hidden_size": rnn_hidden, "d_model": d_model}
    assert set(encoder_meta) == {"model_type", *TRANSDUCER_ENCODER_KEYS["lstm"]}
    with torch.no_grad():
        _export(enc, (torch.zeros(1, T, FEATURE_DIM), torch.zeros(layers, 1, d_model),
                      torch.zeros(layers, 1, rnn_hidden)), out / "encoder.onnx", ["x", "h", "c"],
                ["encoder_out", "next_h", "next_c"], encoder_meta,
                {"x": {0: "N"}, "h": {1: "N"}, "c": {1: "N"}, "encoder_out": {0: "N"}, "next_h": {1: "N"},
                 "next_c": {1: "N"}})
    return _transducer_head(out, joiner_dim)


def build_nemo_ctc(out: Path, seed: int = 0) -> dict:
    """A one-file NeMo streaming CTC model plus tokens.txt (blank last); returns the manifest entry."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    d_model, cache_frames = 32, 4
    model = NeMoCtcModel(d_model, len(LETTERS), cache_frames)
    meta = {"window_size": CHUNK_FRAMES + 4, "chunk_shift": CHUNK_FRAMES, "subsampling_factor": SUBSAMPLING,
            "vocab_size": len(LETTERS), "cache_last_channel_dim1": 1, "cache_last_channel_dim2": cache_frames,
            "cache_last_channel_dim3": d_model, "cache_last_time_dim1": 1, "cache_last_time_dim2": d_model,
            "cache_last_time_dim3": 2}
    assert set(meta) == set(NEMO_CTC_KEYS)
    with torch.no_grad():
        _export(model, (torch.zeros(1, FEATURE_DIM, meta["window_size"]), torch.tensor([meta["window_size"]]),
                        torch.zeros(1, 1, cache_frames, d_model), torch.zeros(1, 1, d_model, 2),
                        torch.zeros(1, dtype=torch.int64)), out / "model.onnx",
                ["audio_signal", "length", "cache_last_channel", "cache_last_time", "cache_last_channel_len"],
                ["logprobs", "encoded_lengths", "cache_last_channel_next", "cache_last_time_next",
                 "cache_last_channel_next_len"], meta)
    _write_tokens(out, LETTERS + ["<blk>"])
    return {"family": "nemo_ctc", "files": {"model": f"{out.name}/model.onnx", "tokens": f"{out.name}/tokens.txt"},
            "options": {}}


def _write_tokens(out: Path, tokens: list[str]) -> None:
    (out / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)), encoding="utf-8")


def _transducer_head(out: Path, joiner_dim: int, context: int = 2) -> dict:
    """decoder.onnx, joiner.onnx and tokens.txt of a stateless transducer (the same for every encoder type) next
    to out/encoder.onnx; returns the manifest entry."""
    tokens = ["<blk>"] + LETTERS
    dec, join = TransducerDecoder(len(tokens), context, joiner_dim), TransducerJoiner(joiner_dim, len(tokens))
    with torch.no_grad():
        _export(dec, (torch.zeros(1, context, dtype=torch.int64),), out / "decoder.onnx", ["y"], ["decoder_out"],
                {"vocab_size": len(tokens), "context_size": context}, {"y": {0: "N"}, "decoder_out": {0: "N"}})
        _export(join, (torch.zeros(1, joiner_dim), torch.zeros(1, joiner_dim)), out / "joiner.onnx",
                ["encoder_out", "decoder_out"], ["logit"], {"joiner_dim": joiner_dim},
                {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}})
    _write_tokens(out, tokens)
    return {"family": "transducer", "files": {r: f"{out.name}/{r}.onnx" for r in ("encoder", "decoder", "joiner")}
            | {"tokens": f"{out.name}/tokens.txt"}, "options": {}}


def build_zipformer2_transducer(out: Path, seed: int = 0) -> dict:
    """A zipformer2 transducer (encoder model_type `zipformer2`, its 6-per-layer caches) plus tokens.txt."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    joiner_dim = 24
    assert set(ZIPFORMER2) | {"T", "decode_chunk_len"} == set(TRANSDUCER_ENCODER_KEYS["zipformer2"])
    _export_zipformer2(out / "encoder.onnx", joiner_dim, False, "encoder_out", {"model_type": "zipformer2"})
    return _transducer_head(out, joiner_dim)


def build_zipformer2_ctc(out: Path, seed: int = 0) -> dict:
    """A one-file zipformer2 streaming CTC model (blank 0) plus tokens.txt; returns the manifest entry."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokens = ["<blk>"] + LETTERS
    assert set(ZIPFORMER2) | {"T", "decode_chunk_len"} == set(ZIPFORMER2_CTC_KEYS)
    _export_zipformer2(out / "model.onnx", len(tokens), True, "log_probs", {})
    _write_tokens(out, tokens)
    return {"family": "zipformer2_ctc", "files": {"model": f"{out.name}/model.onnx", "tokens": f"{out.name}/tokens.txt"},
            "options": {}}


def build_zipformer_transducer(out: Path, seed: int = 0) -> dict:
    """A zipformer (v1) transducer (encoder model_type `zipformer`, seven caches per stack) plus tokens.txt."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    joiner_dim = 24
    assert set(ZIPFORMER) | {"T", "decode_chunk_len"} == set(TRANSDUCER_ENCODER_KEYS["zipformer"])
    shapes = zipformer_state_shapes()
    _export_cached(out / "encoder.onnx", joiner_dim, False, shapes, "encoder_out",
                   [f"new_{name}" for name, _, _ in shapes],
                   {"model_type": "zipformer", **{k: ",".join(map(str, v)) for k, v in ZIPFORMER.items()}})
    return _transducer_head(out, joiner_dim)


def build_conformer_transducer(out: Path, seed: int = 0) -> dict:
    """A conformer transducer (encoder model_type `conformer`: attention and convolution caches, frames processed
    so far as input) plus tokens.txt."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    joiner_dim = 24
    assert set(CONFORMER) | {"T", "decode_chunk_len"} == set(TRANSDUCER_ENCODER_KEYS["conformer"])
    _export_cached(out / "encoder.onnx", joiner_dim, False, conformer_state_shapes(), "encoder_out",
                   ["next_attn_cache", "next_cnn_cache"], {"model_type": "conformer", **CONFORMER})
    return _transducer_head(out, joiner_dim)


# `edge-cer export asr --test-model NAME`: one builder per family docs/speech.md names.
TEST_MODELS = {"transducer": build_transducer, "zipformer2": build_zipformer2_transducer,
               "zipformer": build_zipformer_transducer, "conformer": build_conformer_transducer,
               "zipformer2_ctc": build_zipformer2_ctc, "nemo_ctc": build_nemo_ctc}
