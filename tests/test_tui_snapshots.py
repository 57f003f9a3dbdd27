"""Snapshots of every participant screen at the two lab terminal sizes (120x40, 160x48), and of the experimenter's
screens at 120x40 (pytest-textual-snapshot). Update after a deliberate change with --snapshot-update and look at
the SVGs in tests/__snapshots__/test_tui_snapshots/ before committing them."""

from __future__ import annotations

import pytest
from textual.app import App

from edge_cer.tui.app import CALM
from edge_cer.tui.screens.experimenter import ExperimenterScreen
from tests.tui_helpers import make_app, pinned_terminal  # noqa: F401 (fixture)

SIZES = {"120x40": (120, 40), "160x48": (160, 48)}
# The participant's screens, in the order a trial shows them.
PHASES = ("instructions", "fixation", "stimulus", "rating_pre", "cue", "regulate", "feedback", "rating_post", "iti",
          "break", "end")


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path / "data", tmp_path / "stimuli", trials_per_condition=1, practice=1, feedback='["ai"]',
                    still=True, participant="P001")


async def warmed_up(pilot):
    for _ in range(200):
        await pilot.pause(0.02)
        if pilot.app._setup().ready:
            return
    raise AssertionError(pilot.app._setup().problem)


def at_phase(name: str, typed: str = "it is a film set"):
    """run_before: start the session and go to the phase `name`; the reappraisal is typed on the way (and left
    unsent when the phase is `regulate`). Timed phases are ended the way their timer ends them."""

    async def run_before(pilot):
        app = pilot.app
        await warmed_up(pilot)
        await pilot.click("#start")
        await pilot.pause()
        while app.session.current.name != name:
            phase = app.session.current
            if phase.name == "regulate":
                await pilot.press(*typed, "enter")
                for _ in range(100):  # the picture is made in a worker, then feedback begins
                    await pilot.pause(0.02)
                    if app.session.current is not phase:
                        break
            elif phase.name.startswith("rating"):
                await pilot.press("7")
            elif phase.name in ("instructions", "break"):
                await pilot.press("enter")
            else:
                app._time_up(app._token)
            await pilot.pause()
        if name == "regulate":
            await pilot.press(*typed)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("phase", PHASES)
def test_participant_screen(snap_compare, app, phase, size):
    assert snap_compare(app, terminal_size=SIZES[size], run_before=at_phase(phase))


def test_making_your_picture(snap_compare, app):
    """The typed reappraisal is in and the AI picture is being made (the app sets this while its worker runs)."""

    async def run_before(pilot):
        await at_phase("regulate")(pilot)
        pilot.app._screen().making_picture = True

    assert snap_compare(app, terminal_size=SIZES["120x40"], run_before=run_before)


def test_rating_selected_by_arrows(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZES["120x40"], run_before=at_phase("rating_pre"), press=["right", "right"])


def test_setup(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZES["120x40"], run_before=warmed_up)


def test_setup_warns_about_256_colours(snap_compare, tmp_path, monkeypatch):
    monkeypatch.setenv("COLORTERM", "")
    monkeypatch.setenv("TERM", "xterm-256color")
    app = make_app(tmp_path / "data", tmp_path / "stimuli", trials_per_condition=1, participant="P001")
    assert snap_compare(app, terminal_size=SIZES["120x40"], run_before=warmed_up)


def trial_row(trial, feedback="ai", status="completed", shown=1, blocked=0, ratings=(7, 4), late=False):
    return {"trial": trial, "practice": 0, "strategy": "reappraise", "feedback": feedback, "status": status,
            "rating_pre": ratings[0], "rating_post": ratings[1], "picture_shown": shown if feedback == "ai" else 0,
            "safety_blocked": blocked, "transcript_final_s": 2.41,
            "picture_ready_s": None if not shown or feedback != "ai" else 2.93 + 3 * late,
            "picture_shown_s": None if not shown or feedback != "ai" else 2.95 + 3 * late,
            "generation_s": None if feedback != "ai" else 0.48 + 3 * late}


class ExperimenterOverlay(App):
    """The overlay alone, over trial rows covering every picture outcome (the app fills them from the database)."""

    def on_mount(self) -> None:
        self.register_theme(CALM)
        self.theme = CALM.name
        self.push_screen(ExperimenterScreen("trial 6 · reappraise, AI picture · rating_post", [
            trial_row(1), trial_row(2, shown=1, blocked=1), trial_row(3, shown=0, blocked=3),
            trial_row(4, shown=0, late=True), trial_row(5, feedback="none", ratings=(8, None), status="skipped")]))


def test_experimenter_overlay(snap_compare):
    """The trial table fits 120 columns and says what each feedback phase showed: shown, blocked, none, no AI."""
    assert snap_compare(ExperimenterOverlay(), terminal_size=SIZES["120x40"])


def test_help(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZES["120x40"], run_before=at_phase("cue"), press=["f1", "_"])
