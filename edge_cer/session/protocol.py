"""The CER protocol: a TOML file read into frozen dataclasses whose defaults say why they are what they are.

    protocol = load_protocol("my_study.toml")     # or load_protocol() for the shipped default
    protocol.conditions                            # (Condition('reappraise', 'ai'), ...)

Every key is optional (the default applies) but an unknown key, a wrong type or a contradiction is refused with one
line naming the file, the key and the fix: a typo must never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import string
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edge_cer.errors import EdgeCerError, read_user_text
from edge_cer.speech.families import VAD_MIN_SILENCE_S

STRATEGIES = ("reappraise", "describe", "look")
FEEDBACK = ("ai", "none")
SCHEDULERS = ("", "euler", "ddim", "lcm", "dpm++2m")  # as `edge-cer generate --scheduler` takes them
DEFAULT_PROTOCOL = "default_protocol.toml"
# Sanity limits: far beyond any real study, low enough that nothing overflows (SQLite integers, the clock).
MAX_PHASE_S = 3600.0
MAX_TRIALS = 1000
MAX_STEPS = 1000
MAX_RATING = 1000


@dataclass(frozen=True)
class Condition:
    strategy: str
    feedback: str

    @property
    def label(self) -> str:
        return f"{self.strategy}_{self.feedback}"

    @property
    def speaks(self) -> bool:
        """Whether the regulation phase records speech ("look" is the silent baseline)."""
        return self.strategy != "look"


@dataclass(frozen=True)
class Design:
    strategies: tuple[str, ...] = ("reappraise", "describe")  # describe = active control that also speaks
    feedback: tuple[str, ...] = ("ai", "none")  # fully crossed with strategies: a 2 x 2 within-subject design
    look_baseline: bool = False  # an extra look/none block; off in the published 2 x 2 design
    trials_per_condition: int = 8  # 4 conditions x 8 = 32 trials: ~30 min, the usual CER session length
    practice_trials: int = 4  # one per condition, with stimuli never used in the main blocks
    stimulus_selection: str = "most_negative"  # which stimuli fill the design when the set is larger: or "random"


@dataclass(frozen=True)
class Durations:
    """Seconds. `speaking` and `rating` are limits: an ASR endpoint or a key press ends them sooner."""

    fixation: float = 1.0  # re-centres gaze; long enough to see, short enough not to bore
    stimulus: float = 6.0  # a full look at the aversive picture before any rating (CER tasks use 4-8 s)
    cue: float = 2.0  # the strategy word alone, so the instruction is read before speaking starts
    speaking: float = 20.0  # a spoken reappraisal rarely needs longer; the endpoint usually ends it first
    look: float = 10.0  # the silent baseline's regulation window, about a typical spoken reappraisal
    feedback: float = 6.0  # the AI picture (or a blank screen of equal length in the no-feedback condition)
    rating: float = 10.0  # time limit per rating; no answer is logged as missing, never guessed
    iti: float = 2.0  # lets the previous picture's affect decay before the next fixation


@dataclass(frozen=True)
class RatingScale:
    low: int = 1  # SAM-style 9-point scale, as in the IAPS norms
    high: int = 9
    low_label: str = "not negative at all"
    high_label: str = "extremely negative"
    pre_prompt: str = "How negative do you feel right now?"  # after viewing, before regulating
    post_prompt: str = "How negative do you feel now?"  # after regulating (and the feedback picture)


@dataclass(frozen=True)
class Generation:
    """Recorded with every picture; the picture engine reads them (names follow the engine's arguments)."""

    strength: float = 0.6  # img2img strength: keeps the scene recognisable while changing its meaning
    ip_scale: float = 0.6  # IP-Adapter weight of the stimulus picture
    steps: int = 4  # denoising steps: few-step schedulers keep speech-end -> picture short on a CPU
    guidance: float = 7.5  # classifier-free guidance (diffusers' default); <= 1 turns it off and halves the UNet work
    scheduler: str = ""  # "" is the model's own scheduler; or euler, ddim, lcm, dpm++2m (edge-cer generate --scheduler)
    vae: str = "full"  # "tiny": the export's tiny VAE decoder (TAESD), ~10x less decoder work, softer detail


@dataclass(frozen=True)
class PromptSettings:
    """How a spoken reappraisal becomes the picture prompt (edge_cer.session.prompt); the prompt is recorded per trial."""

    template: str = "{transcript}"  # e.g. "a photo, {transcript}"; holds {transcript} exactly once
    # Hesitations carry no picture content; whole words and phrases, case-insensitive ("like" is left alone: it is
    # often meant, "it looks like a film set").
    fillers: tuple[str, ...] = ("um", "uh", "uhm", "er", "erm", "ah", "hmm", "mm", "you know", "i mean")
    max_words: int = 50  # CLIP's text encoder reads 77 tokens (~1.3 per English word); the first words are kept
    negative_prompt: str = ""  # what the picture must avoid, e.g. "blood, injury"; empty: none
    min_words: int = 3  # a speculative generation waits for a partial this long; shorter rarely holds the meaning


@dataclass(frozen=True)
class Live:
    """The live speech-to-picture pipeline (edge_cer.live): speculation, the feedback deadline, degradation."""

    speculate: bool = True  # generate from partial transcripts while the participant speaks
    # A partial must stand this long before a speculative generation starts (or a running one is cancelled for it):
    # partials change every few hundred ms mid-sentence, so generations start at pauses, not on every word.
    debounce_s: float = 0.3
    # The speaking turn ends after this much silence following the recogniser's last final; speech within it
    # continues the turn. The voice detector ends utterances at 0.3 s pauses, so commas split a sentence into finals
    # (espeak's comma pause: 0.48 s): ending at the first final lost the rest. 0.8 s keeps the end of the turn at
    # 0.85 s after speech (0.37 s when the first final ended it), inside the 1 s speech end -> picture goal; the
    # picture starts at the final, so a generation of up to ~0.5 s costs nothing more. A longer pause ends the turn.
    end_of_turn_s: float = 0.8
    # vad mode: a pause this long ends an utterance (a final). Each 0.05 s shorter brings finals ~0.05 s earlier
    # and splits more sentences at their pauses; 0.25 keeps the final within 0.5 s in 15 dB noise, where Silero
    # hears the end later (perf/asr.md, "Fourth round").
    vad_min_silence: float = VAD_MIN_SILENCE_S
    # The feedback picture is due at most this long after the end of speech (or at the final transcript, when the
    # recogniser is later). Real compute time: not multiplied by time_scale.
    deadline_s: float = 3.0
    # At the deadline without a (safe) picture of the final transcript: "best" shows the newest safe picture that
    # is ready (from an earlier partial), "none" a blank screen. Either way the trial clock goes on and it is logged.
    on_deadline: str = "best"


@dataclass(frozen=True)
class Safety:
    """The safety gate's thresholds (edge_cer.affect.safety): a picture more negative or redder than its stimulus by
    more than these is regenerated with the next seed, `max_attempts` times at most, then the `[live] on_deadline`
    fallback is shown. Scores: CLIP zero-shot valence in [-1, 1] when the engine carries it, else pixel proxies."""

    max_valence_drop: float = 0.0  # a supportive picture must never be more negative than the stimulus
    max_red_share_increase: float = 0.05  # blood and fire read as red; 5 points of the frame is above resampling noise
    concept_threshold: float = 0.3  # CLIP softmax probability of a blocked concept (blood, injury, weapon, body)
    max_attempts: int = 3  # ~1 s per generation on the target GPU: 3 tries fit the feedback deadline


@dataclass(frozen=True)
class Instructions:
    welcome: str = (
        "You will see pictures, some of them unpleasant. After each picture a word tells you what to do, "
        "then you speak for a while, and you rate how negative you feel."
    )
    practice: str = "First a few practice trials."
    reappraise: str = "REAPPRAISE: say out loud a way of seeing the picture that makes it less negative."
    describe: str = "DESCRIBE: say out loud what you see in the picture, plainly and objectively."
    look: str = "LOOK: just look at the picture and let your feelings come as they are."
    feedback_ai: str = "After speaking you will see a picture made from what you said."
    feedback_none: str = "After speaking the screen stays empty for a moment."
    block_break: str = "Take a short break. Continue when you are ready."
    end: str = "Thank you, the session is complete."
    # The same instructions when the reappraisal is typed (no recogniser or microphone, or `edge-cer tui --typing`):
    # a participant who types must never be told to speak. Change each text together with its typed twin.
    typed_welcome: str = (
        "You will see pictures, some of them unpleasant. After each picture a word tells you what to do, "
        "then you type for a while, and you rate how negative you feel."
    )
    typed_reappraise: str = "REAPPRAISE: type a way of seeing the picture that makes it less negative."
    typed_describe: str = "DESCRIBE: type what you see in the picture, plainly and objectively."
    typed_feedback_ai: str = "After typing you will see a picture made from what you wrote."
    typed_feedback_none: str = "After typing the screen stays empty for a moment."

    def for_input(self, typed: bool) -> Instructions:
        """The wording for the input in use: when typing, each `typed_*` text replaces its spoken twin."""
        if not typed:
            return self
        return dataclasses.replace(self, **{name: getattr(self, f"typed_{name}") for name in TYPED_TWINS})


TYPED_TWINS = ("welcome", "reappraise", "describe", "feedback_ai", "feedback_none")


@dataclass(frozen=True)
class Protocol:
    name: str = "cer-default"
    seed: int = 20240521  # the randomisation seed; each participant's stream is derived from it and their number
    time_scale: float = 1.0  # multiplies every duration: 0 runs scripted tests without waiting
    design: Design = field(default_factory=Design)
    durations: Durations = field(default_factory=Durations)
    rating: RatingScale = field(default_factory=RatingScale)
    generation: Generation = field(default_factory=Generation)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    live: Live = field(default_factory=Live)
    safety: Safety = field(default_factory=Safety)
    instructions: Instructions = field(default_factory=Instructions)
    source: str = "<default>"  # where it was read from (not a TOML key)
    text: str = ""  # the exact TOML text, stored in every session database (not a TOML key)

    @property
    def conditions(self) -> tuple[Condition, ...]:
        crossed = [Condition(s, f) for s in self.design.strategies for f in self.design.feedback]
        return tuple(crossed + ([Condition("look", "none")] if self.design.look_baseline else []))

    @property
    def uses_ai_feedback(self) -> bool:
        return any(c.feedback == "ai" for c in self.conditions)

    @property
    def stimuli_needed(self) -> int:
        return len(self.conditions) * self.design.trials_per_condition + self.design.practice_trials

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def seconds(self, phase: str) -> float:
        """A phase's requested duration after `time_scale`."""
        return getattr(self.durations, phase) * self.time_scale


_SECTIONS = {f.name: f for f in dataclasses.fields(Protocol) if dataclasses.is_dataclass(f.default_factory)}
_TOP_KEYS = ("name", "seed", "time_scale")


def load_protocol(path: str | Path | None = None) -> Protocol:
    """Read and validate a protocol TOML file; `None` reads the shipped default."""
    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_PROTOCOL).read_text()
        source = f"<default {DEFAULT_PROTOCOL}>"
    else:
        text = read_user_text(path, "--protocol", "a protocol TOML file")
        source = str(path)
    return parse_protocol(text, source)


def parse_protocol(text: str, source: str = "<string>") -> Protocol:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EdgeCerError(f"{source}: not valid TOML ({exc}); fix the syntax at that line") from exc
    sections = {}
    for key, value in table.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise EdgeCerError(f"{source}: `{key}` must be a table; write it as [{key}]")
            sections[key] = _read_section(_SECTIONS[key].default_factory, value, source, key)
        elif key not in _TOP_KEYS:
            raise EdgeCerError(
                f"{source}: unknown key `{key}`; valid top-level keys: {', '.join(_TOP_KEYS + tuple(_SECTIONS))}"
            )
    top = _read_section(Protocol, {k: table[k] for k in _TOP_KEYS if k in table}, source, None)
    protocol = dataclasses.replace(top, **sections, source=source, text=text)
    _check(protocol)
    return protocol


def _read_section(cls, values: dict, source: str, section: str | None):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    where = f"[{section}] " if section else ""
    defaults = cls()
    for key, value in values.items():
        if key not in fields or key in ("source", "text"):
            valid = ", ".join(n for n in fields if n not in _SECTIONS and n not in ("source", "text"))
            raise EdgeCerError(f"{source}: {where}unknown key `{key}`; valid keys: {valid}")
        expected = type(getattr(defaults, key))
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
        if expected is tuple:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if isinstance(value, bool) and expected is not bool:
            ok = False
        if ok and expected is float and not math.isfinite(value):
            raise EdgeCerError(f"{source}: {where}`{key}` = {value!r} is not a finite number; "
                               f"e.g. {key} = {_toml(getattr(defaults, key))}")
        if not ok:
            raise EdgeCerError(
                f"{source}: {where}`{key}` = {value!r} must be {expected.__name__}; e.g. {key} = {_toml(getattr(defaults, key))}"
            )
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _toml(value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _check(p: Protocol) -> None:
    def refuse(key: str, problem: str, fix: str):
        raise EdgeCerError(f"{p.source}: {key} {problem}; {fix}")

    d = p.design
    for key, levels, valid in (("strategies", d.strategies, STRATEGIES[:2]), ("feedback", d.feedback, FEEDBACK)):
        if not levels:
            refuse(f"[design] {key}", "is empty", f"list at least one of {list(valid)}")
        for level in levels:
            if level not in valid:
                refuse(f"[design] {key}", f"has unknown level {level!r}", f"use only {list(valid)}")
        if len(set(levels)) != len(levels):
            refuse(f"[design] {key}", f"repeats a level in {list(levels)}", "list each level once")
    if d.trials_per_condition < 1:
        refuse("[design] trials_per_condition", f"= {d.trials_per_condition}", "use 1 or more")
    if d.practice_trials < 0:
        refuse("[design] practice_trials", f"= {d.practice_trials}", "use 0 or more")
    if d.stimulus_selection not in ("most_negative", "random"):
        refuse("[design] stimulus_selection", f"= {d.stimulus_selection!r}", 'use "most_negative" or "random"')
    for key, value in (("trials_per_condition", d.trials_per_condition), ("practice_trials", d.practice_trials)):
        if value > MAX_TRIALS:
            refuse(f"[design] {key}", f"= {value}", f"use at most {MAX_TRIALS}")
    for f in dataclasses.fields(Durations):
        if getattr(p.durations, f.name) < 0:
            refuse(f"[durations] {f.name}", f"= {getattr(p.durations, f.name)} is negative", "use 0 or more seconds")
        if getattr(p.durations, f.name) * max(p.time_scale, 1) > MAX_PHASE_S:
            refuse(f"[durations] {f.name}", f"= {getattr(p.durations, f.name)} s (x time_scale {p.time_scale})",
                   f"keep every phase under {MAX_PHASE_S} s")
    for limit in ("speaking", "rating"):
        if getattr(p.durations, limit) <= 0 and p.time_scale > 0:
            refuse(f"[durations] {limit}", "is 0, so nobody could answer", "give a limit above 0 seconds")
    if p.time_scale < 0:
        refuse("time_scale", f"= {p.time_scale} is negative", "use 1 for real sessions, 0 for instant scripted runs")
    if p.rating.high <= p.rating.low:
        refuse("[rating] high", f"= {p.rating.high} is not above low = {p.rating.low}", "e.g. low = 1, high = 9")
    if not -MAX_RATING <= p.rating.low < p.rating.high <= MAX_RATING:
        refuse("[rating]", f"low = {p.rating.low}, high = {p.rating.high}", f"keep both within +-{MAX_RATING}")
    if not 0 <= p.seed < 2**63:
        refuse("seed", f"= {p.seed}", "use a whole number from 0 to 2**63 - 1")
    g = p.generation
    if not (0 < g.strength <= 1) or not 0 <= g.ip_scale <= 10 or not 1 <= g.steps <= MAX_STEPS:
        refuse("[generation]", f"strength={g.strength}, ip_scale={g.ip_scale}, steps={g.steps}",
               f"need 0 < strength <= 1, 0 <= ip_scale <= 10, 1 <= steps <= {MAX_STEPS}")
    if g.vae not in ("full", "tiny"):
        refuse("[generation] vae", f"= {g.vae!r}", 'use "full" or "tiny" (an export with --tiny-vae)')
    if g.scheduler not in SCHEDULERS or not 0 <= g.guidance <= 50:
        refuse("[generation]", f"scheduler={g.scheduler!r}, guidance={g.guidance}",
               f"scheduler is one of {SCHEDULERS} (\"\": the model's own) and 0 <= guidance <= 50")
    pr = p.prompt
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(pr.template) if name is not None]
    except ValueError:
        fields = None
    if fields != ["transcript"]:
        refuse("[prompt] template", f"= {pr.template!r}", 'hold {transcript} exactly once and no other braces, e.g. "a photo, {transcript}"')
    if not 1 <= pr.min_words <= pr.max_words <= 1000:
        refuse("[prompt]", f"min_words={pr.min_words}, max_words={pr.max_words}", "need 1 <= min_words <= max_words <= 1000")
    if any(not f.strip() for f in pr.fillers):
        refuse("[prompt] fillers", "has an empty entry", "list words or phrases only")
    lv = p.live
    if not 0 <= lv.debounce_s <= MAX_PHASE_S or not 0 < lv.deadline_s <= MAX_PHASE_S:
        refuse("[live]", f"debounce_s={lv.debounce_s}, deadline_s={lv.deadline_s}", "need debounce_s >= 0 and deadline_s > 0")
    if not 0 <= lv.end_of_turn_s <= MAX_PHASE_S:
        refuse("[live] end_of_turn_s", f"= {lv.end_of_turn_s}", f"use 0 to {MAX_PHASE_S} seconds of silence, e.g. 0.8")
    if not 0.1 <= lv.vad_min_silence <= 2.0:
        refuse("[live] vad_min_silence", f"= {lv.vad_min_silence}",
               "use 0.1 to 2.0 seconds of silence, e.g. 0.3 (0.25 in a noisy room)")
    if lv.on_deadline not in ("best", "none"):
        refuse("[live] on_deadline", f"= {lv.on_deadline!r}", 'use "best" or "none"')
    ins, default = p.instructions, Instructions()
    for name in TYPED_TWINS:
        typed = f"typed_{name}"
        if getattr(ins, name) != getattr(default, name) and getattr(ins, typed) == getattr(default, typed):
            refuse(f"[instructions] {name}", "is changed but its typed twin is not",
                   f"set typed_{name} too (shown when the participant types)")
    sf = p.safety
    if sf.max_valence_drop < 0 or sf.max_red_share_increase < 0 or not 0 < sf.concept_threshold <= 1 or sf.max_attempts < 1:
        refuse("[safety]", f"= {dataclasses.asdict(sf)}",
               "need drops >= 0, 0 < concept_threshold <= 1 and max_attempts >= 1")
