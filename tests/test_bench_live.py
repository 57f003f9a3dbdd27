"""run_live_bench with fabricated ASR and a fake generator: both modes measured, speculation pays off, JSON written."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from edge_cer.bench.live import run_live_bench
from edge_cer.session.protocol import Live
from tests.live_helpers import ScriptedRecognizer, StepGenerator, stimulus


def test_bench_measures_both_modes_and_speculation_hides_generation_time(tmp_path):
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.zeros(int(2.6 * 16000), np.float32), 16000)  # the turn ends end_of_turn_s after the final
    recognizer = ScriptedRecognizer([(0.2, "partial", "the storm has passed now"),
                                     (1.2, "final", "The storm has passed, now.")])
    generator = StepGenerator(step_s=0.15)  # 4 steps: 0.6 s per picture
    lines = []
    result = run_live_bench(generator, recognizer, [wav], out=tmp_path / "live_fake.json", runs=1,
                            stimulus=stimulus(tmp_path / "stim.png"), report=lines.append)
    written = json.loads((tmp_path / "live_fake.json").read_text())
    assert written["summary"] == json.loads(json.dumps(result["summary"]))
    by_mode = {t["mode"]: t for t in result["trials"]}
    spec, final = by_mode["speculative"], by_mode["final_only"]
    assert spec["source"] == "speculative" and spec["speculative_generations"] == 1 and spec["wasted_generations"] == 0
    assert final["source"] == "final" and final["speculative_generations"] == 0
    # The speculative picture was ready before the turn ended; without speculation one generation follows the end.
    end_of_turn_s = Live().end_of_turn_s
    assert end_of_turn_s <= spec["speech_end_to_picture_s"] < end_of_turn_s + 0.15
    assert final["speech_end_to_picture_s"] >= end_of_turn_s + 0.6
    # The scripted final is delivered once the audio reaches its endpoint (1.2 s): within one 32 ms block or so.
    assert spec["speech_end_from"] == "recogniser" and 0 <= spec["speech_end_to_recogniser_final_s"] < 0.2
    assert "speech_end_to_picture" in lines[-1] and result["settings"]["engine"] == "StepGenerator"


def test_speech_end_of_a_synthesised_recording_is_its_last_loud_sample(tmp_path):
    from edge_cer.bench.live import speech_end

    audio = np.zeros(3 * 16000, np.float32)
    audio[8000:24000] = 0.2  # speech from 0.5 s to 1.5 s, then silence
    sf.write(tmp_path / "s.wav", audio, 16000)
    assert abs(speech_end(tmp_path / "s.wav") - 1.5) < 1e-3
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    assert speech_end(tmp_path / "silent.wav") == 0.0


def test_a_folder_of_recordings_is_each_of_its_wavs_and_an_empty_one_is_refused(tmp_path):
    import pytest

    from edge_cer.errors import EdgeCerError

    folder = tmp_path / "wavs"
    folder.mkdir()
    with pytest.raises(EdgeCerError, match="no WAV files"):
        run_live_bench(StepGenerator(step_s=0.0), ScriptedRecognizer([]), [folder], runs=1,
                       stimulus=stimulus(tmp_path / "stim.png"), report=lambda line: None)
    for name in ("b.wav", "a.wav"):
        sf.write(folder / name, np.zeros(int(2.6 * 16000), np.float32), 16000)
    recognizer = ScriptedRecognizer([(0.2, "partial", "the storm has passed now"),
                                     (1.2, "final", "The storm has passed, now.")])
    result = run_live_bench(StepGenerator(step_s=0.0), recognizer, [folder], runs=1,
                            stimulus=stimulus(tmp_path / "stim.png"), report=lambda line: None)
    assert result["settings"]["audio"] == ["a.wav", "b.wav"] and len(result["trials"]) == 4
