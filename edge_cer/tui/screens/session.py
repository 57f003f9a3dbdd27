"""The participant's screen: shows the session's current phase and posts what the participant did.

It holds no trial logic: the app sets `phase` (the engine's `Phase`) and this screen picks the view for it.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import var
from textual.screen import Screen
from edge_cer.tui.widgets.calm_input import CalmInput
from textual.widgets import ContentSwitcher, Footer, Input, Static

from edge_cer.session.phases import Phase
from edge_cer.session.protocol import Protocol
from edge_cer.tui.widgets.picture import PictureView
from edge_cer.tui.widgets.rating import RatingScale

MESSAGE_HINTS = {"instructions": "Press Enter to begin.", "break": "Press Enter to continue.",
                 "end": "Press Enter to close."}


class SessionScreen(Screen):
    CSS_PATH = "session.tcss"
    BINDINGS = [Binding("enter,space", "acknowledge", "continue", show=False)]

    class Acknowledged(Message):
        """The participant read an instructions, break or end screen."""

    class Typed(Message):
        """The participant typed their reappraisal (keyboard entry)."""

        def __init__(self, text: str):
            super().__init__()
            self.text = text

    phase: var[Phase | None] = var(None, always_update=True)
    transcript: var[str] = var("")  # the live transcript: partial while speaking, final once it ends
    transcript_final: var[bool] = var(False)
    making_picture: var[bool] = var(False)

    def __init__(self, protocol: Protocol, typing: bool, picture_mode: str = "auto"):
        super().__init__()
        self.protocol, self.typing, self.picture_mode = protocol, typing, picture_mode

    def compose(self) -> ComposeResult:
        yield Static(id="badge")
        with ContentSwitcher(initial="blank", id="views"):
            with Vertical(id="message"):
                yield Static(id="message-text")
                yield Static(id="message-hint")
            yield Static("+", id="fixation")
            yield PictureView(self.picture_mode, id="picture")
            yield RatingScale(id="rating")
            yield Static(id="cue")
            with Vertical(id="speaking"):
                yield Static(id="speaking-cue")
                yield Static(id="transcript")
                yield CalmInput(placeholder="Type what you would say, then press Enter", id="typed")
                yield Static(id="speaking-status")
            yield Static(id="blank")
        yield Footer()

    def watch_phase(self, phase: Phase | None) -> None:
        if phase is None:
            return
        trial = phase.trial
        self.query_one("#badge", Static).update("Practice" if trial and trial.practice else "")
        view = self._show(phase)
        self.query_one("#views", ContentSwitcher).current = view
        focus = {"rating": "#rating", "speaking": "#typed" if self.typing else None}.get(view)
        self.set_focus(self.query_one(focus) if focus else None)

    def _show(self, phase: Phase) -> str:
        """Fill the view for this phase; returns its id."""
        name, trial = phase.name, phase.trial
        if name in MESSAGE_HINTS:
            self.query_one("#message-text", Static).update(phase.text)
            self.query_one("#message-hint", Static).update(MESSAGE_HINTS[name])
            return "message"
        if name in ("stimulus", "feedback") and phase.picture is not None:
            self.query_one(PictureView).picture = phase.picture
            return "picture"
        if name in ("rating_pre", "rating_post"):
            r = self.protocol.rating
            self.query_one(RatingScale).ask(phase.text, r.low, r.high, r.low_label, r.high_label)
            return "rating"
        cue = getattr(self.protocol.instructions, trial.condition.strategy) if trial else ""
        if name == "cue" or (name == "regulate" and not trial.condition.speaks):
            self.query_one("#cue", Static).update(cue)
            return "cue"
        if name == "regulate":
            self.query_one("#speaking-cue", Static).update(cue)
            self.transcript, self.transcript_final, self.making_picture = "", False, False
            typed = self.query_one("#typed", Input)
            typed.value, typed.display = "", self.typing
            return "speaking"
        return {"fixation": "fixation"}.get(name, "blank")

    def watch_transcript(self) -> None:
        self._update_transcript()

    def watch_transcript_final(self) -> None:
        self._update_transcript()

    def _update_transcript(self) -> None:
        widget = self.query_one("#transcript", Static)
        widget.update(self.transcript or "Listening…")
        widget.set_class(not self.transcript_final, "partial")
        widget.display = bool(self.transcript) or not self.typing  # typing: the field itself shows the text

    def watch_making_picture(self, making: bool) -> None:
        self.query_one("#speaking-status", Static).update("Making your picture…" if making else "")
        self.query_one("#typed", Input).display = self.typing and not making

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the typing field ends the reappraisal."""
        if event.value.strip():
            self.transcript, self.transcript_final = event.value.strip(), True
            self.post_message(self.Typed(event.value.strip()))

    def action_acknowledge(self) -> None:
        """Enter on a message screen moves on."""
        if self.phase is not None and self.phase.name in MESSAGE_HINTS:
            self.post_message(self.Acknowledged())
