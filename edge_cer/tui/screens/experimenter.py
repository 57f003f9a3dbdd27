"""The experimenter overlay: the session is paused while it is open; resume, skip the trial, abort with a reason, or
quit (the session stays resumable). It shows where the session is and the last trials: ratings, whether the AI
picture was shown, blocked or missing, and the latencies."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Input, Static

from edge_cer.tui.widgets.calm_input import CalmInput


def _seconds(value) -> str:
    return "" if value is None else f"{value:.2f}"


def _picture(row: dict) -> str:
    """What the feedback phase showed: the AI picture, none because the safety gate blocked it, or none at all."""
    if row.get("feedback") != "ai":
        return "no AI"
    if row.get("picture_shown"):
        return "shown"
    return "blocked" if row.get("safety_blocked") else "none"


def _ratings(row: dict) -> str:
    pre, post = (("–" if row.get(k) is None else str(row[k])) for k in ("rating_pre", "rating_post"))
    return f"{pre} → {post}"


# heading -> cell of a trial row; latencies are seconds from the onset of speaking (docs/session.md). Fits 120 columns.
COLUMNS = {
    "trial": lambda r: f"{r['trial']}{'p' if r.get('practice') else ''}",
    "condition": lambda r: f"{r['strategy']}/{r['feedback']}",
    "status": lambda r: r["status"],
    "ratings": _ratings,
    "picture": _picture,
    "text s": lambda r: _seconds(r.get("transcript_final_s")),
    "ready s": lambda r: _seconds(r.get("picture_ready_s")),
    "shown s": lambda r: _seconds(r.get("picture_shown_s")),
    "gen s": lambda r: _seconds(r.get("generation_s")),
}


class ExperimenterScreen(ModalScreen[tuple[str, str]]):
    """Dismisses with (verb, reason): verb is resume, skip, abort or quit."""

    CSS_PATH = "overlay.tcss"
    BINDINGS = [Binding("escape", "resume", "resume"),
                Binding("ctrl+q", "app.quit", "quit (saved, resume later)", priority=True)]

    def __init__(self, where: str, last_trials: list[dict]):
        super().__init__()
        self.where, self.last_trials = where, last_trials

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("Experimenter · session paused", classes="title")
            yield Static(f"now: {self.where}", id="where")
            yield Static(f"last {len(self.last_trials)} trials · latencies in seconds from the start of speaking",
                         classes="caption")
            yield DataTable(id="latency", cursor_type="none", zebra_stripes=True)
            yield CalmInput(placeholder="reason (required to abort, optional to skip)", id="reason")
            yield Static(id="problem")
            with Horizontal(id="verbs"):
                yield Button("Resume", id="resume", variant="primary")
                yield Button("Skip trial", id="skip")
                yield Button("Abort session", id="abort", variant="warning")
                yield Button("Quit (saved)", id="quit")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        for row in self.last_trials:
            table.add_row(*(cell(row) for cell in COLUMNS.values()))
        self.query_one("#resume", Button).focus()

    def action_resume(self) -> None:
        """Close the overlay and restart the interrupted phase."""
        self.dismiss(("resume", ""))

    @on(Button.Pressed, "#resume")
    def resume(self) -> None:
        """Close the overlay and restart the interrupted phase."""
        self.action_resume()

    @on(Button.Pressed, "#skip")
    def skip(self) -> None:
        """Record the current trial as skipped and go on."""
        self.dismiss(("skip", self.query_one("#reason", Input).value.strip()))

    @on(Button.Pressed, "#quit")
    def quit(self) -> None:
        """Close the app; the session stays resumable (everything so far is saved)."""
        self.dismiss(("quit", ""))

    @on(Button.Pressed, "#abort")
    def abort(self) -> None:
        """End the session for good, with the reason written to its log."""
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            self.query_one("#problem", Static).update("Type a reason first: it is written to the session log.")
            self.query_one("#reason", Input).focus()
            return
        self.dismiss(("abort", reason))
