"""Our statistics wrappers return exactly what pingouin and statsmodels return on the libraries' own example data."""

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
import statsmodels.formula.api as smf
from scipy.stats import f as f_dist
from scipy.stats import nct
from scipy.stats import t as t_dist

from edge_cer.analysis import stats


@pytest.fixture(scope="module")
def rm2():
    return pg.read_dataset("rm_anova2")  # Subject x Time (Pre/Post) x Metric (Product/Client/Action), n = 10


def assert_rows_match(ours: list[dict], theirs: pd.DataFrame, columns):
    assert len(ours) == len(theirs)
    for row, (_, ref) in zip(ours, theirs.iterrows()):
        for c in columns:
            if pd.isna(ref[c]):
                assert row[c] is None
            else:
                assert row[c] == pytest.approx(ref[c], rel=1e-12), c


def test_rm_anova_two_way_matches_pingouin(rm2):
    ours = stats.rm_anova(rm2, "Performance", ["Time", "Metric"], "Subject")
    theirs = pg.rm_anova(rm2, dv="Performance", within=["Time", "Metric"], subject="Subject", effsize="np2",
                         correction=True)
    assert_rows_match(ours, theirs, ["F", "p_unc", "p_GG_corr", "np2", "eps"])
    assert [r["Source"] for r in ours] == ["Time", "Metric", "Time * Metric"]


def test_rm_anova_one_way_effect_size_is_partial_eta_squared(rm2):
    means = rm2.groupby(["Subject", "Metric"], as_index=False)["Performance"].mean()
    effect, error = stats.rm_anova(means, "Performance", ["Metric"], "Subject")
    theirs = pg.rm_anova(means, dv="Performance", within="Metric", subject="Subject", effsize="np2",
                         correction=True, detailed=True)
    assert effect["F"] == pytest.approx(theirs.loc[0, "F"], rel=1e-12)
    # partial eta^2 = SS_effect / (SS_effect + SS_error), by hand from the detailed table.
    assert effect["np2"] == pytest.approx(effect["SS"] / (effect["SS"] + error["SS"]), rel=1e-12)
    # Greenhouse-Geisser: p from F with both dfs scaled by epsilon.
    eps = effect["eps"]
    assert effect["p_GG_corr"] == pytest.approx(f_dist.sf(effect["F"], eps * effect["DF"], eps * error["DF"]), rel=1e-9)


def test_pairwise_matches_pingouin_holm_and_dz_by_hand(rm2):
    ours = stats.pairwise(rm2, "Performance", ["Time", "Metric"], "Subject")
    theirs = pg.pairwise_tests(rm2, dv="Performance", within=["Time", "Metric"], subject="Subject", padjust="holm")
    assert_rows_match(ours, theirs, ["T", "dof", "p_unc", "p_corr"])
    # Holm by hand on the Metric family (3 main-effect contrasts).
    family = [r for r in ours if r["Contrast"] == "Metric"]
    p = np.array([r["p_unc"] for r in family])
    order = np.argsort(p)
    holm = np.maximum.accumulate(np.minimum(1, p[order] * (len(p) - np.arange(len(p)))))
    np.testing.assert_allclose([family[i]["p_corr"] for i in order], holm, rtol=1e-12)
    # Cohen's dz = mean(A - B) / SD(A - B) on the participant means averaged over Time.
    wide = rm2.groupby(["Subject", "Metric"])["Performance"].mean().unstack()
    diff = wide[family[0]["A"]] - wide[family[0]["B"]]
    assert family[0]["dz"] == pytest.approx(diff.mean() / diff.std(ddof=1), rel=1e-9)


def test_mixed_model_matches_statsmodels_participant_intercept():
    data = pg.read_dataset("mixed_anova")  # Scores ~ Time x Group, Subject repeated
    ours = stats.mixed_model(data, "Scores ~ C(Time) + C(Group)", "Subject")
    fit = smf.mixedlm("Scores ~ C(Time) + C(Group)", data, groups="Subject").fit(reml=True, method=stats.OPTIMIZERS)
    assert [r["term"] for r in ours["fixed_effects"]] == ["Intercept", "Time=January", "Time=June", "Group=Meditation"]
    np.testing.assert_allclose([r["estimate"] for r in ours["fixed_effects"]], fit.fe_params, rtol=1e-10)
    np.testing.assert_allclose([r["se"] for r in ours["fixed_effects"]], fit.bse_fe, rtol=1e-10)
    # CIs: t with (participants - 1) degrees of freedom, not statsmodels' normal quantile.
    n = data["Subject"].nunique()
    low = fit.fe_params - t_dist.ppf(0.975, n - 1) * fit.bse_fe
    np.testing.assert_allclose([r["ci_low"] for r in ours["fixed_effects"]], low, rtol=1e-10)
    assert all(r["df"] == n - 1 for r in ours["fixed_effects"])
    assert ours["variances"]["Subject (group)"] == pytest.approx(fit.cov_re.iloc[0, 0], rel=1e-10)


def test_mixed_model_crossed_matches_statsmodels_variance_components(rm2):
    ours = stats.mixed_model(rm2, "Performance ~ C(Time)", "Subject", "Metric")
    assert ours["random_effects"].startswith("random Subject intercepts, Metric intercepts"), ours["fallback"]
    fit = smf.mixedlm("Performance ~ C(Time)", rm2.assign(_all=1), groups="_all", re_formula="0",
                      vc_formula={"Subject": "0 + C(Subject)", "Metric": "0 + C(Metric)"}).fit(
        reml=True, method=stats.OPTIMIZERS)
    np.testing.assert_allclose([r["estimate"] for r in ours["fixed_effects"]], fit.fe_params, rtol=1e-8)
    np.testing.assert_allclose([r["se"] for r in ours["fixed_effects"]], fit.bse_fe, rtol=1e-8)
    assert ours["variances"]["Metric"] == pytest.approx(fit.vcomp[0], rel=1e-8)


def test_mean_ci_is_the_t_interval():
    x = pd.Series([1.0, 2.0, 4.0, 7.0])
    ci = stats.mean_ci(x)
    low, high = t_dist.interval(0.95, len(x) - 1, loc=x.mean(), scale=x.std(ddof=1) / np.sqrt(len(x)))
    assert (ci["n"], ci["mean"], ci["ci_low"], ci["ci_high"]) == pytest.approx((4, 3.5, low, high), rel=1e-12)
    assert stats.mean_ci(pd.Series([2.0]))["ci_low"] != stats.mean_ci(pd.Series([2.0]))["ci_low"]  # NaN for n = 1


def test_mixed_model_without_a_second_grouping_is_participant_only(rm2):
    ours = stats.mixed_model(rm2.assign(stim="same"), "Performance ~ C(Time)", "Subject", "stim")
    assert ours["random_effects"] == "random Subject intercepts" and ours["fallback"] == []
    fit = smf.mixedlm("Performance ~ C(Time)", rm2, groups="Subject").fit(reml=True, method=stats.OPTIMIZERS)
    np.testing.assert_allclose([r["estimate"] for r in ours["fixed_effects"]], fit.fe_params, rtol=1e-10)


def test_dz_ci_inverts_the_noncentral_t():
    rng = np.random.default_rng(0)
    scores = pd.Series(rng.normal(0.5, 1.0, 20))
    out = stats.dz_ci(scores)
    n, t = 20, out["t"]
    assert out["dz"] == pytest.approx(scores.mean() / scores.std(), rel=1e-12)
    # The CI's ends are the noncentralities that put the observed t at the 97.5th and 2.5th percentiles.
    assert nct.cdf(t, n - 1, out["dz_low"] * np.sqrt(n)) == pytest.approx(0.975, abs=1e-8)
    assert nct.cdf(t, n - 1, out["dz_high"] * np.sqrt(n)) == pytest.approx(0.025, abs=1e-8)
    # Far out in the tails (large t) scipy's cdf gives NaN; the CI still exists and brackets dz.
    big = stats.dz_ci(pd.Series(rng.normal(3.0, 1.0, 30)))
    assert big["dz_low"] < big["dz"] < big["dz_high"]
    mean_ci = stats.mean_ci(scores)
    assert (out["ci_low"], out["ci_high"]) == (mean_ci["ci_low"], mean_ci["ci_high"])


def test_dz_ci_covers_the_true_dz():
    """The exact method's coverage, checked by simulation (1000 samples of n = 12 normal scores, true dz = 0.8)."""
    rng = np.random.default_rng(1)
    hits = sum(r["dz_low"] <= 0.8 <= r["dz_high"] for r in
               (stats.dz_ci(pd.Series(rng.normal(0.8, 1.0, 12))) for _ in range(1000)))
    assert 935 <= hits <= 965  # 95% +- 2.2 binomial SDs


def test_slope_variance_at_zero_without_warnings_is_kept():
    """No slope variance planted: estimated at zero, a clean fit keeps it (fixed effects unaffected)."""
    rng = np.random.default_rng(2)
    people = np.repeat(np.arange(12), 40)
    x = np.tile([-0.5, 0.5], 240)
    y = 0.5 * x + rng.normal(0, 0.7, 12)[people] + rng.normal(0, 1, len(x))
    data = pd.DataFrame({"y": y, "x_c": x, "p": people.astype(str)})
    out = stats.mixed_model(data, "y ~ x_c", "p", slopes=("x_c",))
    assert out["fallback"] == [] and out["variances"]["p:x_c"] < 1e-6
    assert out["fixed_effects"][1]["ci_low"] < 0.5 < out["fixed_effects"][1]["ci_high"]
