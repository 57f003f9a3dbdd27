"""The study folder survives: simultaneous starts, damaged files, kills during the export, a full disk, and bugs.

Processes are forked from this one (edge_cer is imported already), so 50 starts cost milliseconds each.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_cer.cli import main
from edge_cer.session import bids
from edge_cer.session.data import KEY_FILE, list_sessions, read_session
from edge_cer.session.ownership import read_keys
from tests.study_helpers import NORMS, PROTOCOL, SCRIPT, Study, png, snapshot

FORK = multiprocessing.get_context("fork")


def make_study(root: Path, protocol: str = PROTOCOL, stimuli: int = 4) -> Study:
    study = Study(root)
    study.file("protocol.toml", protocol)
    study.file("script.toml", SCRIPT)
    study.file("stimuli/norms.csv", NORMS + "".join(f"t{i},s0.png,3,3\n" for i in range(stimuli - 4)))
    for i in range(4):
        study.file(f"stimuli/s{i}.png", png())
    return study


def _child_main(argv: list[str], log: Path, barrier) -> None:
    sys.stdout = sys.stderr = open(log, "w", buffering=1)  # pytest's capture objects are not ours to write to
    barrier.wait()
    status = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def test_fifty_simultaneous_starts_give_one_session(tmp_path):
    # A session of ~40 s: every start arrives while the first one runs (on a loaded machine some take seconds).
    study = make_study(tmp_path, PROTOCOL.replace("time_scale = 0.0", "time_scale = 1.0"))
    barrier = FORK.Barrier(50)
    children = [FORK.Process(target=_child_main, args=(study.run(participant="P017"), tmp_path / f"{i}.log", barrier))
                for i in range(50)]
    for child in children:
        child.start()
    deadline = time.monotonic() + 120
    while sum(child.exitcode is None for child in children) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    (winner,) = [child for child in children if child.exitcode is None]
    os.kill(winner.pid, signal.SIGKILL)  # a crash: the kernel frees its lock
    for child in children:
        child.join()
    for i, child in enumerate(children):
        if child is not winner:
            log = (tmp_path / f"{i}.log").read_text()
            assert child.exitcode == 2, log
            (line,) = log.strip().splitlines()
            assert re.fullmatch(rf"edge-cer run: error: participant P017 is running in process {winner.pid} since "
                                r"\d\d:\d\d; wait for .*--resume\)", line), line
    (session,) = list_sessions(study.data)
    assert session.state == "running"
    assert list(read_keys(study.data / KEY_FILE)) == ["P017"]
    # The folder stays usable: P017 is told to resume, another participant runs.
    assert main(study.run(participant="P017")) == 2
    assert main(study.run(participant="P018", protocol=study.file("fast.toml", PROTOCOL))) == 0
    assert len(list_sessions(study.data)) == 2


def test_concurrent_first_starts_agree_on_one_pseudonym(tmp_path):
    """The forced interleaving that once gave one label two pseudonyms: many first starts at once, no session."""
    from edge_cer.session.ownership import claim_participant

    def claim(_):
        try:
            pseudonym, lock = claim_participant(tmp_path, tmp_path / KEY_FILE, "P042")
        except Exception as exc:  # noqa: BLE001 - the refusal of the ones that lose the participant lock
            return str(exc)
        time.sleep(0.2)
        lock.release()
        return pseudonym

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(claim, range(16)))
    keys = read_keys(tmp_path / KEY_FILE)
    assert list(keys) == ["P042"]
    assert all(r == keys["P042"] or "P042 is running" in r for r in results), results


def test_damaged_session_and_key_line_are_skipped_by_everyone_else(tmp_path, caplog):
    study = make_study(tmp_path)
    for label in ("P001", "P002"):
        assert main(study.run(participant=label)) == 0
    victim = next(s for s in list_sessions(study.data) if s.participant == read_keys(study.data / KEY_FILE)["P002"])
    (victim.folder / "session.sqlite3").write_bytes(b"this is not a database" * 100)
    first = next(s for s in list_sessions(study.data) if s.participant == read_keys(study.data / KEY_FILE)["P001"])
    shutil.copytree(first.folder, first.folder.with_name("zzzzzzzz"))  # a second ses-01 (two starts before locks)
    with open(study.data / KEY_FILE, "ab") as f:
        f.write(b"P009\t\xff\xfe torn\n")
    assert main(study.run(participant="P003")) == 0  # another participant runs and exports
    assert main(["export-data", str(study.data)]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(victim.folder / "session.sqlite3") in w and "damaged" in w and "backup" in w for w in warnings)
    assert any("line 4" in w and "not UTF-8" in w and "repair it" in w for w in warnings)
    assert any("zzzzzzzz" in w and "left out of the exports" in w for w in warnings)
    subjects = {p.name for p in (study.data / "bids").glob("sub-*")}
    assert subjects == {f"sub-{read_keys(study.data / KEY_FILE)[label]}" for label in ("P001", "P003")}
    tidy = (study.data / "trials.csv").read_text().splitlines()
    assert len(tidy) == 1 + 2 * 2


def _export_forever(data: str) -> None:
    while True:
        bids.export_all(data)


def test_kill_during_export_leaves_old_or_new_and_the_next_run_repairs(tmp_path):
    study = make_study(tmp_path, PROTOCOL.replace("trials_per_condition = 1", "trials_per_condition = 5"), stimuli=12)
    for label in ("P001", "P002", "P003", "P004"):
        assert main(study.run(participant=label)) == 0
    reference_bids, reference_tidy = snapshot(study.data / "bids"), (study.data / "trials.csv").read_bytes()
    rng, interrupted = random.Random(0), 0
    for _ in range(40):  # until 6 kills landed mid-rebuild (a loaded machine needs more tries)
        child = FORK.Process(target=_export_forever, args=(str(study.data),))
        child.start()
        time.sleep(rng.uniform(0.05, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        interrupted += any(p.name.startswith((".bids.new-", ".trials.csv.tmp")) for p in study.data.iterdir())
        # Either export is complete: no moment of the rebuild shows a missing or half-written one.
        assert snapshot(study.data / "bids") == reference_bids
        assert (study.data / "trials.csv").read_bytes() == reference_tidy
        if interrupted >= 6:
            break
    assert interrupted >= 6  # most kills landed mid-rebuild (the child does nothing else)
    assert main(study.run(participant="P005")) == 0  # the next run repairs and adds to it
    assert not [p.name for p in study.data.iterdir() if p.name.startswith((".bids.", ".trials.csv"))]
    assert len((study.data / "trials.csv").read_text().splitlines()) == 1 + 5 * 10


def test_export_data_rebuilds_what_was_lost(tmp_path, capsys):
    study = make_study(tmp_path)
    assert main(study.run(participant="P001")) == 0
    reference = snapshot(study.data / "bids")
    shutil.rmtree(study.data / "bids")
    (study.data / "trials.csv").unlink()
    capsys.readouterr()
    assert main(["export-data", str(study.data)]) == 0
    assert "rebuilt" in capsys.readouterr().out
    assert snapshot(study.data / "bids") == reference
    assert len((study.data / "trials.csv").read_text().splitlines()) == 3


def test_control_characters_are_raw_in_sqlite_and_escaped_in_exports(tmp_path):
    study = make_study(tmp_path)
    text = "tab\there, line\nbreak, nul\x00, bell\x07, sep\u2028end"
    (study.root / "script.json").write_text(json.dumps({"trials": [{"text": text}]}))
    assert main(study.run(script=study.root / "script.json", participant="P001")) == 0
    (session,) = list_sessions(study.data)
    _, trials, _ = read_session(session.folder)
    assert {t["transcript"] for t in trials} == {text}
    escaped = "tab\\there, line\\nbreak, nul\\x00, bell\\x07, sep\\u2028end"
    tidy = (study.data / "trials.csv").read_text()
    assert tidy.count(escaped) == 2 and "\x00" not in tidy and len(tidy.splitlines()) == 3
    (tsv,) = (study.data / "bids").rglob("*_beh.tsv")
    rows = tsv.read_text().splitlines()
    assert len(rows) == 3 and all(r.count("\t") == rows[0].count("\t") for r in rows) and escaped in rows[1]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_mid_session_is_one_line_and_resumable(small_disk, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGE_CER_LOG_DIR", str(tmp_path / "logs"))
    study = make_study(small_disk / "study", PROTOCOL.replace("trials_per_condition = 1", "trials_per_condition = 6"),
                       stimuli=12)
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * (free - 384 * 1024))  # room for the session and a few trials
    capsys.readouterr()
    assert main(study.run(participant="P001")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(r"edge-cer run: error: --data \S+: the disk is full .* in session 01 of P001, after \d+ "
                        r"recorded trials \(none lost\); free some space, then continue it with --resume", line), line
    (session,) = list_sessions(study.data)
    _, before, _ = read_session(session.folder)
    assert session.state == "running" and 0 < len(before) < 12
    (small_disk / "filler").unlink()
    assert main(study.run("--resume", participant="P001")) == 0
    (session,) = list_sessions(study.data)
    _, after, _ = read_session(session.folder)
    assert session.state == "completed" and [t["trial"] for t in after] == list(range(1, 13))
    assert after[:len(before)] == before  # nothing recorded before the disk filled was lost or changed
    con = sqlite3.connect(session.folder / "session.sqlite3")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()


def test_a_bug_is_one_line_with_exit_1_and_its_traceback_in_a_named_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGE_CER_LOG_DIR", str(tmp_path / "logs"))
    study = make_study(tmp_path)
    assert main(study.run(participant="P001")) == 0

    def broken(data_dir):
        return {}["no such key"]

    monkeypatch.setattr(bids, "export_all", broken)
    capsys.readouterr()
    assert main(["export-data", str(study.data)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("edge-cer export-data: internal error: KeyError: 'no such key'")
    log = Path(re.search(r"the traceback is in (\S+),", line)[1])
    assert log.parent == tmp_path / "logs"
    assert "Traceback (most recent call last)" in log.read_text() and "no such key" in log.read_text()


def test_a_graph_swapped_in_with_the_manifest_rehashed_is_refused_at_load(tiny_export, stimulus_png, tmp_path, capsys):
    engines = tmp_path / "engines"
    shutil.copytree(tiny_export(), engines)
    shutil.copy(engines / "vae_decoder" / "model.onnx", engines / "text_encoder" / "model.onnx")
    manifest = json.loads((engines / "manifest.json").read_text())
    manifest["files"]["text_encoder/model.onnx"] = hashlib.sha256(
        (engines / "text_encoder" / "model.onnx").read_bytes()).hexdigest()
    (engines / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    status = main(["generate", "--engines", str(engines), "--image", str(stimulus_png), "--prompt", "it is staged",
                   "--out", str(tmp_path / "out.png")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert "text_encoder/model.onnx" in line and "not those of the text_encoder graph" in line and "re-run" in line
