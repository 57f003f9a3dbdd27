"""The per-trial affect columns the session writes (text_valence, picture_valence, alignment), in one call.

    row.update(trial_affect(transcript, picture))                                    # pixel proxy
    row.update(trial_affect(transcript, picture, clip=zero_shot, image_embeds=emb))  # CLIP, when in the manifest
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from edge_cer.affect.alignment import alignment
from edge_cer.affect.picture import ClipZeroShot, picture_proxies
from edge_cer.affect.text import vader_valence


def trial_affect(transcript: str | None, picture: np.ndarray | Image.Image | None, *,
                 clip: ClipZeroShot | None = None, image_embeds: np.ndarray | None = None) -> dict[str, float]:
    """NaN for what is absent (no speech, no picture); CLIP valence when `clip` and `image_embeds` are given."""
    text_valence = vader_valence(transcript)
    if picture is None:
        picture_valence = math.nan
    elif clip is not None and image_embeds is not None:
        picture_valence = float(clip.valence(image_embeds)[0])
    else:
        picture_valence = picture_proxies(picture).valence_proxy
    return {"text_valence": text_valence, "picture_valence": picture_valence,
            "alignment": alignment(text_valence, picture_valence)}
