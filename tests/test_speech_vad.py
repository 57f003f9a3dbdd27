"""vad mode and the Whisper runner on a tiny random Whisper + the real Silero VAD: draft decoding equals greedy
decoding, a file decodes each segment once, and live, the final is the decode made at the pause."""

import shutil
import subprocess

import numpy as np
import pytest

from edge_cer.speech.audio import read_audio
from edge_cer.speech.manifest import load_asr_folder, write_manifest
from edge_cer.speech.recognizer import Final, Partial, create_recognizer
from tests.test_speech_streaming import SR, speech_like
from tests.test_speech_twopass_audio import TINY_EN


@pytest.fixture(scope="session")
def vad_dir(tmp_path_factory):
    """A vad-mode folder: random tiny Whisper (real tiny.en tokenizer, 64 text positions) + Silero VAD."""
    pytest.importorskip("torch")
    tok = pytest.importorskip(TINY_EN)
    silero = pytest.importorskip("silero_vad")
    import torch
    from pathlib import Path
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from export.asr.whisper import export_whisper

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=51864, num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_source_positions=1500, max_target_positions=64)
    root = tmp_path_factory.mktemp("vad")
    offline = export_whisper(WhisperForConditionalGeneration(config).eval(),
                             Path(tok.__file__).parent / "model" / "tokenizer.json", root / "offline")
    (root / "vad").mkdir()
    shutil.copy2(Path(silero.__file__).parent / "data" / "silero_vad.onnx", root / "vad" / "silero_vad.onnx")
    vad = {"family": "silero_vad", "files": {"model": "vad/silero_vad.onnx"}, "options": {}}
    write_manifest(root, {"offline": offline, "vad": vad}, {"kind": "test-model"})
    return root


def espeak(tmp_path, *parts):
    """Speech (espeak-ng, trimmed) for each string part, silence (seconds) for each number part."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (./setup.sh installs it): Silero needs speech to cut segments")
    audio = []
    for i, part in enumerate(parts):
        if isinstance(part, str):
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(tmp_path / f"{i}.wav"), part],
                           check=True)
            speech = read_audio(tmp_path / f"{i}.wav")
            loud = np.flatnonzero(np.abs(speech) > 0.01)
            audio.append(speech[loud[0]:loud[-1] + 1])  # espeak's own leading and trailing silence off
        else:
            audio.append(np.zeros(int(part * SR), np.float32))
    return np.concatenate(audio)


def record_decodes(recognizer, stream):
    """Wrap the recognizer's Whisper: each call's (stream time, audio seconds, text, at a pause) goes to the list."""
    calls, transcribe = [], recognizer.offline.transcribe

    def recorded(samples, draft=(), **options):
        result = transcribe(samples, draft, **options)
        calls.append((stream.t, len(samples) / SR, result.text, not stream.speaking))
        return result

    recognizer.offline.transcribe = recorded
    return calls


def decode_live(recognizer, stream, audio, calls):
    """Feed 100 ms chunks as a live worker that keeps up does; (event, decodes run in its chunk) pairs."""
    out = []
    for i in range(0, len(audio), SR // 10):
        stream.accept_waveform(SR, audio[i:i + SR // 10])
        before = len(calls)
        events = recognizer.decode(stream)
        out += [(event, len(calls) - before) for event in events]
    return out


def test_draft_decoding_is_greedy_decoding(vad_dir):
    whisper = create_recognizer(vad_dir).offline
    audio = speech_like([0.2, 1.5, 0.3])
    runs = []
    run = whisper.decoder.run_with_ort_values
    whisper.decoder.run_with_ort_values = lambda *a: runs.append(1) or run(*a)
    greedy = whisper.transcribe(audio, beam_size=1)
    steps, runs[:] = len(runs), []
    assert len(greedy.tokens) >= 3  # the random model never says end-of-text: it fills its 6 tokens per second
    assert whisper.transcribe(audio, draft=greedy.tokens) == greedy
    assert len(runs) <= 2 < steps  # the whole draft read in one call (plus one for the token after it)
    wrong = greedy.tokens[:2] + tuple(t + 1 for t in greedy.tokens[2:])
    assert whisper.transcribe(audio, draft=wrong) == greedy
    assert whisper.transcribe(audio, draft=greedy.tokens * 3 + (whisper.eot,)) == greedy
    assert whisper.transcribe(np.zeros(0, np.float32)).text == ""


def test_whisper_reads_the_folder_as_sherpa_onnx_does(vad_dir):
    """Same features, prompt, tail padding and token cap as sherpa's OfflineRecognizer: the same text."""
    import sherpa_onnx

    model = load_asr_folder(vad_dir).model("offline")
    sherpa = sherpa_onnx.OfflineRecognizer.from_whisper(
        encoder=str(model.files["encoder"]), decoder=str(model.files["decoder"]), tokens=str(model.files["tokens"]),
        language="", task="transcribe", tail_paddings=100)
    whisper = create_recognizer(vad_dir).offline
    for seconds in (0.5, 2.0):
        audio = speech_like([0.1, seconds, 0.1], seed=int(seconds * 10))
        stream = sherpa.create_stream()
        stream.accept_waveform(SR, audio)
        sherpa.decode_stream(stream)
        assert whisper.transcribe(audio, beam_size=1).text == stream.result.text.strip() != ""


def test_file_transcription_decodes_each_segment_once(vad_dir, tmp_path):
    from edge_cer.speech.transcribe import transcribe_file
    import soundfile as sf

    sf.write(tmp_path / "two.wav", espeak(tmp_path, 0.3, "The storm has passed", 1.0, "Nobody was hurt", 0.8), SR)
    recognizer = create_recognizer(vad_dir)
    calls = record_decodes(recognizer, recognizer.create_stream())
    events = []
    transcript = transcribe_file(recognizer, tmp_path / "two.wav", on_event=events.append)
    assert len(calls) == 2 == len(transcript.finals)
    assert not [e for e in events if isinstance(e, Partial)]
    assert transcript.text == " ".join(text for _, _, text, _ in calls)


def test_live_final_is_the_decode_made_at_the_pause(vad_dir, tmp_path):
    """Live (partials on, 100 ms chunks): decodes while speaking, one at the pause, none when the VAD closes."""
    audio = espeak(tmp_path, 0.3, "I can see that the person in the picture is getting help", 1.0)
    recognizer = create_recognizer(vad_dir)
    stream = recognizer.create_stream()
    calls = record_decodes(recognizer, stream)
    finals = [(e, decodes) for e, decodes in decode_live(recognizer, stream, audio, calls) if isinstance(e, Final)]
    assert len(finals) == 1 and len(calls) >= 5  # partials every 0.2 s of ~3 s of speech
    final, decodes = finals[0]
    assert decodes == 0  # the VAD closed the segment: nothing left to decode
    t_pause, seconds, text, at_pause = calls[-1]
    assert at_pause and text == final.text
    assert seconds >= final.t_endpoint - 0.3 - 0.25  # the whole segment (it starts after 0.3 s, 0.25 s of lead)
    assert t_pause <= final.t_endpoint + 0.15 and t_pause < final.t_final - 0.15  # at the pause, not after it
    assert all(t <= t_pause for t, *_ in calls)  # no decodes during the trailing silence


def test_silence_is_counted_from_where_the_voice_stopped(vad_dir, tmp_path):
    """What ends a speaking turn (edge_cer.live.speaking): the voice detector's silence, 0 while someone speaks."""
    audio = espeak(tmp_path, 0.5, "The storm has passed", 1.0)
    recognizer = create_recognizer(vad_dir)
    stream = recognizer.create_stream()
    stream.accept_waveform(SR, audio[:int(0.9 * SR)])
    recognizer.decode(stream, partials=False)
    assert stream.speaking and stream.silence_s() == 0.0
    stream.accept_waveform(SR, audio[int(0.9 * SR):])
    finals = [e for e in recognizer.decode(stream, partials=False) if isinstance(e, Final)]
    # 1 s of silence after the speech; Silero hears the end of its last word up to ~0.15 s into it.
    assert len(finals) == 1 and 0.8 < stream.silence_s() <= 1.0


def test_speculation_is_dropped_when_speech_goes_on(vad_dir, tmp_path):
    """A pause shorter than the VAD's silence: the decode made there is not the final; the whole segment is."""
    audio = espeak(tmp_path, 0.3, "The storm has passed", 0.25, "and the family is safe now", 1.0)
    recognizer = create_recognizer(vad_dir)
    stream = recognizer.create_stream()
    calls = record_decodes(recognizer, stream)
    finals = [e for e, _ in decode_live(recognizer, stream, audio, calls) if isinstance(e, Final)]
    assert len(finals) == 1
    covering = [text for _, seconds, text, _ in calls if seconds >= finals[0].t_endpoint - 0.3 - 0.25]
    assert finals[0].text == covering[-1]
    dropped = [t for t, seconds, _, at_pause in calls if at_pause and seconds < finals[0].t_endpoint - 0.3 - 0.25]
    assert dropped and 0.3 + 1.0 < dropped[0] < finals[0].t_endpoint  # the speculation at the short pause


def test_same_audio_gives_the_same_finals_from_a_file_live_and_with_partials(vad_dir, tmp_path):
    """Finals depend on the audio only: not on partials, chunking, coalescing in the worker, or real time.

    Whisper is replaced by a digest of exactly what it is given (samples, draft, beam), so any difference in the
    audio a final reads, or a draft reaching a final (an int8 decoder can then pick another near-tie), shows."""
    import hashlib

    import soundfile as sf

    from edge_cer.speech.audio import array_source, paced
    from edge_cer.speech.recognizer import RecognizerWorker
    from edge_cer.speech.transcribe import transcribe_file
    from edge_cer.speech.whisper import Transcription

    audio = espeak(tmp_path, 0.4, "The storm has passed", 0.25, "and the family is safe now", 1.0,
                   "Nobody was hurt", 0.8)
    sf.write(tmp_path / "speech.wav", audio, SR)
    audio = read_audio(tmp_path / "speech.wav")  # the file's 16-bit samples, for the live runs too
    recognizer = create_recognizer(vad_dir)

    def digest(samples, draft=(), beam_size=None):
        given = repr((tuple(draft), beam_size)).encode()  # a partial's greedy decode reaching a final shows too
        text = hashlib.sha1(np.asarray(samples, np.float32).tobytes() + given).hexdigest()
        return Transcription(text[:12], (len(samples),))

    recognizer.offline.transcribe = digest

    def finals(events):
        return [e.text for e in events if isinstance(e, Final)]

    def worker(chunks):
        events = []
        live = RecognizerWorker(recognizer, on_event=events.append)
        for chunk in chunks:
            live.push(chunk)
        live.close()
        return finals(events), sum(isinstance(e, Partial) for e in events)

    rng = np.random.default_rng(0)
    cuts = np.cumsum(rng.integers(160, 4000, size=len(audio) // 160))
    bursts, bursts_partials = worker(np.split(audio, cuts[cuts < len(audio)]))
    timed, timed_partials = worker(paced(array_source(audio, SR)))
    runs = {
        "file": [f.text for f in transcribe_file(recognizer, tmp_path / "speech.wav").finals],
        "file, partials": [f.text for f in transcribe_file(recognizer, tmp_path / "speech.wav", partials=True).finals],
        "100 ms chunks, partials": finals(e for e, _ in decode_live(recognizer, recognizer.create_stream(), audio, [])),
        "worker, uneven bursts": bursts,
        "worker, microphone timing": timed,
    }
    assert len(runs["file"]) == 2 and timed_partials >= 5  # two utterances; live, partials were decoded
    assert all(texts == runs["file"] for texts in runs.values()), runs


def test_speech_from_the_first_sample_is_decoded_whole_after_silence(vad_dir, tmp_path):
    """Speech at sample 0 (a recording started mid-word) reaches Whisper whole, after the pre-roll's worth of
    silence: Whisper drops a first word it hears at its own sample 0 (perf/asr.md, condition us150_at0)."""
    from edge_cer.speech.recognizer import VAD_PRE_ROLL

    speech = espeak(tmp_path, "The storm has passed")
    recognizer = create_recognizer(vad_dir)
    given, transcribe = [], recognizer.offline.transcribe
    recognizer.offline.transcribe = lambda samples, draft=(), **options: \
        given.append(samples) or transcribe(samples, draft, **options)
    stream = recognizer.create_stream()
    stream.accept_waveform(SR, np.concatenate([speech, np.zeros(SR, np.float32)]))
    finals = [e for e in recognizer.decode(stream, partials=False) + recognizer.finish(stream) if isinstance(e, Final)]
    assert len(finals) == 1 and len(given) == 1
    audio = given[0]
    lead = len(audio) - len(np.trim_zeros(audio, "f"))
    assert 0.3 * SR <= lead <= VAD_PRE_ROLL  # silence first (the VAD's start is a little into the speech)
    assert np.array_equal(audio[lead:lead + len(speech) - SR // 10], speech[:len(speech) - SR // 10])  # then all of it


def test_partials_are_due_on_the_audio_clock_and_a_missed_one_is_skipped(vad_dir, tmp_path):
    """A partial re-decode every 0.2 s of audio, counted from when the previous one was due (32 ms blocks: 6 or 7
    blocks apart, never 7 every time); each gives a Partial even when its text did not change; after a backlog
    (a slow decode) the missed due times are skipped, not decoded one after another."""
    from edge_cer.speech.audio import array_source
    from edge_cer.speech.whisper import Transcription

    audio = espeak(tmp_path, 0.3, "I can see that the person in the picture is getting help, and he is fine", 1.0)
    recognizer = create_recognizer(vad_dir)
    recognizer.offline.transcribe = lambda samples, draft=(), **options: Transcription("the same text", ())

    def partial_times(chunks):
        stream, events = recognizer.create_stream(), []
        for chunk in chunks:
            stream.accept_waveform(SR, chunk)
            events += [(e, len(chunk)) for e in recognizer.decode(stream)]
        return [(e.t, n) for e, n in events if isinstance(e, Partial) and e.text == "the same text"]

    times = [t for t, _ in partial_times(array_source(audio, SR))]
    assert len(times) >= 12  # the text never changes, yet a Partial per re-decode
    assert 0.19 <= np.median(np.diff(times)) <= 0.21  # 0.224 (7 blocks) when counted from the previous decode
    blocks = list(array_source(audio, SR))
    backlog = np.concatenate(blocks[40:72])  # ~1 s arrives at once, mid-speech
    after = partial_times(blocks[:40] + [backlog] + blocks[72:])
    at = next(i for i, (_, n) in enumerate(after) if n == len(backlog))
    assert 0.064 <= after[at + 1][0] - after[at][0] <= 0.2  # the next due time, not the missed ones at once
