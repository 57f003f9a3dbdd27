"""The live pipeline inside a session: `run_session` on a runtime with fabricated ASR, and `edge-cer run --engines
--asr` with a real (tiny random) sherpa-onnx model and the tiny engine. Checks the trial rows' latency accounting,
the deadline, and the tidy CSV's and BIDS's columns."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from edge_cer.headless import run_session
from edge_cer.runtime import build_runtime
from edge_cer.session.bids import BEH_COLUMNS
from edge_cer.session.data import TIDY_COLUMNS, list_sessions, read_session
from edge_cer.session.participant import ScriptedParticipant
from edge_cer.session.stimuli import synthetic_stimuli
from tests.live_helpers import ScriptedRecognizer, StepGenerator
from tests.session_helpers import make_protocol, protocol_text
from tests.test_speech_vad import vad_dir  # noqa: F401 (a fixture)

SCRIPT = [(0.3, "partial", "they are only"), (0.6, "partial", "they are actors on a film set"),
          (1.3, "final", "They are actors on a film set.")]


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory):
    return synthetic_stimuli(tmp_path_factory.mktemp("stimuli")).folder


def script_file(folder, seconds=1.6, audio=None):
    sf.write(folder / "speech.wav", np.zeros(int(seconds * 16000), np.float32) if audio is None else audio, 16000)
    (folder / "script.toml").write_text('rt_s = 0.1\n[[trials]]\nwav = "speech.wav"\n')
    return folder / "script.toml"


def run_live(tmp_path, stimuli, generator, live_toml):
    from edge_cer.session.protocol import parse_protocol

    # 10 ms per protocol second, but a 2 s speaking window: the 1.6 s recording is replayed in real time.
    protocol = parse_protocol(protocol_text(time_scale=0.01, trials_per_condition=1)
                              + "[durations]\nspeaking = 200.0\n" + live_toml, "live.toml")
    participant = ScriptedParticipant.from_file(script_file(tmp_path))
    summary = run_session(participant, "P001", tmp_path / "data", protocol=protocol, stimuli=stimuli,
                          runtime=lambda p: build_runtime(p, generator=generator, recognizer=ScriptedRecognizer(SCRIPT)),
                          min_free_bytes=0)
    _, trials, events = read_session(list_sessions(tmp_path / "data")[0].folder)
    return summary, trials, events


def test_live_session_records_speculation_and_latencies(tmp_path, stimuli):
    gen = StepGenerator(step_s=0.01)
    summary, trials, events = run_live(tmp_path, stimuli, gen, "[live]\ndebounce_s = 0.1\n")
    assert summary["trials_recorded"] == 4
    ai = [t for t in trials if t["feedback"] == "ai"]
    none = [t for t in trials if t["feedback"] == "none"]
    for t in ai:
        assert t["transcript"] == "They are actors on a film set." and t["prompt"] == "they are actors on a film set"
        assert t["transcript_source"] == "live" and t["picture_shown"] == 1 and t["generation_deadline_missed"] == 0
        assert t["feedback_source"] == "speculative" and t["speculative_generations"] == 2
        assert t["wasted_generations"] == 1 and t["safety_blocked"] == 0  # "they are only" was superseded
        assert 1.2 < t["speech_end_s"] < 1.5, "the recogniser's endpoint (1.3 s of audio) on the session clock"
        assert t["picture_ready_s"] <= t["transcript_final_s"], "the speculative picture was ready before the final"
        assert t["transcript_final_s"] <= t["picture_shown_s"] < t["transcript_final_s"] + 0.2
        live = json.loads(t["live"])
        assert live["final_prompt"] == live["shown_prompt"] and live["reason"] is None
        assert live["settings"]["prompt"]["min_words"] == 3 and all(g["safety"] for g in live["generations"]
                                                                     if g["outcome"] == "ready")
    assert all(t["feedback_source"] is None and t["picture_file"] is None and t["transcript"] for t in none)
    assert all(t["picture_shown"] == 0 and t["feedback_wait_s"] < 0.05 for t in none)
    assert {e["trial"] for e in events if e["kind"] == "picture_accounting"} == {t["trial"] for t in ai}
    assert all(prompt in ("they are actors on a film set", "they are only") for prompt, _ in gen.calls)
    with open(tmp_path / "data" / "trials.csv") as f:
        assert tuple(next(csv.reader(f))) == TIDY_COLUMNS
    beh = next((tmp_path / "data" / "bids").rglob("*_beh.tsv")).read_text().splitlines()
    assert tuple(beh[0].split("\t")) == BEH_COLUMNS and {"feedback_source", "picture_shown", "prompt"} <= set(BEH_COLUMNS)
    rows = [dict(zip(BEH_COLUMNS, line.split("\t"))) for line in beh[1:]]
    assert all(r["feedback_source"] == "speculative" and r["picture_shown"] == "1" for r in rows if r["feedback"] == "ai")
    sidecar = json.loads(next((tmp_path / "data" / "bids").rglob("*_beh.json")).read_text())
    assert "speculative" in sidecar["feedback_source"]["Levels"]


def test_slow_generation_never_stalls_the_trial_clock(tmp_path, stimuli):
    gen = StepGenerator(step_s=0.5)  # 4 steps: 2 s per picture, deadline 0.4 s
    _, trials, events = run_live(tmp_path, stimuli, gen, "[live]\ndeadline_s = 0.4\non_deadline = \"none\"\n")
    for t in (t for t in trials if t["feedback"] == "ai"):
        assert t["feedback_source"] == "none" and t["picture_file"] is None
        assert t["no_picture_reason"].startswith("deadline") and t["generation_deadline_missed"] == 1
        assert t["picture_shown_s"] is None and t["picture_shown"] == 0
        onsets = json.loads(t["onsets"])
        regulate = onsets["regulate"][1]
        feedback_after_speech_end = onsets["feedback"][1] - regulate - t["speech_end_s"]
        assert feedback_after_speech_end < 0.4 + 0.15, "the feedback screen starts at the deadline at the latest"
        assert t["feedback_shown_duration_s"] >= t["feedback_duration_s"], "and stands for its full duration"
    assert sum(e["kind"] == "no_picture" for e in events) == 2


def test_edge_cer_run_with_engines_and_asr_goes_live(tmp_path, stimuli, tiny_export):
    pytest.importorskip("torch", reason="the export stage builds the tiny random ASR model")
    from edge_cer.cli import main
    from edge_cer.speech.manifest import write_manifest
    from export.asr.test_models import build_transducer

    asr = tmp_path / "asr"
    write_manifest(asr, {"streaming": build_transducer(asr / "streaming")}, {"kind": "test-model"})
    rng = np.random.default_rng(0)  # the random model decodes noise bursts to letters and silence to blanks
    audio = np.concatenate([np.zeros(8000), 0.1 * rng.standard_normal(32000), np.zeros(32000)]).astype(np.float32)
    script = script_file(tmp_path, audio=audio)
    (tmp_path / "p.toml").write_text(protocol_text(time_scale=0.0, trials_per_condition=1)
                                     + "[prompt]\nmin_words = 1\n[live]\ndeadline_s = 30.0\n")
    code = main(["run", "--participant", "P002", "--data", str(tmp_path / "data"), "--protocol", str(tmp_path / "p.toml"),
                 "--stimuli", str(stimuli), "--engines", str(tiny_export()), "--asr", str(asr),
                 "--scripted", str(script), "--min-free-mb", "0"])
    assert code == 0
    _, trials, events = read_session(list_sessions(tmp_path / "data")[0].folder)
    ai = [t for t in trials if t["feedback"] == "ai"]
    assert len(trials) == 4 and all(t["transcript"] for t in trials)
    for t in ai:
        live = json.loads(t["live"])
        assert t["feedback_source"] in ("final", "speculative", "none", "best_ready")
        assert live["final_prompt"] and live["generations"], "the recogniser's transcript went to the engine"
        if t["picture_file"]:
            assert t["engine_manifest_sha256"] and t["prompt"] == live["shown_prompt"]
        else:  # random-weight pictures may be refused by the gate: then the log says so
            assert t["no_picture_reason"].startswith("safety gate") and t["safety_blocked"] >= 1


def test_the_protocol_sets_the_recognisers_pause(vad_dir):  # noqa: F811
    """`[live] vad_min_silence` reaches the recogniser a session loads (and sherpa's VAD in it); a resumed session
    whose protocol asks for another one is refused rather than run with the loaded one."""
    from edge_cer.errors import EdgeCerError
    from edge_cer.session.protocol import parse_protocol

    noisy_room = parse_protocol(protocol_text() + "[live]\nvad_min_silence = 0.25\n", "noisy.toml")
    runtime = build_runtime(noisy_room, asr=vad_dir, placeholder=True)
    assert runtime.recognizer.config.vad_min_silence == 0.25
    assert runtime.recognizer.vad_config.silero_vad.min_silence_duration == pytest.approx(0.25)
    default = build_runtime(parse_protocol(protocol_text()), asr=vad_dir, placeholder=True)
    assert default.recognizer.config.vad_min_silence == 0.3
    with pytest.raises(EdgeCerError, match=r"vad_min_silence = 0.3, but the recogniser was loaded with 0.25"):
        runtime.with_protocol(parse_protocol(protocol_text() + "[live]\nvad_min_silence = 0.3\n", "quiet.toml"))
