"""Shared by the TUI tests: a tiny protocol whose timed phases take no time and whose limits never run out."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual_image._terminal import CellSize, get_cell_size

from edge_cer.session.protocol import parse_protocol
from edge_cer.session.stimuli import synthetic_stimuli
from edge_cer.tui.app import CerApp, TuiOptions
from tests.session_helpers import protocol_text

# Response limits are long so a test's key presses always arrive in time; everything else is instant.
DURATIONS = "[durations]\nfixation = 0\nstimulus = 0\ncue = 0\nfeedback = 0\niti = 0\nrating = 600\nspeaking = 600\n"
# Snapshots: every phase lasts 10 minutes, so the screen holds still until the test moves on.
STILL = "[durations]\nfixation = 600\nstimulus = 600\ncue = 600\nfeedback = 600\niti = 600\nrating = 600\nspeaking = 600\n"


def tiny_protocol(still: bool = False, **kwargs):
    return parse_protocol(protocol_text(time_scale=1.0, **kwargs) + (STILL if still else DURATIONS), "test.toml")


def make_app(data_dir: Path, stimuli_dir: Path, **kwargs) -> CerApp:
    protocol_kwargs = {k: kwargs.pop(k) for k in ("trials_per_condition", "practice", "feedback", "look", "still") if k in kwargs}
    options = TuiOptions(data_dir=data_dir, protocol=tiny_protocol(**protocol_kwargs),
                         stimuli=synthetic_stimuli(stimuli_dir), placeholder=kwargs.pop("placeholder", True), pictures="halfcell",
                         min_free_bytes=0, **kwargs)
    return CerApp(options)


@pytest.fixture(autouse=True)
def pinned_terminal(monkeypatch):
    """Pictures are letterboxed in pixels: pin the cell size a terminal would report (VT340's), and truecolor.
    A test module imports this fixture (and `anyio_backend` for async tests) to use it."""
    monkeypatch.setattr(get_cell_size, "_result", CellSize(10, 20), raising=False)
    monkeypatch.setenv("COLORTERM", "truecolor")


@pytest.fixture
def anyio_backend():
    """anyio's pytest plugin runs the async Pilot tests on asyncio."""
    return "asyncio"
