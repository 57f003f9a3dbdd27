"""`analyze` recovers the effects `simulate` put in: sign and 95% CI coverage of the true values."""

import json

import numpy as np
import pytest

from edge_cer.analysis.analyze import analyze
from edge_cer.analysis.columns import write_trials
from edge_cer.analysis.simulate import parse_effects, simulate

EFFECTS = "intercept=0.3,reappraise=0.8,ai=0.5,alignment=2.0"
CHECKED = ("strategy=reappraise", "feedback=ai", "strategy=reappraise:feedback=ai")


def recovered(tmp_path, seed, participants):
    trials, truth = simulate(participants=participants, effects=parse_effects(EFFECTS), seed=seed)
    write_trials(trials, tmp_path)
    results = analyze(tmp_path, tmp_path / "out")
    fixed = {r["term"]: r for r in results["mixed_model"]["fixed_effects"]}
    fixed["alignment"] = next(r for r in results["alignment_model"]["fixed_effects"] if r["term"] == "alignment")
    truth_values = {**truth["fixed_effects"], "alignment": truth["alignment_slope"]}
    return {name: (fixed[name], truth_values[name]) for name in (*CHECKED, "alignment")}, results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_effects_recovered_fast(tmp_path, seed):
    found, results = recovered(tmp_path, seed, participants=24)
    for name, (estimate, true) in found.items():
        assert estimate["ci_low"] <= true <= estimate["ci_high"], (name, estimate, true)
        if true != 0:
            assert np.sign(estimate["estimate"]) == np.sign(true), name
    # The rm-ANOVA agrees: strategy and feedback main effects are detected, the null interaction is not huge.
    anova = {r["Source"]: r for r in results["rm_anova"]["rows"]}
    assert anova["strategy"]["p_unc"] < 0.05 and anova["feedback"]["p_unc"] < 0.05
    # The manipulation check: reappraisals sound more positive than descriptions.
    check = results["manipulation_checks"]["text_valence"]["rows"][0]
    assert (check["A"], check["B"]) == ("describe", "reappraise") and check["T"] < 0
    json.dumps(results, allow_nan=False)


@pytest.mark.slow
def test_ci_coverage_over_many_seeds(tmp_path):
    seeds = range(100)
    hits = {name: 0 for name in (*CHECKED, "alignment")}
    signs = {name: 0 for name in hits}
    for seed in seeds:
        found, _ = recovered(tmp_path / str(seed), 1000 + seed, participants=24)
        for name, (estimate, true) in found.items():
            hits[name] += estimate["ci_low"] <= true <= estimate["ci_high"]
            signs[name] += true == 0 or np.sign(estimate["estimate"]) == np.sign(true)
    # Nominal 95%: with 100 seeds, fewer than 89 hits has probability < 1% if the coverage is right.
    assert all(h >= 89 for h in hits.values()), hits
    assert all(s >= 95 for s in signs.values()), signs
