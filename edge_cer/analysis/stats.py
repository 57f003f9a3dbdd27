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
from scipy import optimize, stats
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from edge_cer.affect.json_ready import json_ready

RM_ANOVA_METHOD = ("pingouin.rm_anova: F on participant cell means; effect size partial eta squared "
                   "(np2 = SS_effect / (SS_effect + SS_error), not generalized eta squared); Greenhouse-Geisser "
                   "corrected p (p_GG_corr) and epsilon, Mauchly's W for sphericity (factors with > 2 levels)")
PAIRWISE_METHOD = ("pingouin.pairwise_tests: paired t-tests on participant cell means, Holm (1979) correction "
                   "within each contrast family; Cohen's dz = mean difference / SD of differences = T / sqrt(n)")
MIXED_METHOD = ("statsmodels MixedLM, REML; Wald 95% CIs from the t distribution with (participants - 1) degrees of "
                "freedom (the contrasts vary between participants); random effects as planned, simplified only when a "
                "fit does not converge cleanly (see `random_effects` and `fallback`)")
DZ_METHOD = ("Cohen's dz = mean / SD of the participants' contrast scores (from their cell means); its 95% CI by "
             "inverting the noncentral t distribution of t = dz sqrt(n) (Steiger & Fouladi 1997), exact for normal "
             "scores; the mean's CI is the paired t interval")
# Warnings that make the crossed model's standard errors untrustworthy (a variance on the boundary, zero, is fine).
UNRELIABLE = ("The Hessian matrix", "Maximum Likelihood optimization failed", "Gradient optimization failed")
OPTIMIZERS = ["powell", "lbfgs"]  # statsmodels tries them in order
ZERO_VARIANCE = 1e-4  # a variance component below this share of the residual variance counts as zero
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


def dz_ci(scores: pd.Series, level: float = 0.95) -> dict:
    """A one-sample (paired) effect: mean with its t CI, t, p, and Cohen's dz with its noncentral-t CI (DZ_METHOD)."""
    x = scores.dropna().to_numpy(dtype=float)
    n = len(x)
    out = mean_ci(scores, level)
    if n < 3 or x.std(ddof=1) == 0:
        return {**out, "t": math.nan, "p": math.nan, "dz": math.nan, "dz_low": math.nan, "dz_high": math.nan}
    t = out["mean"] / (x.std(ddof=1) / math.sqrt(n))
    low, high = noncentral_t_ci(t, n - 1, level)
    return {**out, "t": t, "p": 2 * stats.t.sf(abs(t), n - 1), "dz": t / math.sqrt(n),
            "dz_low": low / math.sqrt(n), "dz_high": high / math.sqrt(n)}


def noncentral_t_ci(t: float, df: int, level: float = 0.95) -> tuple[float, float]:
    """The noncentrality parameters whose distributions put `t` at the upper and lower (1 - level) / 2 tails."""
    tail = (1 - level) / 2

    def below(nc: float) -> float:  # P(T <= t | nc), decreasing in nc; scipy gives NaN far out in a tail
        p = stats.nct.cdf(t, df, nc)
        return p if np.isfinite(p) else float(nc < t)

    def solve(target: float) -> float:
        span = 4 * math.sqrt(1 + t * t / (2 * df)) + 1  # a few standard errors of t on each side
        return optimize.brentq(lambda nc: below(nc) - target, t - span, t + span)

    return solve(1 - tail), solve(tail)


def rm_anova(cells: pd.DataFrame, dv: str, within: list[str], subject: str) -> list[dict]:
    table = pg.rm_anova(data=cells, dv=dv, within=within if len(within) > 1 else within[0], subject=subject,
                        effsize="np2", correction=True, detailed=len(within) == 1)
    return rows(table)


def pairwise(cells: pd.DataFrame, dv: str, within: list[str], subject: str) -> list[dict]:
    table = pg.pairwise_tests(data=cells, dv=dv, within=within if len(within) > 1 else within[0],
                              subject=subject, padjust="holm", effsize="cohen")
    if "T" not in table:  # pingouin leaves T out when the paired samples are identical (e.g. scripted sessions)
        table["T"] = np.nan
    table["dz"] = table["T"] / np.sqrt(table["dof"] + 1)  # paired: dof = n - 1
    return rows(table.drop(columns=["cohen"], errors="ignore"))


def readable_term(term: str) -> str:
    """Patsy's "C(strategy, Treatment('look'))[T.reappraise]" -> "strategy=reappraise"; a +-1/2 coded column
    "strategy_c" -> "strategy" (interactions keep ':')."""
    term = re.sub(r"C\((\w+)(?:, Treatment\('[^']*'\))?\)\[T\.([^\]]+)\]", r"\1=\2", term)
    return re.sub(r"\b(\w+)_c\b", r"\1", term)


def mixed_model(data: pd.DataFrame, formula: str, participant: str, stimulus: str | None = None,
                slopes: tuple[str, ...] = (), combinations: dict[str, dict[str, float]] | None = None) -> dict:
    """Fits MIXED_METHOD, starting from participant and stimulus intercepts plus by-participant slopes for
    `slopes` (uncorrelated variance components) and simplifying until a fit converges cleanly: a component whose
    variance is estimated at zero is dropped (Bates et al. 2015), otherwise the stimulus intercept, then the slopes;
    participant intercepts stay. Returns fixed effects and `combinations` of them (name -> {term: weight}) with
    CIs, the variances, the planned and the fitted structure, each simplification with its reason, and every
    convergence warning of the reported fit."""
    components = [f"{participant}:{s}" for s in slopes]
    if stimulus is not None and data[stimulus].nunique() > 1:
        components.insert(0, stimulus)
    planned, fallback = describe_structure(participant, components), []
    while True:
        try:
            fit, trouble = _fit(_build(data, formula, participant, components))
            clean = fit.converged and not any(w.startswith(UNRELIABLE) for w in trouble)
            reason = "; ".join(trouble) or "not converged"
        except (np.linalg.LinAlgError, ValueError) as exc:
            if not components:
                raise
            fit, clean, reason = None, False, f"failed: {exc}"
        if clean or not components:
            break
        variances = dict(zip(fit.model.exog_vc.names, np.atleast_1d(fit.vcomp))) if fit is not None else {}
        zero = [c for c in components if variances.get(c, 1.0) <= ZERO_VARIANCE * fit.scale]
        dropped = zero or [components[0]]
        fallback.append({"structure": describe_structure(participant, components), "reason": reason,
                         "dropped": dropped, "zero_variance": bool(zero)})
        components = [c for c in components if c not in dropped]
    structure = describe_structure(participant, components)
    n_participants = data[participant].nunique()
    df = n_participants - 1
    quantile = stats.t.ppf(0.975, df)
    names = list(fit.fe_params.index)
    cov = fit.cov_params().loc[names, names].to_numpy()

    def row(term: str, weights: np.ndarray) -> dict:
        estimate, se = float(weights @ fit.fe_params.to_numpy()), float(np.sqrt(weights @ cov @ weights))
        t = estimate / se
        return {"term": term, "estimate": estimate, "se": se, "t": t, "df": df, "p": 2 * stats.t.sf(abs(t), df),
                "ci_low": estimate - quantile * se, "ci_high": estimate + quantile * se}

    fixed = [row(readable_term(term), np.eye(len(names))[i]) for i, term in enumerate(names)]
    combined = [row(name, np.array([w.get(readable_term(t), 0.0) for t in names]))
                for name, w in (combinations or {}).items()]
    variances = {"residual": fit.scale}
    if fit.model.k_re:
        variances[f"{participant} (group)"] = float(fit.cov_re.iloc[0, 0])
    variances.update(dict(zip(fit.model.exog_vc.names, np.atleast_1d(fit.vcomp))))
    return json_ready({"formula": formula, "random_effects": structure, "planned": planned,
                       "fallback": fallback, "n_obs": int(fit.nobs), "n_participants": n_participants,
                       "converged": bool(fit.converged), "warnings": trouble, "fixed_effects": fixed,
                       "combinations": combined, "variances": variances, "method": MIXED_METHOD})


def describe_structure(participant: str, components: list[str]) -> str:
    parts = [f"{participant} intercepts"] + [f"{c.split(':')[1]} slopes by {participant}" if ":" in c else
                                             f"{c} intercepts" for c in components]
    return "random " + ", ".join(parts) + (" (variance components, uncorrelated)" if components else "")


def _build(data: pd.DataFrame, formula: str, participant: str, components: list[str]):
    """Without a crossed stimulus: participant groups (random intercept plus slopes as variance components within
    each participant). With it: variance components over one all-rows group, which crossed effects need."""
    slopes = {c: f"0 + {c.partition(':')[2]}" for c in components if ":" in c}
    if len(slopes) == len(components):
        return smf.mixedlm(formula, data, groups=participant, re_formula="1", vc_formula=slopes or None)
    vc = {participant: f"0 + C({participant})"}
    for c in components:
        group, _, slope = c.partition(":")
        vc[c] = f"0 + C({group}):{slope}" if slope else f"0 + C({c})"
    return smf.mixedlm(formula, data.assign(_all=1), groups="_all", re_formula="0", vc_formula=vc)


def _fit(model) -> tuple:
    """REML fit and its convergence warnings. Powell first: the gradient methods statsmodels starts with often stall
    when a variance component is near zero (a common case with random slopes), Powell does not."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fit = model.fit(reml=True, method=OPTIMIZERS)
    return fit, list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)))
