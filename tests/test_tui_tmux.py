"""`edge-cer tui` in a real terminal (tmux): a typed session end to end. Ordinary typed sentences (capitals, commas,
full stops, apostrophes) make pictures that appear on screen and on disk; the participant reads the protocol's typed
instructions and never "say out loud" or a quit key. And the UI starts on the demo's engines and recogniser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from edge_cer.session.data import read_session
from edge_cer.session.protocol import Instructions
from tests.session_helpers import protocol_text
from tests.tui_helpers import DURATIONS

SENTENCES = ("The person is being helped, and they'll recover soon.", "It's only a film set. Nobody is hurt.")
HALF_BLOCKS = ("\u2580", "\u2584")  # how textual-image draws a picture in half cells


class Terminal:
    """`edge-cer tui ARGS` in a private tmux server (never anyone's sessions); its JSON summary lands in `out`.
    `linger`: the pane stays open after the app exits, showing what it printed on stderr."""

    def __init__(self, tmp_path, args: str, linger: bool = False):
        if shutil.which("tmux") is None:
            pytest.skip("tmux is not installed (setup.sh installs it)")
        self.out, self.seen, self.shown = tmp_path / "summary.json", [], []  # shown: every screen captured
        self.tmux = ["tmux", "-L", f"edge-cer-test-{os.getpid()}"]
        command = f"{sys.executable} -m edge_cer.cli tui {args} > {self.out}; echo exit=$? >> {self.out}"
        command += "; sleep 600" if linger else ""
        subprocess.run(self.tmux + ["new-session", "-d", "-s", "tui", "-x", "100", "-y", "36", command], check=True,
                       env={**os.environ, "TERM": "xterm-256color"})

    def screen(self) -> str:
        shown = subprocess.run(self.tmux + ["capture-pane", "-p", "-t", "tui"], capture_output=True, text=True).stdout
        self.shown.append(shown)
        return shown

    def wait_for(self, text: str, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            shown = self.screen()
            if text in shown:
                self.seen.append(text)
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; after {self.seen} the screen shows:\n{self.screen()}")

    def keys(self, *names: str) -> None:
        subprocess.run(self.tmux + ["send-keys", "-t", "tui", *names], check=True)

    def close(self) -> None:
        subprocess.run(self.tmux + ["kill-server"], capture_output=True)


def test_typed_sentences_make_pictures_on_screen_and_on_disk(tmp_path):
    protocol = tmp_path / "two-trials.toml"
    protocol.write_text(protocol_text(time_scale=1.0, trials_per_condition=1, feedback='["ai"]')
                        + DURATIONS.replace("feedback = 0", "feedback = 4").replace("cue = 0", "cue = 1"))
    data, out = tmp_path / "data", tmp_path / "summary.json"
    term = Terminal(tmp_path, f"--data {data} --protocol {protocol} --placeholder --participant P001 "
                              "--pictures halfcell --min-free-mb 0")
    screen, keys, wait_for = term.screen, term.keys, term.wait_for
    pictures_seen = []

    try:
        wait_for("ready")  # the warm-up ran the (placeholder) engine once
        keys("Enter")  # the participant field has focus and holds P001
        wait_for("Press Enter to begin.")
        started = len(term.shown)
        keys("Enter")
        for trial, text in enumerate(SENTENCES, start=1):
            wait_for("How negative do you feel right now?")
            keys("7")
            wait_for("Type here, then press Enter")
            keys("-l", text)
            assert text in wait_for(text)
            keys("Enter")
            end, most = time.monotonic() + 30, 0  # the feedback phase: the picture stands for 4 s
            while most <= 500 and time.monotonic() < end:
                shown = screen()
                if "Type here, then press Enter" not in shown:  # past the speaking screen
                    most = max(most, sum(shown.count(b) for b in HALF_BLOCKS))
                time.sleep(0.1)
            pictures_seen.append(most)
            wait_for("How negative do you feel now?")
            keys("3")
            if trial == 1:
                wait_for("Take a short break.")
                keys("Enter")
        wait_for("Thank you, the session is complete.")
        keys("Enter")
        end = time.monotonic() + 20
        while "exit=" not in (out.read_text() if out.exists() else "") and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        term.close()
    # What the participant read: the protocol's typed wording, at the instructions, the cue and while typing.
    flat = [" ".join(shown.split()) for shown in term.shown]
    typed = Instructions().for_input(typed=True)
    for text in (typed.welcome, typed.reappraise, typed.describe, typed.feedback_ai):
        assert any(text in f for f in flat), f"never shown: {text!r}"
    assert not any("say out loud" in f or "After speaking" in f for f in flat)
    assert not any("quit" in f for f in flat[started:]), "the participant's footer offers no quit key"
    printed = out.read_text()
    assert "exit=0" in printed, printed
    summary = json.loads(printed[: printed.rindex("exit=")])
    assert summary["state"] == "completed" and summary["trials_recorded"] == 2
    _, trials, _ = read_session(summary["folder"])
    assert [(t["transcript"], t["rating_pre"], t["rating_post"]) for t in trials] == [(s, 7, 3) for s in SENTENCES]
    assert all(n > 500 for n in pictures_seen), f"a 48x24-cell picture on each feedback screen: {pictures_seen}"
    for t in trials:
        assert t["picture_shown"] == 1 and t["transcript_source"] == "typed" and t["prompt"] == t["prompt"].lower()
        assert (data / t["picture_file"]).is_file() and "," not in t["prompt"]


@pytest.mark.slow
def test_tui_starts_on_the_demo_engines_and_recogniser(tmp_path, default_asr):
    """The demo's random-weight engines once made the warm-up fail (the gate refused its picture): no more."""
    pytest.importorskip("torch", reason="the export stage builds the demo's engines")
    from rich.console import Console

    from edge_cer.commands.demo import _export_engines

    engines = _export_engines(tmp_path / "demo", Console(quiet=True))
    term = Terminal(tmp_path, f"--engines {engines} --asr {default_asr} --data {tmp_path / 'data'} --min-free-mb 0 "
                              "--participant P001 --pictures halfcell")
    try:
        term.wait_for("ready", timeout=120)
        assert "warm-up failed" not in term.screen()
        term.keys("C-q")
        end = time.monotonic() + 20
        while "exit=" not in (term.out.read_text() if term.out.exists() else "") and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        term.close()
    assert "exit=0" in term.out.read_text()
