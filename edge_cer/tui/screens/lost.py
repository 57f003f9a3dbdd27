"""Shown when the picture server is lost mid-session: one calm line; the session's data are already closed."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class LostScreen(ModalScreen[None]):
    """What happened, that the data are kept, how to continue; Enter (or Escape, Ctrl+Q) closes the app."""

    CSS_PATH = "overlay.tcss"
    BINDINGS = [Binding("enter,escape,q", "dismiss", "close")]

    def __init__(self, line: str):
        super().__init__()
        self.line = line

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("The session has stopped", classes="title")
            yield Static(self.line, id="lost")
            yield Static("Press Enter to close.", classes="caption")
