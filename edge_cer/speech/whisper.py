"""Whisper decoding over the sherpa-onnx Whisper format: greedy (verifying a draft in one decoder call) for
partials, Whisper's beam search for finals.

The folder's encoder/decoder ONNX, tokens.txt and metadata are sherpa-onnx's (export/asr/whisper.py writes them),
and the steps follow sherpa's OfflineRecognizer for Whisper (offline-recognizer-whisper-impl.h and
offline-whisper-greedy-search-decoder.cc): kaldi-native-fbank's Whisper log-mel, normalised over the real frames,
`tail_paddings` zero frames appended, the encoder, then tokens after ``sot_sequence + <|notimestamps|>``, at most
6 per second of audio. Unlike sherpa, each step applies Whisper's default logit filters first (decoding.py's
`suppress_tokens="-1"` and `suppress_blank`): no non-speech symbols (quotes, brackets, music signs) or task tokens,
and no blank or EOT as the first token.

Beam search (`beam_size` > 1, finals) is Whisper's own (openai/whisper decoding.py, its evaluation setting beam 5,
patience 1, candidates ranked by summed log-prob / length), the beams one batch of the same decoder. It is
deterministic, and on the held-out set it took clean-speech WER down 1-4 points for ~3x a greedy decode's CPU.

Safeguards, all deterministic (Whisper's own fallback re-decodes at random temperatures):
- a decode stops when its last `no_repeat` (6) tokens already occurred, and keeps the text before the repeat. With
  short tail padding Whisper often reads the sentence again ("... will reach it. The water looks deep, ...")
  until the token cap; on the held-out set this rule took WER from 0.33 to 0.07 at padding 100;
- a decode that EOT or the token cap ended within those 6 tokens of such a restart drops it (`trim_restart`);
- a decode Whisper's transcribe() would call silence (no-speech probability > 0.6, mean log-prob < -1) is empty;
- optionally (`denoise_below_db`), audio whose estimated SNR is low is denoised first (speech/denoise.py).

One thing sherpa cannot do: take a draft. The decoder reads any number of tokens in one call, and a call for
25 tokens costs about what one step costs (its weights are read once). Given the tokens of the previous decode of
the same utterance (a partial re-decodes a segment that has only grown), all of them are fed at once and kept up
to the first one the model would not have chosen; greedy steps continue from there. The result is the greedy
decode (up to int8 rounding of the batched activations); a good draft turns ~25 decoder runs into 2 or 3.

Measurements: perf/asr.md.

Example::

    from edge_cer.speech.manifest import load_asr_folder
    from edge_cer.speech.whisper import Whisper

    whisper = Whisper(load_asr_folder("models/asr").model("offline"))
    first = whisper.transcribe(samples[:48000], beam_size=1)        # mono float32, 16 kHz; greedy
    longer = whisper.transcribe(samples[:64000], draft=first.tokens)  # greedy, from the draft
    final = whisper.transcribe(samples, beam_size=5)
    print(final.text)
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_cer.errors import EdgeCerError
from edge_cer.speech.denoise import denoised
from edge_cer.speech.manifest import SAMPLE_RATE, ModelFiles

MEL_FRAMES = 3000  # Whisper's 30 s window, the most its positional embedding covers
MAX_FRAMES = MEL_FRAMES - 50  # sherpa: longer audio is cut there, so some tail padding always remains
TOKENS_PER_SECOND = 6  # sherpa's cap on decoded tokens (num_feature_frames / 100 * 6)
# Whisper's tokenizer.non_speech_tokens: these (alone or after a space) when one token, the first token of a music
# sign, and " -", " '" (hyphens and apostrophes only inside words).
NON_SPEECH_SYMBOLS = (list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
                      + "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split())
MUSIC_SIGNS = "♩♪♫♬♭♮♯"
TASK_TOKENS = ("transcribe", "translate", "sot", "sot_prev", "sot_lm", "no_speech")  # metadata keys Whisper suppresses


# Whisper's transcribe(): a decode is silence when <|nocaptions|> is this likely and its mean log-prob this low.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0


@dataclass(frozen=True)
class Transcription:
    """Text and token ids (pass `tokens` as the next decode's draft), the decode's mean log-prob per token and its
    no-speech probability."""

    text: str
    tokens: tuple[int, ...]
    avg_logprob: float = field(default=0.0, compare=False)  # float noise across batchings: not the result
    no_speech: float = field(default=0.0, compare=False)


class Whisper:
    """An encoder and a decoder session (onnxruntime, CPU) and the tokens table of one Whisper model."""

    def __init__(self, model: ModelFiles, num_threads: int = 1, tail_paddings: int = 100, no_repeat: int = 6,
                 beam_size: int = 1, denoise_below_db: float = 0.0, beam_max_s: float = float("inf")):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = num_threads, 1
        def session(role: str):
            return ort.InferenceSession(str(model.files[role]), options, providers=["CPUExecutionProvider"])

        self.encoder, self.decoder = session("encoder"), session("decoder")
        self.tail_paddings, self.no_repeat, self.beam_size = tail_paddings, no_repeat, beam_size
        self.denoise_below_db, self.beam_max_s = denoise_below_db, beam_max_s
        meta = self.encoder.get_modelmeta().custom_metadata_map
        self.n_mels = int(meta["n_mels"])
        self.cache_shape = (int(meta["n_text_layer"]), 1, int(meta["n_text_ctx"]), int(meta["n_text_state"]))
        self.eot = int(meta["eot"])
        self.prompt = [int(t) for t in meta["sot_sequence"].split(",")]
        self.sot_index = int(meta.get("sot_index", 0))
        self.no_speech_token = int(meta["no_speech"]) if "no_speech" in meta else None
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
        n_vocab = int(meta.get("n_vocab", 1 << 31))  # a test model's vocabulary can end before the task tokens
        self.suppress = np.array([t for t in suppressed_tokens(self.pieces, meta) if t < n_vocab], np.int64)
        self.blank = np.array([t for t, piece in self.pieces.items() if piece == b" "] + [self.eot], np.int64)

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

    def transcribe(self, samples: np.ndarray, draft: Sequence[int] = (), beam_size: int | None = None) -> Transcription:
        """Decode mono float32 samples at 16 kHz. `draft`: token ids expected (from an earlier decode), for a greedy
        decode; `beam_size`: 1 greedy, more a beam search (default: this model's `beam_size`, what finals use, greedy
        for audio over `beam_max_s`: a beam decode's cost grows with the audio)."""
        if beam_size is None:
            beam_size = self.beam_size if len(samples) <= self.beam_max_s * SAMPLE_RATE else 1
        if self.denoise_below_db:
            samples = denoised(samples, self.denoise_below_db)
        mel, frames = self.features(samples)
        if not frames:
            return Transcription("", ())
        cross, limit = self._encode(mel, frames)
        if beam_size > 1 and not draft:
            return self._checked(self._beam(cross, limit, beam_size))
        return self._checked(self._greedy(cross, limit, draft))

    def _encode(self, mel: np.ndarray, frames: int):
        """Cross-attention k/v (OrtValues: the greedy decoder's caches stay in onnxruntime's memory between calls;
        a numpy round trip would copy ~6 MB per token) and the cap on decoded tokens."""
        cross = self.encoder.run_with_ort_values(None, {"mel": _ort_value(mel)})
        return cross, min(int(frames / 100 * TOKENS_PER_SECOND), self.cache_shape[2] // 2)

    def _step(self, tokens: list[list[int]], k_cache, v_cache, cross, offset: int):
        """One decoder call on a batch of token rows: (logits, k cache, v cache) as OrtValues."""
        return self.decoder.run_with_ort_values(None, {
            "tokens": _ort_value(np.array(tokens, np.int64)), "in_n_layer_self_k_cache": k_cache,
            "in_n_layer_self_v_cache": v_cache, "n_layer_cross_k": cross[0], "n_layer_cross_v": cross[1],
            "offset": _ort_value(np.array([offset], np.int64))})

    def _greedy(self, cross, limit: int, draft: Sequence[int]) -> _Hypothesis:
        n = len(self.prompt)
        k_cache = v_cache = _ort_value(np.zeros(self.cache_shape, np.float32))
        seq, offset, logprob, no_speech = list(self.prompt), 0, 0.0, 0.0
        feed = seq + [t for t in draft if t != self.eot][:limit]
        while len(seq) - n < limit and offset < self.cache_shape[2] - 1:
            logits, k_cache, v_cache = self._step([feed], k_cache, v_cache, cross, offset)
            logits = logits.numpy()[0]
            if offset == 0:
                no_speech = self._no_speech(logits)
            # logits[j] predicts the token after feed[j]; the first unknown one follows seq[-1].
            drafted = feed[len(seq) - offset:]
            scores = self._log_probs(logits[len(seq) - 1 - offset:], first=len(seq) == n)
            for i, token in enumerate(scores.argmax(-1).tolist()):
                logprob += float(scores[i, token])
                if token == self.eot:
                    return _Hypothesis(seq[n:], logprob, no_speech)
                seq.append(token)
                if self.no_repeat and _repeats(seq[n:], self.no_repeat):
                    # the repeat starts: the text before it is the text
                    return _Hypothesis(seq[n:-self.no_repeat], logprob, no_speech)
                if i >= len(drafted) or token != drafted[i]:
                    break  # a token the decoder has not read yet: feed it next
            feed, offset = seq[-1:], len(seq) - 1
        return _Hypothesis(seq[n:n + limit], logprob, no_speech)

    def _beam(self, cross, limit: int, beam_size: int) -> _Hypothesis:
        """Whisper's beam search (its evaluation setting: beam 5, patience 1): each step extends every live beam by
        its `beam_size + 1` likeliest tokens, keeps the `beam_size` best unfinished sequences by summed log-prob and
        sets finished ones aside (EOT, or the repeat stop) until `beam_size` are; the best log-prob per token wins.
        The beams are one batch of the decoder; each beam's self-attention cache follows its parent's."""
        n = len(self.prompt)
        empty = _ort_value(np.zeros(self.cache_shape, np.float32))
        logits, k_out, v_out = self._step([self.prompt], empty, empty, cross, 0)
        logits = logits.numpy()[0]
        no_speech, scores = self._no_speech(logits), self._log_probs(logits[-1:], first=True)
        k_cache, v_cache = k_out.numpy(), v_out.numpy()
        cross_k, cross_v = (np.repeat(c.numpy(), beam_size, axis=1) for c in cross)
        beams: list[tuple[int, ...]] = [()]  # the tokens after the prompt, per live beam
        cums: list[tuple[float, ...]] = [()]  # per live beam: summed log-prob after each of its tokens
        finished: dict[tuple[int, ...], float] = {}
        while True:
            candidates: dict[tuple[int, ...], tuple[tuple[float, ...], int]] = {}
            tops = np.argpartition(-scores, beam_size, axis=-1)[:, :beam_size + 1]  # unordered: sorted below
            for b, (beam, cum) in enumerate(zip(beams, cums)):
                for token in tops[b].tolist():
                    candidates[beam + (token,)] = (cum + ((cum[-1] if cum else 0.0) + float(scores[b, token]),), b)
            live, live_cums, parents = [], [], []
            for seq, (cum, parent) in sorted(candidates.items(), key=lambda item: -item[1][0][-1]):
                if seq[-1] == self.eot:
                    if len(finished) < beam_size:
                        finished.setdefault(seq[:-1], cum[-1])
                elif self.no_repeat and _repeats(list(seq), self.no_repeat):
                    cut = len(seq) - self.no_repeat  # the text before the repeat, scored as it was there
                    if len(finished) < beam_size:
                        finished.setdefault(seq[:cut], cum[cut - 1] if cut else 0.0)
                else:
                    live.append(seq)
                    live_cums.append(cum)
                    parents.append(parent)
                    if len(live) == beam_size:
                        break
            if len(finished) >= beam_size or not live or len(live[0]) >= limit \
                    or n + len(live[0]) >= self.cache_shape[2] - 1:
                break
            beams, cums = live, live_cums
            k_cache, v_cache = k_cache[:, parents], v_cache[:, parents]
            if len(live) < cross_k.shape[1]:
                cross_k, cross_v = cross_k[:, :len(live)].copy(), cross_v[:, :len(live)].copy()
            logits, k_out, v_out = self._step([[seq[-1]] for seq in live], _ort_value(k_cache), _ort_value(v_cache),
                                              (_ort_value(cross_k), _ort_value(cross_v)), n + len(live[0]) - 1)
            k_cache, v_cache = k_out.numpy(), v_out.numpy()
            scores = self._log_probs(logits.numpy()[:, -1], first=False)
        for seq, cum in zip(live, live_cums):  # fewer finished by the token cap: live beams count, as in Whisper
            if len(finished) >= beam_size:
                break
            finished.setdefault(seq, cum[-1])
        best = max(finished, key=lambda s: finished[s] / max(len(s), 1))
        return _Hypothesis(list(best), finished[best], no_speech)

    def _log_probs(self, logits: np.ndarray, first: bool) -> np.ndarray:
        """Log-probs of the next token per row of `logits`, after Whisper's filters; `first`: row 0 predicts the
        text's first token."""
        logits = np.array(logits, np.float32)
        logits[:, self.suppress] = -np.inf
        if first:
            logits[0, self.blank] = -np.inf
        return _log_softmax(logits)

    def _no_speech(self, logits: np.ndarray) -> float:
        """Whisper's no-speech probability: that of <|nocaptions|> right after <|startoftranscript|>."""
        if self.no_speech_token is None:
            return 0.0
        return float(np.exp(_log_softmax(logits[self.sot_index])[self.no_speech_token]))

    def _checked(self, hypothesis: _Hypothesis) -> Transcription:
        """Whisper's safeguards, deterministic: a decode that ends by re-reading the start of its own text (cut
        short by EOT or the token cap) keeps the text before that; one that Whisper's transcribe() calls silence is
        empty."""
        tokens = trim_restart(hypothesis.tokens, self.pieces)
        if is_silence(hypothesis.no_speech, hypothesis.avg_logprob):
            tokens = []
        return Transcription(_text(tokens, self.pieces), tuple(tokens), hypothesis.avg_logprob, hypothesis.no_speech)


@dataclass(frozen=True)
class _Hypothesis:
    tokens: list[int]
    logprob: float  # summed over the tokens and the EOT that ended them
    no_speech: float

    @property
    def avg_logprob(self) -> float:
        return self.logprob / (len(self.tokens) + 1)  # Whisper's mean: the EOT counts


def suppressed_tokens(pieces: dict[int, bytes], meta: dict[str, str]) -> list[int]:
    """Whisper's default suppressed tokens (decoding.py, `suppress_tokens="-1"`), found by their bytes in
    tokens.txt: its tokenizer's non-speech tokens (NON_SPEECH_SYMBOLS) and the task tokens named in the metadata."""
    ids = {piece: token for token, piece in pieces.items()}
    found = {ids[b] for b in (b" -", b" '") if b in ids}
    for symbol in NON_SPEECH_SYMBOLS + list(MUSIC_SIGNS):
        for text in (symbol.encode(), b" " + symbol.encode()):
            if text in ids:
                found.add(ids[text])
            elif symbol in MUSIC_SIGNS:  # two tokens: the longest known prefix is the BPE's first
                first = next((text[:k] for k in range(len(text) - 1, 0, -1) if text[:k] in ids), None)
                found.update([ids[first]] if first else [])
    found.update(int(meta[key]) for key in TASK_TOKENS if meta.get(key, "") not in ("", "None"))
    return sorted(found)


def is_silence(no_speech: float, avg_logprob: float) -> bool:
    """Whisper's transcribe() rule: a decode is silence when <|nocaptions|> was likely and the text unlikely."""
    return no_speech > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD


def trim_restart(tokens: list[int], pieces: dict[int, bytes]) -> list[int]:
    """`tokens` without a tail, after a sentence's end, that repeats the text's beginning ("... reach it. The water
    looks deep," for "The water looks deep, but ..."): a loop that EOT or the token cap cut short before the repeat
    stop saw it."""
    for j in range(1, len(tokens)):
        if pieces.get(tokens[j - 1], b"").rstrip().endswith((b".", b"?", b"!")):
            head, tail = _text(tokens[:j], pieces), _text(tokens[j:], pieces)
            if tail and len(tail) < len(head) and head.startswith(tail):
                return tokens[:j]
    return tokens


def _text(tokens: Sequence[int], pieces: dict[int, bytes]) -> str:
    return b"".join(pieces.get(t, b"") for t in tokens).decode("utf-8", errors="replace").strip()


def _repeats(tokens: list[int], n: int) -> bool:
    """Whether the last `n` tokens occurred earlier: Whisper's loop (the sentence again) has begun."""
    tail = tokens[-n:]
    return len(tokens) > n and any(tokens[i:i + n] == tail for i in range(len(tokens) - n))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _ort_value(array: np.ndarray):
    """A numpy array as an onnxruntime OrtValue (no copy on the CPU; the array must outlive the call)."""
    import onnxruntime as ort

    return ort.OrtValue.ortvalue_from_numpy(array)
