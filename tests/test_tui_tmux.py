"""Smoke test in a real terminal: `edge-cer tui` in tmux, two trials by send-keys, checked with capture-pane."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from edge_cer.session.data import read_session
from tests.session_helpers import protocol_text
from tests.tui_helpers import DURATIONS


def test_two_trials_by_send_keys(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (setup.sh installs it)")
    protocol = tmp_path / "two-trials.toml"
    protocol.write_text(protocol_text(time_scale=1.0, trials_per_condition=1, feedback='["ai"]') + DURATIONS)
    data, out = tmp_path / "data", tmp_path / "summary.json"
    command = (f"{sys.executable} -m edge_cer.cli tui --data {data} --protocol {protocol} --placeholder "
               f"--participant P001 --pictures halfcell --min-free-mb 0 > {out}; echo exit=$? >> {out}")
    tmux = ["tmux", "-L", f"edge-cer-test-{os.getpid()}"]  # a private server: never touches anyone's sessions
    subprocess.run(tmux + ["new-session", "-d", "-s", "tui", "-x", "100", "-y", "36", command], check=True,
                   env={**os.environ, "TERM": "xterm-256color"})
    seen = []

    def screen() -> str:
        return subprocess.run(tmux + ["capture-pane", "-p", "-t", "tui"], capture_output=True, text=True).stdout

    def wait_for(text: str, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            shown = screen()
            if text in shown:
                seen.append(text)
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; after {seen} the screen shows:\n{screen()}")

    def keys(*names: str) -> None:
        subprocess.run(tmux + ["send-keys", "-t", "tui", *names], check=True)

    try:
        wait_for("ready")  # the warm-up ran the (placeholder) engine once
        keys("Enter")  # the participant field has focus and holds P001
        wait_for("Press Enter to begin.")
        keys("Enter")
        for trial, text in enumerate(["it is a film set", "a street with people"], start=1):
            wait_for("How negative do you feel right now?")
            keys("7")
            wait_for("Type what you would say")
            keys("-l", text)
            assert text in wait_for(text)
            keys("Enter")
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
        subprocess.run(tmux + ["kill-server"], capture_output=True)
    printed = out.read_text()
    assert "exit=0" in printed, printed
    summary = json.loads(printed[: printed.rindex("exit=")])
    assert summary["state"] == "completed" and summary["trials_recorded"] == 2
    _, trials, _ = read_session(summary["folder"])
    assert [(t["transcript"], t["rating_pre"], t["rating_post"]) for t in trials] == [
        ("it is a film set", 7, 3), ("a street with people", 7, 3)]
