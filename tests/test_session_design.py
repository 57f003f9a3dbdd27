"""Protocol validation, stimulus sets and norms, counterbalancing and the balance of norms across conditions."""

from __future__ import annotations

import dataclasses
import itertools
import random
import statistics
from collections import Counter

import pytest
from PIL import Image

from edge_cer.errors import EdgeCerError
from edge_cer.session.counterbalance import balanced_latin_square, participant_number, plan_session
from edge_cer.session.protocol import load_protocol, parse_protocol
from edge_cer.session.stimuli import Stimulus, StimulusSet, load_stimuli, select_and_balance, synthetic_stimuli
from tests.session_helpers import make_protocol


def test_default_protocol_file_equals_the_documented_defaults():
    shipped, built_in = load_protocol(), parse_protocol("")
    assert dataclasses.replace(shipped, text="", source="") == dataclasses.replace(built_in, text="", source="")
    assert [c.label for c in shipped.conditions] == ["reappraise_ai", "reappraise_none", "describe_ai", "describe_none"]
    assert make_protocol(look=True).conditions[-1].label == "look_none"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[design]\nstrategies = ["reapraise"]', r"\[design\] strategies has unknown level 'reapraise'"),
        ('[design]\nfeedback = ["ai", "ai"]', "repeats a level"),
        ("[design]\ntrials_per_condition = 0", "trials_per_condition = 0; use 1 or more"),
        ("[durations]\nfixation = -0.5", r"\[durations\] fixation = -0.5 is negative"),
        ("[durations]\nrating = 0", "nobody could answer"),
        ("[rating]\nlow = 9\nhigh = 1", "is not above low"),
        ("[design]\ntrials_per_condition = '8'", "must be int"),
        ("[durations]\nfixaton = 1", "unknown key `fixaton`"),
        ("colour = 1", "unknown key `colour`"),
        ("[design", "not valid TOML"),
    ],
)
def test_bad_protocols_are_refused_with_file_key_and_fix(text, message):
    with pytest.raises(EdgeCerError, match=message) as info:
        parse_protocol(text, "study.toml")
    assert str(info.value).startswith("study.toml: ") and "\n" not in str(info.value)


def test_synthetic_set_is_deterministic_and_labelled(tmp_path):
    a, b = synthetic_stimuli(tmp_path / "a"), synthetic_stimuli(tmp_path / "b")
    assert len(a) == 48 and a.synthetic
    for x, y in zip(a.stimuli, b.stimuli):
        assert (x.id, x.valence, x.arousal) == (y.id, y.valence, y.arousal) and x.path.read_bytes() == y.path.read_bytes()
    assert "NON-AFFECTIVE" in (tmp_path / "a" / "SYNTHETIC.txt").read_text()


def _norms_folder(tmp_path, rows, pictures=("a.png", "b.png")):
    for name in pictures:
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "norms.csv").write_text("id,file,valence,arousal\n" + "\n".join(rows) + "\n")
    return tmp_path


@pytest.mark.parametrize(
    "rows, message",
    [
        (["a,a.png,2.0,6.0", "b,missing.png,3.0,5.0"], "line 3: .*missing.png: no such picture"),
        (["a,a.png,2.0,6.0", "a,b.png,3.0,5.0"], "line 3: duplicate stimulus id 'a'"),
        (["a,a.png,low,6.0"], "`valence` = 'low' is not a number"),
        (["a,broken.png,2.0,6.0"], "broken.png: not a readable picture"),
        ([], "no stimuli listed"),
    ],
)
def test_bad_stimulus_sets_are_refused_at_start(tmp_path, rows, message):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(EdgeCerError, match=message):
        load_stimuli(_norms_folder(tmp_path, rows))


def test_iaps_style_norm_table(tmp_path):
    for name in ("1050.jpg", "2352.2.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    table = tmp_path / "AllSubjects_1-20.txt"
    table.write_text(
        "IAPS norms, all subjects\n\n"
        "desc\tIAPS\tvalmn\tvalsd\taromn\tarosd\tdom1mn\tdom1sd\tset\n"
        "Snake\t1050\t3.46\t1.92\t6.87\t1.68\t3.49\t2.22\t1\n"
        "Kiss\t2352.2\t2.40\t1.60\t6.5\t2.1\t\t\t5\n"
    )
    s = load_stimuli(tmp_path, norms=table)
    assert [(x.id, x.valence, x.arousal, x.dominance) for x in s.stimuli] == [
        ("1050", 3.46, 6.87, 3.49), ("2352.2", 2.40, 6.5, None)
    ]
    assert s.stimuli[1].path.name == "2352.2.jpg"


def test_balanced_latin_square_properties():
    for n in range(2, 7):
        square = balanced_latin_square(n)
        assert len(square) == (n if n % 2 == 0 else 2 * n)
        for column in zip(*square):  # every condition equally often in every position
            assert len(set(Counter(column).values())) == 1 and set(column) == set(range(n))
        follows = Counter(pair for row in square for pair in zip(row, row[1:]))
        assert set(follows) == set(itertools.permutations(range(n), 2))  # every ordered pair, equally often
        assert len(set(follows.values())) == 1


def test_norms_are_balanced_across_conditions():
    rng = random.Random(3)
    pool = tuple(Stimulus(f"s{i}", None, rng.uniform(1, 5), rng.uniform(3, 8)) for i in range(120))
    groups, practice = select_and_balance(pool, 4, 20, 4, "most_negative", random.Random(1))
    chosen = [s for g in groups for s in g] + practice
    assert len({s.id for s in chosen}) == 84 and max(s.valence for s in chosen) <= sorted(s.valence for s in pool)[83]
    assert min(s.valence for s in practice) >= max(s.valence for g in groups for s in g), "practice gets the mildest"
    for key in ("valence", "arousal"):
        sd = statistics.pstdev(getattr(s, key) for g in groups for s in g)
        means = [statistics.mean(getattr(s, key) for s in g) for g in groups]
        assert max(means) - min(means) < 0.05 * sd, (key, means)
    # An unbalanced split (sorted into blocks) would differ by ~2 SD: the check has teeth.
    with pytest.raises(EdgeCerError, match="needs 84"):
        select_and_balance(pool[:80], 4, 20, 4, "most_negative", random.Random(1))


def test_plan_counterbalances_orders_and_stimulus_groups(tmp_path):
    stimuli = synthetic_stimuli(tmp_path)
    protocol = make_protocol(trials_per_condition=8, practice=4)
    plans = {n: plan_session(protocol, stimuli, n) for n in range(1, 9)}
    assert plan_session(protocol, stimuli, 3) == plans[3], "same protocol and number, same plan"
    group_of = {}
    for n, plan in plans.items():
        main = [t for t in plan if not t.practice]
        assert len(plan) == 36 and len({t.stimulus.id for t in plan}) == 36, "no stimulus twice"
        blocks = [main[i].condition.label for i in range(0, 32, 8)]
        assert blocks == [protocol.conditions[c].label for c in balanced_latin_square(4)[(n - 1) % 4]]
        for t in main:
            group_of.setdefault(t.stimulus.id, set()).add(t.condition.label)
    assert all(len(labels) == 4 for labels in group_of.values()), "each stimulus meets every condition over a square"
    assert participant_number("P017") == 17
    with pytest.raises(EdgeCerError, match="needs a number"):
        participant_number("PX")


def test_too_small_stimulus_set_is_refused(tmp_path):
    small = StimulusSet(tmp_path, synthetic_stimuli(tmp_path).stimuli[:10])
    with pytest.raises(EdgeCerError, match="stimulus set has 10 pictures but the protocol needs 36"):
        plan_session(load_protocol(), small, 1)
