"""The participant's screen says what is true: the protocol's typed wording when typing, its spoken wording with a
recogniser, the AI / no-AI feedback texts under the cue, and a time-left bar that only moves while the clock runs."""

from __future__ import annotations

import pytest

from edge_cer.errors import EdgeCerError
from edge_cer.session.protocol import TYPED_TWINS, Instructions, parse_protocol
from edge_cer.speech import recognizer as speech_recognizer
from tests.session_helpers import protocol_text
from tests.live_helpers import ScriptedRecognizer
from tests.test_tui_pilot import quiet_audio
from tests.tui_helpers import anyio_backend, make_app, pinned_terminal  # noqa: F401 (fixtures)

pytestmark = pytest.mark.anyio



def test_typed_wording_replaces_every_spoken_twin():
    spoken, typed = Instructions(), Instructions().for_input(typed=True)
    assert spoken.for_input(typed=False) is spoken
    for name in TYPED_TWINS:
        assert getattr(typed, name) == getattr(spoken, f"typed_{name}") != getattr(spoken, name)
    assert not any("say" in getattr(typed, n) or "speak" in getattr(typed, n) for n in TYPED_TWINS)
    assert (typed.look, typed.end) == (spoken.look, spoken.end)  # nothing to speak or type: one wording


def test_a_changed_instruction_needs_its_typed_twin():
    text = protocol_text() + '[instructions]\nreappraise = "NEU BEWERTEN: sagen Sie laut ..."\n'
    with pytest.raises(EdgeCerError, match=r"study.toml: \[instructions\] reappraise .* set typed_reappraise too"):
        parse_protocol(text, "study.toml")
    parse_protocol(text + 'typed_reappraise = "NEU BEWERTEN: schreiben Sie ..."\n', "study.toml")


async def wait_for(pilot, until, tries=200):
    for _ in range(tries):
        if until():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out in {pilot.app.session.current if pilot.app.session else None}")


def shown(app, selector: str) -> str:
    return str(app._screen().query_one(selector).render())


async def to_phase(app, pilot, name: str):
    await wait_for(pilot, lambda: app._setup().ready)
    await pilot.click("#start")
    await wait_for(pilot, lambda: app.session is not None and app.session.current is not None)
    while app.session.current.name != name:
        phase = app.session.current
        if phase.name == "instructions":
            await pilot.press("enter")
        elif phase.name == "rating_pre":
            await pilot.press("5")
        else:
            app._time_up(app._token)
        await wait_for(pilot, lambda: app.session.current is not phase)


@pytest.mark.parametrize("feedback", ["ai", "none"])
async def test_typing_shows_the_typed_cue_and_the_feedback_text(tmp_path, feedback):
    app = make_app(tmp_path / "data", tmp_path / "stimuli", trials_per_condition=1, feedback=f'["{feedback}"]',
                   still=True, participant="P001")
    typed = Instructions().for_input(typed=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await to_phase(app, pilot, "cue")
        strategy = getattr(typed, app.session.current.trial.condition.strategy)
        note = typed.feedback_ai if feedback == "ai" else typed.feedback_none
        assert (shown(app, "#cue-text"), shown(app, "#cue-feedback")) == (strategy, note)
        app._time_up(app._token)
        await wait_for(pilot, lambda: app.session.current.name == "regulate")
        assert (shown(app, "#speaking-cue"), shown(app, "#speaking-feedback")) == (strategy, note)

        # The time-left bar starts full, shrinks while the clock runs and stands still while help is open.
        screen = app._screen()
        bar = screen.query_one("#time-left")
        shown_left: list[float | None] = []  # every value the bar is given, however briefly (a loaded CPU polls late)
        screen.watch(screen, "time_left", lambda left: shown_left.append(left), init=False)
        assert bar.total == bar.progress == 600
        await wait_for(pilot, lambda: bar.progress < 599.4)
        await pilot.press("f1")
        await pilot.pause(0.1)
        frozen = bar.progress
        await pilot.pause(1.2)
        assert bar.progress == frozen and app.session.paused
        before = len(shown_left)
        await pilot.press("escape")
        await wait_for(pilot, lambda: 600 in shown_left[before:])  # the phase restarted in full
        await pilot.press("ctrl+q")


async def test_live_speech_shows_the_spoken_wording(tmp_path, monkeypatch):
    monkeypatch.setattr(speech_recognizer, "create_recognizer", lambda folder, config=None: ScriptedRecognizer([]))
    app = make_app(tmp_path / "data", tmp_path / "stimuli", trials_per_condition=1, feedback='["ai"]', still=True,
                   participant="P001", asr=tmp_path, audio_source=quiet_audio)
    async with app.run_test(size=(120, 40)) as pilot:
        await to_phase(app, pilot, "cue")
        spoken = Instructions()
        assert shown(app, "#cue-text") == getattr(spoken, app.session.current.trial.condition.strategy)
        assert "say out loud" in shown(app, "#cue-text") and shown(app, "#cue-feedback") == spoken.feedback_ai
        await pilot.press("ctrl+q")
