"""The app: builds and warms the runtime (edge_cer.runtime), then drives the headless `Session` phase by phase.

Every session verb is called here, on the event loop's thread (the session's SQLite connection belongs to it);
blocking work (loading, warm-up, listening, waiting for the picture) runs in thread workers and comes back as
messages. Phases end by a timer at `phase.due_ns`, a rating, a final transcript or an acknowledgement, and each of
those is checked against the phase it was meant for: a timer, picture or recogniser event carries the phase's token,
a participant's answer names its phase, and neither moves the session on once that phase has ended or while it is
paused. Every overlay (help, experimenter, command palette) opened over a running phase pauses the session; closing
it restarts that phase in full (the log keeps both onsets).

Pictures come from the runtime's live pipeline, as in `edge-cer run`: while the participant speaks, its partial
transcripts start speculative generations; the final transcript (spoken or typed) decides the picture, which the
safety gate checked, within the protocol's deadline. The session is handed the picture or the reason for none.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import CommandPalette
from textual.message import Message
from textual.screen import Screen
from textual.theme import Theme
from textual.timer import Timer

from edge_cer.errors import EdgeCerError, GeneratorLost
from edge_cer.runtime import Runtime, build_runtime
from edge_cer.session import bids
from edge_cer.session.data import read_session
from edge_cer.session.opening import open_session
from edge_cer.session.phases import NS, RESPONSE_PHASES, Phase, Session
from edge_cer.session.protocol import Protocol, load_protocol
from edge_cer.session.stimuli import StimulusSet, synthetic_stimuli
from edge_cer.tui.screens.experimenter import ExperimenterScreen
from edge_cer.tui.screens.help import HelpScreen
from edge_cer.tui.screens.lost import LostScreen
from edge_cer.tui.screens.session import MESSAGE_HINTS, SessionScreen
from edge_cer.tui.screens.setup import SetupScreen
from edge_cer.tui.speech import microphone_problem
from edge_cer.tui.terminal import GRAPHICS, colour_warning
from edge_cer.tui.widgets.picture import PictureView, mode_name

# Calm: muted blue-green on slate, amber for warnings, and no red anywhere (error is amber too).
CALM = Theme(name="edge-cer-calm", primary="#7fa7c9", secondary="#8fbcaa", accent="#a99cc9", warning="#d4b36f",
             error="#d4b36f", success="#8fbcaa", foreground="#d8dde6", background="#1e2228", surface="#252a31",
             panel="#2d333b", dark=True)
LAST_TRIALS = 5  # rows of the experimenter's latency table
TICK_S = 0.5  # how often the time-left bar moves while the participant speaks or types


@dataclass
class TuiOptions:
    """What `edge-cer tui` resolved from its options; the defaults are the embedded protocol and stimuli."""

    data_dir: Path
    protocol: Protocol | None = None
    stimuli: StimulusSet | None = None
    engines: Path | None = None  # the picture engine folder (edge-cer export sd)
    server: str | None = None  # grpc://HOST:PORT of `edge-cer serve`, instead of engines (docs/serve.md)
    placeholder: bool = False  # no engine: AI-feedback trials get PlaceholderGenerator pictures (not AI)
    asr: Path | None = None  # the speech recogniser folder; without it the reappraisal is typed
    provider: str = "cpu"  # where the picture engine runs (edge_cer.backends.PROVIDERS)
    backend_options: dict | None = None  # edge_cer.backends.backend_options (--cuda-graphs)
    typing: bool = False  # type even with a recogniser and a microphone
    pictures: str = "auto"  # textual-image drawing: auto, tgp, sixel, halfcell, unicode
    participant: str = ""  # prefills the setup screen
    key_file: Path | None = None
    min_free_bytes: int = 200_000_000
    audio_source: Callable[[], Iterator[np.ndarray]] | None = None  # replaces the microphone (tests, replays)


class CerApp(App[dict]):
    """Returns a summary dict from `run()`: session code, state (completed, aborted, or running when quit)."""

    CSS_PATH = "app.tcss"
    TITLE = "edge-cer"
    ENABLE_COMMAND_PALETTE = True
    # The participant's footer shows F1 only; F2 and Ctrl+Q are the experimenter's (listed in help and the overlay).
    BINDINGS = [
        Binding("f1", "help", "help"),
        Binding("f2", "experimenter", "experimenter", show=False),
        Binding("ctrl+q", "quit", "quit (saved)", show=False, priority=True),
    ]

    class WarmupStep(Message):
        def __init__(self, done: int, total: int, text: str, ready: bool = False, problem: str = ""):
            super().__init__()
            self.done, self.total, self.text, self.ready, self.problem = done, total, text, ready, problem

    class PictureMade(Message):
        """The live pipeline's outcome (edge_cer.live.trial.LiveOutcome) for the feedback of phase `token`."""

        def __init__(self, token: int, outcome):
            super().__init__()
            self.token, self.outcome = token, outcome

    class GeneratorGone(Message):
        """The picture server died during the picture of phase `token` (`GeneratorLost`'s text)."""

        def __init__(self, token: int, text: str):
            super().__init__()
            self.token, self.text = token, text

    class Recognised(Message):
        """A recogniser event for the speaking phase `token` with the transcript so far; `event` None: the turn
        has ended, `heard` is its transcript (edge_cer.live.speaking.HeardWindow; None when listening failed)."""

        def __init__(self, token: int, event, text: str = "", heard=None):
            super().__init__()
            self.token, self.event, self.text, self.heard = token, event, text, heard

    def __init__(self, options: TuiOptions):
        super().__init__()
        self.options = options
        self.protocol = options.protocol or load_protocol()
        self.stimuli = options.stimuli
        self.runtime: Runtime | None = None
        self.typing = True
        self.speech_status = "checking…"  # what the setup screen says about speech input
        self.session: Session | None = None
        self.summary: dict = {"state": "not started"}
        self._token = 0  # which phase a timer, picture or recogniser event belongs to
        self._timer: Timer | None = None
        self._stop_listening = threading.Event()
        self._answered = False  # the speaking phase has its final transcript

    # ---- setup and warm-up ----

    def on_mount(self) -> None:
        self.register_theme(CALM)
        self.theme = CALM.name
        self.push_screen(SetupScreen(self.options.participant))
        self.call_after_refresh(self._show_facts)  # the warm-up shows them again with the speech status
        self.warm_up()

    def _show_facts(self) -> None:
        p, o = self.protocol, self.options
        conditions = ", ".join(c.label for c in p.conditions)
        engine = self.runtime.engine_name if self.runtime else "loading…"
        if o.engines is not None and self.runtime is not None:
            engine = f"{o.engines.name}: {engine}"
        mode = mode_name(o.pictures)
        setup = self._setup()
        setup.facts = (
            ("protocol", f"{p.name}: {p.design.trials_per_condition} per condition x {conditions}"),
            ("stimuli", "synthetic (never for research)" if self.stimuli is None or self.stimuli.synthetic
             else self.stimuli.folder.name),
            ("pictures", engine if p.uses_ai_feedback else "not used (no AI-feedback condition)"),
            ("provider", o.provider if o.engines is not None else "none (no engine folder)"),
            ("speech", self.speech_status),
            ("display", f"{GRAPHICS.get(mode, mode)}{', forced by --pictures' if o.pictures != 'auto' else ''}; "
                        f"{self.console.color_system or 'no'} colours"),
        )
        setup.warning = colour_warning(self.console.color_system) or ""

    def _setup(self) -> SetupScreen:
        return next(s for s in self.screen_stack if isinstance(s, SetupScreen))

    @work(thread=True, exclusive=True, group="warmup")
    def warm_up(self) -> None:
        """Build the runtime and run each part once, so the first trial is as fast as the rest."""
        o, step = self.options, partial(self.post_message)
        try:
            total = 3
            step(self.WarmupStep(0, total, "reading stimuli"))
            self.stimuli = self.stimuli or synthetic_stimuli()
            speech = "typed entry" + (" (--typing)" if o.typing else " (no --asr)")
            asr = None
            if o.asr is not None and not o.typing:
                problem = microphone_problem() if o.audio_source is None else None
                speech, asr = (f"typed entry: {problem}", None) if problem else ("live speech", o.asr)
            step(self.WarmupStep(1, total, "loading the picture engine and the speech recogniser"))
            runtime = build_runtime(self.protocol, engines=o.engines, server=o.server, asr=asr, provider=o.provider,
                                    backend_options=o.backend_options, placeholder=o.placeholder)
            step(self.WarmupStep(2, total, "warm-up: one picture, one second of silence"))
            runtime.warm_up(self.stimuli.stimuli[0].path)
            self.runtime, self.typing = runtime, runtime.recognizer is None
            if runtime.recognizer is not None:
                speech = f"live speech: {o.asr.name} ({runtime.recognizer.__class__.__name__})"
            self.speech_status = speech
            self.call_from_thread(self._show_facts)
            step(self.WarmupStep(total, total, "ready", ready=True))
        except Exception as exc:  # shown on the setup screen; the experimenter fixes the option and restarts
            step(self.WarmupStep(0, 1, "warm-up failed", problem=str(exc)))

    def on_cer_app_warmup_step(self, message: WarmupStep) -> None:
        setup = self._setup()
        setup.warmup = (message.done, message.total, message.text)
        setup.ready, setup.problem = message.ready, message.problem

    @on(SetupScreen.Begin)
    async def begin(self, message: SetupScreen.Begin) -> None:
        """Open (or resume) the participant's session and show its first phase."""
        store = None
        try:
            protocol, plan, store = open_session(
                message.label, self.options.data_dir, protocol=None if message.resume else self.protocol,
                stimuli=self.stimuli, resume=message.resume, key_file=self.options.key_file,
                min_free_bytes=self.options.min_free_bytes)
            # The participant reads the protocol's wording for the input in use: never "say out loud" when typing.
            wording = dataclasses.replace(protocol, instructions=protocol.instructions.for_input(self.typing))
            self.session = Session(wording, plan, store)
            self.runtime = self.runtime.with_protocol(protocol)  # a resumed session keeps its own protocol
        except EdgeCerError as exc:
            if store is not None:
                store.close()
            self._setup().problem = str(exc)
            return
        self.protocol = protocol
        self.summary = {"session_code": store.code, "participant": store.meta["participant"],
                        "session": store.meta["session"], "folder": str(store.folder)}
        await self.switch_screen(SessionScreen(self.session.protocol, self.typing, self.options.pictures))
        self.set_interval(TICK_S, self._tick)
        self.advance()

    # ---- driving the session ----

    def _screen(self) -> SessionScreen:
        return next(s for s in self.screen_stack if isinstance(s, SessionScreen))

    def advance(self) -> None:
        """End the current phase and show the next; the session decides which."""
        self._leave_phase()
        phase = self.session.next_phase()
        if phase is None:
            self.finish()
        else:
            self._show(phase)

    def _leave_phase(self) -> None:
        self._token += 1
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._stop_listening.set()

    def _show(self, phase: Phase) -> None:
        self._answered = False
        self._screen().phase = phase
        trial, token = phase.trial, self._token
        if phase.name in ("stimulus", "feedback") and phase.picture is not None:
            self._log_render(phase)
        if phase.name in ("stimulus", "regulate"):  # the trial's generation worker caches the stimulus at once
            self.runtime.live.prepare(trial, self.session.clock.now_ns)
        if phase.name == "regulate" and trial.condition.speaks and not self.typing:
            self._stop_listening = threading.Event()
            self._listen(token, trial.trial, self._stop_listening)
        if phase.due_ns is not None:
            delay = (phase.due_ns - self.session.clock.now_ns()) / NS
            if delay > 0:
                self._timer = self.set_timer(delay, partial(self._time_up, token))
            else:  # already due (a zero duration, or a late phase); a Timer cannot run with interval 0
                self.call_later(self._time_up, token)

    def _log_render(self, phase: Phase) -> None:
        """How the picture was drawn, per trial, in the session's event log (mode and box size)."""
        view = self._screen().query_one(PictureView)
        self.session.store.log_event(
            self.session.attempt, phase.trial.trial, phase.name, "picture_render", self.session.clock.now_ns(),
            mode=view.mode, cells=list(view.box), pixels=list(view.box_pixels()), file=phase.picture.name)

    def _tick(self) -> None:
        """Move the time-left bar while the participant speaks or types (it stops with a pause or an answer)."""
        phase = self.session.current if self.session is not None else None
        if phase is None or self.session.paused or self._answered or not (
                phase.name == "regulate" and phase.trial.condition.speaks):
            return
        self._screen().time_left = max(0.0, (phase.due_ns - self.session.clock.now_ns()) / NS)

    def _answers_current(self, phase: Phase) -> bool:
        """Whether an answer belongs to the phase now running (not to one that ended, nor to a paused one)."""
        return self.session is not None and phase is self.session.current and not self.session.paused

    def _time_up(self, token: int) -> None:
        if token != self._token or self.session.paused:
            return
        phase = self.session.current
        if phase.name == "regulate" and phase.trial.condition.speaks and not self._answered:
            if self.typing:
                text = self._screen().query_one("#typed").value.strip()
                return self._final(text) if text else self.advance()
            self._stop_listening.set()  # the recogniser finishes the utterance; the turn's transcript comes next
            self._timer = None
            return
        self.advance()

    def _final(self, text: str, speech_end_ns: int | None = None, source: str = "typed") -> None:
        """The final transcript ends the speaking phase; an AI trial then waits for its picture."""
        self._answered = True
        self.session.submit_transcript(text, speech_end_ns=speech_end_ns, source=source)
        trial = self.session.current.trial
        if self.session.picture_request() is None:
            return self.advance()
        if self._timer is not None:
            self._timer.stop()
        self._screen().making_picture = True
        self._make_picture(self._token, trial.trial, text, speech_end_ns)

    @work(thread=True, group="pictures")
    def _make_picture(self, token: int, trial: int, text: str, speech_end_ns: int | None) -> None:
        try:
            outcome = self.runtime.live.picture(trial, text, speech_end_ns)
        except GeneratorLost as exc:  # the server died: the session stops, resumable (never a trial without picture)
            return self.post_message(self.GeneratorGone(token, str(exc)))
        self.post_message(self.PictureMade(token, outcome))

    def on_cer_app_picture_made(self, message: PictureMade) -> None:
        if message.token == self._token and self.session is not None and not self.session.paused:
            self.runtime.live.submit(self.session, message.outcome)
            self.advance()

    def on_cer_app_generator_gone(self, message: GeneratorGone) -> None:
        """Stop the trial clock, log why, close the session as interrupted (no row for the open trial: a resume
        repeats it) and show the experimenter one line; Enter exits with it (`edge-cer tui` prints it, status 2)."""
        session = self.session
        if session is None:
            return
        phase = session.current
        trial = phase.trial.trial if phase is not None and phase.trial is not None else None
        self._leave_phase()
        session.pause()
        session.store.log_event(session.attempt, trial, phase.name if phase else None, "generator_lost",
                                session.clock.now_ns(), reason=message.text)
        cause = message.text.split(";")[0]  # what happened, without the client's advice (which names run's --resume)
        cause += ")" * (cause.count("(") - cause.count(")"))
        self.summary["stopped"] = (
            f"the picture server was lost{f' in trial {trial}' if trial else ''} ({cause}); every finished trial is "
            f"saved and the session can be resumed: start `edge-cer serve` again, then run `edge-cer tui ... --server "
            f"{self.options.server or 'URL'}` and tick \"resume\" on the setup screen")
        self._screen().making_picture = False
        self._close_session()
        self.push_screen(LostScreen(self.summary["stopped"]), lambda _: self.exit(self.summary))

    @work(thread=True, group="speech")
    def _listen(self, token: int, trial: int, stop: threading.Event) -> None:
        heard = None
        try:
            from edge_cer.speech.audio import microphone_source

            heard = self.runtime.live.listen(
                trial, (self.options.audio_source or microphone_source)(), self.session.clock.now_ns, stop=stop,
                on_event=lambda event, text: self.post_message(self.Recognised(token, event, text)))
        finally:
            self.post_message(self.Recognised(token, None, heard=heard))

    def on_cer_app_recognised(self, message: Recognised) -> None:
        if message.token != self._token or self._answered or self.session is None or self.session.paused:
            return
        event, heard, screen = message.event, message.heard, self._screen()
        if event is None and heard is not None and heard.text:  # the turn is over: its finals are the transcript
            screen.transcript, screen.transcript_final = heard.text, True
            self._final(heard.text, heard.speech_end_ns, source="live")
        elif event is None:  # listening ended (time limit, or it failed) with nothing heard
            self.advance()
        else:  # a partial, or a final inside the turn (not its end: the participant may go on after a pause)
            screen.transcript = message.text
            self.session.submit_transcript(message.text, final=False, source="live")

    @on(SessionScreen.Typed)
    def typed(self, message: SessionScreen.Typed) -> None:
        """A typed reappraisal is the final transcript."""
        if self._answers_current(message.phase) and message.phase.name == "regulate" and not self._answered:
            self._final(message.text)

    @on(SessionScreen.Acknowledged)
    def acknowledged(self, message: SessionScreen.Acknowledged) -> None:
        """Instructions, a break or the end screen was read."""
        if self._answers_current(message.phase) and message.phase.name in MESSAGE_HINTS:
            self.advance()

    @on(SessionScreen.Rated)
    def rated(self, message: SessionScreen.Rated) -> None:
        """A rating ends its rating phase."""
        if self._answers_current(message.phase) and message.phase.name in RESPONSE_PHASES:
            self.session.submit_rating(message.value)
            self.advance()

    # ---- overlays and the experimenter ----

    def _cover(self, screen: Screen, on_close: Callable | None = None) -> None:
        """Open an overlay. Over a running phase it pauses the session first (timers and listening stop, nothing
        typed reaches the phase), and closing it restarts that phase in full (`on_close`: the experimenter's verbs)."""
        pausing = self.session is not None and self.session.current is not None and not self.session.paused
        if pausing:
            self._leave_phase()
            self.session.pause()
        self.push_screen(screen, (on_close or self._uncover) if pausing else None)

    def _uncover(self, _result=None) -> None:
        if self.session is not None and self.session.paused:
            self._show(self.session.resume())

    def action_experimenter(self) -> None:
        """Pause the session and open the experimenter overlay."""
        if self.session is None or self.session.current is None or self.session.paused:
            return
        phase = self.session.current
        trial = phase.trial
        where = phase.name if trial is None else (
            f"trial {trial.trial}{' (practice)' if trial.practice else ''} · {trial.condition.strategy}, "
            f"{'AI picture' if trial.condition.feedback == 'ai' else 'no picture'} · {phase.name}")
        _, trials, _ = read_session(self.session.store.folder)
        self._cover(ExperimenterScreen(where, trials[-LAST_TRIALS:]), self._experimenter_done)

    def _experimenter_done(self, result: tuple[str, str]) -> None:
        if self.session is None:  # closed meanwhile (the picture server was lost)
            return
        verb, reason = result
        if verb == "abort":
            self.session.abort(reason)
            return self.finish()
        if verb == "quit":
            return self.finish()
        phase = self.session.resume()
        if verb == "skip" and self.session.skip_trial(reason):
            return self.advance()
        self._show(phase)

    def action_help(self) -> None:
        """Show every key."""
        if not isinstance(self.screen, HelpScreen):
            self._cover(HelpScreen())

    def action_command_palette(self) -> None:
        """The command palette is an overlay like the others: it pauses a running session."""
        if self.use_command_palette and not CommandPalette.is_open(self):
            self._cover(CommandPalette(id="--command-palette"))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Experimenter", "Pause; skip the trial or abort with a reason", self.action_experimenter)
        yield SystemCommand("Keys", "Every key of the session", self.action_help)

    # ---- the end ----

    def finish(self) -> None:
        """Close the session's data (already committed) and exit with a summary; exports when it has ended."""
        self._close_session()
        self.exit(self.summary)

    def _close_session(self) -> None:
        self._leave_phase()
        if self.session is not None:
            store = self.session.store
            state = store.end_state()
            self.runtime.close()
            self.summary.update(state=state or "running", trials_recorded=len(store.finished_trials()))
            store.close()
            self.session = None
            if state is not None:
                self.summary["bids"], self.summary["tidy_csv"] = map(str, bids.export_all(self.options.data_dir))

    async def action_quit(self) -> None:
        """Quit at any point: every phase and response is already on disk; the session can be resumed."""
        self.finish()
