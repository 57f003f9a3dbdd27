"""Streaming recognition on tiny random sherpa-onnx models (built by the export stage): stream, endpoint, bad input."""

import json
import shutil

import numpy as np
import pytest

from edge_cer.errors import EdgeCerError
from edge_cer.speech.manifest import load_asr_folder, write_manifest
from edge_cer.speech.recognizer import Final, Partial, RecognizerWorker, create_recognizer

SR = 16000


# export.asr.test_models.TEST_MODELS
FAMILIES = ["transducer", "zipformer2", "zipformer", "conformer", "zipformer2_ctc", "nemo_ctc"]


def export_asr(*argv: str) -> int:
    """`edge-cer export asr ARGV...` in this process."""
    import argparse

    from export.asr import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(list(argv)))


@pytest.fixture(scope="session")
def streaming_dirs(tmp_path_factory):
    """One ASR folder per streaming family (`export asr --test-model NAME`), built once per session."""
    pytest.importorskip("torch")
    from export.asr.test_models import TEST_MODELS

    assert sorted(TEST_MODELS) == sorted(FAMILIES)
    dirs = {}
    for name in FAMILIES:
        dirs[name] = tmp_path_factory.mktemp(name) / "asr"
        assert export_asr("--test-model", name, "--out", str(dirs[name])) == 0
    return dirs


def speech_like(seconds_pattern, seed=0):
    """Alternating silence / noise bursts: the test models decode noise to letters and silence to blanks."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(s * SR)) if i % 2 == 0 else 0.1 * rng.standard_normal(int(s * SR))
             for i, s in enumerate(seconds_pattern)]
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize("family", FAMILIES)
def test_two_utterances_give_two_finals_at_their_endpoints(streaming_dirs, family):
    recognizer = create_recognizer(streaming_dirs[family])
    stream = recognizer.create_stream()
    stream.accept_waveform(SR, speech_like([1, 2, 2, 1, 1]))  # speech 1-3 s and 5-6 s
    events = recognizer.decode(stream) + recognizer.finish(stream)
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == 2 and all(f.text for f in finals)
    # t_endpoint is the last token's time: inside the burst. Speech ends at 3 s; sherpa's rule 2 then waits
    # 1.2 s of trailing silence (plus one 0.32 s chunk at most) before it declares the endpoint.
    assert 1.0 < finals[0].t_endpoint <= 3.1
    assert 4.2 <= finals[0].t_final <= 4.7
    assert 5.0 < finals[1].t_endpoint <= 6.1
    partials = [e for e in events if isinstance(e, Partial)]
    assert partials and partials[0].t < finals[0].t_final
    assert [p.t for p in partials] == sorted(p.t for p in partials)


def test_silence_is_counted_from_the_last_token(streaming_dirs):
    """The end of the speaking turn reads `silence_s()` (edge_cer.live.speaking): 0-ish in speech, then growing."""
    recognizer = create_recognizer(streaming_dirs["transducer"])
    stream = recognizer.create_stream()
    audio = speech_like([1, 2, 2, 1, 1])  # speech 1-3 s and 5-6 s
    stream.accept_waveform(SR, audio[:int(5.8 * SR)])
    recognizer.decode(stream)
    assert stream.silence_s() < 0.5
    stream.accept_waveform(SR, audio[int(5.8 * SR):])
    recognizer.decode(stream)
    assert 0.8 < stream.silence_s() < 2.0  # the last token is inside the 5-6 s burst, the audio ends at 7 s


@pytest.mark.parametrize("family", FAMILIES)
def test_silence_and_empty_audio_give_empty_transcripts(streaming_dirs, family):
    recognizer = create_recognizer(streaming_dirs[family])
    for audio in (np.zeros(3 * SR, np.float32), np.zeros(0, np.float32)):
        stream = recognizer.create_stream()
        stream.accept_waveform(SR, audio)
        assert recognizer.decode(stream) + recognizer.finish(stream) == []


def test_worker_matches_direct_decoding_and_never_blocks(streaming_dirs):
    recognizer = create_recognizer(streaming_dirs["transducer"])
    audio = speech_like([1, 2, 2, 1, 1])
    stream = recognizer.create_stream()
    stream.accept_waveform(SR, audio)
    direct = [e.text for e in recognizer.decode(stream) + recognizer.finish(stream) if isinstance(e, Final)]
    worker = RecognizerWorker(recognizer)
    for i in range(0, len(audio), 1600):
        worker.push(audio[i:i + 1600])
    worker.close(timeout=30)
    events = []
    while not worker.events.empty():
        events.append(worker.events.get())
    assert [e.text for e in events if isinstance(e, Final)] == direct


def test_ten_minute_recording_keeps_memory_bounded(streaming_dirs):
    recognizer = create_recognizer(streaming_dirs["nemo_ctc"])
    stream = recognizer.create_stream()
    one_minute = speech_like([1, 5, 2] * 7 + [4])
    finals = 0
    for _ in range(10):
        stream.accept_waveform(SR, one_minute)
        finals += sum(isinstance(e, Final) for e in recognizer.decode(stream))
        held = sum(len(u) for u in stream.utterance) + len(stream.pending)
        assert held < 30 * SR  # the current utterance only, never the whole recording
    assert finals >= 60 and stream.t == pytest.approx(600.0)


def test_wrong_rate_and_stereo_chunks_are_refused(streaming_dirs):
    stream = create_recognizer(streaming_dirs["transducer"]).create_stream()
    with pytest.raises(EdgeCerError, match="44100 Hz"):
        stream.accept_waveform(44100, np.zeros(4410, np.float32))
    with pytest.raises(EdgeCerError, match="mono"):
        stream.accept_waveform(SR, np.zeros((1600, 2), np.float32))


def test_missing_file_is_named(streaming_dirs, tmp_path):
    root = tmp_path / "asr"
    shutil.copytree(streaming_dirs["transducer"], root)
    (root / "streaming" / "joiner.onnx").unlink()
    with pytest.raises(EdgeCerError, match="joiner.onnx: missing"):
        load_asr_folder(root)
    with pytest.raises(EdgeCerError, match="no ASR manifest"):
        load_asr_folder(tmp_path / "nowhere")


def test_modified_file_fails_the_hash_check(streaming_dirs, tmp_path):
    root = tmp_path / "asr"
    shutil.copytree(streaming_dirs["transducer"], root)
    with open(root / "streaming" / "tokens.txt", "a") as f:
        f.write("x 99\n")
    with pytest.raises(EdgeCerError, match="tokens.txt: SHA-256 differs"):
        load_asr_folder(root)


def _rewrite_metadata(path, drop=None, set_=None):
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props if p.key != drop} | (set_ or {})
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))


@pytest.mark.parametrize("family,file,drop,set_,message", [
    ("transducer", "encoder.onnx", "decode_chunk_len", None, "lacks decode_chunk_len"),
    ("transducer", "encoder.onnx", None, {"model_type": "mamba"}, "model_type 'mamba'"),
    ("nemo_ctc", "model.onnx", "window_size", None, "lacks window_size"),
])
def test_wrong_metadata_is_refused_before_sherpa_would_exit(streaming_dirs, tmp_path, family, file, drop, set_,
                                                            message):
    root = tmp_path / "asr"
    shutil.copytree(streaming_dirs[family], root)
    _rewrite_metadata(root / "streaming" / file, drop, set_)
    with pytest.raises(EdgeCerError, match=message):
        load_asr_folder(root, verify=False)


def test_ctc_tokens_without_blank_are_refused(streaming_dirs, tmp_path):
    root = tmp_path / "asr"
    shutil.copytree(streaming_dirs["nemo_ctc"], root)
    tokens = root / "streaming" / "tokens.txt"
    tokens.write_text(tokens.read_text().replace("<blk>", "zz"))
    with pytest.raises(EdgeCerError, match="no blank symbol"):
        load_asr_folder(root, verify=False)
