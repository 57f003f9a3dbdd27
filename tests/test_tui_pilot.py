"""Pilot tests: the app drives whole short sessions through the session engine; the data on disk is checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_cer import cli
from edge_cer.engine import PlaceholderGenerator
from edge_cer.errors import GeneratorLost
from edge_cer.runtime import build_runtime
from edge_cer.session.data import read_session
from edge_cer.session.protocol import Live
from edge_cer.speech import recognizer as speech_recognizer
from edge_cer.tui import app as tui_app
from edge_cer.tui.screens.lost import LostScreen
from tests.live_helpers import ScriptedRecognizer
from tests.tui_helpers import anyio_backend, make_app, pinned_terminal  # noqa: F401 (fixtures)

SIZE = (100, 36)
pytestmark = pytest.mark.anyio  # anyio's pytest plugin runs the async tests



async def ready(app, pilot):
    """Wait for the warm-up (a thread worker) to finish."""
    for _ in range(200):
        await pilot.pause(0.02)
        if app._setup().ready or app._setup().problem:
            break
    assert app._setup().ready, app._setup().problem


async def start(app, pilot, label="P001", resume=False):
    await ready(app, pilot)
    if resume:
        await pilot.click("#resume")
    app.screen.query_one("#label").value = ""
    await pilot.click("#label")
    await pilot.press(*label, "enter")
    await pilot.pause()


async def phase_is(app, pilot, *names):
    for _ in range(100):
        if app.session.current is not None and app.session.current.name in names:
            return
        await pilot.pause(0.02)
    raise AssertionError(f"expected {names}, session is in {app.session.current.name}")


async def acknowledge(app, pilot, name: str):
    """Wait for a message screen (break, end) and press Enter on it."""
    await phase_is(app, pilot, name)
    await pilot.press("enter")
    await pilot.pause()


async def run_trial(app, pilot, pre: str, text: str, post_keys):
    await phase_is(app, pilot, "rating_pre")
    await pilot.press(pre)
    await phase_is(app, pilot, "regulate")
    await pilot.press(*text, "enter")
    await phase_is(app, pilot, "rating_post")
    await pilot.press(*post_keys)


async def first_trial_then_break(app, pilot):
    """Start P001's session, run trial 1 ("just a picture", ratings 5 and 4), and reach trial 2's first rating."""
    await start(app, pilot)
    await pilot.press("enter")
    await run_trial(app, pilot, "5", "just a picture", ["4"])
    await acknowledge(app, pilot, "break")
    await phase_is(app, pilot, "rating_pre")


async def resume_last_trial(app, pilot):
    """Resume P001's session from the setup screen and run its last trial ("it looks staged", 6 and 5) to the end."""
    await start(app, pilot, resume=True)
    assert app.session is not None, app._setup().problem
    await pilot.press("enter")
    await run_trial(app, pilot, "6", "it looks staged", ["5"])
    await acknowledge(app, pilot, "end")


async def test_typed_session_records_every_trial_and_exports(tmp_path):
    """Two conditions x 1 trial plus one practice trial: typed reappraisals, number-key and arrow ratings."""
    app = make_app(tmp_path / "data", tmp_path / "stimuli", trials_per_condition=1, practice=1,
                   feedback='["ai"]')
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await phase_is(app, pilot, "instructions")
        assert "practice" in app.session.current.text
        await pilot.press("enter")
        await run_trial(app, pilot, "8", "It's a film set, nothing more.", ["3"])
        await acknowledge(app, pilot, "break")  # practice -> first block
        await run_trial(app, pilot, "7", "the people are actors", ["left", "left", "enter"])
        await acknowledge(app, pilot, "break")
        await run_trial(app, pilot, "9", "a red car and a street", ["2"])
        await acknowledge(app, pilot, "end")
    summary = app.return_value
    assert summary["state"] == "completed" and summary["trials_recorded"] == 3
    _, trials, events = read_session(summary["folder"])
    assert [t["transcript"] for t in trials] == ["It's a film set, nothing more.", "the people are actors",
                                                 "a red car and a street"]
    assert trials[0]["prompt"] == "it's a film set nothing more" and trials[0]["transcript_source"] == "typed"
    assert all(t["picture_shown"] == 1 and t["feedback_source"] == "final" for t in trials)
    # The first arrow press selects the middle of the scale (5), the second moves one lower: 4.
    assert [(t["rating_pre"], t["rating_post"]) for t in trials] == [(8, 3), (7, 4), (9, 2)]
    assert [t["practice"] for t in trials] == [1, 0, 0] and {t["status"] for t in trials} == {"completed"}
    assert all(t["picture_file"] and t["picture_ready_s"] is not None for t in trials)
    params = json.loads(trials[0]["generation"])["params"]
    assert params["engine"] == "placeholder" and params["seed"] == trials[0]["seed"]
    renders = [json.loads(e["detail"]) | {"phase": e["phase"]} for e in events if e["kind"] == "picture_render"]
    assert [r["phase"] for r in renders] == ["stimulus", "feedback"] * 3
    # The largest square box that fits 100x36 (less the badge, footer and margins): 32 rows of 20 px = 64 columns of 10.
    assert {(r["mode"], tuple(r["cells"])) for r in renders} == {("halfcell", (64, 32))}
    assert (tmp_path / "data" / "trials.csv").read_text().count("\n") == 4
    assert (tmp_path / "data" / "bids" / "dataset_description.json").exists()


async def test_experimenter_skips_then_aborts_with_reasons(tmp_path):
    app = make_app(tmp_path / "data", tmp_path / "stimuli", trials_per_condition=2, feedback='["none"]')
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await pilot.press("enter")
        await phase_is(app, pilot, "rating_pre")
        await pilot.press("f2")
        await pilot.pause()
        assert app.session.paused
        await pilot.click("#reason")
        await pilot.press(*"participant sneezed")
        await pilot.click("#skip")
        await phase_is(app, pilot, "rating_pre")
        assert app.session.current.trial.trial == 2
        await pilot.press("6")
        await phase_is(app, pilot, "regulate")
        await pilot.press("ctrl+p", *"experimenter")  # the command palette opens the same overlay
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.session.paused
        await pilot.click("#abort")  # refused without a reason
        await pilot.pause()
        assert app.session is not None and "reason" in str(app.screen.query_one("#problem").render())
        await pilot.click("#reason")
        await pilot.press(*"participant asked to stop")
        await pilot.click("#abort")
        await pilot.pause()
    summary = app.return_value
    assert summary["state"] == "aborted"
    _, trials, events = read_session(summary["folder"])
    assert [(t["trial"], t["status"]) for t in trials] == [(1, "skipped"), (2, "aborted")]
    assert trials[1]["rating_pre"] == 6
    reasons = {e["kind"]: json.loads(e["detail"]).get("reason") for e in events if e["kind"] in ("skip", "abort")}
    assert reasons == {"skip": "participant sneezed", "abort": "participant asked to stop"}


async def test_quit_keeps_the_data_and_resume_finishes_the_session(tmp_path):
    kwargs = dict(trials_per_condition=1, feedback='["none"]')
    app = make_app(tmp_path / "data", tmp_path / "stimuli", **kwargs)
    async with app.run_test(size=SIZE) as pilot:
        await first_trial_then_break(app, pilot)
        await pilot.press("ctrl+q")
        await pilot.pause()
    first = app.return_value
    assert first["state"] == "running" and first["trials_recorded"] == 1

    app = make_app(tmp_path / "data", tmp_path / "stimuli", **kwargs)
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)  # a new session is refused while one is unfinished
        assert "--resume" in app._setup().problem and app.session is None
        await resume_last_trial(app, pilot)
    second = app.return_value
    assert second["session_code"] == first["session_code"] and second["state"] == "completed"
    _, trials, events = read_session(second["folder"])
    assert [(t["trial"], t["transcript"], t["attempt"]) for t in trials] == [(1, "just a picture", 1),
                                                                              (2, "it looks staged", 2)]
    assert any(e["kind"] == "interrupted" for e in events)


def quiet_audio():
    import time

    while True:  # 50 ms chunks in real time, like a microphone
        time.sleep(0.05)
        yield np.zeros(800, np.float32)


async def test_live_speech_partials_and_final_reach_the_session(tmp_path, monkeypatch):
    script = [(0.1, "partial", "they are"), (0.25, "final", "they are only actors")]
    monkeypatch.setattr(speech_recognizer, "create_recognizer", lambda folder, config=None: ScriptedRecognizer(script))
    app = make_app(tmp_path / "data", tmp_path / "stimuli", trials_per_condition=1, feedback='["ai"]',
                   asr=tmp_path, audio_source=quiet_audio)
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        assert not app.typing
        await pilot.press("enter")
        await phase_is(app, pilot, "rating_pre")
        await pilot.press("7")
        await phase_is(app, pilot, "rating_post")  # the end of the turn ended speaking; the picture was shown
        await pilot.press("3")
        await pilot.press("ctrl+q")
    _, trials, events = read_session(app.return_value["folder"])
    assert trials[0]["transcript"] == "they are only actors" and trials[0]["picture_file"]
    assert any(e["kind"] == "partial" and json.loads(e["detail"])["text"] == "they are" for e in events)
    # The recogniser's endpoint on the phase clock (audio time 0: when listening started, just after the onset);
    # the turn ended end_of_turn_s of silence later.
    assert trials[0]["speech_end_s"] == pytest.approx(0.25, abs=0.05)
    assert trials[0]["transcript_final_s"] >= trials[0]["speech_end_s"] + Live().end_of_turn_s


class LosingGenerator(PlaceholderGenerator):
    """The placeholder engine, whose server "dies" at a picture for a reappraisal that says so."""

    def generate(self, stimulus_path, prompt, **kwargs):
        if "server dies" in prompt:
            raise GeneratorLost("grpc://gpu-box:8001: the server stopped answering during a request (UNAVAILABLE); "
                                "start `edge-cer serve` again, then continue the session with --resume")
        return super().generate(stimulus_path, prompt, **kwargs)


async def test_a_lost_picture_server_stops_the_session_resumably(tmp_path, monkeypatch):
    """GeneratorLost in an AI trial: one calm line, no traceback, the earlier trial kept, the lost one not recorded;
    a resume repeats the lost trial and finishes the session."""
    monkeypatch.setattr(tui_app, "build_runtime", lambda protocol, **_: build_runtime(
        protocol, generator=LosingGenerator()))
    kwargs = dict(trials_per_condition=1, feedback='["ai"]')
    app = make_app(tmp_path / "data", tmp_path / "stimuli", server="grpc://gpu-box:8001", placeholder=False, **kwargs)
    async with app.run_test(size=SIZE) as pilot:
        await first_trial_then_break(app, pilot)
        await pilot.press("6")
        await phase_is(app, pilot, "regulate")
        await pilot.press(*"then the server dies", "enter")
        for _ in range(200):
            if isinstance(app.screen, LostScreen):
                break
            await pilot.pause(0.02)
        assert isinstance(app.screen, LostScreen) and app.session is None  # the data are closed before it shows
        line = str(app.screen.query_one("#lost").render())
        assert "lost in trial 2" in line and "resume" in line and "--server grpc://gpu-box:8001" in line
        await pilot.press("enter")
        await pilot.pause()
    assert app._exception is None and app.return_code == 0  # no traceback: the app ended by itself
    first = app.return_value
    assert first["state"] == "running" and first["trials_recorded"] == 1 and "lost in trial 2" in first["stopped"]
    _, trials, events = read_session(first["folder"])
    assert [(t["trial"], t["status"], t["transcript"]) for t in trials] == [(1, "completed", "just a picture")]
    lost = [e for e in events if e["kind"] == "generator_lost"]
    assert len(lost) == 1 and lost[0]["trial"] == 2 and "UNAVAILABLE" in json.loads(lost[0]["detail"])["reason"]
    assert not (tmp_path / "data" / "trials.csv").exists()  # a running session is not exported

    app = make_app(tmp_path / "data", tmp_path / "stimuli", server="grpc://gpu-box:8001", placeholder=False, **kwargs)
    async with app.run_test(size=SIZE) as pilot:
        await resume_last_trial(app, pilot)
    second = app.return_value
    assert second["session_code"] == first["session_code"] and second["state"] == "completed"
    assert "stopped" not in second
    _, trials, events = read_session(second["folder"])
    assert [(t["trial"], t["status"], t["transcript"], t["attempt"], t["picture_shown"]) for t in trials] == [
        (1, "completed", "just a picture", 1, 1), (2, "completed", "it looks staged", 2, 1)]
    assert any(e["kind"] == "interrupted" for e in events)


def test_tui_prints_the_summary_then_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    """The command: a session stopped by a lost server prints its summary, then one line on stderr (status 2)."""
    stopped = "the picture server was lost in trial 2 (...); every finished trial is saved and the session can be resumed"
    monkeypatch.setattr(tui_app.CerApp, "run", lambda self: {"state": "running", "stopped": stopped})
    assert cli.main(["tui", "--data", str(tmp_path / "data"), "--server", "grpc://gpu-box:8001"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["stopped"] == stopped
    assert err == f"edge-cer tui: error: {stopped}\n" and "Traceback" not in err
