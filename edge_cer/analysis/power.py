"""`edge-cer power`: power and CI coverage by simulation, the full analysis per simulated study.

    edge-cer power --effects "reappraise=0.7,ai=0.4" --participants 12,16,20,24,32 --studies 200 --out power/
    edge-cer power --effects "reappraise=0.7" --participants 20 --studies 200 --out null_ai/   # false positives

Each study is `simulate` (integer ratings, losses, AI trials without a picture) then `analyze` on the written
trials.csv, in parallel over the available cores. For every contrast the analysis reports, per N: power (share of
studies with p < alpha), the 95% CI's coverage of the true value on the recorded scale (truth.json's), the sign
recovery, the mean estimate, and how often the planned random-effects structure had to give way. Writes
power.csv (per N and contrast), studies.csv (per study and contrast), power.md and power.png.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

from edge_cer.analysis import simulate as sim
from edge_cer.analysis.columns import write_trials
from edge_cer.errors import EdgeCerError

# contrast -> the latent effects that make it non-zero (all zero: a true null, so its "power" is a false-positive rate)
PLANTED = {"strategy": ("reappraise", "reappraise:ai"), "feedback": ("ai", "reappraise:ai"),
           "strategy:feedback": ("reappraise:ai",), "feedback | reappraise": ("ai", "reappraise:ai"),
           "feedback | describe": ("ai",), "strategy | ai": ("reappraise", "reappraise:ai"),
           "strategy | none": ("reappraise",), "alignment": ("alignment",)}
CSV, STUDIES, TABLE, PLOT = "power.csv", "studies.csv", "power.md", "power.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--effects", default=sim.DEFAULT_EFFECTS,
                        help=f"latent relief effects as for `simulate`: {', '.join(sim.EFFECT_NAMES)}")
    parser.add_argument("--participants", default="12,16,20,24,32", help="sample sizes, comma-separated")
    parser.add_argument("--studies", type=int, default=200, help="simulated studies per sample size")
    parser.add_argument("--alpha", type=float, default=0.05, help="two-sided significance level")
    parser.add_argument("--intention-to-treat", action="store_true",
                        help="analyse AI trials without a picture as assigned (as `analyze --intention-to-treat`)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    parser.add_argument("--seed", type=int, default=0, help="first study's seed; study i uses seed + i")
    sim.add_model_arguments(parser, sim.Model())
    parser.add_argument("--out", type=Path, required=True, help="directory for power.csv/.md/.png and studies.csv")


def run(args: argparse.Namespace) -> int:
    try:
        sizes = sorted({int(n) for n in args.participants.split(",") if n.strip()})
    except ValueError:
        raise EdgeCerError(f"--participants {args.participants!r}: give whole numbers, e.g. 12,16,20,24,32") from None
    if not sizes or min(sizes) < 3 or args.studies < 1:
        raise EdgeCerError("--participants needs sizes of at least 3 and --studies at least 1")
    model, protocol = sim.model_from(args)
    started = time.monotonic()
    studies = run_studies(model, protocol, sizes, args.studies, seed=args.seed, workers=args.workers,
                          intention_to_treat=args.intention_to_treat, progress=True)
    summary = summarize(studies, args.alpha)
    args.out.mkdir(parents=True, exist_ok=True)
    studies.to_csv(args.out / STUDIES, index=False)
    summary.to_csv(args.out / CSV, index=False)
    header = (f"`edge-cer power --effects \"{args.effects}\" --participants {args.participants} --studies "
              f"{args.studies} --seed {args.seed}{' --intention-to-treat' if args.intention_to_treat else ''}`: "
              f"{len(sizes) * args.studies} studies in {time.monotonic() - started:.0f} s on {args.workers} "
              f"worker(s). Latent model: {describe(model)}.")
    (args.out / TABLE).write_text(markdown(summary, header, args.alpha))
    plot(summary, args.out / PLOT, args.alpha)
    print(f"wrote {args.out / TABLE}, {args.out / CSV}, {args.out / PLOT} and {args.out / STUDIES}")
    return 0


def describe(model: sim.Model) -> str:
    effects = ", ".join(f"{k}={v:g}" for k, v in model.effects.items() if v)
    rest = ", ".join(f"{k}={v:g}" for k, v in vars(model).items() if k != "effects")
    return f"{effects or 'no effects'}; {rest}"


def run_studies(model: sim.Model, protocol, sizes: list[int], studies: int, *, seed: int = 0, workers: int = 1,
                intention_to_treat: bool = False, progress: bool = False) -> pd.DataFrame:
    """One row per study and contrast: estimate, CI, p, the truth it should cover, dz and the model used."""
    truth = sim.truth(model, protocol, seed)
    scale = truth["intention_to_treat" if intention_to_treat else "observed_scale"]
    truths = {name: c["estimate"] for name, c in scale["contrasts"].items()}
    if "alignment_slope" in scale:
        truths["alignment"] = scale["alignment_slope"]
    nulls = {name: not any(model.effects[e] for e in PLANTED[name]) for name in truths}
    jobs = [(n, seed + i) for n in sizes for i in range(studies)]
    rows = []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool, _progress(progress, len(jobs)) as advance:
        futures = [pool.submit(one_study, model, protocol, n, s, intention_to_treat) for n, s in jobs]
        for future in as_completed(futures):
            rows.extend(future.result())
            advance()
    frame = pd.DataFrame(rows)
    frame["truth"] = frame["contrast"].map(truths)
    frame["null"] = frame["contrast"].map(nulls)
    return frame[frame["truth"].notna()].sort_values(["participants", "study", "contrast"], ignore_index=True)


def one_study(model: sim.Model, protocol, participants: int, seed: int, intention_to_treat: bool) -> list[dict]:
    """Simulate, write trials.csv, analyse it as a lab would; the contrasts' estimates (failures are rows too)."""
    from edge_cer.analysis.analyze import analyze  # in the worker: the parent needs only simulate's truth

    base = {"participants": participants, "study": seed}
    with tempfile.TemporaryDirectory(prefix="edge-cer-power-") as tmp:
        write_trials(sim.simulate_trials(participants, model, protocol, seed), tmp)
        try:
            results = analyze(Path(tmp), Path(tmp) / "out", intention_to_treat=intention_to_treat, report_html=False,
                              sensitivity_analyses=False)
        except Exception as exc:  # a study the analysis cannot handle is a result, not a crash of the whole run
            return [{**base, "contrast": "feedback", "error": f"{type(exc).__name__}: {exc}"}]
    mm = results["mixed_model"]
    if "skipped" in mm:
        return [{**base, "contrast": "feedback", "error": mm["skipped"]}]
    dz = {r["contrast"]: r for r in results["effect_sizes"].get("rows", [])}
    planned = not mm["fallback"]
    rows = [{**base, "contrast": r["term"], "estimate": r["estimate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
             "p": r["p"], "dz": dz.get(r["term"], {}).get("dz"), "dz_p": dz.get(r["term"], {}).get("p"),
             "planned_model": planned, "random_effects": mm["random_effects"]}
            for r in mm["fixed_effects"] + mm["combinations"] if r["term"] != "Intercept"]
    align = results["alignment_model"]
    if "fixed_effects" in align:
        r = next(r for r in align["fixed_effects"] if r["term"] == "alignment")
        rows.append({**base, "contrast": "alignment", "estimate": r["estimate"], "ci_low": r["ci_low"],
                     "ci_high": r["ci_high"], "p": r["p"], "planned_model": not align["fallback"],
                     "random_effects": align["random_effects"]})
    return rows


def summarize(studies: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    ok = studies[studies.get("error", pd.Series(index=studies.index, dtype=object)).isna()] if "error" in studies \
        else studies
    ok = ok.assign(significant=ok["p"] < alpha, covered=(ok["ci_low"] <= ok["truth"]) & (ok["truth"] <= ok["ci_high"]),
                   right_sign=np.sign(ok["estimate"]) == np.sign(ok["truth"]),
                   dz_significant=ok["dz_p"].lt(alpha).where(ok["dz_p"].notna()) if "dz_p" in ok else np.nan)
    grouped = ok.groupby(["participants", "contrast"], sort=True)
    out = grouped.agg(truth=("truth", "first"), null=("null", "first"), studies=("study", "nunique"),
                      power=("significant", "mean"), dz_power=("dz_significant", "mean"),
                      coverage=("covered", "mean"), sign_recovered=("right_sign", "mean"),
                      mean_estimate=("estimate", "mean"), mean_dz=("dz", "mean"),
                      planned_model=("planned_model", "mean")).reset_index()
    failed = studies[studies["error"].notna()].groupby("participants")["study"].nunique() if "error" in studies \
        else pd.Series(dtype=int)
    out["failed_studies"] = out["participants"].map(failed).fillna(0).astype(int)
    return out


def markdown(summary: pd.DataFrame, header: str, alpha: float) -> str:
    lines = [f"# Power and CI coverage by simulation\n\n{header}\n",
             f"power = share of studies with p < {alpha:g} (for a true null: the false-positive rate); coverage = "
             "share of 95% CIs that contain the true value on the recorded 1-9 scale (truth.json); sign = share of "
             "estimates with the true sign; +- = the coverage's Monte Carlo SE (binomial); planned = share of studies where the planned random-effects structure "
             "converged cleanly. Mixed-model contrasts; dz power from the paired t of participant cell means.\n",
             "| N | contrast | studies | truth | power | dz power | coverage | +- | sign | mean estimate | mean dz | "
             "planned | failed |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in summary.itertuples():
        name = (f"{r.contrast} (null)" if r.null else r.contrast).replace("|", "\\|")
        mc_se = np.sqrt(r.coverage * (1 - r.coverage) / r.studies)
        lines.append(f"| {r.participants} | {name} | {r.studies} | {r.truth:.3f} | {r.power:.3f} | {_f(r.dz_power)} | "
                     f"{r.coverage:.3f} | {mc_se:.3f} | {'' if r.null else f'{r.sign_recovered:.3f}'} | {r.mean_estimate:.3f} | "
                     f"{_f(r.mean_dz)} | {r.planned_model:.2f} | {r.failed_studies} |")
    return "\n".join(lines) + "\n"


def _f(value) -> str:
    return "" if pd.isna(value) else f"{value:.3f}"


def plot(summary: pd.DataFrame, path: Path, alpha: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.set_title("Power")
    for contrast, group in summary.groupby("contrast", sort=False):
        style = "--" if group["null"].iloc[0] else "-"
        label = f"{contrast} (null)" if group["null"].iloc[0] else f"{contrast} (true {group['truth'].iloc[0]:.2f})"
        for ax, column in ((left, "power"), (right, "coverage")):  # bars: binomial Monte Carlo SE
            share = group[column]
            ax.errorbar(group["participants"], share, yerr=np.sqrt(share * (1 - share) / group["studies"]),
                        fmt=style, marker="o", capsize=3, label=label if ax is left else contrast)
    left.axhline(0.8, color="grey", lw=0.7, ls=":")
    left.axhline(alpha, color="grey", lw=0.7, ls=":")
    left.set(xlabel="participants", ylabel=f"power (p < {alpha:g})", ylim=(0, 1.02), title="Power")
    right.axhspan(0.93, 0.97, color="tab:green", alpha=0.12, label="93-97%")
    right.axhline(0.95, color="grey", lw=0.7)
    right.set(xlabel="participants", ylabel="95% CI coverage", ylim=(min(0.8, summary["coverage"].min() - 0.03), 1.01),
              title="CI coverage of the truth")
    for ax in (left, right):
        ax.set_xticks(sorted(summary["participants"].unique()))
    left.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _progress:
    """A rich progress bar (studies done, rate, time left), or nothing."""

    def __init__(self, show: bool, total: int):
        self.show, self.total = show, total

    def __enter__(self):
        if not self.show:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.bar = Progress(TextColumn("simulated studies"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn())
        self.bar.start()
        task = self.bar.add_task("studies", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc):
        if self.show:
            self.bar.stop()
