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

from edge_cer.analysis import methods  # noqa: E402

STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f2f2f2}td{white-space:nowrap}td.text{text-align:left;white-space:normal}.method{color:#555;font-size:.9em}.skipped{color:#a40}
img{max-width:100%}blockquote{background:#f7f7f7;border-left:4px solid #ccc;margin:1em 0;padding:.5em 1em}"""


def write(path: Path, results: dict, trials: pd.DataFrame) -> None:
    ai = results["ai_feedback"]
    sections = [
        f"<h1>edge-cer analysis</h1><p>{html.escape(results['data_dir'])}: {results['n_participants']} "
        f"participants, {results['n_trials']} trials analysed. Relief = rating_pre - rating_post (negative affect, "
        f"1-9): higher is better. {html.escape(_sentence(ai['handling']))}.</p>",
        _methods(results["methods"]),
        _exclusions(results["exclusions"], ai),
        _section("Relief per condition", results["condition_means"], ["strategy", "feedback", "n", "mean", "ci_low",
                                                                       "ci_high"]),
        _figure(_condition_plot(results["condition_means"]["rows"])),
        _figure(_participant_plot(trials)),
        _scale_ends(results["scale_ends"]),
        _effect_sizes(results["effect_sizes"]),
        _mixed_model(results["mixed_model"]),
        _sensitivity(results["sensitivity"]),
        _section("Repeated-measures ANOVA", results["rm_anova"],
                 ["Source", "ddof1", "ddof2", "F", "p_unc", "p_GG_corr", "np2", "eps", "sphericity", "p_spher"]),
        _section("Pairwise comparisons", results["pairwise"],
                 ["Contrast", *results["factors"], "A", "B", "T", "dof", "p_unc", "p_corr", "dz"]),
        _section("Alignment and relief (AI-feedback trials with a picture)", results["alignment_model"],
                 ["term", "estimate", "se", "t", "df", "p", "ci_low", "ci_high"], rows_key="fixed_effects"),
        _figure(_alignment_plot(trials, results["alignment_model"])),
        *(_section(f"Manipulation check: {name}", check, ["Contrast", "A", "B", "T", "dof", "p_unc", "dz"])
          for name, check in results["manipulation_checks"].items()),
        f"<p class=method>Lexicon agreement (VADER vs AFINN): r = {_fmt(results['lexicon_agreement']['r'])}, "
        f"n = {results['lexicon_agreement']['n']}. Picture valence from pixels is a proxy "
        "(Valdez &amp; Mehrabian brightness/saturation), not a rating.</p>",
    ]
    path.write_text(f"<!doctype html><html><head><meta charset=utf-8><title>edge-cer analysis</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(s for s in sections if s)}</body></html>")


def _methods(text: str) -> str:
    return f"<h2>Methods (generated from the protocol and these results)</h2><blockquote>{html.escape(text)}</blockquote>"


def _exclusions(rows: list[dict], ai: dict) -> str:
    table = _table(["reason (first that applies)", "trials", "participants", ""],
                   [[_text(r["reason"]), f"<td>{r['trials']}</td>", f"<td>{r['participants']}</td>",
                     _text("left out" if r["left_out"] else "kept (intention to treat)")] for r in rows])
    sources = ", ".join(f"{html.escape(k)} {v}" for k, v in ai["by_source"].items())
    return (f"<h2>Exclusions</h2>{table}<p><b>AI trials without a shown picture: {ai['without_picture']} of "
            f"{ai['ai_trials']}</b> completed, rated AI trials ({_share(ai['without_picture'], ai['ai_trials'])})"
            f"{_reasons(ai['reasons'])}. "
            f"{html.escape(_sentence(ai['handling']))}; the sensitivity table shows the other choice. "
            f"<span class=method>feedback_source of the rated AI trials: {sources}.</span></p>")


def _reasons(reasons: dict) -> str:
    return " (" + html.escape(", ".join(f"{k} {v}" for k, v in reasons.items())) + ")" if reasons else ""


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "&ndash;"


def _scale_ends(ends: dict) -> str:
    return (f"<p class=method>Ratings at the scale's ends (relief is censored there): pre-ratings at {ends['high']} "
            f"{ends['pre_at_high']:.1%}, post-ratings at {ends['low']} {ends['post_at_low']:.1%} of analysed trials "
            f"(pre at {ends['low']} {ends['pre_at_low']:.1%}, post at {ends['high']} {ends['post_at_high']:.1%}).</p>")


def _titled(title: str, block: dict, render) -> str:
    """A section: its heading, then the block rendered, or why the step was skipped."""
    head = f"<h2>{html.escape(title)}</h2>"
    if "skipped" in block:
        return head + f"<p class=skipped>Skipped: {html.escape(block['skipped'])}</p>"
    return head + render(block)


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Header cells are escaped here; row cells are `<td>` HTML already (text or number alignment)."""
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(row) + "</tr>" for row in rows) + "</table>")


def _text(value: str) -> str:
    return f"<td class=text>{html.escape(value)}</td>"


def _effect_sizes(block: dict) -> str:
    def render(b: dict) -> str:
        rows = [[_text(r["contrast"]), _text(r["meaning"]), f"<td>{_ci(r['mean'], r['ci_low'], r['ci_high'])}</td>",
                 f"<td>{_ci(r['dz'], r['dz_low'], r['dz_high'])}</td>", f"<td>{_fmt(r['t'])}</td>",
                 f"<td>{_fmt(r['p'])}</td>", f"<td>{r['n']}</td>"] for r in b["rows"]]
        return (_table(["contrast", "in words", "mean difference [95% CI]", "Cohen's dz [95% CI]", "t", "p", "n"],
                       rows) + f"<p class=method>{html.escape(b['method'])}</p>")

    return _titled("Effect sizes (participant cell means)", block, render)


def _mixed_model(model: dict) -> str:
    def render(m: dict) -> str:
        meanings = m.get("meanings", {})
        rows = [[_text(r["term"]), _text(meanings.get(r["term"], "")),
                 f"<td>{_ci(r['estimate'], r['ci_low'], r['ci_high'])}</td>", f"<td>{_fmt(r['se'])}</td>",
                 f"<td>{_fmt(r['t'])}</td>", f"<td>{r['df']}</td>", f"<td>{_fmt(r['p'])}</td>"]
                for r in m["fixed_effects"] + m["combinations"]]
        fitted = f"Fitted: <code>{html.escape(m['formula'])}</code>, {html.escape(m['random_effects'])}."
        if m["fallback"]:
            fitted += " " + html.escape(methods.fallback_sentence(m))
        if m["warnings"]:
            fitted += f" Warnings of this fit: {html.escape('; '.join(m['warnings']))}."
        return (_table(["term", "in words", "estimate [95% CI]", "SE", "t", "df", "p"], rows) + f"<p>{fitted}</p>"
                f"<p class=method>Coding: {html.escape(m['coding'])}. Variances: {html.escape(_inline(m['variances']))}."
                f" {html.escape(m['method'])}.</p>")

    return _titled("Linear mixed model of relief", model, render)


def _sensitivity(block: dict) -> str:
    def render(b: dict) -> str:
        terms = b["terms"]
        header = ["analysis", "trials", "participants"] + [f"{t}: estimate, dz [95% CIs]" for t in terms]
        rows = [[_text(r["analysis"]), f"<td>{r['trials']}</td>", f"<td>{r['participants']}</td>"]
                + [f"<td>{_ci(r[t]['estimate'], r[t]['ci_low'], r[t]['ci_high'])}<br>"
                   f"dz {_ci(r[t]['dz'], r[t]['dz_low'], r[t]['dz_high'])}</td>" for t in terms] for r in b["rows"]]
        return _table(header, rows) + ("<p class=method>Each row refits the mixed model and the participant-level "
                                       "effect sizes on its trials.</p>")

    return _titled("Sensitivity: the AI effect side by side", block, render)


def _ci(value, low, high) -> str:
    return f"{_fmt(value)} [{_fmt(low)}, {_fmt(high)}]"


def _section(title: str, block: dict, columns: list[str], rows_key: str = "rows") -> str:
    def render(b: dict) -> str:
        rows = b[rows_key]
        shown = [c for c in columns if any(c in r for r in rows)]
        extra = "".join(f"<p class=method>{html.escape(str(b[k]))}</p>"
                        for k in ("formula", "random_effects", "warnings") if b.get(k))
        if b.get("fallback"):
            extra += f"<p class=method>{html.escape(methods.fallback_sentence(b))}</p>"
        if b.get("variances"):
            extra += f"<p class=method>Variances: {html.escape(_inline(b['variances']))}</p>"
        return (_table(shown, [[_cell(r.get(c)) for c in shown] for r in rows]) + extra
                + f"<p class=method>{html.escape(b['method'])}</p>")

    return _titled(title, block, render)


def _cell(value) -> str:
    if isinstance(value, str):
        return _text(value)
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
