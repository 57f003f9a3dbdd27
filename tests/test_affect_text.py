"""Text affect: VADER and the negation-aware AFINN score on reappraisal-style sentences."""

import math

import pytest

from edge_cer.affect.text import afinn_valence, text_affect, vader_valence

# (negative description, its reappraisal by negation): the reappraisal must score higher on both lexicons.
NEGATED_PAIRS = [
    ("This is bad.", "This is not as bad as it looks."),
    ("It is hopeless.", "It is not hopeless."),
    ("She is hurt and afraid.", "She is not hurt and not afraid."),
    ("They will never recover.", "They won't suffer for long."),
]


@pytest.mark.parametrize("negative, reappraisal", NEGATED_PAIRS)
def test_negated_reappraisal_scores_above_the_description(negative, reappraisal):
    assert vader_valence(reappraisal) > vader_valence(negative)
    assert afinn_valence(reappraisal) > afinn_valence(negative)


def test_negation_flips_afinn_sign_with_vaders_scalar():
    # "hopeless" is -2 in AFINN-165: alone -2/5, negated -2 * -0.74 / 5.
    assert afinn_valence("hopeless") == pytest.approx(-0.4)
    assert afinn_valence("not hopeless") == pytest.approx(2 * 0.74 / 5)
    # Outside VADER's three-word window the negation no longer applies.
    assert afinn_valence("not that it is so very hopeless") == pytest.approx(-0.4)


def test_no_transcript_has_no_valence_rather_than_neutral():
    for empty in ("", "   ", None, math.nan):
        affect = text_affect(empty)
        assert math.isnan(affect.vader) and math.isnan(affect.afinn)
    assert vader_valence("The man stands on the road.") == 0.0  # present but neutral is 0, not NaN


def test_scores_stay_in_range():
    for text in ("wonderful wonderful amazing joy", "horrible horrible murder death", "ok"):
        affect = text_affect(text)
        assert -1 <= affect.vader <= 1 and -1 <= affect.afinn <= 1


def test_trial_affect_fills_the_session_columns():
    import numpy as np

    from edge_cer.affect.picture import ClipZeroShot
    from edge_cer.affect.trial import trial_affect

    grey = np.full((8, 8, 3), 0.5, dtype=np.float32)  # valence proxy 2 * 0.345 / 0.91 - 1
    row = trial_affect("It is not as bad as it looks.", grey)
    assert row["text_valence"] == pytest.approx(0.431, abs=1e-3)
    assert row["picture_valence"] == pytest.approx(2 * 0.345 / 0.91 - 1)
    assert row["alignment"] == pytest.approx(1 - abs(row["text_valence"] - row["picture_valence"]) / 2)
    clip = ClipZeroShot.from_manifest({"prompts": ["good", "bad"], "valence": [1, -1],
                                       "text_embeds": [[1.0, 0.0], [0.0, 1.0]]})
    assert trial_affect("fine", grey, clip=clip, image_embeds=np.array([[1.0, 0.0]]))["picture_valence"] > 0.99
    silent = trial_affect(None, None)
    assert all(math.isnan(v) for v in silent.values())
