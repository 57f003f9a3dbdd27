"""The safety gate around every generated picture: the stimulus is scored once, each picture against it.

The rule itself is `edge_cer.affect.safety.decide` (pure, shared with the analysis). This module turns pictures
into scores (CLIP zero-shot valence and concept scores when the engine manifest carries prompt embeddings, else the
pixel proxies) and fails closed too: a picture that cannot be scored gets "fallback", never "show".

Every picture a participant may see is made by a live trial (edge_cer.live.trial), which checks it here and weighs
the generation deadline: spoken, typed and scripted reappraisals alike. A warm-up picture is never gated (no one
sees it).
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

from PIL import Image

from edge_cer.affect.picture import SAFETY_CONCEPTS, ClipZeroShot, picture_proxies
from edge_cer.affect.safety import FALLBACK, AffectScores, GateDecision, SafetyPolicy, decide
from edge_cer.engine import GeneratedPicture

UNSCORED = AffectScores(math.nan, math.nan)
# The proxies are means and shares over pixels, so a box-filtered 256 px thumbnail gives them to within resampling
# noise at a sixteenth of the cost of a 1024 px picture (0.14 s -> 0.025 s at 512 px): the gate is on the path from
# the end of speech to the picture.
SCORE_SIZE = 256


class PictureScorer:
    """Picture -> (AffectScores, concept scores or None). CLIP zero-shot valence needs an engine exported with
    `--clip` (base adapter); without it, the weight-free pixel proxies."""

    def __init__(self, generator=None):
        pipeline = getattr(generator, "pipeline", None)
        entry = pipeline.manifest.data.get("clip_zero_shot") if pipeline is not None else None
        self._clip = (pipeline, ClipZeroShot.from_manifest(entry)) if entry else None

    @property
    def concepts(self) -> tuple[str, ...]:
        """The concept list the gate can check with this scorer."""
        return SAFETY_CONCEPTS if self._clip else ()

    def __call__(self, image: Image.Image) -> tuple[AffectScores, dict | None]:
        image = image.convert("RGB")
        thumbnail = image.copy()
        thumbnail.thumbnail((SCORE_SIZE, SCORE_SIZE), Image.Resampling.BOX)
        proxies = picture_proxies(thumbnail)
        if self._clip is None:
            return AffectScores(proxies.valence_proxy, proxies.red_share), None
        pipeline, zero_shot = self._clip
        embeds = pipeline.clip_image_embeds(image)
        valence = float(zero_shot.valence(embeds)[0])
        return AffectScores(valence, proxies.red_share, "clip"), zero_shot.concept_scores(embeds)[0]


class SafetyGate:
    def __init__(self, stimulus_path: Path, policy: SafetyPolicy, scorer: PictureScorer | None = None):
        self.policy, self.scorer = policy, scorer or PictureScorer()
        try:
            with Image.open(stimulus_path) as image:
                (self.stimulus, _), self.stimulus_error = self.scorer(image), None
        except Exception as exc:  # noqa: BLE001 - an unscorable stimulus blocks every picture, with the reason
            self.stimulus, self.stimulus_error = UNSCORED, f"stimulus: {type(exc).__name__}: {exc}"

    def check(self, picture: GeneratedPicture, *, attempt: int, time_left_s: float,
              expected_generation_s: float) -> GateDecision:
        concepts = None
        try:
            with Image.open(io.BytesIO(picture.png)) as image:
                (candidate, concepts), error = self.scorer(image), self.stimulus_error
        except Exception as exc:  # noqa: BLE001 - fail closed on an unreadable picture
            candidate, error = UNSCORED, f"candidate: {type(exc).__name__}: {exc}"
        decision = decide(self.stimulus, candidate, self.policy, attempt=attempt, time_left_s=time_left_s,
                          expected_generation_s=expected_generation_s, concept_scores=concepts)
        if error and decision.action == FALLBACK:  # decide() saw only NaN; keep the cause in the log
            decision = dataclasses.replace(decision, reasons=(f"error: {error}", *decision.reasons))
        return decision
