"""A text field whose cursor does not blink: nothing flashes on a participant's screen."""

from textual.reactive import reactive
from textual.widgets import Input


class CalmInput(Input):
    cursor_blink = reactive(False, init=False)
