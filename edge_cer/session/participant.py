"""Participant I/O for headless runs: the `Participant` protocol and a scripted participant for demos and tests.

A script is TOML (or JSON with the same structure); every key is optional:

    rt_s = 0.8                 # seconds to answer a rating (multiplied by the protocol's time_scale)
    speak_s = 3.0              # seconds of speaking before the final transcript
    [ratings]
    pre = 7                    # rating after viewing, before regulating
    post_change = { reappraise = -2, describe = -1, look = 0 }   # post = pre + change (+ ai_change), clamped
    ai_change = -1             # extra change after an AI picture
    [[trials]]                 # used in order and cycled; each gives `text` or `wav` (relative to the script)
    text = "They are actors, and the scene is staged."
    [[trials]]
    wav = "clips/trial02.wav"
    pre = 8                    # a trial may override the rating rule
    post = 5
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Protocol

from edge_cer.errors import EdgeCerError, check_text, read_user_text
from edge_cer.session.counterbalance import PlannedTrial
from edge_cer.session.protocol import MAX_PHASE_S, MAX_RATING, STRATEGIES, RatingScale

DEFAULT_SCRIPT = "default_script.toml"


@dataclass(frozen=True)
class Utterance:
    text: str | None = None
    wav: Path | None = None
    duration_s: float = 0.0  # how long the (scripted) speaking takes before the final transcript


@dataclass(frozen=True)
class Rating:
    value: int
    rt_s: float


class Participant(Protocol):
    def speak(self, trial: PlannedTrial) -> Utterance: ...

    def rate(self, trial: PlannedTrial, which: str, scale: RatingScale) -> Rating | None:
        """`which` is "pre" or "post"; None means no answer within the time limit."""


@dataclass(frozen=True)
class ScriptedParticipant:
    utterances: tuple[Utterance, ...] = (Utterance(text="It is only a picture."),)
    overrides: tuple[dict, ...] = ({},)  # per script trial: {"pre": int, "post": int}
    rt_s: float = 0.8
    speak_s: float = 3.0
    pre: int = 7
    post_change: dict = field(default_factory=lambda: {"reappraise": -2, "describe": -1, "look": 0})
    ai_change: int = -1
    source: str = DEFAULT_SCRIPT  # the script file, for messages

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> ScriptedParticipant:
        """Read a script (TOML or JSON by suffix); None reads the embedded demo script. Every value is checked here,
        before any session exists: types, finite numbers, text encoding, WAV files (readable, not too long)."""
        if path is None:
            text, source, base = resources.files(__package__).joinpath(DEFAULT_SCRIPT).read_text(), DEFAULT_SCRIPT, None
        else:
            path = Path(path)
            text, source, base = read_user_text(path, "--scripted", "a TOML or JSON script"), str(path), path.parent
        try:
            table = json.loads(text) if source.endswith(".json") else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise EdgeCerError(f"{source}: cannot parse it ({exc}); fix the syntax") from exc
        return cls._from_table(table, source, base)

    @classmethod
    def _from_table(cls, table: dict, source: str, base: Path | None) -> ScriptedParticipant:
        _only(table, ("rt_s", "speak_s", "ratings", "trials"), source, "")
        ratings = table.get("ratings", {})
        _only(ratings, ("pre", "post_change", "ai_change"), source, "[ratings] ")
        post_change = ratings.get("post_change", {})
        _only(post_change, STRATEGIES, source, "[ratings] post_change ")
        values = {k: _seconds(table[k], f"{source}: `{k}`") for k in ("rt_s", "speak_s") if k in table}
        values |= {k: _whole(ratings[k], f"{source}: [ratings] `{k}`") for k in ("pre", "ai_change") if k in ratings}
        if "post_change" in ratings:
            values["post_change"] = {k: _whole(v, f"{source}: [ratings] post_change `{k}`") for k, v in post_change.items()}
        entries = table.get("trials", [])
        if not isinstance(entries, list):
            raise EdgeCerError(f"{source}: `trials` must be a list of tables; write each as [[trials]]")
        utterances, overrides = [], []
        for i, entry in enumerate(entries, start=1):
            where = f"{source}: trials[{i}]"
            _only(entry, ("text", "wav", "pre", "post"), source, f"trials[{i}] ")
            if ("text" in entry) == ("wav" in entry):
                raise EdgeCerError(f"{where}: give exactly one of `text` or `wav`")
            if not isinstance(entry.get("text", entry.get("wav")), str):
                raise EdgeCerError(f"{where}: `text`/`wav` must be a string in quotes, e.g. text = \"It is staged.\"")
            wav = None
            if "wav" in entry:
                from edge_cer.speech.audio import check_audio_file  # numpy and soundfile: only for WAV trials

                wav = (base or Path()) / check_text(entry["wav"], f"{where} wav")
                try:
                    check_audio_file(wav)
                except EdgeCerError as exc:
                    raise EdgeCerError(f"{where}: {exc}") from None
            utterances.append(Utterance(text=check_text(entry["text"], f"{where} text") if "text" in entry else None,
                                        wav=wav))
            overrides.append({k: _whole(entry[k], f"{where} `{k}`") for k in ("pre", "post") if k in entry})
        if utterances:
            values |= {"utterances": tuple(utterances), "overrides": tuple(overrides)}
        return cls(**values, source=source)

    def require_recogniser(self, have_asr: bool) -> None:
        """WAV trials need a recogniser; refused before the session exists, not at the first spoken trial."""
        first = next((i for i, u in enumerate(self.utterances, start=1) if u.wav is not None), None)
        if first is not None and not have_asr:
            raise EdgeCerError(f"{self.source}: trials[{first}] gives a WAV file, which needs the speech recogniser; "
                               "pass --asr DIR, or give `text` instead of `wav`")

    def _entry(self, trial: PlannedTrial) -> int:
        return (trial.trial - 1) % len(self.utterances)

    def speak(self, trial: PlannedTrial) -> Utterance:
        return dataclasses.replace(self.utterances[self._entry(trial)], duration_s=self.speak_s)

    def rate(self, trial: PlannedTrial, which: str, scale: RatingScale) -> Rating | None:
        override = self.overrides[self._entry(trial)]
        pre = override.get("pre", self.pre)
        if which == "pre":
            value = pre
        else:
            change = self.post_change.get(trial.condition.strategy, 0)
            change += self.ai_change if trial.condition.feedback == "ai" else 0
            value = override.get("post", pre + change)
        return Rating(min(scale.high, max(scale.low, value)), self.rt_s)


def _only(table, keys: tuple[str, ...], source: str, where: str) -> None:
    if not isinstance(table, dict):
        raise EdgeCerError(f"{source}: {where or 'the script '}must be a table of keys, not {type(table).__name__}; "
                           f"valid keys: {', '.join(keys)}")
    for key in table:
        if key not in keys:
            raise EdgeCerError(f"{source}: {where}unknown key `{key}`; valid keys: {', '.join(keys)}")


def _seconds(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_PHASE_S:
        raise EdgeCerError(f"{where} = {value!r} must be a number of seconds from 0 to {MAX_PHASE_S:.0f}, e.g. 0.8")
    return float(value)


def _whole(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_RATING:
        raise EdgeCerError(f"{where} = {value!r} must be a whole number (a rating or a change of one), e.g. 7")
    return value
