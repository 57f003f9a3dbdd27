"""Every overlay in every phase (Pilot): the overlay pauses the session, keys pressed while it is open reach
nothing, closing it gives the phase back its keyboard and what the participant had typed or chosen, and the rest of
the session, driven by ordinary keys, records every completed trial with both ratings."""

from __future__ import annotations

import pytest
from textual.command import CommandPalette

from edge_cer.session.data import read_session
from edge_cer.tui.screens.experimenter import ExperimenterScreen
from edge_cer.tui.screens.help import HelpScreen
from edge_cer.tui.widgets.rating import RatingScale
from tests.tui_helpers import anyio_backend, make_app, pinned_terminal  # noqa: F401 (fixtures)

pytestmark = pytest.mark.anyio
SIZE = (120, 40)
TEXT = "It's only a film set."
# Two blocks of one AI trial each, every phase held for 10 minutes: only a key or the test's "timer" ends one.
PHASES = ("instructions", "fixation", "stimulus", "rating_pre", "cue", "regulate", "feedback", "rating_post", "iti",
          "break", "end")
# overlay -> (key that opens it, its screen, how it is closed)
OVERLAYS = {
    "help": ("f1", HelpScreen, ("escape",)),
    "experimenter": ("f2", ExperimenterScreen, ("escape",)),  # resume
    "experimenter-skip": ("f2", ExperimenterScreen, ("tab", "enter")),  # from Resume to Skip trial
    "palette": ("ctrl+p", CommandPalette, ("escape",)),
}
# The palette pauses through the same path as help (CerApp._cover): the phases where a key or a timer ends it.
CASES = [(o, p) for o in OVERLAYS for p in PHASES if o != "palette" or p in ("rating_pre", "regulate", "feedback")]
SKIPPABLE = ("fixation", "stimulus", "rating_pre", "cue", "regulate", "feedback", "rating_post")  # row not yet written



async def settle(pilot, until, tries: int = 150):
    for _ in range(tries):
        if until():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out; the session is in {pilot.app.session.current}")


async def step(pilot) -> None:
    """Do what the current phase asks, as the participant would (or as its timer would)."""
    app = pilot.app
    phase = app.session.current
    if phase.name in ("instructions", "break", "end"):
        await pilot.press("enter")
    elif phase.name.startswith("rating"):
        await pilot.press("4" if phase.name == "rating_pre" else "2")
    elif phase.name == "regulate":
        typed = app.screen.query_one("#typed")
        await pilot.press(*TEXT[len(typed.value):], "enter")
    else:
        app._time_up(app._token)
    await settle(pilot, lambda: app.session is None or app.session.current is not phase)


def focused_id(app) -> str | None:
    return app.screen.focused.id if app.screen.focused is not None else None


@pytest.mark.parametrize(("overlay", "phase"), CASES)
async def test_overlay_in_phase(tmp_path, overlay, phase):
    key, screen_class, close = OVERLAYS[overlay]
    app = make_app(tmp_path / "data", tmp_path / "stimuli", trials_per_condition=1, feedback='["ai"]', still=True,
                   participant="P001")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app._setup().ready)
        await pilot.click("#start")
        while True:  # between two phases `current` is briefly None
            await settle(pilot, lambda: app.session is not None and app.session.current is not None)
            if app.session.current.name == phase:
                break
            await step(pilot)
        # What the participant has going when the overlay opens: a half-typed reappraisal, a chosen rating point.
        if phase == "regulate":
            await pilot.press(*TEXT[:8])
        if phase.startswith("rating"):
            await pilot.press("right")
        before = app.session.current
        focus, selected = focused_id(app), app.screen.query_one(RatingScale).selected
        typed = app.screen.query_one("#typed").value

        # Open: the session pauses; keys pressed now reach no phase.
        await pilot.press(key)
        await settle(pilot, lambda: isinstance(app.screen, screen_class))
        assert app.session.paused and app._timer is None
        await pilot.press("3", "x")
        await pilot.pause()
        assert app.session.current is before and app.session.paused

        # Close: the phase restarts with its keyboard and state (or, after Skip, the next trial begins).
        await pilot.press(*close)
        await settle(pilot, lambda: not app.session.paused and app.screen.__class__.__name__ == "SessionScreen")
        skipped = overlay == "experimenter-skip" and phase in SKIPPABLE
        now = app.session.current
        if skipped:
            assert now.trial is not before.trial
        else:
            assert (now.name, now.trial) == (before.name, before.trial) and now is not before  # restarted in full
            assert focused_id(app) == focus == {"rating_pre": "rating", "rating_post": "rating",
                                                "regulate": "typed"}.get(phase)
            assert app.screen.query_one(RatingScale).selected == selected
            assert app.screen.query_one("#typed").value == typed

        # The rest of the session by ordinary keys.
        while app.session is not None:
            await step(pilot)
    summary = app.return_value
    _, trials, events = read_session(summary["folder"])
    completed = [t for t in trials if t["status"] == "completed"]
    assert summary["state"] == "completed"
    assert all(t["rating_pre"] is not None and t["rating_post"] is not None for t in completed), completed
    assert [t["transcript"] for t in completed] == [TEXT] * len(completed)  # no stray key inside a transcript
    assert len(completed) == 2 - skipped and len(trials) == 2
    pauses = [e["kind"] for e in events if e["kind"] in ("pause", "resume")]
    assert pauses[:2] == ["pause", "resume"]
