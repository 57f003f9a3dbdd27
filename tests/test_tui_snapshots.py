"""Snapshots of every screen (pytest-textual-snapshot). Update after a deliberate change with --snapshot-update
and look at the SVGs in tests/__snapshots__/test_tui_snapshots/ before committing them."""

from __future__ import annotations

import pytest
from textual_image._terminal import CellSize, get_cell_size

from tests.tui_helpers import make_app

SIZE = (100, 36)


@pytest.fixture(autouse=True)
def fixed_cell_size(monkeypatch):
    """Pictures are letterboxed in pixels; pin the cell size the terminal would report."""
    monkeypatch.setattr(get_cell_size, "_result", CellSize(10, 20), raising=False)


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


def at_phase(name: str, typed: str = "", submit: bool = False):
    """run_before: start the session and move on to the phase `name` (optionally typing a reappraisal)."""

    async def run_before(pilot):
        app = pilot.app
        await warmed_up(pilot)
        await pilot.click("#start")
        await pilot.pause()
        while app.session.current.name != name:
            if app.session.current.name == "regulate" and submit:
                await pilot.press(*typed, "enter")
                for _ in range(100):  # the picture is made in a worker, then feedback begins
                    await pilot.pause(0.02)
                    if app.session.current.name != "regulate":
                        break
            else:
                app.advance()
        if typed and not submit:
            await pilot.press(*typed)
        await pilot.pause()

    return run_before


def test_setup(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZE, run_before=warmed_up)


@pytest.mark.parametrize("phase", ["instructions", "fixation", "stimulus", "rating_pre", "cue", "break", "end"])
def test_phase(snap_compare, app, phase):
    assert snap_compare(app, terminal_size=SIZE, run_before=at_phase(phase))


def test_speaking_with_typed_text(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZE, run_before=at_phase("regulate", typed="it is a film set"))


def test_feedback_picture(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZE, run_before=at_phase("feedback", typed="it is a film set", submit=True))


def test_rating_selected_by_arrows(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZE, run_before=at_phase("rating_pre"), press=["right", "right"])


def test_experimenter_overlay(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZE, run_before=at_phase("rating_pre"), press=["f2", "_"])


def test_help(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZE, run_before=warmed_up, press=["f1", "_"])

