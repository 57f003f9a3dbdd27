"""Snapshots of every participant screen at the two lab terminal sizes (120x40, 160x48), and of the experimenter's
screens at 120x40 (pytest-textual-snapshot). Update after a deliberate change with --snapshot-update and look at
the SVGs in tests/__snapshots__/test_tui_snapshots/ before committing them."""

from __future__ import annotations

import pytest

from tests.tui_helpers import make_app, pin_terminal

SIZES = {"120x40": (120, 40), "160x48": (160, 48)}
# The participant's screens, in the order a trial shows them.
PHASES = ("instructions", "fixation", "stimulus", "rating_pre", "cue", "regulate", "feedback", "rating_post", "iti",
          "break", "end")


@pytest.fixture(autouse=True)
def pinned_terminal(monkeypatch):
    pin_terminal(monkeypatch)


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


def test_rating_selected_by_arrows(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZES["120x40"], run_before=at_phase("rating_pre"), press=["right", "right"])


def test_setup(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZES["120x40"], run_before=warmed_up)


def test_setup_warns_about_256_colours(snap_compare, tmp_path, monkeypatch):
    monkeypatch.setenv("COLORTERM", "")
    monkeypatch.setenv("TERM", "xterm-256color")
    app = make_app(tmp_path / "data", tmp_path / "stimuli", trials_per_condition=1, participant="P001")
    assert snap_compare(app, terminal_size=SIZES["120x40"], run_before=warmed_up)


def test_experimenter_overlay(snap_compare, app):
    """After a completed trial: the table fits 120 columns and says what the feedback showed."""
    assert snap_compare(app, terminal_size=SIZES["120x40"], run_before=at_phase("break"), press=["f2", "_"])


def test_help(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZES["120x40"], run_before=at_phase("cue"), press=["f1", "_"])
