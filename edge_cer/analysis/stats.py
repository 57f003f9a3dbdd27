"""Thin wrappers over pingouin and statsmodels that return plain, JSON-ready rows.

They add nothing to the estimates; tests check that each returns exactly what the library returns on the
library's own example data. What they add is naming: every row says which estimator produced it.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
import pingouin as pg
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from edge_cer.affect.json_ready import json_ready

RM_ANOVA_METHOD = ("pingouin.rm_anova: F on participant cell means; effect size partial eta squared "
                   "(np2 = SS_effect / (SS_effect + SS_error), not generalized eta squared); Greenhouse-Geisser "
                   "corrected p (p_GG_corr) and epsilon, Mauchly's W for sphericity (factors with > 2 levels)")
PAIRWISE_METHOD = ("pingouin.pairwise_tests: paired t-tests on participant cell means, Holm (1979) correction "
                   "within each contrast family; Cohen's dz = mean difference / SD of differences = T / sqrt(n)")
MIXED_METHOD = ("statsmodels MixedLM, REML, Wald 95% CIs; random intercepts for participant and, crossed, "
                "stimulus (variance components over one all-rows group) where that model converges, otherwise "
                "participant only")
# Warnings that make the crossed model's standard errors untrustworthy (a variance on the boundary, zero, is fine).
UNRELIABLE = ("The Hessian matrix", "Maximum Likelihood optimization failed", "Gradient optimization failed")
CI_METHOD = "mean of participant means +/- t(0.975, n - 1) * SD / sqrt(n)"


def rows(frame: pd.DataFrame) -> list[dict]:
    return json_ready(frame.to_dict(orient="records"))


def mean_ci(values: pd.Series, level: float = 0.95) -> dict:
    """Mean with a t confidence interval (CI_METHOD); the CI is NaN for fewer than 2 values."""
    x = values.dropna().to_numpy(dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    half = stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half}


def rm_anova(cells: pd.DataFrame, dv: str, within: list[str], subject: str) -> list[dict]:
    table = pg.rm_anova(data=cells, dv=dv, within=within if len(within) > 1 else within[0], subject=subject,
                        effsize="np2", correction=True, detailed=len(within) == 1)
    return rows(table)


def pairwise(cells: pd.DataFrame, dv: str, within: list[str], subject: str) -> list[dict]:
    table = pg.pairwise_tests(data=cells, dv=dv, within=within if len(within) > 1 else within[0],
                              subject=subject, padjust="holm", effsize="cohen")
    table["dz"] = table["T"] / np.sqrt(table["dof"] + 1)  # paired: dof = n - 1
    return rows(table.drop(columns=["cohen"]))


def readable_term(term: str) -> str:
    """Patsy's "C(strategy, Treatment('look'))[T.reappraise]" -> "strategy=reappraise" (interactions keep ':')."""
    return re.sub(r"C\((\w+)(?:, Treatment\('[^']*'\))?\)\[T\.([^\]]+)\]", r"\1=\2", term)


def mixed_model(data: pd.DataFrame, formula: str, participant: str, stimulus: str | None = None) -> dict:
    """Fits MIXED_METHOD; returns fixed effects (with CIs), variance components, which model was used and every
    convergence warning of the reported fit."""
    fit, trouble, structure, note = None, [], f"participant ({participant}) random intercept", None
    if stimulus is not None and data[stimulus].nunique() > 1:
        crossed = smf.mixedlm(formula, data.assign(_all=1), groups="_all", re_formula="0",
                              vc_formula={participant: f"0 + C({participant})", stimulus: f"0 + C({stimulus})"})
        try:
            fit, trouble = _fit(crossed)
        except (np.linalg.LinAlgError, ValueError) as exc:
            note = f"crossed model failed: {exc}"
        else:
            if fit.converged and not any(w.startswith(UNRELIABLE) for w in trouble):
                structure = f"crossed random intercepts: participant ({participant}) and stimulus ({stimulus})"
            else:
                note = f"crossed model did not converge cleanly: {'; '.join(trouble) or 'not converged'}"
                fit = None
    if fit is None:
        fit, trouble = _fit(smf.mixedlm(formula, data, groups=participant))
    ci = fit.conf_int()
    fixed = [{"term": readable_term(term), "estimate": fit.fe_params[term], "se": fit.bse_fe[term], "z": fit.tvalues[term],
              "p": fit.pvalues[term], "ci_low": ci.loc[term, 0], "ci_high": ci.loc[term, 1]}
             for term in fit.fe_params.index]
    variances = {"residual": fit.scale}
    if fit.model.k_re:
        variances[f"{participant} (group)"] = float(fit.cov_re.iloc[0, 0])
    variances.update(dict(zip(fit.model.exog_vc.names, np.atleast_1d(fit.vcomp))))
    return json_ready({"formula": formula, "random_effects": structure, "note": note, "n_obs": int(fit.nobs),
                       "converged": bool(fit.converged), "warnings": trouble, "fixed_effects": fixed,
                       "variances": variances, "method": MIXED_METHOD})


def _fit(model) -> tuple:
    """REML fit and its convergence warnings (statsmodels retries other optimizers and warns as it goes)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fit = model.fit(reml=True)
    return fit, list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)))
