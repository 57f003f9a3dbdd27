"""`edge-cer simulate` and `edge-cer analyze` end to end: files, errors, small data, pictures, and the rendered report."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from edge_cer.analysis.analyze import analyze
from edge_cer.analysis.columns import RECORD_COLUMNS, TRIAL_COLUMNS, read_trials, write_trials
from edge_cer.analysis.simulate import Model, parse_effects, protocol_for, simulate
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
    assert truth["latent"]["effects"]["reappraise"] == 1.0 and truth["latent"]["effects"]["look"] == -0.3
    # On the recorded scale the planted AI effect shrinks a little (rounding, floor and ceiling, scale use).
    assert 0.4 < truth["observed_scale"]["contrasts"]["feedback"]["estimate"] < 0.55
    assert trials["text_valence"].isna().all()  # left for analyze to fill from the transcript
    # What a lab records: whole-number ratings on the protocol's scale, some missing, some AI trials without picture.
    for column in ("rating_pre", "rating_post"):
        ratings = trials[column].dropna()
        assert (ratings == ratings.round()).all() and ratings.between(1, 9).all()
    raw = pd.read_csv(study / "trials.csv", dtype=str)  # as written: "7", never "7.0"
    assert raw["rating_pre"].dropna().str.fullmatch(r"[1-9]").all() and raw["rating_pre"].isna().any()
    assert raw["seed"].dropna().str.fullmatch(r"\d+").all()
    ai = trials[trials["feedback"] == "ai"]
    assert set(ai["picture_shown"]) == {0, 1} and trials.loc[trials["feedback"] == "none", "picture_shown"].isna().all()
    assert (ai.loc[ai["picture_shown"] == 0, "feedback_source"] == "none").all()
    assert ai.loc[ai["picture_shown"] == 0, "picture_shown_s"].isna().all()
    # Same seed, same study.
    again, _ = simulate(participants=8, model=Model(effects=parse_effects("reappraise=1,ai=0.5,look=-0.3")),
                        protocol=protocol_for(look_baseline=True), seed=5)
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


def test_exclusions_ai_without_picture_and_intention_to_treat(study, tmp_path):
    trials = read_trials(study)
    results = json.loads((study / "out" / "results.json").read_text())
    rows = {r["reason"]: r for r in results["exclusions"]}
    main = trials[trials["practice"] == 0]
    assert rows["practice trial"]["trials"] == (trials["practice"] == 1).sum()
    assert rows["trial not completed (skipped or aborted)"]["trials"] == (main["status"] != "completed").sum()
    counted = main[(main["status"] == "completed") & main["rating_pre"].notna() & main["rating_post"].notna()]
    no_picture = ((counted["feedback"] == "ai") & (counted["picture_shown"] == 0)).sum()
    assert rows["AI trial without a shown picture"]["trials"] == no_picture > 0
    assert results["ai_feedback"]["without_picture"] == no_picture and not results["ai_feedback"]["intention_to_treat"]
    assert results["n_trials"] == len(counted) - no_picture
    # Intention to treat keeps them as AI feedback; the sensitivity table of each run shows the other choice.
    itt = analyze(study, tmp_path / "itt", intention_to_treat=True, report_html=False)
    assert itt["n_trials"] == len(counted) and itt["ai_feedback"]["intention_to_treat"]
    assert results["sensitivity"]["rows"][1]["trials"] == itt["sensitivity"]["rows"][0]["trials"] == len(
        counted[counted["strategy"] != "look"])
    assert results["sensitivity"]["rows"][1]["feedback"]["estimate"] == pytest.approx(
        itt["mixed_model"]["fixed_effects"][2]["estimate"])


def test_report_states_coding_effect_sizes_model_and_methods(study):
    results = json.loads((study / "out" / "results.json").read_text())
    model = results["mixed_model"]
    assert model["formula"] == "relief ~ strategy_c * feedback_c" and "+1/2" in model["coding"]
    assert model["meanings"]["feedback"].startswith("the AI picture minus no picture, averaged over strategy")
    assert {r["term"] for r in model["combinations"]} == {"feedback | reappraise", "feedback | describe",
                                                          "strategy | ai", "strategy | none"}
    sizes = {r["contrast"]: r for r in results["effect_sizes"]["rows"]}
    assert sizes["feedback"]["dz_low"] < sizes["feedback"]["dz"] < sizes["feedback"]["dz_high"]
    methods = results["methods"]
    assert f"{results['n_participants']} participants" in methods and "fixation cross (1 s)" in methods
    assert "showed no picture" in methods and "shipped default protocol" in methods
    html = (study / "out" / "report.html").read_text()
    for heading in ("Methods", "Exclusions", "AI trials without a shown picture", "Effect sizes", "Sensitivity",
                    "in words"):
        assert heading in html, heading


def test_older_data_without_picture_shown_column(tmp_path):
    """A trials.csv written before session schema 3: none of its record columns; picture_shown is derived."""
    trials, _ = simulate(participants=2, model=Model(no_picture_rate=0.5), seed=1)
    trials.drop(columns=list(RECORD_COLUMNS)).to_csv(tmp_path / "trials.csv", index=False)
    assert "picture_shown" not in (tmp_path / "trials.csv").read_text().splitlines()[0].split(",")
    again = read_trials(tmp_path)
    pd.testing.assert_series_equal(again["picture_shown"], trials["picture_shown"], check_dtype=False)


def test_protocol_stored_with_the_sessions_writes_the_methods(tmp_path):
    """Three scripted sessions of a lab's own protocol: analyze finds it in the session databases."""
    (tmp_path / "script.toml").write_text('[[trials]]\ntext = "It is not as bad as it looks."\n')
    (tmp_path / "p.toml").write_text('name = "clinic-study"\ntime_scale = 0.0\n[design]\ntrials_per_condition = 2\n'
                                     'practice_trials = 0\nfeedback = ["none"]\n[durations]\nstimulus = 4.0\n')
    for label in ("P001", "P002", "P003"):
        assert main(["run", "--participant", label, "--data", str(tmp_path / "data"), "--scripted",
                     str(tmp_path / "script.toml"), "--protocol", str(tmp_path / "p.toml")]) == 0
    results = analyze(tmp_path / "data", tmp_path / "out", report_html=False)
    assert results["protocol"]["name"] == "clinic-study"
    assert results["protocol"]["source"].startswith("stored with session")
    methods = results["methods"]
    assert "3 participants" in methods and "the picture (4 s)" in methods and "time_scale = 0" in methods
    assert "shipped default" not in methods


def test_missing_column_is_one_line_naming_file_and_column(tmp_path, capsys):
    trials, _ = simulate(participants=2, model=Model(effects=parse_effects("")), seed=0)
    trials.drop(columns=["rating_post"]).to_csv(tmp_path / "trials.csv", index=False)
    assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "trials.csv" in err and "missing column(s) rating_post" in err


def test_bad_value_names_line_and_column(tmp_path, capsys):
    trials, _ = simulate(participants=2, model=Model(effects=parse_effects("")), seed=0)
    trials.loc[3, "strategy"] = "reapraise"
    write_trials(trials, tmp_path)
    assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "line 5, column strategy: 'reapraise'" in capsys.readouterr().err


def test_one_participant_with_pictures_skips_inference_but_reports(tmp_path):
    """A scripted demo session: one participant, pictures on disk, stimuli for SSIM."""
    trials, _ = simulate(participants=1, model=Model(effects=parse_effects("reappraise=1"), missing_rate=0, skip_rate=0,
                                                     no_picture_rate=0), protocol=protocol_for(trials_per_cell=2), seed=3)
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
