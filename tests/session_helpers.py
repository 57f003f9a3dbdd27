"""Helpers shared by the session tests (tests/test_session_*.py) and the kill -9 child process."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge_cer.session.protocol import parse_protocol


def protocol_text(time_scale: float = 0.0, trials_per_condition: int = 2, practice: int = 0,
                  feedback: str = '["ai", "none"]', look: bool = False) -> str:
    return (
        f'name = "test"\ntime_scale = {time_scale}\n[design]\ntrials_per_condition = {trials_per_condition}\n'
        f"practice_trials = {practice}\nfeedback = {feedback}\nlook_baseline = {str(look).lower()}\n"
    )


def make_protocol(**kwargs):
    return parse_protocol(protocol_text(**kwargs), "test.toml")


def db_rows(folder: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{folder / 'session.sqlite3'}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
