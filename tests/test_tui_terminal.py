"""What the terminal can show, as the setup screen and `edge-cer doctor` report it: the colour check reads the same
environment as rich (and so Textual) does, and warns in one line when pictures would lose their colours."""

from __future__ import annotations

import pytest

from edge_cer.cli import main
from edge_cer.tui.terminal import colour_warning, terminal_colours


@pytest.mark.parametrize(("colorterm", "term", "expected"), [
    ("truecolor", "xterm-256color", "truecolor"), ("24bit", "xterm", "truecolor"), ("", "xterm-256color", "256"),
    ("", "screen", "standard"),
])
def test_colours_follow_colorterm_and_term(monkeypatch, colorterm, term, expected):
    monkeypatch.setenv("COLORTERM", colorterm)
    monkeypatch.setenv("TERM", term)
    found = terminal_colours()
    assert found["colours"] == expected
    assert (found["warning"] is None) == (expected == "truecolor")


def test_the_warning_is_one_line_that_names_the_fix():
    line = colour_warning("256")
    assert "\n" not in line and len(line) <= 94 and "256 colours" in line and "COLORTERM=truecolor" in line
    assert colour_warning("truecolor") is None


def test_doctor_shows_the_warning(monkeypatch, capsys):
    monkeypatch.setenv("COLORTERM", "")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "200")  # the table's line must not wrap for the check below
    main(["doctor"])
    assert colour_warning("256") in capsys.readouterr().out
