"""`analyze` recovers what `simulate` planted, on whole-number 1-9 ratings with a lab's losses.

Fast (default): a few studies, each contrast within 4 standard errors of its truth and the strong effects' signs;
the `power` command end to end on a tiny run. Slow (opt-in, `-m slow`): the issue's bar at N = 20 (sign recovery,
95% CI coverage in 93-97%, false positives <= 5%) over 1000 studies with effects and 200 null studies, with the
seeds of the committed tables in docs/analysis-validation/ (recovery-1000, null-ai*), so it reproduces them exactly.
"""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from edge_cer.analysis import power
from edge_cer.analysis.analyze import analyze
from edge_cer.analysis.columns import write_trials
from edge_cer.analysis.simulate import Model, parse_effects, protocol_for, simulate, simulate_trials
from edge_cer.cli import main

EFFECTS = "intercept=0.3,reappraise=0.8,ai=0.5,alignment=2.0"


@pytest.mark.parametrize("seed", [0, 1])
def test_contrasts_recovered_fast(tmp_path, seed):
    trials, truth = simulate(participants=24, model=Model(effects=parse_effects(EFFECTS)), seed=seed)
    write_trials(trials, tmp_path)
    results = analyze(tmp_path, tmp_path / "out", report_html=False)
    model = results["mixed_model"]
    found = {r["term"]: r for r in model["fixed_effects"] + model["combinations"]}
    for name, true in truth["observed_scale"]["contrasts"].items():
        assert abs(found[name]["estimate"] - true["estimate"]) < 4 * found[name]["se"], (name, found[name], true)
    for name in ("strategy", "feedback"):
        assert found[name]["ci_low"] > 0  # strong planted effects: detected, with the right sign
    alignment = next(r for r in results["alignment_model"]["fixed_effects"] if r["term"] == "alignment")
    assert abs(alignment["estimate"] - truth["observed_scale"]["alignment_slope"]) < 4 * alignment["se"]
    # The participant-level effect sizes agree with the model on the direction and roughly the size.
    sizes = {r["contrast"]: r for r in results["effect_sizes"]["rows"]}
    assert sizes["feedback"]["mean"] == pytest.approx(found["feedback"]["estimate"], abs=0.15)
    check = results["manipulation_checks"]["text_valence"]["rows"][0]
    assert (check["A"], check["B"]) == ("describe", "reappraise") and check["T"] < 0


def test_zero_slope_variance_is_dropped_and_the_report_says_why(tmp_path):
    """8 participants, seed 0: the strategy slope variance is estimated at zero, so that term goes."""
    write_trials(simulate_trials(8, Model(), protocol_for(), 0), tmp_path)
    model = analyze(tmp_path, tmp_path / "out", report_html=False, sensitivity_analyses=False)["mixed_model"]
    assert model["fallback"][0]["dropped"] == ["participant:strategy_c"] and model["fallback"][0]["zero_variance"]
    assert "strategy_c slopes" in model["planned"] and "strategy_c slopes" not in model["random_effects"]


def test_power_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "power"
    assert main(["power", "--participants", "6", "--studies", "2", "--workers", "1", "--effects", "reappraise=1",
                 "--out", str(out)]) == 0
    summary = pd.read_csv(out / power.CSV)
    assert set(summary["participants"]) == {6} and (summary["studies"] == 2).all()
    row = summary.set_index("contrast").loc["feedback"]
    assert bool(row["null"]) and 0 <= row["power"] <= 1 and 0 <= row["coverage"] <= 1
    assert not summary.set_index("contrast").loc["strategy", "null"]
    table = (out / power.TABLE).read_text()
    assert "| 6 | feedback (null) |" in table and "feedback \\| reappraise" in table
    assert Image.open(out / power.PLOT).size[0] > 500
    studies = pd.read_csv(out / power.STUDIES)
    assert len(studies[studies["contrast"] == "feedback"]) == 2


def test_power_refuses_bad_sizes(capsys):
    assert main(["power", "--participants", "2,x", "--out", "/nonexistent"]) == 2
    assert "--participants '2,x'" in capsys.readouterr().err


def _rates(studies: pd.DataFrame, contrast: str) -> dict:
    rows = studies[(studies["contrast"] == contrast) & studies["estimate"].notna()]
    return {"n": len(rows), "sign": float((np.sign(rows["estimate"]) == np.sign(rows["truth"])).mean()),
            "coverage": float(((rows["ci_low"] <= rows["truth"]) & (rows["truth"] <= rows["ci_high"])).mean()),
            "significant": float((rows["p"] < 0.05).mean())}


@pytest.mark.slow
def test_recovery_over_1000_studies():
    """The issue's bar for the AI effect at N = 20: sign recovery, 95% CI coverage in 93-97%, false positives
    <= 5%. Coverage is judged over 1000 studies (seeds 100000-100999; Monte Carlo SE 0.7 points): over 200, a CI
    with exactly 95% coverage lands outside 93-97% about one time in seven (binomial SD 1.5 points), so 200 studies
    cannot tell a correct CI from a slightly narrow one. docs/analysis.md gives each block of 200 as well."""
    workers = os.cpu_count() or 1
    effect = power.run_studies(Model(), protocol_for(), [20], 1000, seed=100000, workers=workers)
    ai = _rates(effect, "feedback")
    assert ai["n"] == 1000 and ai["sign"] >= 0.95, ai
    assert 0.93 <= ai["coverage"] <= 0.97, ai
    null = power.run_studies(Model(effects=parse_effects("intercept=0.3,reappraise=0.7,alignment=1.5")),
                             protocol_for(), [20], 200, seed=5000, workers=workers)
    ai_null = _rates(null, "feedback")
    assert ai_null["n"] == 200 and ai_null["significant"] <= 0.05, ai_null
