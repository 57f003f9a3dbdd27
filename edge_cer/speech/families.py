"""What sherpa-onnx reads from each model family: files, ONNX metadata keys, graph inputs and outputs.

sherpa-onnx ends the whole process (`exit(-1)`) when a metadata key is missing, a model_type is unknown, a CTC
tokens file has no blank or a Silero VAD graph has an unexpected signature. Every check it would fail is made
here first, in Python, so a bad folder becomes an `EdgeCerError` naming the file. The export stage writes its
test models from these same tables, so the fabricated models and the checks cannot drift apart.

Keys come from sherpa-onnx's C++ readers (SHERPA_ONNX_READ_META_DATA in sherpa-onnx/csrc/online-*-model.cc,
offline-whisper-model.cc) and the exporters that write them (icefall export-onnx*.py,
sherpa-onnx scripts/whisper/export-onnx.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_cer.errors import EdgeCerError

# Transducer encoders: the keys each `model_type` needs (decoder: vocab_size, context_size; joiner: none).
TRANSDUCER_ENCODER_KEYS: dict[str, tuple[str, ...]] = {
    "lstm": ("num_encoder_layers", "T", "decode_chunk_len", "rnn_hidden_size", "d_model"),
    "zipformer": ("encoder_dims", "attention_dims", "num_encoder_layers", "cnn_module_kernels",
                  "left_context_len", "T", "decode_chunk_len"),
    "zipformer2": ("encoder_dims", "query_head_dims", "value_head_dims", "num_heads", "num_encoder_layers",
                   "cnn_module_kernels", "left_context_len", "T", "decode_chunk_len"),
    "conformer": ("num_encoder_layers", "T", "decode_chunk_len", "left_context", "encoder_dim", "pad_length",
                  "cnn_module_kernel"),
}
ZIPFORMER2_CTC_KEYS = TRANSDUCER_ENCODER_KEYS["zipformer2"]
NEMO_CTC_KEYS = ("window_size", "chunk_shift", "subsampling_factor", "vocab_size",
                 "cache_last_channel_dim1", "cache_last_channel_dim2", "cache_last_channel_dim3",
                 "cache_last_time_dim1", "cache_last_time_dim2", "cache_last_time_dim3")
WHISPER_ENCODER_KEYS = ("n_mels", "n_text_layer", "n_text_ctx", "n_text_state", "n_vocab", "sot", "eot",
                        "blank_id", "translate", "transcribe", "is_multilingual", "no_timestamps", "no_speech",
                        "sot_sequence")
CTC_BLANKS = ("<blk>", "<eps>", "<blank>")  # sherpa's online CTC decoder needs one of these in tokens.txt
SILERO_VAD_SAMPLE_RATE = 16000
SILERO_VAD_WINDOW = 512  # v5+ graphs (3 inputs, 2 outputs) accept only 512-sample windows at 16 kHz
# Silero VAD (vad mode): a pause this long ends the utterance. 0.3 s keeps the final within the 0.5 s target.
# Here, not in the recogniser, so a protocol can default to it without loading the speech runtime.
VAD_MIN_SILENCE_S = 0.3


@dataclass(frozen=True)
class Family:
    """One sherpa-onnx model family: the roles of its files and the metadata each ONNX role must carry."""

    name: str
    streaming: bool
    onnx_roles: tuple[str, ...]
    tokens: bool = True
    ctc: bool = False
    keys: dict[str, tuple[str, ...]] = field(default_factory=dict)  # role -> required metadata keys


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("transducer", True, ("encoder", "decoder", "joiner"),
               keys={"encoder": ("model_type",), "decoder": ("vocab_size", "context_size")}),
        Family("zipformer2_ctc", True, ("model",), ctc=True, keys={"model": ZIPFORMER2_CTC_KEYS}),
        Family("nemo_ctc", True, ("model",), ctc=True, keys={"model": NEMO_CTC_KEYS}),
        Family("whisper", False, ("encoder", "decoder"), keys={"encoder": WHISPER_ENCODER_KEYS}),
        Family("silero_vad", False, ("model",), tokens=False),
    )
}


def onnx_metadata(path: Path) -> dict[str, str]:
    """Custom metadata of an ONNX file, read without loading its weights into a session."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on a corrupt file
        raise EdgeCerError(f"{path}: not a readable ONNX model ({exc}); re-export or re-download it") from exc
    return {p.key: p.value for p in model.metadata_props}


def _graph_signature(path: Path) -> tuple[list[str], list[str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers], [o.name for o in graph.output]


def check_family_files(family: Family, files: dict[str, Path]) -> None:
    """Refuse, naming the file and key, anything sherpa-onnx would exit on for this family."""
    for role in family.onnx_roles + (("tokens",) if family.tokens else ()):
        if role not in files or not Path(files[role]).is_file():
            raise EdgeCerError(f"{files.get(role, role)}: missing {family.name} {role} file; "
                               "copy the whole model folder or re-run `edge-cer export asr`")
    for role, keys in family.keys.items():
        meta = onnx_metadata(files[role])
        if missing := [k for k in keys if k not in meta]:
            raise EdgeCerError(f"{files[role]}: ONNX metadata lacks {', '.join(missing)} (sherpa-onnx {family.name} "
                               f"{role}); export it with the matching sherpa-onnx/icefall export script")
        if family.name == "transducer" and role == "encoder":
            model_type = meta["model_type"]
            if model_type not in TRANSDUCER_ENCODER_KEYS:
                raise EdgeCerError(f"{files[role]}: transducer model_type {model_type!r} is not one of "
                                   f"{', '.join(TRANSDUCER_ENCODER_KEYS)}")
            if missing := [k for k in TRANSDUCER_ENCODER_KEYS[model_type] if k not in meta]:
                raise EdgeCerError(f"{files[role]}: ONNX metadata lacks {', '.join(missing)} "
                                   f"(needed for a {model_type} transducer encoder)")
    if family.name == "transducer" and len(_graph_signature(files["decoder"])[1]) != 1:
        raise EdgeCerError(f"{files['decoder']}: a transducer decoder with one output expected (NeMo transducers "
                           "are not supported here)")
    if family.ctc:
        symbols = {line.split()[0] for line in Path(files["tokens"]).read_text(encoding="utf-8").splitlines()
                   if line.strip()}
        if not symbols & set(CTC_BLANKS):
            raise EdgeCerError(f"{files['tokens']}: no blank symbol ({' or '.join(CTC_BLANKS)}); "
                               "a streaming CTC tokens file must list its blank")
    if family.name == "silero_vad":
        inputs, outputs = _graph_signature(files["model"])
        if (len(inputs), len(outputs)) != (3, 2) or inputs[0] != "input":
            raise EdgeCerError(f"{files['model']}: not a Silero VAD v5/v6 graph (inputs {inputs}, outputs "
                               f"{outputs}); use silero_vad/data/silero_vad.onnx from the silero-vad package")
