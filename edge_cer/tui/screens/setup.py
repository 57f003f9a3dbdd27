"""The experimenter's setup: participant label, session, protocol, engines, provider, speech input, the terminal's
picture and colour capability, and the warm-up."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, ProgressBar, Static

from edge_cer.tui.widgets.calm_input import CalmInput


class SetupScreen(Screen):
    CSS_PATH = "setup.tcss"
    BINDINGS = [Binding("ctrl+q", "app.quit", "quit", priority=True)]  # the experimenter's screen names quitting

    class Begin(Message):
        """The experimenter starts (or resumes) the participant's session."""

        def __init__(self, label: str, resume: bool):
            super().__init__()
            self.label, self.resume = label, resume

    facts: var[tuple[tuple[str, str], ...]] = var(())  # (what, status) lines: protocol, stimuli, pictures, speech
    warmup: var[tuple[int, int, str]] = var((0, 1, "warming up"))  # steps done, steps, what runs now
    ready: var[bool] = var(False)  # the warm-up has run: starting is allowed
    problem: var[str] = var("")
    warning: var[str] = var("")  # one line about the terminal (only 256 colours), shown above the warm-up

    def __init__(self, label: str = ""):
        super().__init__()
        self._label = label

    def compose(self) -> ComposeResult:
        with Vertical(id="panel"):
            yield Static("edge-cer · session setup", id="title")
            yield Static(id="facts")
            yield Static(id="warning")
            with Horizontal(id="who"):
                yield Label("Participant", id="label-caption")
                yield CalmInput(self._label, placeholder="lab code, e.g. P017 (never a name)", id="label")
                yield Checkbox("resume", id="resume", tooltip="continue this participant's interrupted session")
            yield ProgressBar(id="warmup", show_eta=False)
            yield Static(id="warmup-status")
            yield Static(id="problem")
            yield Button("Start session", id="start", variant="primary", disabled=True)
        yield Footer()

    def watch_facts(self, facts) -> None:
        self.query_one("#facts", Static).update("\n".join(f"{what:<10} {status}" for what, status in facts))

    def watch_warmup(self, warmup) -> None:
        done, total, text = warmup
        self.query_one("#warmup", ProgressBar).update(total=total, progress=done)
        self.query_one("#warmup-status", Static).update(text)

    def watch_ready(self, ready: bool) -> None:
        self.query_one("#start", Button).disabled = not ready

    def watch_warning(self, warning: str) -> None:
        self.query_one("#warning", Static).update(warning)
        self.query_one("#warning").display = bool(warning)

    def watch_problem(self, problem: str) -> None:
        self.query_one("#problem", Static).update(problem)

    @on(Button.Pressed, "#start")
    @on(Input.Submitted, "#label")
    def begin(self) -> None:
        """Ask the app to open the session (once the warm-up is done)."""
        if self.ready:
            self.problem = ""
            self.post_message(self.Begin(self.query_one("#label", Input).value.strip(),
                                         self.query_one("#resume", Checkbox).value))
