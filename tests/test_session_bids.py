"""Exports: the official bids-validator accepts the BIDS dataset; the tidy CSV has exactly the agreed columns."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_cer.session.data import TIDY_COLUMNS
from edge_cer.headless import run_scripted_demo

VALIDATOR = Path(__file__).resolve().parents[1] / ".tools" / "node_modules" / ".bin" / "bids-validator"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    first = run_scripted_demo(data_dir)
    second = run_scripted_demo(data_dir)  # the same participant's second session
    return data_dir, first, second


def _validate(folder: Path) -> dict:
    if shutil.which("node") is None:
        pytest.skip("node is not installed; ./setup.sh installs it with the bids-validator")
    assert VALIDATOR.exists(), "bids-validator missing: run ./setup.sh (npm install --prefix .tools bids-validator@1)"
    done = subprocess.run([str(VALIDATOR), str(folder), "--json"], capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout)


def test_bids_export_passes_the_official_validator(demo):
    data_dir, first, second = demo
    assert (first["session"], second["session"]) == ("01", "02") and first["participant"] == second["participant"]
    report = _validate(data_dir / "bids")
    assert report["issues"]["errors"] == [], report["issues"]["errors"]
    assert report["summary"]["sessions"] == ["01", "02"] and report["summary"]["subjects"] == [first["participant"]]
    beh = sorted((data_dir / "bids").rglob("*_task-cer_beh.tsv"))
    assert len(beh) == 2 and all(p.with_suffix(".json").exists() for p in beh)


def test_validator_catches_a_broken_dataset(demo, tmp_path):
    broken = tmp_path / "bids"
    shutil.copytree(demo[0] / "bids", broken)
    (broken / "dataset_description.json").unlink()
    assert _validate(broken)["issues"]["errors"], "the validator must reject a dataset without its description"


def test_tidy_csv_columns_and_rows(demo):
    data_dir, first, second = demo
    with open(data_dir / "trials.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [dict(zip(header, r)) for r in reader]
    assert tuple(header) == TIDY_COLUMNS
    assert len(rows) == first["trials_planned"] + second["trials_planned"]
    assert [r["session"] for r in rows] == ["01"] * first["trials_planned"] + ["02"] * second["trials_planned"]
    ai = [r for r in rows if r["feedback"] == "ai"]
    assert ai and all(r["picture_file"] and (data_dir / r["picture_file"]).exists() for r in ai)
    assert all(r["picture_file"] == "" and r["seed"] == "" for r in rows if r["feedback"] == "none")
    assert {r["status"] for r in rows} == {"completed"} and {r["practice"] for r in rows} == {"0", "1"}
    assert all(r["text_valence"] == "" for r in rows)  # filled only by trial_annotators
