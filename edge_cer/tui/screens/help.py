"""The help screen: every key, for participant and experimenter."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# Keys

The session is paused while this help is open; the screen you came from starts again when it closes.

| participant | what it does |
| --- | --- |
| Enter | continue after instructions, a break or the end |
| 1-9 | give a rating at once |
| ← → then Enter | choose a rating, then confirm it |
| typing, then Enter | your reappraisal, when the session asks for typing |
| F1 | this help (Escape closes it) |

| experimenter | what it does |
| --- | --- |
| F2 | pause: resume, skip the trial, abort with a reason, quit; the last trials and their latencies |
| Ctrl+P | command palette (pauses too) |
| Ctrl+Q | quit: everything so far is saved; resume later from the setup screen |
"""


class HelpScreen(ModalScreen[None]):
    """Every key; the app pauses the session while it is open."""

    CSS_PATH = "overlay.tcss"
    BINDINGS = [Binding("escape,f1,q", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Markdown(HELP)
