"""Greedy Whisper decoding over the sherpa-onnx Whisper format, verifying a draft in one decoder call.

The folder's encoder/decoder ONNX, tokens.txt and metadata are sherpa-onnx's (export/asr/whisper.py writes them),
and the steps follow sherpa's OfflineRecognizer for Whisper (offline-recognizer-whisper-impl.h and
offline-whisper-greedy-search-decoder.cc): kaldi-native-fbank's Whisper log-mel, normalised over the real frames,
`tail_paddings` zero frames appended, the encoder, then greedy tokens after ``sot_sequence + <|notimestamps|>``,
at most 6 per second of audio.

One thing differs, on purpose: a decode stops when its last `no_repeat` (6) tokens already occurred, and keeps
the text before the repeat. With short tail padding Whisper often reads the sentence again ("... will reach it.
The water looks deep, ...") until the token cap; sherpa's 1000-frame padding makes that rarer at 3x the encoder
cost, and Whisper's own cure (temperature fallback) is random. On the held-out set this rule took WER from 0.33
to 0.07 at padding 100 (perf/asr.md).

One thing sherpa cannot do: take a draft. The decoder reads any number of tokens in one call, and a call for
25 tokens costs about what one step costs (its weights are read once). Given the tokens of the previous decode of
the same utterance (a partial re-decodes a segment that has only grown), all of them are fed at once and kept up
to the first one the model would not have chosen; greedy steps continue from there. The result is the greedy
decode (up to int8 rounding of the batched activations); a good draft turns ~25 decoder runs into 2 or 3.

Example::

    from edge_cer.speech.manifest import load_asr_folder
    from edge_cer.speech.whisper import Whisper

    whisper = Whisper(load_asr_folder("models/asr").model("offline"))
    first = whisper.transcribe(samples[:48000])                     # mono float32, 16 kHz
    longer = whisper.transcribe(samples[:64000], draft=first.tokens)
    print(longer.text)
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_cer.errors import EdgeCerError
from edge_cer.speech.manifest import SAMPLE_RATE, ModelFiles

MEL_FRAMES = 3000  # Whisper's 30 s window, the most its positional embedding covers
MAX_FRAMES = MEL_FRAMES - 50  # sherpa: longer audio is cut there, so some tail padding always remains
TOKENS_PER_SECOND = 6  # sherpa's cap on decoded tokens (num_feature_frames / 100 * 6)


@dataclass(frozen=True)
class Transcription:
    """Text and token ids (pass `tokens` as the next decode's draft)."""

    text: str
    tokens: tuple[int, ...]


class Whisper:
    """An encoder and a decoder session (onnxruntime, CPU) and the tokens table of one Whisper model."""

    def __init__(self, model: ModelFiles, num_threads: int = 1, tail_paddings: int = 100, no_repeat: int = 6):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = num_threads, 1
        def session(role: str):
            return ort.InferenceSession(str(model.files[role]), options, providers=["CPUExecutionProvider"])

        self.encoder, self.decoder = session("encoder"), session("decoder")
        self.tail_paddings, self.no_repeat = tail_paddings, no_repeat
        meta = self.encoder.get_modelmeta().custom_metadata_map
        self.n_mels = int(meta["n_mels"])
        self.cache_shape = (int(meta["n_text_layer"]), 1, int(meta["n_text_ctx"]), int(meta["n_text_state"]))
        self.eot = int(meta["eot"])
        self.prompt = [int(t) for t in meta["sot_sequence"].split(",")]
        if int(meta["is_multilingual"]):
            codes, ids = meta["all_language_codes"].split(","), meta["all_language_tokens"].split(",")
            languages, language = dict(zip(codes, map(int, ids))), model.options.get("language") or "en"
            if language not in languages:
                raise EdgeCerError(f"{model.files['encoder']}: this Whisper knows no language {language!r}; set the "
                                   f"manifest's offline options.language to one of {', '.join(languages)}")
            self.prompt[1] = languages[language]
        self.prompt.append(int(meta["no_timestamps"]))
        self.pieces: dict[int, bytes] = {}
        for line in model.files["tokens"].read_text(encoding="utf-8").splitlines():
            piece, token = line.rsplit(" ", 1)
            self.pieces[int(token)] = base64.b64decode(piece)

    def features(self, samples: np.ndarray) -> tuple[np.ndarray, int]:
        """(1, n_mels, frames + tail_paddings) log-mel as sherpa feeds its encoder, and the number of real frames."""
        import kaldi_native_fbank as knf

        options = knf.WhisperFeatureOptions()  # sherpa's settings: the defaults, with the model's mel count
        options.dim = self.n_mels
        fbank = knf.OnlineWhisperFbank(options)
        fbank.accept_waveform(SAMPLE_RATE, np.asarray(samples, np.float32))
        fbank.input_finished()
        n = min(fbank.num_frames_ready, MAX_FRAMES)
        padded = np.zeros((1, self.n_mels, min(n + self.tail_paddings, MEL_FRAMES)), np.float32)
        if n:
            mel = np.log10(np.maximum(np.stack([fbank.get_frame(i) for i in range(n)]), 1e-10))
            padded[0, :, :n] = ((np.maximum(mel, mel.max() - 8.0) + 4.0) / 4.0).T
        return padded, n

    def transcribe(self, samples: np.ndarray, draft: Sequence[int] = ()) -> Transcription:
        """Greedy decode of mono float32 samples at 16 kHz; `draft`: token ids expected (from an earlier decode)."""
        import onnxruntime as ort

        mel, frames = self.features(samples)
        if not frames:
            return Transcription("", ())
        # OrtValues in and out: the caches and cross k/v stay in onnxruntime's memory between calls (a numpy round
        # trip would copy ~6 MB per token).
        value = ort.OrtValue.ortvalue_from_numpy
        cross_k, cross_v = self.encoder.run_with_ort_values(None, {"mel": value(mel)})
        limit = min(int(frames / 100 * TOKENS_PER_SECOND), self.cache_shape[2] // 2)
        k_cache = v_cache = value(np.zeros(self.cache_shape, np.float32))
        seq, offset = list(self.prompt), 0
        feed = seq + [t for t in draft if t != self.eot][:limit]
        while len(seq) - len(self.prompt) < limit and offset < self.cache_shape[2] - 1:
            logits, k_cache, v_cache = self.decoder.run_with_ort_values(None, {
                "tokens": value(np.array([feed], np.int64)), "in_n_layer_self_k_cache": k_cache,
                "in_n_layer_self_v_cache": v_cache, "n_layer_cross_k": cross_k, "n_layer_cross_v": cross_v,
                "offset": value(np.array([offset], np.int64))})
            logits = logits.numpy()
            # logits[j] predicts the token after feed[j]; the first unknown one follows seq[-1].
            drafted = feed[len(seq) - offset:]
            for i, token in enumerate(logits[0, len(seq) - 1 - offset:].argmax(-1).tolist()):
                if token == self.eot:
                    return self._result(seq)
                seq.append(token)
                if self.no_repeat and _repeats(seq[len(self.prompt):], self.no_repeat):
                    return self._result(seq[:-self.no_repeat])  # the repeat starts: the text before it is the text
                if i >= len(drafted) or token != drafted[i]:
                    break  # a token the decoder has not read yet: feed it next
            feed, offset = seq[-1:], len(seq) - 1
        return self._result(seq[: len(self.prompt) + limit])

    def _result(self, seq: list[int]) -> Transcription:
        tokens = tuple(seq[len(self.prompt):])
        text = b"".join(self.pieces.get(t, b"") for t in tokens).decode("utf-8", errors="replace")
        return Transcription(text.strip(), tokens)


def _repeats(tokens: list[int], n: int) -> bool:
    """Whether the last `n` tokens occurred earlier: Whisper's loop (the sentence again) has begun."""
    tail = tokens[-n:]
    return len(tokens) > n and any(tokens[i:i + n] == tail for i in range(len(tokens) - n))
