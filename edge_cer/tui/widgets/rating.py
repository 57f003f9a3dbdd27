"""A SAM-style rating scale: number keys answer at once, arrows move, Enter confirms."""

from __future__ import annotations

from textual.binding import Binding
from textual.containers import Center, Horizontal, Vertical
from textual.message import Message
from textual.reactive import var
from textual.widget import Widget
from textual.widgets import Static


class RatingScale(Widget, can_focus=True):
    BINDINGS = [
        Binding("left", "move(-1)", "lower", show=False),
        Binding("right", "move(1)", "higher", show=False),
        Binding("enter", "choose", "confirm"),
        *[Binding(str(d), f"number({d})", show=False) for d in range(1, 10)],
    ]

    class Chosen(Message):
        """The participant gave a rating."""

        def __init__(self, value: int):
            super().__init__()
            self.value = value

    low: var[int] = var(1)
    high: var[int] = var(9)
    selected: var[int | None] = var(None)

    def compose(self):
        yield Static(id="question")
        with Center(), Vertical(id="scale"):  # the scale centred under the question, its anchors at its ends
            yield Horizontal(id="points")
            with Horizontal(id="anchors"):
                yield Static(id="low-label")
                yield Static(id="high-label")

    def ask(self, question: str, low: int, high: int, low_label: str, high_label: str, keep: bool = False) -> None:
        """Show a new question with nothing selected (`keep`: the same question again, its selection kept)."""
        self.query_one("#question", Static).update(question)
        self.query_one("#low-label", Static).update(f"{low} = {low_label}")
        self.query_one("#high-label", Static).update(f"{high} = {high_label}")
        if not keep:
            self.selected = None
        if (low, high) != (self.low, self.high) or not self.query(".point"):  # the points are built once per scale
            self.low, self.high = low, high
            points = self.query_one("#points", Horizontal)
            points.remove_children()
            points.mount_all(Static(str(v), classes="point", id=f"point-{v}") for v in range(low, high + 1))

    def watch_selected(self, value: int | None) -> None:
        for point in self.query(".point"):
            point.set_class(point.id == f"point-{value}", "selected")

    def action_move(self, step: int) -> None:
        """Move the selection along the scale."""
        start = self.selected if self.selected is not None else (self.low + self.high) // 2 - step
        self.selected = min(self.high, max(self.low, start + step))

    def action_choose(self) -> None:
        """Confirm the selected point."""
        if self.selected is not None:
            self.post_message(self.Chosen(self.selected))

    def action_number(self, value: int) -> None:
        """A number key answers directly (when it is on the scale)."""
        if self.low <= value <= self.high:
            self.selected = value
            self.post_message(self.Chosen(value))
