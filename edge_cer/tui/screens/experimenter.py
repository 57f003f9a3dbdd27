"""The experimenter overlay: the session is paused while it is open; resume, skip the trial or abort with a reason."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from edge_cer.tui.widgets.calm_input import CalmInput
from textual.widgets import Button, DataTable, Input, Static

# trial-row column -> heading; latencies are seconds from the onset of speaking (docs/session.md)
LATENCY_COLUMNS = {"trial": "trial", "strategy": "strategy", "feedback": "feedback", "status": "status",
                   "transcript_final_s": "transcript s", "picture_ready_s": "picture ready s",
                   "picture_shown_s": "picture shown s"}


class ExperimenterScreen(ModalScreen[tuple[str, str]]):
    """Dismisses with (verb, reason): verb is resume, skip or abort."""

    CSS_PATH = "overlay.tcss"
    BINDINGS = [Binding("escape", "resume", "resume")]

    def __init__(self, where: str, last_trials: list[dict]):
        super().__init__()
        self.where, self.last_trials = where, last_trials

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("Experimenter · session paused", classes="title")
            yield Static(self.where, id="where")
            yield DataTable(id="latency", cursor_type="none", zebra_stripes=True)
            yield CalmInput(placeholder="reason (required to abort, optional to skip)", id="reason")
            yield Static(id="problem")
            with Horizontal(id="verbs"):
                yield Button("Resume", id="resume", variant="primary")
                yield Button("Skip trial", id="skip")
                yield Button("Abort session", id="abort", variant="warning")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*LATENCY_COLUMNS.values())
        for row in self.last_trials:
            table.add_row(*("" if row.get(c) is None else str(row[c]) for c in LATENCY_COLUMNS))
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

    @on(Button.Pressed, "#abort")
    def abort(self) -> None:
        """End the session for good, with the reason written to its log."""
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            self.query_one("#problem", Static).update("Type a reason first: it is written to the session log.")
            self.query_one("#reason", Input).focus()
            return
        self.dismiss(("abort", reason))
