"""The whole spoken trial, as a participant meets it: espeak-ng sentences with capitals, commas, full stops and
apostrophes, after leading silence, at microphone timing, through the real Whisper tiny.en recogniser (the demo's
`export asr --default` folder) into the terminal UI (Pilot) and into `edge-cer run`. Every AI trial shows a
picture, and its record regenerates that picture byte for byte with `edge-cer generate`."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from edge_cer.cli import main
from edge_cer.live.speaking import listen
from edge_cer.session.data import list_sessions, read_session
from edge_cer.session.protocol import Live, parse_protocol
from edge_cer.session.stimuli import synthetic_stimuli
from edge_cer.speech.audio import file_source
from edge_cer.speech.recognizer import create_recognizer
from edge_cer.tui.app import CerApp, TuiOptions
from tests.session_helpers import protocol_text
from tests.test_tui_pilot import SIZE, phase_is, start
from tests.trial_speech import SENTENCES, microphone, speak
from tests.tui_helpers import DURATIONS

pytestmark = pytest.mark.anyio
# The wiring is under test here, not the gate (tests/test_safety_everywhere.py): random-weight pictures are noise,
# so the gate is opened; a 2-core machine shared with other tests gets a generous generation deadline.
SETTINGS = ("[safety]\nmax_valence_drop = 2.0\nmax_red_share_increase = 1.0\n"
            "[live]\ndeadline_s = 60.0\n")


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    return [speak(text, folder / f"reappraisal-{i}.wav") for i, text in enumerate(SENTENCES, start=1)]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def check_trials(trials, data_dir: Path, engines: Path, stimuli, tmp_path: Path) -> None:
    """Every AI trial was heard, showed a picture, and regenerates it exactly from its record."""
    assert len(trials) == len(SENTENCES) and all(t["feedback"] == "ai" for t in trials)
    paths = {s.id: s.path for s in stimuli.stimuli}
    for t, said in zip(trials, SENTENCES):
        assert t["transcript_source"] == "live" and len(words(t["transcript"]) & words(said)) >= 4, t["transcript"]
        assert words(said.split(",")[-1]) <= words(t["transcript"]), f"the end of {said!r} was not heard"
        assert t["picture_shown"] == 1 and t["feedback_source"] in ("final", "speculative"), t["no_picture_reason"]
        assert t["prompt"] and t["prompt"] == t["prompt"].lower() and "," not in t["prompt"]
        assert t["engine"] and t["provider"] == "cpu" and t["engine_manifest_sha256"]
        assert t["generation_s"] > 0 and t["generation_deadline_missed"] == 0
        assert t["feedback_shown_duration_s"] >= t["feedback_duration_s"]
        out = tmp_path / f"regenerated-{t['trial']}.png"
        args = ["generate", "--engines", str(engines), "--image", str(paths[t["stimulus_id"]]), "--prompt", t["prompt"],
                "--seed", str(t["seed"]), "--steps", str(t["steps"]), "--strength", str(t["strength"]),
                "--ip-scale", str(t["ip_scale"]), "--guidance", str(t["guidance"]), "--vae", t["vae"], "--out", str(out)]
        args += ["--negative-prompt", t["negative_prompt"]] if t["negative_prompt"] else []
        args += ["--scheduler", t["scheduler"]] if t["scheduler"] else []
        assert main(args) == 0
        assert out.read_bytes() == (data_dir / t["picture_file"]).read_bytes(), f"trial {t['trial']}"


def test_a_sentence_with_comma_pauses_is_heard_to_its_end(recordings, default_asr):
    """The voice detector ends an utterance at the second comma's 0.48 s pause, so the recogniser gives two
    finals; the turn goes on through the pause (it once ended at the first final: "The man isn't third, he's being
    killed.") and ends `end_of_turn_s` after the last speech."""
    said, end_of_turn_s = SENTENCES[0], Live().end_of_turn_s
    assert said == "The man isn't hurt, he's being helped, and he'll recover soon."
    recognizer = create_recognizer(default_asr)  # loaded before the clock starts: a loaded CPU loads it slowly
    start = time.monotonic_ns()
    heard = listen(recognizer, file_source(recordings[0], realtime=True), time.monotonic_ns,
                   end_of_turn_s=end_of_turn_s)
    assert {"and", "he'll", "recover", "soon"} <= words(heard.text), heard.text
    # The speech ends ~4.9 s into the recording (0.6 s of silence first), at the last final's endpoint.
    assert 4.5 < (heard.speech_end_ns - start) / 1e9 < 5.3, heard
    assert heard.final_ns - heard.speech_end_ns >= (end_of_turn_s - 0.1) * 1e9, "the turn ended too soon"


async def test_spoken_trials_in_the_terminal_ui(tmp_path, recordings, default_asr, tiny_export):
    protocol = parse_protocol(protocol_text(time_scale=1.0, trials_per_condition=1, feedback='["ai"]')
                              + DURATIONS + SETTINGS, "spoken.toml")
    stimuli = synthetic_stimuli(tmp_path / "stimuli")
    app = CerApp(TuiOptions(data_dir=tmp_path / "data", protocol=protocol, stimuli=stimuli, engines=tiny_export(),
                            asr=default_asr, audio_source=microphone(recordings), pictures="halfcell",
                            min_free_bytes=0))
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        assert not app.typing, app.speech_status
        await pilot.press("enter")
        for trial in (1, 2):
            await phase_is(app, pilot, "rating_pre")
            await pilot.press("7")
            await phase_is(app, pilot, "regulate")
            for _ in range(3000):  # the recording plays in real time, then the picture is made
                await pilot.pause(0.02)
                if app.session.current.name != "regulate":
                    break
            await phase_is(app, pilot, "rating_post")
            await pilot.press("3")
            if trial == 1:
                await phase_is(app, pilot, "break")
                await pilot.press("enter")
        await phase_is(app, pilot, "end")
        await pilot.press("enter")
    summary = app.return_value
    _, trials, events = read_session(summary["folder"])
    check_trials(trials, tmp_path / "data", tiny_export(), stimuli, tmp_path)
    shown = [json.loads(e["detail"])["file"] for e in events if e["kind"] == "picture_render" and e["phase"] == "feedback"]
    assert shown == [Path(t["picture_file"]).name for t in trials], "the feedback screens drew the trials' pictures"


def test_spoken_trials_in_edge_cer_run(tmp_path, recordings, default_asr, tiny_export):
    (tmp_path / "script.toml").write_text("".join(f'[[trials]]\nwav = "{w}"\n' for w in recordings))
    (tmp_path / "spoken.toml").write_text(protocol_text(time_scale=0.01, trials_per_condition=1, feedback='["ai"]')
                                          + "[durations]\nspeaking = 2000.0\n" + SETTINGS)
    stimuli = synthetic_stimuli(tmp_path / "stimuli")
    data = tmp_path / "data"
    assert main(["run", "--participant", "P001", "--data", str(data), "--protocol", str(tmp_path / "spoken.toml"),
                 "--stimuli", str(stimuli.folder), "--engines", str(tiny_export()), "--asr", str(default_asr),
                 "--provider", "cpu", "--scripted", str(tmp_path / "script.toml"), "--min-free-mb", "0"]) == 0
    _, trials, _ = read_session(list_sessions(data)[0].folder)
    check_trials(trials, data, tiny_export(), stimuli, tmp_path)
    tidy = (data / "trials.csv").read_text().splitlines()
    header = tidy[0].split(",")
    assert {"picture_shown", "prompt", "guidance", "provider", "feedback_wait_s"} <= set(header)
