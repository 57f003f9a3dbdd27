"""The safety gate in the live pipeline: the stimulus is scored once, each generated picture against it.

The rule itself is `edge_cer.affect.safety.decide` (pure, shared with the analysis). This wrapper only turns
pictures into scores, and fails closed too: a picture that cannot be scored gets "fallback", never "show".
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

from PIL import Image

from edge_cer.affect.picture import load_rgb, picture_proxies
from edge_cer.affect.safety import FALLBACK, AffectScores, GateDecision, SafetyPolicy, decide
from edge_cer.session.generation import GeneratedPicture

UNSCORED = AffectScores(math.nan, math.nan)


def proxy_scores(rgb) -> AffectScores:
    """The pixel proxies (no weights): CLIP valence needs image embeddings the engine does not hand out yet."""
    proxies = picture_proxies(rgb)
    return AffectScores(proxies.valence_proxy, proxies.red_share)


class SafetyGate:
    def __init__(self, stimulus_path: Path, policy: SafetyPolicy):
        self.policy = policy
        try:
            self.stimulus, self.stimulus_error = proxy_scores(load_rgb(stimulus_path)), None
        except Exception as exc:  # noqa: BLE001 - an unscorable stimulus blocks every picture, with the reason
            self.stimulus, self.stimulus_error = UNSCORED, f"stimulus: {type(exc).__name__}: {exc}"

    def check(self, picture: GeneratedPicture, *, attempt: int, time_left_s: float,
              expected_generation_s: float) -> GateDecision:
        try:
            with Image.open(io.BytesIO(picture.png_bytes())) as image:
                candidate, error = proxy_scores(image), self.stimulus_error
        except Exception as exc:  # noqa: BLE001 - fail closed on an unreadable picture
            candidate, error = UNSCORED, f"candidate: {type(exc).__name__}: {exc}"
        decision = decide(self.stimulus, candidate, self.policy, attempt=attempt, time_left_s=time_left_s,
                          expected_generation_s=expected_generation_s)
        if error and decision.action == FALLBACK:  # decide() saw only NaN; keep the cause in the log
            decision = dataclasses.replace(decision, reasons=(f"error: {error}", *decision.reasons))
        return decision
