"""`edge-cer analyze DATA_DIR --out DIR`: the study's statistics from `DATA_DIR/trials.csv`, as JSON and HTML.

    edge-cer analyze data/study --out data/study/analysis
    edge-cer analyze data/study --out out --stimuli stimuli/      # adds SSIM(stimulus, generated picture)
    edge-cer analyze data/study --out itt --intention-to-treat    # AI trials count as assigned, picture or not

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
from edge_cer.analysis import contrasts, methods, report, stats
from edge_cer.analysis.columns import read_trials, write_csv
from edge_cer.errors import EdgeCerError
from edge_cer.session.data import list_sessions, read_session
from edge_cer.session.protocol import Protocol, load_protocol, parse_protocol

# Settings.
MIN_PARTICIPANTS = 3  # rm-ANOVA and paired tests need n - 1 >= 2 error degrees of freedom
RESULTS_FILE, REPORT_FILE, MEASURES_FILE = "results.json", "report.html", "trial_measures.csv"
STIMULUS_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
NO_PICTURE = "AI trial without a shown picture"
EXCLUSIONS = ("practice trial", "trial not completed (skipped or aborted)", "no pre rating (timed out)",
              "no post rating (timed out)", NO_PICTURE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", type=Path, help="data directory holding trials.csv")
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json, report.html and "
                        "trial_measures.csv")
    parser.add_argument("--stimuli", type=Path, default=None,
                        help="directory of stimulus images named <stimulus_id>.png/.jpg; used only for SSIM")
    parser.add_argument("--protocol", type=Path, default=None,
                        help="protocol TOML for the methods paragraph (default: the one stored with the sessions in "
                             "DATA_DIR, else the shipped default, and the report says so)")
    parser.add_argument("--intention-to-treat", action="store_true",
                        help="analyse AI trials without a shown picture as AI feedback (as assigned); by default "
                             "they are left out, so AI feedback means a picture was shown")


def run(args: argparse.Namespace) -> int:
    results = analyze(args.data_dir, args.out, stimuli_dir=args.stimuli, protocol_path=args.protocol,
                      intention_to_treat=args.intention_to_treat)
    print(f"{results['n_participants']} participants, {results['n_trials']} trials analysed; "
          f"report: {args.out / REPORT_FILE}, statistics: {args.out / RESULTS_FILE}")
    return 0


def analyze(data_dir: Path, out_dir: Path, stimuli_dir: Path | None = None, protocol_path: Path | None = None,
            intention_to_treat: bool = False, report_html: bool = True, sensitivity_analyses: bool = True) -> dict:
    """`report_html` and `sensitivity_analyses` off: the statistics only (for `edge-cer power`'s many studies)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgeCerError(f"--out {out_dir}: is a file; give a folder for results.json and report.html")
    if stimuli_dir is not None and not Path(stimuli_dir).is_dir():
        raise EdgeCerError(f"--stimuli {stimuli_dir}: not a directory of stimulus images")

    # 1. Read and validate the trial table; the protocol for the methods paragraph.
    trials = read_trials(data_dir)
    protocol, protocol_source = find_protocol(data_dir, protocol_path)

    # 2. Keep the trials that count: completed main trials with both ratings, and (unless intention to treat)
    #    AI feedback only where a picture was shown. Each left-out trial is counted under its first reason.
    reasons = exclusion_masks(trials)
    left_out, kept_mask = {}, pd.Series(True, index=trials.index)
    for reason in EXCLUSIONS:
        hit = kept_mask & reasons[reason]
        left_out[reason] = hit
        if reason != NO_PICTURE or not intention_to_treat:
            kept_mask &= ~hit
    candidates = trials[kept_mask | left_out[NO_PICTURE]].copy()  # what either AI handling could analyse
    if not kept_mask.any():
        raise EdgeCerError(f"{data_dir / 'trials.csv'}: no completed non-practice trial with both ratings")
    exclusions = [{"reason": r, "trials": int(m.sum()), "participants": int(trials.loc[m, "participant"].nunique()),
                   "left_out": r != NO_PICTURE or not intention_to_treat} for r, m in left_out.items()]

    # 3. Per-trial measures the session did not record: text valence (VADER; AFINN as the robustness check),
    #    picture proxies from the picture file, alignment, relief.
    said = candidates["transcript"]
    candidates["text_valence"] = candidates["text_valence"].fillna(said.map({t: vader_valence(t) for t in said.unique()}))
    candidates["text_valence_afinn"] = said.map({t: afinn_valence(t) for t in said.unique()}).astype(float)
    candidates = candidates.join(picture_measures(candidates, data_dir, stimuli_dir))
    candidates["picture_valence"] = candidates["picture_valence"].fillna(candidates["valence_proxy"])
    candidates["alignment"] = candidates["alignment"].fillna(pd.Series(alignment(
        candidates["text_valence"].to_numpy(), candidates["picture_valence"].to_numpy()), index=candidates.index))
    candidates["relief"] = relief(candidates["rating_pre"].to_numpy(), candidates["rating_post"].to_numpy())
    candidates["condition"] = candidates["strategy"] + "/" + candidates["feedback"]
    kept = candidates.loc[kept_mask[candidates.index]]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(kept, out_dir / MEASURES_FILE)

    # 4. Design: the inferential models use the strategies crossed with every feedback level (the protocol's 2 x 2);
    #    a look/none baseline block appears in the descriptives and plots. Factors with one level drop out; cells
    #    that are not crossed become one `condition` factor.
    design, factors = design_of(kept)
    cells = design.groupby(["participant", *factors], as_index=False)["relief"].mean()
    n_cells = cells.groupby(factors).ngroups if factors else 1
    complete = cells.groupby("participant")["relief"].count().loc[lambda n: n == n_cells].index
    cells = cells[cells["participant"].isin(complete)]
    ai_trials = trials["feedback"].eq("ai").fillna(False) & reasons["counted"]
    results = {"data_dir": str(data_dir), "n_participants": int(kept["participant"].nunique()),
               "n_trials": len(kept), "exclusions": exclusions, "factors": factors,
               "design_conditions": sorted(design["condition"].unique()),
               "n_complete_participants": len(complete),
               "ai_feedback": {
                   "handling": ("intention to treat: AI trials count as AI feedback whether or not a picture was "
                                "shown") if intention_to_treat else
                               "AI feedback = a picture was shown; AI trials without one are left out",
                   "intention_to_treat": intention_to_treat,
                   "ai_trials": int(ai_trials.sum()), "without_picture": int(left_out[NO_PICTURE].sum()),
                   "reasons": {str(k): int(v) for k, v in trials.loc[left_out[NO_PICTURE], "no_picture_reason"]
                               .fillna("not recorded").str.split(":").str[0].value_counts().items()},
                   "by_source": {str(k): int(v) for k, v in
                                 trials.loc[ai_trials, "feedback_source"].fillna("not recorded").value_counts().items()}},
               "protocol": {"name": protocol.name, "source": protocol_source, "sha256": protocol.sha256}}

    # 5. Descriptives: mean relief per condition, 95% CI over participant means (stats.CI_METHOD); ratings at the
    #    scale's ends, where relief is censored.
    participant_means = kept.groupby(["participant", "strategy", "feedback"], as_index=False)["relief"].mean()
    results["condition_means"] = {"method": stats.CI_METHOD, "rows": [
        {"strategy": s, "feedback": f, **stats.mean_ci(group["relief"])}
        for (s, f), group in participant_means.groupby(["strategy", "feedback"])]}
    low, high = protocol.rating.low, protocol.rating.high
    results["scale_ends"] = {"low": low, "high": high, "pre_at_high": float((kept["rating_pre"] == high).mean()),
                             "post_at_low": float((kept["rating_post"] == low).mean()),
                             "pre_at_low": float((kept["rating_pre"] == low).mean()),
                             "post_at_high": float((kept["rating_post"] == high).mean())}

    # 6. Repeated-measures ANOVA and 7. pairwise tests on participant cell means.
    enough = skip_reason(factors, len(complete))
    results["rm_anova"] = ({"skipped": enough} if enough else
                           {"method": stats.RM_ANOVA_METHOD,
                            "rows": stats.rm_anova(cells, "relief", factors, "participant")})
    results["pairwise"] = ({"skipped": enough} if enough else
                           {"method": stats.PAIRWISE_METHOD,
                            "rows": stats.pairwise(cells, "relief", factors, "participant")})

    # 8. Trial-level linear mixed model of relief, factors coded +-1/2 (contrasts.py), with simple effects; and
    #    9. the same contrasts as effect sizes (dz with CIs) from participant cell means.
    results["mixed_model"], results["effect_sizes"] = contrast_models(design, factors)

    # 10. Sensitivity: the AI effect under the other AI-trial handling and without ratings at the scale's ends.
    results["sensitivity"] = (sensitivity(candidates, kept, intention_to_treat, low, high) if sensitivity_analyses
                              else {"skipped": "not requested"})

    # 11. Alignment -> relief on AI-feedback trials with a picture, within strategy.
    aligned = kept[(kept["feedback"] == "ai") & kept["alignment"].notna()]
    controls = " + " + contrasts.coded_term("strategy", aligned) if aligned["strategy"].nunique() > 1 else ""
    if aligned["participant"].nunique() < MIN_PARTICIPANTS or aligned["alignment"].nunique() < 3:
        results["alignment_model"] = {"skipped": f"needs AI-feedback trials with alignment from at least "
                                                 f"{MIN_PARTICIPANTS} participants"}
    else:
        results["alignment_model"] = stats.mixed_model(contrasts.with_codes(aligned), "relief ~ alignment" + controls,
                                                       "participant", "stimulus_id")

    # 12. Manipulation checks: reappraisals should sound more positive than descriptions (both lexicons).
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

    # 13. The methods paragraph, then write the statistics and the report.
    results = json_ready(results)
    results["methods"] = methods.paragraph(protocol, protocol_source, results)
    (out_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2, allow_nan=False))
    if report_html:
        report.write(out_dir / REPORT_FILE, results, kept)
    return results


def exclusion_masks(trials: pd.DataFrame) -> dict[str, pd.Series]:
    main = trials["practice"] != 1
    completed = trials["status"] == "completed"
    no_picture = trials["feedback"].eq("ai").fillna(False) & (trials["picture_shown"] == 0)
    masks = dict(zip(EXCLUSIONS, (~main, main & ~completed, trials["rating_pre"].isna(),
                                  trials["rating_post"].isna(), no_picture)))
    masks["counted"] = main & completed & trials["rating_pre"].notna() & trials["rating_post"].notna()
    return masks


def design_of(kept: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    crossed = [s for s, g in kept.groupby("strategy") if g["feedback"].nunique() == kept["feedback"].nunique()]
    design = kept[kept["strategy"].isin(crossed)] if len(crossed) > 1 else kept
    factors = [f for f in ("strategy", "feedback") if design[f].nunique() > 1]
    if len(factors) == 2 and design.groupby(factors).ngroups < design["strategy"].nunique() * design["feedback"].nunique():
        factors = ["condition"]
    return design, factors


def contrast_models(design: pd.DataFrame, factors: list[str]) -> tuple[dict, dict]:
    """The mixed model's contrasts and the same contrasts as dz from participant cell means."""
    if design["participant"].nunique() < MIN_PARTICIPANTS:
        reason = {"skipped": f"needs at least {MIN_PARTICIPANTS} participants"}
        return reason, reason
    coding = contrasts.coding(design, factors)
    model = stats.mixed_model(contrasts.with_codes(design), coding.formula, "participant", "stimulus_id",
                              slopes=coding.slopes, combinations=coding.combinations)
    model["meanings"] = coding.meanings
    model["coding"] = coding.description
    scores = contrasts.participant_scores(design, coding)
    effect_sizes = ({"skipped": f"needs at least {MIN_PARTICIPANTS} participants with every condition"}
                    if scores.shape[0] < MIN_PARTICIPANTS else
                    {"method": stats.DZ_METHOD, "rows": [{"contrast": name, "meaning": coding.meanings[name],
                                                          **stats.dz_ci(scores[name])} for name in scores]})
    return model, effect_sizes


def sensitivity(candidates: pd.DataFrame, kept: pd.DataFrame, intention_to_treat: bool, low: int, high: int) -> dict:
    """The AI effect side by side: the main analysis, the other AI-trial handling, no ratings at the scale's ends."""
    other = candidates if not intention_to_treat else candidates[~((candidates["feedback"] == "ai")
                                                                    & (candidates["picture_shown"] == 0))]
    inside = kept[(kept["rating_pre"] != high) & (kept["rating_post"] != low)]
    variants = [("main analysis", kept),
                ("AI trials without a picture left out" if intention_to_treat else
                 "intention to treat (AI trials without a picture counted as AI feedback)", other),
                (f"without trials rated {high} before or {low} after (censored relief)", inside)]
    rows = []
    for name, trials in variants:
        design, factors = design_of(trials)
        if "feedback" not in factors:
            return {"skipped": "the design has no AI-feedback factor"}
        model, sizes = contrast_models(design, factors)
        if "skipped" in model:
            return {"skipped": model["skipped"]}
        fixed = {r["term"]: r for r in model["fixed_effects"] + model["combinations"]}
        dz = {r["contrast"]: r for r in sizes.get("rows", [])}
        rows.append({"analysis": name, "trials": len(design), "participants": int(design["participant"].nunique()),
                     "random_effects": model["random_effects"],
                     **{term: {**{k: fixed[term][k] for k in ("estimate", "ci_low", "ci_high", "p")},
                               **{k: dz.get(term, {}).get(k) for k in ("dz", "dz_low", "dz_high")}}
                        for term in contrasts.HEADLINE if term in fixed}})
    return {"terms": [t for t in contrasts.HEADLINE if t in rows[0]], "rows": rows}


def find_protocol(data_dir: Path, path: Path | None) -> tuple[Protocol, str]:
    """The protocol the data were recorded with: --protocol, else the sessions' own, else the shipped default."""
    if path is not None:
        return load_protocol(path), str(path)
    for info in list_sessions(data_dir):
        meta, _, _ = read_session(info.folder)
        if meta.get("protocol"):
            return parse_protocol(meta["protocol"], f"session {info.code}"), f"stored with session {info.code}"
    return load_protocol(), "the shipped default (no protocol stored in DATA_DIR; pass --protocol)"


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
