"""`edge-cer analyze DATA_DIR --out DIR`: the study's statistics from `DATA_DIR/trials.csv`, as JSON and HTML.

    edge-cer analyze data/study --out data/study/analysis
    edge-cer analyze data/study --out out --stimuli stimuli/      # adds SSIM(stimulus, generated picture)

Reads top to bottom: settings, then numbered steps. Estimators are named where they are used and in the JSON.
A step that the data cannot support (one participant, one condition) is recorded as skipped with its reason.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from edge_cer.affect.alignment import alignment, relief
from edge_cer.affect.json_ready import json_ready
from edge_cer.affect.picture import load_rgb, picture_proxies, ssim
from edge_cer.affect.text import afinn_valence, vader_valence
from edge_cer.analysis import report, stats
from edge_cer.analysis.columns import read_trials, write_csv
from edge_cer.errors import EdgeCerError

# Settings.
BASELINES = {"strategy": "describe", "feedback": "none"}  # treatment coding: the 2 x 2 design's active control
MIN_PARTICIPANTS = 3  # rm-ANOVA and paired tests need n - 1 >= 2 error degrees of freedom
RESULTS_FILE, REPORT_FILE, MEASURES_FILE = "results.json", "report.html", "trial_measures.csv"
STIMULUS_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", type=Path, help="data directory holding trials.csv")
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json, report.html and "
                        "trial_measures.csv")
    parser.add_argument("--stimuli", type=Path, default=None,
                        help="directory of stimulus images named <stimulus_id>.png/.jpg; used only for SSIM")
    parser.add_argument("--intention-to-treat", action="store_true",
                        help="analyse every AI-feedback trial as AI feedback, also those that showed no picture "
                             "(default: AI feedback means a picture was shown; the others are counted and left out)")


def run(args: argparse.Namespace) -> int:
    results = analyze(args.data_dir, args.out, stimuli_dir=args.stimuli, intention_to_treat=args.intention_to_treat)
    print(f"{results['n_participants']} participants, {results['n_trials']} trials analysed; "
          f"report: {args.out / REPORT_FILE}, statistics: {args.out / RESULTS_FILE}")
    return 0


def analyze(data_dir: Path, out_dir: Path, stimuli_dir: Path | None = None, intention_to_treat: bool = False) -> dict:
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgeCerError(f"--out {out_dir}: is a file; give a folder for results.json and report.html")
    if stimuli_dir is not None and not Path(stimuli_dir).is_dir():
        raise EdgeCerError(f"--stimuli {stimuli_dir}: not a directory of stimulus images")

    # 1. Read and validate the trial table.
    trials = read_trials(data_dir)

    # 2. Keep the trials that count: completed main trials with both ratings.
    practice = trials["practice"] == 1
    not_completed = ~practice & (trials["status"] != "completed")
    rated = trials["rating_pre"].notna() & trials["rating_post"].notna()
    kept = trials[~practice & ~not_completed & rated].copy()
    if kept.empty:
        raise EdgeCerError(f"{data_dir / 'trials.csv'}: no completed non-practice trial with both ratings")
    excluded = {"practice": int(practice.sum()), "not_completed": int(not_completed.sum()),
                "missing_rating": int((~practice & ~not_completed & ~rated).sum())}
    #    AI feedback means a picture was shown (per protocol), unless intention to treat is asked for: AI trials
    #    whose picture was blocked, late or not made are counted, with their reasons, and left out.
    ai_pictures = picture_counts(kept, intention_to_treat)
    if not intention_to_treat:
        kept = kept[~((kept["feedback"] == "ai") & (kept["picture_shown"] == 0))]
        excluded["ai_without_picture"] = ai_pictures["not_shown"]

    # 3. Per-trial measures the session did not record: text valence (VADER; AFINN as the robustness check),
    #    picture proxies from the picture file, alignment, relief.
    kept["text_valence"] = kept["text_valence"].fillna(kept["transcript"].map(vader_valence))
    kept["text_valence_afinn"] = kept["transcript"].map(afinn_valence).astype(float)
    kept = kept.join(picture_measures(kept, data_dir, stimuli_dir))
    kept["picture_valence"] = kept["picture_valence"].fillna(kept["valence_proxy"])
    kept["alignment"] = kept["alignment"].fillna(pd.Series(
        alignment(kept["text_valence"].to_numpy(), kept["picture_valence"].to_numpy()), index=kept.index))
    kept["relief"] = relief(kept["rating_pre"].to_numpy(), kept["rating_post"].to_numpy())
    kept["condition"] = kept["strategy"] + "/" + kept["feedback"]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(kept, out_dir / MEASURES_FILE)

    # 4. Design: the inferential models use the strategies crossed with every feedback level (the protocol's 2 x 2);
    #    a look/none baseline block appears in the descriptives and plots. Factors with one level drop out; cells
    #    that are not crossed become one `condition` factor.
    crossed = [s for s, g in kept.groupby("strategy") if g["feedback"].nunique() == kept["feedback"].nunique()]
    design = kept[kept["strategy"].isin(crossed)] if len(crossed) > 1 else kept
    factors = [f for f in ("strategy", "feedback") if design[f].nunique() > 1]
    if len(factors) == 2 and design.groupby(factors).ngroups < design["strategy"].nunique() * design["feedback"].nunique():
        factors = ["condition"]
    cells = design.groupby(["participant", *factors], as_index=False)["relief"].mean()
    n_cells = cells.groupby(factors).ngroups if factors else 1
    complete = cells.groupby("participant")["relief"].count().loc[lambda n: n == n_cells].index
    cells = cells[cells["participant"].isin(complete)]
    results = {"data_dir": str(data_dir), "n_participants": int(kept["participant"].nunique()),
               "n_trials": len(kept), "excluded_trials": excluded, "ai_pictures": ai_pictures, "factors": factors,
               "design_conditions": sorted(design["condition"].unique()),
               "n_complete_participants": len(complete)}

    # 5. Descriptives: mean relief per condition, 95% CI over participant means (stats.CI_METHOD).
    participant_means = kept.groupby(["participant", "strategy", "feedback"], as_index=False)["relief"].mean()
    results["condition_means"] = {"method": stats.CI_METHOD, "rows": [
        {"strategy": s, "feedback": f, **stats.mean_ci(group["relief"])}
        for (s, f), group in participant_means.groupby(["strategy", "feedback"])]}

    # 6. Repeated-measures ANOVA and 7. pairwise tests on participant cell means.
    enough = skip_reason(factors, len(complete))
    results["rm_anova"] = ({"skipped": enough} if enough else
                           {"method": stats.RM_ANOVA_METHOD,
                            "rows": stats.rm_anova(cells, "relief", factors, "participant")})
    results["pairwise"] = ({"skipped": enough} if enough else
                           {"method": stats.PAIRWISE_METHOD,
                            "rows": stats.pairwise(cells, "relief", factors, "participant")})

    # 8. Trial-level linear mixed model of relief (treatment coding against BASELINES).
    terms = [coded(f, design) for f in factors] or ["1"]
    mixed_reason = None if design["participant"].nunique() >= MIN_PARTICIPANTS else (
        f"needs at least {MIN_PARTICIPANTS} participants")
    results["mixed_model"] = ({"skipped": mixed_reason} if mixed_reason else stats.mixed_model(
        design, "relief ~ " + " * ".join(terms), "participant", "stimulus_id"))

    # 9. Alignment -> relief on AI-feedback trials, within strategy (strategy as fixed effect when it varies).
    aligned = kept[(kept["feedback"] == "ai") & kept["alignment"].notna()]
    controls = " + " + coded("strategy", aligned) if aligned["strategy"].nunique() > 1 else ""
    if aligned["participant"].nunique() < MIN_PARTICIPANTS or aligned["alignment"].nunique() < 3:
        results["alignment_model"] = {"skipped": f"needs AI-feedback trials with alignment from at least "
                                                 f"{MIN_PARTICIPANTS} participants"}
    else:
        results["alignment_model"] = stats.mixed_model(aligned, "relief ~ alignment" + controls, "participant",
                                                       "stimulus_id")

    # 10. Manipulation checks: reappraisals should sound more positive than descriptions (both lexicons).
    spoken = kept[kept["strategy"].isin(["reappraise", "describe"]) & kept["text_valence"].notna()]
    results["manipulation_checks"] = {}
    for measure in ("text_valence", "text_valence_afinn"):
        check = spoken.groupby(["participant", "strategy"], as_index=False)[measure].mean()
        both = check.groupby("participant")[measure].count().loc[lambda n: n == 2].index
        check = check[check["participant"].isin(both)]
        results["manipulation_checks"][measure] = (
            {"method": stats.PAIRWISE_METHOD, "rows": stats.pairwise(check, measure, ["strategy"], "participant")}
            if len(both) >= MIN_PARTICIPANTS else
            {"skipped": f"needs reappraise and describe transcripts from at least {MIN_PARTICIPANTS} participants"})
    results["lexicon_agreement"] = {"method": "Pearson r of VADER and AFINN valence over transcribed trials",
                                    "r": spoken["text_valence"].corr(spoken["text_valence_afinn"]),
                                    "n": len(spoken)}

    # 11. Write the statistics and the report.
    results = json_ready(results)
    (out_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2, allow_nan=False))
    report.write(out_dir / REPORT_FILE, results, kept)
    return results


def picture_counts(trials: pd.DataFrame, intention_to_treat: bool) -> dict:
    """How many AI-feedback trials showed a picture, and why the others did not (picture_shown missing, as in data
    recorded before it existed, counts as shown)."""
    ai = trials[trials["feedback"] == "ai"]
    missing = ai[ai["picture_shown"] == 0]
    reasons = missing["no_picture_reason"].astype("string").fillna("not recorded").str.split(":").str[0].value_counts()
    return {"ai_trials": len(ai), "shown": len(ai) - len(missing), "not_shown": len(missing),
            "reasons": {str(k): int(v) for k, v in reasons.items()},
            "analysed_as": "intention to treat: every AI-feedback trial" if intention_to_treat else
            "per protocol: AI-feedback trials that showed a picture"}


def coded(factor: str, data: pd.DataFrame) -> str:
    """A patsy term, treatment-coded against the factor's baseline when that level is in `data`."""
    baseline = BASELINES.get(factor)
    present = baseline is not None and (data[factor] == baseline).any()
    return f"C({factor}, Treatment('{baseline}'))" if present else f"C({factor})"


def skip_reason(factors: list[str], n_complete: int) -> str | None:
    if not factors:
        return "only one condition in the data"
    if n_complete < MIN_PARTICIPANTS:
        return f"needs at least {MIN_PARTICIPANTS} participants with every condition (have {n_complete})"
    return None


def picture_measures(kept: pd.DataFrame, data_dir: Path, stimuli_dir: Path | None) -> pd.DataFrame:
    """Proxies (and SSIM against the stimulus when its image is in stimuli_dir) for rows with a picture file."""
    out = pd.DataFrame(index=kept.index, columns=["valence_proxy", "red_share", "colourfulness", "ssim"], dtype=float)
    for index, name, stimulus_id in kept[["picture_file", "stimulus_id"]].dropna(subset=["picture_file"]).itertuples():
        path = data_dir / name
        if not path.is_file():
            raise EdgeCerError(f"{data_dir / 'trials.csv'}: picture_file {name!r} not found under {data_dir}")
        rgb = load_rgb(path)
        proxies = picture_proxies(rgb)
        out.loc[index, ["valence_proxy", "red_share", "colourfulness"]] = (
            proxies.valence_proxy, proxies.red_share, proxies.colourfulness)
        stimulus = stimulus_file(stimuli_dir, stimulus_id)
        if stimulus is not None:
            out.loc[index, "ssim"] = ssim(load_rgb(stimulus), rgb)
    return out


def stimulus_file(stimuli_dir: Path | None, stimulus_id) -> Path | None:
    if stimuli_dir is None or pd.isna(stimulus_id):
        return None
    return next((p for ext in STIMULUS_EXTENSIONS if (p := Path(stimuli_dir) / f"{stimulus_id}{ext}").is_file()), None)
