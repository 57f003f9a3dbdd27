"""`edge-cer simulate`: a synthetic study in the real `trials.csv` format, with known effects.

    edge-cer simulate --participants 24 --out data/sim
    edge-cer simulate --participants 40 --effects "reappraise=0.8,ai=0.3,alignment=1.0" --out data/plan40
    edge-cer simulate --look-baseline --effects "intercept=0.3,reappraise=1,ai=0.4,look=-0.3" --out data/with_look
    edge-cer analyze data/sim --out data/sim/analysis    # compare with data/sim/truth.json

Model of one trial's relief (pre minus post negative affect, 1-9 scale), participant p, stimulus s:
    relief = intercept + reappraise * R + ai * A + reappraise:ai * R * A + look * L
             + alignment * (alignment_ps - mean alignment of that strategy's AI trials)          (AI trials)
             + u_p + w_s + e,        u_p ~ N(0, sd_participant), w_s ~ N(0, sd_stimulus), e ~ N(0, sd_residual)
with R, A, L indicators of reappraise, AI feedback and the look/none baseline block: the protocol's 2 x 2 design
(reappraise, describe) x (ai, none) with describe/none as reference, plus look/none with --look-baseline.
Effects left out of --effects are 0. Alignment enters centred within strategy, so the condition effects stay the
cell-mean differences and the alignment slope is identified within strategy. Text valence is left empty (analyze
fills it from the transcript with VADER, as for real data); picture valence is drawn as 0.5 * text valence +
N(0, 0.35), clipped to [-1, 1]. Each participant runs the protocol's practice trials, then one block per condition
in random order; 2% of main trials are skipped (no post rating).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from edge_cer.affect.alignment import alignment as alignment_of
from edge_cer.affect.text import vader_valence
from edge_cer.analysis.columns import TRIAL_COLUMNS, write_trials
from edge_cer.errors import EdgeCerError
from edge_cer.session.protocol import Design

TRUTH_FILE = "truth.json"
DEFAULT_EFFECTS = "intercept=0.3,reappraise=0.7,ai=0.4,alignment=1.5"
EFFECT_NAMES = ("intercept", "reappraise", "ai", "reappraise:ai", "look", "alignment")
DESIGN = Design()  # the protocol's defaults: conditions, trials per condition, practice trials
SKIP_RATE = 0.02
PICTURE_TEXT_WEIGHT, PICTURE_NOISE_SD = 0.5, 0.35

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--participants", type=int, default=24, help="number of simulated participants")
    parser.add_argument("--effects", default=DEFAULT_EFFECTS,
                        help=f"relief effects, omitted ones 0: {', '.join(EFFECT_NAMES)} (relative to describe/none; "
                             "alignment is the slope per unit alignment; look needs --look-baseline)")
    parser.add_argument("--look-baseline", action="store_true", help="add the protocol's look/none baseline block")
    parser.add_argument("--trials-per-cell", type=int, default=DESIGN.trials_per_condition,
                        help="trials per condition")
    parser.add_argument("--stimuli", type=int, default=48, help="size of the stimulus pool")
    parser.add_argument("--sd-participant", type=float, default=0.6, help="SD of participant relief intercepts")
    parser.add_argument("--sd-stimulus", type=float, default=0.4, help="SD of stimulus relief intercepts")
    parser.add_argument("--sd-residual", type=float, default=1.0, help="SD of trial-level relief noise")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    parser.add_argument("--out", required=True, type=Path, help="data directory to write trials.csv and truth.json")


def run(args: argparse.Namespace) -> int:
    effects = parse_effects(args.effects)
    trials, truth = simulate(
        participants=args.participants, effects=effects, look_baseline=args.look_baseline,
        trials_per_cell=args.trials_per_cell,
        stimuli=args.stimuli, sd_participant=args.sd_participant, sd_stimulus=args.sd_stimulus,
        sd_residual=args.sd_residual, seed=args.seed,
    )
    path = write_trials(trials, args.out)
    (args.out / TRUTH_FILE).write_text(json.dumps(truth, indent=2))
    print(f"wrote {len(trials)} trials of {args.participants} participants to {path} (true parameters: {TRUTH_FILE})")
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


def simulate(*, participants: int, effects: dict[str, float], look_baseline: bool = False,
             trials_per_cell: int = DESIGN.trials_per_condition, stimuli: int = 48,
             sd_participant: float = 0.6, sd_stimulus: float = 0.4, sd_residual: float = 1.0,
             seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Returns (trials in the contract's columns, true parameters)."""
    if participants < 1 or trials_per_cell < 1 or stimuli < 1:
        raise EdgeCerError("--participants, --trials-per-cell and --stimuli must be at least 1")
    if effects["look"] and not look_baseline:
        raise EdgeCerError("--effects: `look` applies only with --look-baseline")
    rng = np.random.default_rng(seed)
    cells = [(s, f) for s in DESIGN.strategies for f in DESIGN.feedback] + [("look", "none")] * look_baseline
    stim_ids = [f"S{i:03d}" for i in range(1, stimuli + 1)]
    stim_valence = rng.uniform(1.5, 3.5, stimuli)  # normative valence, 1-9, IAPS-like unpleasant set
    stim_arousal = rng.uniform(4.5, 7.0, stimuli)
    stim_relief = rng.normal(0.0, sd_stimulus, stimuli)

    # 1. The trial list: practice, then one block per cell in a random order per participant.
    rows = []
    for p in range(1, participants + 1):
        pid = f"P{p:03d}"
        u_p = rng.normal(0.0, sd_participant)
        pre_level = rng.normal(6.0, 0.8)
        order = rng.permutation(stimuli)
        n_main = len(cells) * trials_per_cell
        stim_seq = np.concatenate([order, rng.integers(0, stimuli, max(0, n_main - stimuli))])[:n_main]
        trial_cells = [(*cells[i % len(cells)], 1, 0) for i in range(DESIGN.practice_trials)]
        for b, c in enumerate(rng.permutation(len(cells)), start=1):
            trial_cells += [(*cells[c], 0, b)] * trials_per_cell
        for t, (strategy, feedback, practice, block) in enumerate(trial_cells, start=1):
            s = int(rng.integers(0, stimuli)) if practice else int(stim_seq[t - 1 - DESIGN.practice_trials])
            rows.append(dict(participant=pid, session="1", block=block, trial=t, practice=practice,
                             strategy=strategy, feedback=feedback, stimulus_id=stim_ids[s],
                             stimulus_valence=round(stim_valence[s], 2), stimulus_arousal=round(stim_arousal[s], 2),
                             _s=s, _u=u_p, _pre=pre_level))
    trials = pd.DataFrame(rows)
    n = len(trials)

    # 2. What was said and shown.
    pools = {"reappraise": REAPPRAISALS, "describe": DESCRIPTIONS}
    trials["transcript"] = [str(rng.choice(pools[s])) if s in pools else "" for s in trials["strategy"]]
    text_valence = np.array([vader_valence(t) for t in trials["transcript"]])
    ai = (trials["feedback"] == "ai").to_numpy()
    drawn = PICTURE_TEXT_WEIGHT * np.nan_to_num(text_valence) + rng.normal(0.0, PICTURE_NOISE_SD, n)
    trials["picture_valence"] = np.where(ai, np.clip(drawn, -1, 1).round(3), np.nan)
    align = alignment_of(text_valence, trials["picture_valence"].to_numpy())
    main_ai = ai & (trials["practice"] == 0).to_numpy()
    centre = {s: float(np.nanmean(align[main_ai & (trials["strategy"] == s).to_numpy()]))
              for s in DESIGN.strategies if np.isfinite(align[main_ai & (trials["strategy"] == s).to_numpy()]).any()}

    # 3. Relief from the model in the module docstring; ratings placed so both stay on the 1-9 scale.
    strategy = trials["strategy"].to_numpy()
    reappraise = strategy == "reappraise"
    fixed = (effects["intercept"] + effects["reappraise"] * reappraise + effects["ai"] * ai
             + effects["reappraise:ai"] * reappraise * ai + effects["look"] * (strategy == "look"))
    centred = align - np.array([centre.get(s, np.nan) for s in strategy])
    relief = (fixed + effects["alignment"] * np.nan_to_num(centred) + trials["_u"].to_numpy()
              + stim_relief[trials["_s"].to_numpy()] + rng.normal(0.0, sd_residual, n))
    relief = np.clip(relief, -7.5, 7.5)
    pre_raw = trials["_pre"].to_numpy() + 0.6 * (2.5 - stim_valence[trials["_s"].to_numpy()]) + rng.normal(0, 0.7, n)
    pre = np.clip(pre_raw, np.maximum(1.0, 1.0 + relief), np.minimum(9.0, 9.0 + relief)).round(2)
    trials["rating_pre"] = pre
    trials["rating_post"] = (pre - relief).round(2)
    trials["rating_pre_rt_ms"] = rng.integers(700, 2600, n)
    trials["rating_post_rt_ms"] = rng.integers(700, 2600, n)
    skipped = (rng.random(n) < SKIP_RATE) & (trials["practice"] == 0).to_numpy()
    trials["status"] = np.where(skipped, "skipped", "completed")
    trials.loc[skipped, "rating_post"] = np.nan

    # 4. Generation settings and timings (seconds from session start), as the session engine records them.
    spoke = trials["transcript"] != ""
    trials["seed"] = np.where(ai, rng.integers(0, 2**31, n), np.nan)
    for column, value in (("strength", 0.6), ("ip_scale", 0.6), ("steps", 4)):
        trials[column] = np.where(ai, value, np.nan)
    onset = np.arange(n) * 25.0 + rng.uniform(0, 2, n)
    trials["speech_end_s"] = np.where(spoke, (onset + rng.uniform(6, 10, n)).round(3), np.nan)
    trials["transcript_final_s"] = (trials["speech_end_s"] + rng.uniform(0.2, 0.5, n)).round(3)
    ready = np.where(spoke, trials["transcript_final_s"], onset + 8.0) + rng.uniform(0.8, 1.6, n)
    trials["picture_ready_s"] = np.where(ai, ready.round(3), np.nan)
    trials["picture_shown_s"] = np.where(ai, (ready + 0.05).round(3), np.nan)
    for column in ("picture_file", "picture_sha256", "engine_manifest_sha256"):
        trials[column] = ""
    trials["text_valence"] = np.nan
    trials["alignment"] = np.nan
    truth = {
        "model": "relief = fixed effects + alignment * centred alignment + participant + stimulus + residual",
        "effects": effects,
        # Under the names analyze gives its treatment-coded mixed-model terms of the 2 x 2 design.
        "fixed_effects": {"Intercept": effects["intercept"], "strategy=reappraise": effects["reappraise"],
                          "feedback=ai": effects["ai"], "strategy=reappraise:feedback=ai": effects["reappraise:ai"]},
        "alignment_slope": effects["alignment"],
        "alignment_centre": centre,
        "sd": {"participant": sd_participant, "stimulus": sd_stimulus, "residual": sd_residual},
        "design": {"participants": participants, "conditions": [f"{s}/{f}" for s, f in cells],
                   "trials_per_cell": trials_per_cell, "stimuli": stimuli, "practice_trials": DESIGN.practice_trials, "skip_rate": SKIP_RATE, "seed": seed},
    }
    return trials.reindex(columns=list(TRIAL_COLUMNS)), truth

