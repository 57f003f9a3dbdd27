"""Who sees what, in which order: block orders from a balanced Latin square, seeded shuffles, the trial plan.

    plan = plan_session(protocol, stimulus_set, participant_number=7)   # list[PlannedTrial], practice first

The participant number picks the Latin-square row (block order) and rotates the matched stimulus groups across
conditions, so over a full square every group meets every condition equally often. Everything random is drawn from
`random.Random("<protocol seed>:<participant number>")`: the same protocol and number always give the same plan.
The stimulus grouping itself depends only on the protocol seed, so it is identical for every participant.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from edge_cer.errors import EdgeCerError
from edge_cer.session.protocol import Condition, Protocol
from edge_cer.session.stimuli import Stimulus, StimulusSet, select_and_balance


@dataclass(frozen=True)
class PlannedTrial:
    trial: int  # 1-based over the whole session, practice included
    block: int  # 0 = practice, then 1..n in this participant's order
    practice: bool
    condition: Condition
    stimulus: Stimulus
    seed: int  # the picture generator's seed for this trial


def balanced_latin_square(n: int) -> list[list[int]]:
    """Williams' design: each condition is in every position, and follows every other one, equally often.

    For odd n a square cannot balance first-order carry-over, so the mirrored rows are appended (2n rows).
    """
    first = [0] + [(j + 1) // 2 if j % 2 else n - j // 2 for j in range(1, n)]
    rows = [[(c + r) % n for c in first] for r in range(n)]
    return rows if n % 2 == 0 else rows + [row[::-1] for row in rows]


def participant_number(label: str) -> int:
    """The number in a label such as `P017` or `017` (its trailing digits)."""
    match = re.search(r"(\d+)$", label)
    if not match:
        raise EdgeCerError(f"--participant {label!r}: needs a number at the end (e.g. P017) for counterbalancing")
    return int(match.group(1))


def plan_session(protocol: Protocol, stimulus_set: StimulusSet, number: int) -> list[PlannedTrial]:
    conditions = protocol.conditions
    k, per = len(conditions), protocol.design.trials_per_condition
    groups, practice_stimuli = select_and_balance(
        stimulus_set.stimuli, k, per, protocol.design.practice_trials, protocol.design.stimulus_selection,
        random.Random(f"{protocol.seed}:stimuli"),
    )
    rng = random.Random(f"{protocol.seed}:{number}")
    square = balanced_latin_square(k)
    order = square[(number - 1) % len(square)]
    trials: list[PlannedTrial] = []

    def add(block: int, condition: Condition, stimulus: Stimulus) -> None:
        trials.append(PlannedTrial(len(trials) + 1, block, block == 0, condition, stimulus, rng.randrange(2**31)))

    practice_stimuli = rng.sample(practice_stimuli, len(practice_stimuli))
    for i, stimulus in enumerate(practice_stimuli):
        add(0, conditions[order[i % k]], stimulus)
    for block, c in enumerate(order, start=1):
        block_stimuli = groups[(c + number - 1) % k]
        for stimulus in rng.sample(block_stimuli, len(block_stimuli)):
            add(block, conditions[c], stimulus)
    return trials
