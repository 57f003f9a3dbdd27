"""The participant's screen: shows the session's current phase and posts what the participant did.

It holds no trial logic: the app sets `phase` (the engine's `Phase`) and this screen picks the view for it.
The phase owns the keyboard: only the current view's input is enabled and focused (the rating scale in a rating
phase, the text field while typing a reappraisal), so a key pressed in one phase never lands in another. Every
message names the phase it answers, and the app drops it unless that phase is still the running one.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer, Input, ProgressBar, Static

from edge_cer.session.phases import NS, Phase
from edge_cer.session.protocol import Protocol
from edge_cer.tui.widgets.calm_input import CalmInput
from edge_cer.tui.widgets.picture import PictureView
from edge_cer.tui.widgets.rating import RatingScale

MESSAGE_HINTS = {"instructions": "Press Enter to begin.", "break": "Press Enter to continue.",
                 "end": "Press Enter to close."}


class SessionScreen(Screen):
    CSS_PATH = "session.tcss"
    AUTO_FOCUS = ""  # focus is the phase's to give (`_own_keyboard`), never Textual's first focusable widget
    BINDINGS = [Binding("enter,space", "acknowledge", "continue", show=False)]

    class Answer(Message):
        """What the participant did in `phase`; the app acts on it only while that phase is running."""

        def __init__(self, phase: Phase):
            super().__init__()
            self.phase = phase

    class Acknowledged(Answer):
        """The participant read an instructions, break or end screen."""

    class Typed(Answer):
        """The participant typed their reappraisal (keyboard entry)."""

        def __init__(self, phase: Phase, text: str):
            super().__init__(phase)
            self.text = text

    class Rated(Answer):
        """The participant gave a rating."""

        def __init__(self, phase: Phase, value: int):
            super().__init__(phase)
            self.value = value

    phase: var[Phase | None] = var(None, always_update=True)
    transcript: var[str] = var("")  # the live transcript: partial while speaking, final once it ends
    transcript_final: var[bool] = var(False)
    making_picture: var[bool] = var(False)
    time_left: var[float | None] = var(None)  # seconds left to speak (or type); None: no limit shown

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
            yield RatingScale(id="rating", disabled=True)
            with Vertical(id="cue"):
                yield Static(id="cue-text")
                yield Static(id="cue-feedback", classes="feedback-note")
            with Vertical(id="speaking"):
                yield Static(id="speaking-cue")
                yield Static(id="speaking-feedback", classes="feedback-note")
                yield Static(id="transcript")
                yield CalmInput(placeholder="Type here, then press Enter", id="typed", disabled=True)
                with Horizontal(id="time-row"):
                    yield Static("time", id="time-caption")
                    yield ProgressBar(id="time-left", show_percentage=False, show_eta=False)
                yield Static(id="speaking-status")
            yield Static(id="blank")
        yield Footer(show_command_palette=False)  # the participant sees F1 only; F2, Ctrl+P, Ctrl+Q are the experimenter's

    def watch_phase(self, old: Phase | None, phase: Phase | None) -> None:
        if phase is None:
            return
        trial = phase.trial
        # The experimenter's resume restarts the same phase: what the participant typed or chose is kept.
        restart = old is not None and old.name == phase.name and old.trial is trial
        self.query_one("#badge", Static).update("Practice" if trial and trial.practice else "")
        self.query_one("#views", ContentSwitcher).current = self._show(phase, restart)
        self._own_keyboard()

    def _show(self, phase: Phase, restart: bool) -> str:
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
            self.query_one(RatingScale).ask(phase.text, r.low, r.high, r.low_label, r.high_label, keep=restart)
            return "rating"
        if name not in ("cue", "regulate"):
            return {"fixation": "fixation"}.get(name, "blank")
        ins = self.protocol.instructions  # already in the wording of the input in use (Instructions.for_input)
        cue = getattr(ins, trial.condition.strategy)
        # What comes after speaking, from the protocol; "look" trials say nothing, so "after speaking" is never wrong.
        note = "" if not trial.condition.speaks else ins.feedback_ai if trial.condition.feedback == "ai" else ins.feedback_none
        if name == "cue" or not trial.condition.speaks:
            self.query_one("#cue-text", Static).update(cue)
            self.query_one("#cue-feedback", Static).update(note)
            return "cue"
        self.query_one("#speaking-cue", Static).update(cue)
        self.query_one("#speaking-feedback", Static).update(note)
        self.transcript, self.transcript_final, self.making_picture = "", False, False
        self.time_left = phase.duration_ns / NS
        typed = self.query_one("#typed", Input)
        if not restart:
            typed.value = ""
        typed.display = self.typing
        return "speaking"

    def _own_keyboard(self) -> None:
        """Enable and focus only the input of the view on screen (or nothing): hidden inputs take no keys."""
        view = self.query_one("#views", ContentSwitcher).current
        rating, typed = self.query_one(RatingScale), self.query_one("#typed", Input)
        rating.disabled = view != "rating"
        typed.disabled = not (view == "speaking" and self.typing and not self.making_picture)
        self.set_focus(rating if not rating.disabled else typed if not typed.disabled else None)

    def on_screen_resume(self) -> None:
        """Back from an overlay: the phase, not the widget focused before it opened, decides where keys go."""
        self._own_keyboard()

    def on_resize(self) -> None:
        """The picture box follows the terminal's size."""
        view = self.query_one(PictureView)
        view.picture = view.picture

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
        self.query_one("#time-row").display = not making and self.time_left is not None
        self._own_keyboard()

    def watch_time_left(self, left: float | None) -> None:
        """A calm indicator: a muted bar that shrinks, no numbers counting down."""
        self.query_one("#time-row").display = left is not None and not self.making_picture
        if left is not None and self.phase is not None and self.phase.duration_ns:
            self.query_one("#time-left", ProgressBar).update(total=self.phase.duration_ns / NS, progress=left)

    @on(Input.Submitted, "#typed")
    def submitted(self, event: Input.Submitted) -> None:
        """Enter in the typing field ends the reappraisal."""
        event.stop()
        if event.value.strip():
            self.transcript, self.transcript_final = event.value.strip(), True
            self.post_message(self.Typed(self.phase, event.value.strip()))

    @on(RatingScale.Chosen)
    def rated(self, event: RatingScale.Chosen) -> None:
        event.stop()
        self.post_message(self.Rated(self.phase, event.value))

    def action_acknowledge(self) -> None:
        """Enter on a message screen moves on."""
        if self.phase is not None and self.phase.name in MESSAGE_HINTS:
            self.post_message(self.Acknowledged(self.phase))
