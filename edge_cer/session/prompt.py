"""How a spoken reappraisal becomes the picture prompt: fillers out, stutters collapsed, length capped, templated.

    build = PromptBuilder(protocol.prompt)
    build("Um, they are, you know, actors actors on a set.")   # -> "they are actors on a set"

Prompts are lower-case words without punctuation, so two transcripts that differ only in case, punctuation or
hesitations give the same prompt, and the live pipeline reuses a speculative picture for them.
"""

from __future__ import annotations

import re

from edge_cer.session.protocol import PromptSettings

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


class PromptBuilder:
    def __init__(self, settings: PromptSettings):
        self.settings = settings
        self._fillers = sorted((tuple(_WORD.findall(f.lower())) for f in settings.fillers), key=len, reverse=True)

    def words(self, transcript: str) -> list[str]:
        """The transcript's content words: lower case, fillers removed, immediate repeats ("the the") collapsed."""
        words, kept = _WORD.findall(transcript.lower()), []
        i = 0
        while i < len(words):
            filler = next((f for f in self._fillers if tuple(words[i:i + len(f)]) == f), None)
            if filler:
                i += len(filler)
                continue
            if not kept or kept[-1] != words[i]:
                kept.append(words[i])
            i += 1
        return kept

    def __call__(self, transcript: str) -> str:
        """The prompt, or "" when nothing is left to draw."""
        words = self.words(transcript)[: self.settings.max_words]
        return self.settings.template.format(transcript=" ".join(words)) if words else ""

    def speculative(self, partial: str) -> str:
        """The prompt of a partial transcript, or "" while it is shorter than `min_words`."""
        return self(partial) if len(self.words(partial)) >= self.settings.min_words else ""

    @property
    def negative_prompt(self) -> str | None:
        return self.settings.negative_prompt or None
