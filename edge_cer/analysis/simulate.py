"""`edge-cer simulate`: a synthetic study as a lab records it (`trials.csv`), with the true values (`truth.json`).

    edge-cer simulate --participants 24 --out data/sim
    edge-cer simulate --participants 40 --effects "reappraise=0.8,ai=0.3,alignment=1.0" --out data/plan40
    edge-cer simulate --look-baseline --effects "intercept=0.3,reappraise=1,ai=0.4,look=-0.3" --out data/with_look
    edge-cer analyze data/sim --out data/sim/analysis    # compare with data/sim/truth.json

The trial list is the protocol's own: `plan_session` (Latin-square block orders, stimulus groups rotated over the
conditions) on a stimulus pool drawn with IAPS-like norms (valence 1-9 around 2.9; arousal higher for the more
unpleasant pictures). Negative affect is latent and continuous, participant p, stimulus s:

    pre*    = 6 + r_p + 0.6 (2.9 - valence_s) + N(0, 0.7)                       how bad the picture made them feel
    relief* = intercept + reappraise R + ai A + reappraise:ai R A + look L + alignment (alignment - its mean)
              + u_p + v_p (R - 1/2) + g_p (A - 1/2) + w_s + e                    A = 1 only when a picture was shown
    post*   = pre* - relief*

u, v, g ~ N(0, sd_participant / sd_slope / sd_slope), w ~ N(0, sd_stimulus), e ~ N(0, sd_residual). The participant
answers on the 1-9 scale with their own response style, a scale use k_p (log-normal: extreme vs midpoint
responders) and an offset o_p: rating = clip(round(5 + k_p (x* - 5) + o_p), 1, 9), hence floor and ceiling.
Then the lab's losses: each rating times out (empty) at `missing_rate`, whole trials are skipped at `skip_rate`,
and AI trials show no picture (`picture_shown` 0, `feedback_source` none) at `no_picture_rate`, at random.

--effects are latent (rating points before rounding and scale use). The analysis sees whole-number ratings, so
`truth.json` gives every estimand also on the scale `analyze` reports: the cell-mean contrasts, simple effects,
Cohen's dz and the alignment slope, computed the way `analyze` computes them on a population of TRUTH_PARTICIPANTS
simulated participants (Monte Carlo SE given), for the default analysis (AI = picture shown) and intention to treat.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from edge_cer.affect.alignment import alignment as alignment_of
from edge_cer.affect.text import vader_valence
from edge_cer.analysis.columns import TRIAL_COLUMNS, write_trials
from edge_cer.errors import EdgeCerError
from edge_cer.session.counterbalance import balanced_latin_square, plan_session
from edge_cer.session.protocol import Protocol, load_protocol
from edge_cer.session.stimuli import Stimulus, StimulusSet

TRUTH_FILE = "truth.json"
DEFAULT_EFFECTS = "intercept=0.3,reappraise=0.7,ai=0.4,alignment=1.5"
EFFECT_NAMES = ("intercept", "reappraise", "ai", "reappraise:ai", "look", "alignment")
TRUTH_PARTICIPANTS, TRUTH_CHUNK = 20_000, 500  # Monte Carlo SE of the observed-scale truths ~0.005 rating points
PICTURE_TEXT_WEIGHT, PICTURE_NOISE_SD = 0.5, 0.35  # generated pictures follow the speech's valence, loosely
SOURCES = (("final", 0.6), ("speculative", 0.35), ("best_ready", 0.05))  # where a shown picture came from

# Reappraisals range from mildly to clearly positive; descriptions are neutral to negative, as spoken in pilots.
REAPPRAISALS = (
    "It is not as bad as it looks.",
    "Help is on the way and they will be fine.",
    "This is not hopeless, people are working to fix it.",
    "They survived and they are safe now.",
    "It is only a film set, nobody is really in danger.",
    "The doctors are good and she will recover.",
    "This happened long ago and things are better now.",
    "They have each other and they are strong.",
    "It looks scary but it is under control.",
    "Someone will help them and they will heal.",
    "The fire is out and the family is together.",
    "It is sad but it will pass.",
)
DESCRIPTIONS = (
    "A man is lying on the ground.",
    "There is a car on the road with smoke.",
    "A woman is standing next to a broken house.",
    "A dog is behind a fence.",
    "There are people in a room with a bed.",
    "The picture shows a street at night.",
    "A child is sitting alone and crying.",
    "There is blood on the floor.",
    "Some people are waiting outside a building.",
    "A hand with a bandage.",
)
POOLS = {"reappraise": REAPPRAISALS, "describe": DESCRIPTIONS}


@dataclass(frozen=True)
class Model:
    """The generative model's parameters (rating points on the 1-9 scale); defaults are plausible for a CER study."""

    effects: dict[str, float] = field(default_factory=lambda: parse_effects(DEFAULT_EFFECTS))
    sd_participant: float = 0.6  # some people regulate better than others on every trial
    sd_slope: float = 0.3  # ... and gain more or less from reappraising and from the AI picture
    sd_stimulus: float = 0.4  # some pictures are easier to reappraise
    sd_residual: float = 1.0  # trial to trial
    sd_reactivity: float = 0.8  # how negative the pictures make a participant feel, before regulating
    sd_scale_use: float = 0.2  # log SD of k_p: 0.2 puts 95% of participants between 0.67 and 1.5
    sd_offset: float = 0.4  # where on the scale a participant anchors
    missing_rate: float = 0.03  # per rating: no key press within the protocol's rating window
    skip_rate: float = 0.01  # per trial: skipped by the experimenter (no post rating)
    no_picture_rate: float = 0.1  # per AI trial: deadline missed or the safety gate blocked every candidate
    stimuli: int = 60  # pool size; the protocol's stimulus_selection picks what the design needs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    m = Model()
    parser.add_argument("--participants", type=int, default=24, help="number of simulated participants")
    parser.add_argument("--effects", default=DEFAULT_EFFECTS,
                        help=f"latent relief effects, omitted ones 0: {', '.join(EFFECT_NAMES)} (relative to "
                             "describe/none; alignment is the slope per unit alignment; look needs --look-baseline)")
    add_model_arguments(parser, m)
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    parser.add_argument("--out", required=True, type=Path, help="data directory to write trials.csv and truth.json")


def add_model_arguments(parser: argparse.ArgumentParser, m: Model) -> None:
    """The options `simulate` and `power` share: the protocol and the generative model."""
    parser.add_argument("--protocol", type=Path, help="protocol TOML whose design and plan are simulated "
                        "(default: the shipped one)")
    parser.add_argument("--look-baseline", action="store_true", help="add the protocol's look/none baseline block")
    parser.add_argument("--trials-per-cell", type=int, help="trials per condition (default: the protocol's)")
    for name, text in (("stimuli", "size of the stimulus pool"),
                       ("sd_participant", "SD of participant relief intercepts"),
                       ("sd_slope", "SD of participants' strategy and AI-feedback slopes"),
                       ("sd_stimulus", "SD of stimulus relief intercepts"),
                       ("sd_residual", "SD of trial-level relief noise"),
                       ("missing_rate", "share of ratings with no answer in time (empty cell)"),
                       ("skip_rate", "share of trials skipped"),
                       ("no_picture_rate", "share of AI trials where no picture was shown")):
        parser.add_argument("--" + name.replace("_", "-"), type=type(getattr(m, name)), default=getattr(m, name),
                            help=text)


def model_from(args: argparse.Namespace) -> tuple[Model, Protocol]:
    names = [f for f in Model.__dataclass_fields__ if f != "effects"]
    model = Model(effects=parse_effects(args.effects), **{n: getattr(args, n) for n in names if hasattr(args, n)})
    return model, protocol_for(args.protocol, args.look_baseline, args.trials_per_cell)


def protocol_for(path: Path | None = None, look_baseline: bool = False, trials_per_cell: int | None = None) -> Protocol:
    """The protocol (default: the shipped one) with the look/none block and trials per condition overridden."""
    protocol = load_protocol(path)
    design = replace(protocol.design, look_baseline=protocol.design.look_baseline or look_baseline,
                     trials_per_condition=trials_per_cell or protocol.design.trials_per_condition)
    return replace(protocol, design=design)


def run(args: argparse.Namespace) -> int:
    model, protocol = model_from(args)
    trials, truth = simulate(participants=args.participants, model=model, protocol=protocol, seed=args.seed)
    path = write_trials(trials, args.out)
    (args.out / TRUTH_FILE).write_text(json.dumps(truth, indent=2))
    print(f"wrote {len(trials)} trials of {args.participants} participants to {path} (true values: {TRUTH_FILE})")
    return 0


def parse_effects(text: str) -> dict[str, float]:
    """'reappraise=1.0,ai=0.4' -> every name in EFFECT_NAMES, omitted ones 0; unknown names are refused."""
    effects = dict.fromkeys(EFFECT_NAMES, 0.0)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in effects:
            raise EdgeCerError(f"--effects: unknown effect {name!r}; use {', '.join(EFFECT_NAMES)}")
        try:
            effects[name] = float(value)
        except ValueError:
            raise EdgeCerError(f"--effects: {item!r} needs a number, e.g. {name}=0.5") from None
    return effects


def simulate(*, participants: int, model: Model | None = None, protocol: Protocol | None = None,
             seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Returns (trials in the recorded columns, true values); the same arguments give the same study."""
    model = model or Model()
    protocol = protocol or protocol_for()
    return simulate_trials(participants, model, protocol, seed), truth(model, protocol, seed)


def simulate_trials(participants: int, model: Model, protocol: Protocol, seed: int) -> pd.DataFrame:
    check(participants, model, protocol)
    rng = np.random.default_rng(seed)
    trials = draw_trials(list(range(1, participants + 1)), model, protocol, rng)
    return record(trials, model, protocol, rng).reindex(columns=list(TRIAL_COLUMNS))


def check(participants: int, model: Model, protocol: Protocol) -> None:
    if participants < 1 or model.stimuli < 1:
        raise EdgeCerError("--participants and --stimuli must be at least 1")
    if model.effects["look"] and not protocol.design.look_baseline:
        raise EdgeCerError("--effects: `look` applies only with --look-baseline")
    for name in ("missing_rate", "skip_rate", "no_picture_rate"):
        if not 0 <= getattr(model, name) < 1:
            raise EdgeCerError(f"--{name.replace('_', '-')} = {getattr(model, name)}: use a share in [0, 1)")


def draw_trials(numbers: list[int], model: Model, protocol: Protocol, rng: np.random.Generator) -> pd.DataFrame:
    """Every planned trial of these participant numbers with its latent and recorded ratings and what was shown."""
    # 1. The stimulus pool: IAPS-like unpleasant pictures; arousal rises as valence falls.
    valence = np.clip(rng.normal(2.9, 0.7, model.stimuli), 1.2, 4.8)
    arousal = np.clip(5.8 - 0.6 * (valence - 2.9) + rng.normal(0, 0.5, model.stimuli), 3.0, 8.0)
    pool = StimulusSet(Path("simulated"), tuple(
        Stimulus(f"S{i + 1:03d}", Path(f"S{i + 1:03d}.jpg"), round(v, 2), round(a, 2))
        for i, (v, a) in enumerate(zip(valence, arousal))), synthetic=True)
    stimulus_effect = dict(zip((s.id for s in pool.stimuli), rng.normal(0, model.sd_stimulus, model.stimuli)))
    # 2. The protocol's plan: the counterbalancing repeats with the Latin square and the group rotation.
    period = math.lcm(len(balanced_latin_square(len(protocol.conditions))), len(protocol.conditions))
    keys = [(n - 1) % period + 1 if len(numbers) > period else n for n in numbers]
    plans = {k: plan_rows(protocol, pool, k) for k in dict.fromkeys(keys)}
    stacked = pd.concat(plans.values(), ignore_index=True)
    starts = dict(zip(plans, np.cumsum([0, *map(len, plans.values())])))
    lengths = np.array([len(plans[k]) for k in keys])
    rows = np.repeat([starts[k] for k in keys], lengths) + np.arange(lengths.sum()) - np.repeat(
        np.cumsum(lengths) - lengths, lengths)
    trials = stacked.iloc[rows].reset_index(drop=True)
    trials["number"] = np.repeat(numbers, lengths)
    trials["participant"] = [f"P{n:03d}" for n in trials["number"]]
    n, people = len(trials), trials["number"].to_numpy() - 1

    # 3. What was said and shown.
    trials["transcript"] = ""
    for strategy, phrases in POOLS.items():
        said = (trials["strategy"] == strategy).to_numpy()
        trials.loc[said, "transcript"] = np.asarray(phrases)[rng.integers(len(phrases), size=said.sum())]
    text_valence = trials["transcript"].map(cached_valence).to_numpy(dtype=float)
    ai = (trials["feedback"] == "ai").to_numpy()
    shown = ai & (rng.random(n) >= model.no_picture_rate)
    drawn = PICTURE_TEXT_WEIGHT * np.nan_to_num(text_valence) + rng.normal(0.0, PICTURE_NOISE_SD, n)
    trials["picture_valence"] = np.where(shown, np.clip(drawn, -1, 1).round(3), np.nan)
    trials["picture_shown"] = np.where(ai, shown.astype(float), np.nan)
    source = rng.choice([s for s, _ in SOURCES], n, p=[p for _, p in SOURCES])
    trials["feedback_source"] = np.where(shown, source, np.where(ai, "none", ""))
    centre = trials["strategy"].map(alignment_centres()).to_numpy(dtype=float)
    centred = np.where(shown, alignment_of(text_valence, trials["picture_valence"].to_numpy()) - centre, 0.0)

    # 4. Latent affect (module docstring), then the participant's use of the 1-9 scale.
    per_person = max(numbers)
    reactivity, u, v, g = (rng.normal(0, sd, per_person) for sd in
                           (model.sd_reactivity, model.sd_participant, model.sd_slope, model.sd_slope))
    scale_use, offset = np.exp(rng.normal(0, model.sd_scale_use, per_person)), rng.normal(0, model.sd_offset, per_person)
    strategy, e = trials["strategy"].to_numpy(), model.effects
    reappraise, look = strategy == "reappraise", strategy == "look"
    pre = 6.0 + reactivity[people] + 0.6 * (2.9 - trials["stimulus_valence"].to_numpy()) + rng.normal(0, 0.7, n)
    relief = (e["intercept"] + e["reappraise"] * reappraise + e["ai"] * shown + e["reappraise:ai"] * reappraise * shown
              + e["look"] * look + e["alignment"] * centred + u[people] + v[people] * (reappraise - 0.5) * ~look
              + g[people] * (shown - 0.5) + trials["stimulus_id"].map(stimulus_effect).to_numpy()
              + rng.normal(0, model.sd_residual, n))
    low, high = protocol.rating.low, protocol.rating.high
    middle = (low + high) / 2

    def rate(latent):
        return np.clip(np.round(middle + scale_use[people] * (latent - middle) + offset[people]), low, high)

    trials["rating_pre"], trials["rating_post"] = rate(pre), rate(pre - relief)
    return trials


def plan_rows(protocol: Protocol, pool: StimulusSet, number: int) -> pd.DataFrame:
    return pd.DataFrame([{"block": t.block, "trial": t.trial, "practice": int(t.practice),
                          "strategy": t.condition.strategy, "feedback": t.condition.feedback,
                          "stimulus_id": t.stimulus.id, "stimulus_valence": t.stimulus.valence,
                          "stimulus_arousal": t.stimulus.arousal, "seed": t.seed}
                         for t in plan_session(protocol, pool, number)])


def record(trials: pd.DataFrame, model: Model, protocol: Protocol, rng: np.random.Generator) -> pd.DataFrame:
    """What the session writes: lost ratings and trials, response times, generation settings, phase onsets."""
    n = len(trials)
    trials = trials.assign(session="1")
    skipped = rng.random(n) < model.skip_rate
    trials["status"] = np.where(skipped, "skipped", "completed")
    window_ms = protocol.durations.rating * 1000
    for which in ("pre", "post"):
        timed_out = rng.random(n) < model.missing_rate
        if which == "post":
            timed_out |= skipped
        rt = np.minimum(rng.lognormal(np.log(1500), 0.35, n), window_ms - 1).round(1)
        trials[f"rating_{which}"] = trials[f"rating_{which}"].where(~timed_out)
        trials[f"rating_{which}_rt_ms"] = np.where(timed_out, np.nan, rt)
    ai = (trials["feedback"] == "ai").to_numpy()
    g = protocol.generation
    for column, value in (("strength", g.strength), ("ip_scale", g.ip_scale), ("steps", g.steps)):
        trials[column] = np.where(ai, value, np.nan)
    trials["seed"] = trials["seed"].where(ai)
    # Seconds from session start; each participant's session starts at 0.
    d = protocol.durations
    fixed = d.fixation + d.stimulus + d.cue + d.feedback + d.iti
    spoke = (trials["transcript"] != "").to_numpy()
    speaking = np.where(spoke, rng.uniform(5, 10, n), d.look)
    length = fixed + speaking + (trials["rating_pre_rt_ms"].fillna(window_ms) + trials["rating_post_rt_ms"].fillna(
        window_ms)).to_numpy() / 1000
    start = trials.assign(_l=length).groupby("participant")["_l"].cumsum().to_numpy() - length
    speech_end = start + d.fixation + d.stimulus + d.cue + speaking
    trials["speech_end_s"] = np.where(spoke, speech_end.round(3), np.nan)
    trials["transcript_final_s"] = (trials["speech_end_s"] + rng.uniform(0.2, 0.5, n)).round(3)
    ready = np.where(spoke, trials["transcript_final_s"], speech_end) + rng.uniform(0.3, 1.2, n)
    shown = trials["picture_shown"].to_numpy() == 1
    trials["picture_ready_s"] = np.where(shown, ready.round(3), np.nan)
    trials["picture_shown_s"] = np.where(shown, (ready + 0.02).round(3), np.nan)
    for column in ("picture_file", "picture_sha256", "engine_manifest_sha256"):
        trials[column] = ""
    trials["text_valence"] = np.nan  # left for analyze to fill from the transcript, as for real data
    trials["alignment"] = np.nan
    return trials


@lru_cache(maxsize=None)
def cached_valence(transcript: str) -> float:
    return vader_valence(transcript) if transcript else math.nan


@lru_cache(maxsize=1)
def alignment_centres() -> dict[str, float]:
    """Expected alignment of a shown picture per strategy (fixed quadrature over the picture noise)."""
    noise = np.random.default_rng(0).normal(0, PICTURE_NOISE_SD, 20_000)
    centres = {}
    for strategy, pool in POOLS.items():
        tv = np.array([cached_valence(t) for t in pool])[:, None]
        centres[strategy] = float(np.mean(alignment_of(tv, np.clip(PICTURE_TEXT_WEIGHT * tv + noise, -1, 1))))
    return centres


@lru_cache(maxsize=16)
def _truth(hashable: Model, protocol: Protocol) -> dict:
    model = replace(hashable, effects=dict(hashable.effects))
    # Chunks of participants, each with its own stimulus pool: the truth averages over pools as studies do.
    rng = np.random.default_rng(12345)
    numbers = list(range(1, TRUTH_CHUNK + 1))
    trials = pd.concat([record(draw_trials(numbers, model, protocol, rng), model, protocol, rng).assign(
        participant=lambda t, c=chunk: f"{c}-" + t["participant"]) for chunk in range(TRUTH_PARTICIPANTS // TRUTH_CHUNK)])
    main = trials[(trials["practice"] == 0) & (trials["status"] == "completed")].dropna(
        subset=["rating_pre", "rating_post"]).assign(relief=lambda t: t["rating_pre"] - t["rating_post"])
    crossed = main[main["strategy"] != "look"]
    no_picture = (crossed["feedback"] == "ai") & (crossed["picture_shown"] == 0)
    return {
        "observed_scale": {"analysis": "AI feedback = picture shown (AI trials without a picture left out)",
                           **estimands(crossed[~no_picture], model.effects["alignment"] != 0)},
        "intention_to_treat": {"analysis": "AI trials counted as assigned, picture shown or not",
                               **estimands(crossed, False)},
    }


def truth(model: Model, protocol: Protocol, seed: int) -> dict:
    """What `analyze` should find: the latent values planted and the estimands on the recorded scale."""
    hashable = replace(model, effects=tuple(model.effects.items()))
    observed = _truth(hashable, protocol)
    d = protocol.design
    return {
        "latent": {"model": "see edge_cer/analysis/simulate.py", "effects": model.effects,
                   **{k: v for k, v in asdict(model).items() if k != "effects"}},
        **observed,
        "monte_carlo": f"{TRUTH_PARTICIPANTS} simulated participants with the same model and protocol",
        "design": {"protocol": protocol.name, "conditions": [c.label for c in protocol.conditions],
                   "trials_per_condition": d.trials_per_condition, "practice_trials": d.practice_trials,
                   "seed": seed},
    }


def estimands(kept: pd.DataFrame, with_alignment: bool) -> dict:
    """The contrasts `analyze` reports, from participant cell means (mean, its Monte Carlo SE, and dz)."""
    cells = kept.groupby(["participant", "strategy", "feedback"])["relief"].mean().unstack(["strategy", "feedback"])
    if not {("reappraise", "ai"), ("reappraise", "none"), ("describe", "ai"), ("describe", "none")} <= set(cells):
        return {"intercept": float(cells.mean(axis=1).mean()), "contrasts": {}}  # not the 2 x 2 design
    ra, rn, da, dn = (cells[("reappraise", "ai")], cells[("reappraise", "none")], cells[("describe", "ai")],
                      cells[("describe", "none")])
    contrasts = {"strategy": (ra + rn - da - dn) / 2, "feedback": (ra + da - rn - dn) / 2,
                 "strategy:feedback": (ra - rn) - (da - dn), "feedback | reappraise": ra - rn,
                 "feedback | describe": da - dn, "strategy | ai": ra - da, "strategy | none": rn - dn}
    out = {"intercept": float(cells.mean(axis=1).mean()), "contrasts": {
        name: {"estimate": float(x.mean()), "mc_se": float(x.std() / math.sqrt(x.count())),
               "dz": float(x.mean() / x.std())} for name, x in contrasts.items()}}
    if with_alignment:
        ai = kept[kept["feedback"] == "ai"]
        x = alignment_of(ai["transcript"].map(cached_valence), ai["picture_valence"]) - ai["strategy"].map(alignment_centres())
        y = ai["relief"] - ai.groupby(["participant", "strategy"])["relief"].transform("mean")
        x = x - x.groupby([ai["participant"], ai["strategy"]]).transform("mean")
        out["alignment_slope"] = float((x * y).sum() / (x * x).sum())
    return out
