"""The analysis report: one self-contained HTML file (plots embedded as PNG data URIs, no scripts, no fetches)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on lab servers or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f2f2f2}td.text{text-align:left}.method{color:#555;font-size:.9em}.skipped{color:#a40}
img{max-width:100%}"""


def write(path: Path, results: dict, trials: pd.DataFrame) -> None:
    sections = [
        f"<h1>edge-cer analysis</h1><p>{html.escape(results['data_dir'])}: {results['n_participants']} "
        f"participants, {results['n_trials']} trials analysed; excluded: {_inline(results['excluded_trials'])}. "
        "Relief = rating_pre - rating_post (negative affect, 1-9): higher is better.</p>",
        _pictures_line(results["ai_pictures"]),
        _section("Relief per condition", results["condition_means"], ["strategy", "feedback", "n", "mean", "ci_low",
                                                                       "ci_high"]),
        _figure(_condition_plot(results["condition_means"]["rows"])),
        _figure(_participant_plot(trials)),
        _section("Repeated-measures ANOVA", results["rm_anova"],
                 ["Source", "ddof1", "ddof2", "F", "p_unc", "p_GG_corr", "np2", "eps", "sphericity", "p_spher"]),
        _section("Pairwise comparisons", results["pairwise"],
                 ["Contrast", *results["factors"], "A", "B", "T", "dof", "p_unc", "p_corr", "dz"]),
        _section("Linear mixed model of relief", results["mixed_model"],
                 ["term", "estimate", "se", "z", "p", "ci_low", "ci_high"], rows_key="fixed_effects"),
        _section("Alignment and relief (AI-feedback trials)", results["alignment_model"],
                 ["term", "estimate", "se", "z", "p", "ci_low", "ci_high"], rows_key="fixed_effects"),
        _figure(_alignment_plot(trials, results["alignment_model"])),
        *(_section(f"Manipulation check: {name}", check, ["Contrast", "A", "B", "T", "dof", "p_unc", "dz"])
          for name, check in results["manipulation_checks"].items()),
        f"<p class=method>Lexicon agreement (VADER vs AFINN): r = {_fmt(results['lexicon_agreement']['r'])}, "
        f"n = {results['lexicon_agreement']['n']}. Picture valence from pixels is a proxy "
        "(Valdez &amp; Mehrabian brightness/saturation), not a rating.</p>",
    ]
    path.write_text(f"<!doctype html><html><head><meta charset=utf-8><title>edge-cer analysis</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(s for s in sections if s)}</body></html>")


def _pictures_line(counts: dict) -> str:
    reasons = f" ({html.escape(_inline(counts['reasons']))})" if counts["reasons"] else ""
    return (f"<p>AI-feedback trials that showed a picture: {counts['shown']} of {counts['ai_trials']}; "
            f"without a picture: {counts['not_shown']}{reasons}. Analysed as {html.escape(counts['analysed_as'])}.</p>")


def _section(title: str, block: dict, columns: list[str], rows_key: str = "rows") -> str:
    head = f"<h2>{html.escape(title)}</h2>"
    if "skipped" in block:
        return head + f"<p class=skipped>Skipped: {html.escape(block['skipped'])}</p>"
    rows = block[rows_key]
    columns = [c for c in columns if any(c in r for r in rows)]
    extra = "".join(f"<p class=method>{html.escape(str(block[k]))}</p>"
                    for k in ("formula", "random_effects", "note", "warnings") if block.get(k))
    if block.get("variances"):
        extra += f"<p class=method>Variances: {html.escape(_inline(block['variances']))}</p>"
    body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in columns) + "</tr>" for r in rows)
    return (head + "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>" + body
            + f"</table>{extra}<p class=method>{html.escape(block['method'])}</p>")


def _cell(value) -> str:
    if isinstance(value, str):
        return f"<td class=text>{html.escape(value)}</td>"
    return f"<td>{_fmt(value)}</td>"


def _fmt(value) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return html.escape(str(value))


def _inline(mapping: dict) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in mapping.items())


def _figure(fig) -> str:
    if fig is None:
        return ""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<p><img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"></p>'


def _condition_plot(rows: list[dict]):
    strategies = sorted({r["strategy"] for r in rows})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for offset, feedback in ((-0.1, "none"), (0.1, "ai")):
        sel = [r for r in rows if r["feedback"] == feedback]
        if not sel:
            continue
        x = np.array([strategies.index(r["strategy"]) for r in sel]) + offset
        mean = np.array([r["mean"] for r in sel], dtype=float)
        low = np.array([r["ci_low"] for r in sel], dtype=float)  # None (n = 1) -> NaN -> no bar
        high = np.array([r["ci_high"] for r in sel], dtype=float)
        ax.errorbar(x, mean, yerr=np.nan_to_num([mean - low, high - mean]), fmt="o", capsize=4,
                    label=f"feedback: {feedback}")
    ax.set_xticks(np.arange(len(strategies)), strategies)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("relief (mean, 95% CI)")
    ax.set_title("Relief per condition")
    ax.legend()
    return fig


def _participant_plot(trials: pd.DataFrame):
    means = trials.groupby(["participant", "condition"])["relief"].mean().unstack("condition")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(means.shape[1])
    for _, row in means.iterrows():
        ax.plot(x, row.to_numpy(), color="tab:blue", alpha=0.35, marker=".")
    ax.plot(x, means.mean().to_numpy(), color="black", lw=2, marker="o", label="mean")
    ax.set_xticks(x, means.columns, rotation=20)
    ax.set_ylabel("relief (participant mean)")
    ax.set_title("Per-participant relief")
    ax.legend()
    return fig


def _alignment_plot(trials: pd.DataFrame, model: dict):
    aligned = trials[(trials["feedback"] == "ai") & trials["alignment"].notna()]
    if aligned.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for strategy, group in aligned.groupby("strategy"):
        ax.scatter(group["alignment"], group["relief"], s=10, alpha=0.5, label=strategy)
    if "fixed_effects" in model:
        slope = next(r["estimate"] for r in model["fixed_effects"] if r["term"] == "alignment")
        x = np.linspace(aligned["alignment"].min(), aligned["alignment"].max(), 2)
        y = aligned["relief"].mean() + slope * (x - aligned["alignment"].mean())
        ax.plot(x, y, color="black", label=f"model slope {slope:.2f}")
    ax.set_xlabel("alignment = 1 - |text valence - picture valence| / 2")
    ax.set_ylabel("relief")
    ax.set_title("Alignment vs relief")
    ax.legend(fontsize="small")
    return fig
