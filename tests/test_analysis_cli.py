"""`edge-cer simulate` and `edge-cer analyze` end to end: files, errors, small data, pictures, and the rendered report."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from edge_cer.analysis.columns import TRIAL_COLUMNS, read_trials, write_trials
from edge_cer.analysis.simulate import parse_effects, simulate
from edge_cer.cli import main


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    data = tmp_path_factory.mktemp("study")
    assert main(["simulate", "--participants", "8", "--look-baseline", "--effects", "reappraise=1,ai=0.5,look=-0.3",
                 "--seed", "5", "--out", str(data)]) == 0
    assert main(["analyze", str(data), "--out", str(data / "out")]) == 0
    return data


def test_simulate_writes_the_contract_and_the_truth(study):
    header = (study / "trials.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == TRIAL_COLUMNS
    trials = read_trials(study)
    assert set(trials["strategy"] + "/" + trials["feedback"]) == {
        "reappraise/ai", "reappraise/none", "describe/ai", "describe/none", "look/none"}
    truth = json.loads((study / "truth.json").read_text())
    assert truth["fixed_effects"]["strategy=reappraise"] == 1.0 and truth["effects"]["look"] == -0.3
    assert trials["text_valence"].isna().all()  # left for analyze to fill from the transcript
    # Same seed, same study.
    again, _ = simulate(participants=8, effects=parse_effects("reappraise=1,ai=0.5,look=-0.3"), look_baseline=True,
                        seed=5)
    pd.testing.assert_frame_equal(again.reset_index(drop=True)[["rating_pre", "rating_post", "transcript"]],
                                  trials[["rating_pre", "rating_post", "transcript"]].fillna({"transcript": ""}),
                                  check_dtype=False)


def test_analyze_outputs(study):
    out = study / "out"
    results = json.loads((out / "results.json").read_text())
    assert results["factors"] == ["strategy", "feedback"]
    assert "look/none" not in results["design_conditions"]  # the baseline block is descriptive only
    assert {(r["strategy"], r["feedback"]) for r in results["condition_means"]["rows"]} >= {("look", "none")}
    measures = pd.read_csv(out / "trial_measures.csv")
    spoken = measures["transcript"].notna()
    assert measures.loc[spoken, "text_valence"].notna().all() and measures.loc[~spoken, "text_valence"].isna().all()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<script" not in html and "://" not in html


def test_missing_column_is_one_line_naming_file_and_column(tmp_path, capsys):
    trials, _ = simulate(participants=2, effects=parse_effects(""), seed=0)
    trials.drop(columns=["rating_post"]).to_csv(tmp_path / "trials.csv", index=False)
    assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "trials.csv" in err and "missing column(s) rating_post" in err


def test_bad_value_names_line_and_column(tmp_path, capsys):
    trials, _ = simulate(participants=2, effects=parse_effects(""), seed=0)
    trials.loc[3, "strategy"] = "reapraise"
    write_trials(trials, tmp_path)
    assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "line 5, column strategy: 'reapraise'" in capsys.readouterr().err


def test_one_participant_with_pictures_skips_inference_but_reports(tmp_path):
    """A scripted demo session: one participant, pictures on disk, stimuli for SSIM."""
    trials, _ = simulate(participants=1, effects=parse_effects("reappraise=1"), trials_per_cell=2, seed=3)
    (tmp_path / "pictures").mkdir()
    (tmp_path / "stimuli").mkdir()
    rng = np.random.default_rng(0)
    ai = trials.index[(trials["feedback"] == "ai") & (trials["practice"] == 0)]
    for i in ai:
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "pictures" / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            tmp_path / "stimuli" / f"{trials.at[i, 'stimulus_id']}.png")
        trials.at[i, "picture_file"] = f"pictures/{i}.png"
    trials.loc[ai, "picture_valence"] = np.nan  # analyze must fill it from the picture
    write_trials(trials, tmp_path)
    assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "out"), "--stimuli", str(tmp_path / "stimuli")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "skipped" in results["rm_anova"] and "skipped" in results["mixed_model"]
    measures = pd.read_csv(tmp_path / "out" / "trial_measures.csv")
    with_picture = measures["picture_file"].notna()
    assert with_picture.sum() == len(ai)
    assert measures.loc[with_picture, ["picture_valence", "valence_proxy", "ssim"]].notna().all().all()
    assert (measures.loc[with_picture, "picture_valence"] == measures.loc[with_picture, "valence_proxy"]).all()


def test_report_renders_in_headless_chromium(study, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (setup.sh installs it in the full profile)")
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1000,1400",
                    f"--screenshot={shot}", (study / "out" / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1400, 1000)
    # Rendered, not blank: text and plot colours (matplotlib's tab:blue/orange markers) are on the page.
    assert (pixels.min(axis=2) < 100).mean() > 0.005
    blue = (np.abs(pixels.astype(int) - [31, 119, 180]).sum(axis=2) < 60).sum()
    assert blue > 50


def test_affect_and_analysis_never_import_torch():
    code = ("import sys, edge_cer.affect.text, edge_cer.affect.picture, edge_cer.affect.safety, "
            "edge_cer.analysis.analyze, edge_cer.analysis.simulate; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'diffusers', 'transformers'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_r_style_na_is_read_and_seeds_are_written_as_integers(study, tmp_path):
    """R's write.csv writes a missing value as NA; trial_measures.csv keeps whole-number seeds without ".0"."""
    lines = (study / "trials.csv").read_text().splitlines()
    as_r = [",".join("NA" if cell == "" else cell for cell in line.split(",")) for line in lines]
    (tmp_path / "trials.csv").write_text("\n".join(as_r) + "\n")
    assert ",NA," in (tmp_path / "trials.csv").read_text()
    assert read_trials(tmp_path)["seed"].isna().equals(read_trials(study)["seed"].isna())
    assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    seeds = pd.read_csv(tmp_path / "out" / "trial_measures.csv", dtype=str)["seed"].dropna()
    assert len(seeds) and seeds.str.fullmatch(r"\d+").all(), seeds.head().tolist()
