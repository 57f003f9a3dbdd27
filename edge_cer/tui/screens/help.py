"""The help screen: every key, for participant and experimenter."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# Keys

| key | what it does |
| --- | --- |
| Enter | continue after instructions, a break or the end |
| 1-9 | give a rating at once |
| ← → then Enter | choose a rating, then confirm it |
| typing, then Enter | your reappraisal, when the session asks for typing |
| F2 | experimenter: pause, skip the trial, abort with a reason, recent latencies |
| Ctrl+P | command palette |
| F1 | this help |
| Ctrl+Q | quit: everything so far is saved; resume later from the setup screen |
"""


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "overlay.tcss"
    BINDINGS = [Binding("escape,f1,q", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Markdown(HELP)
