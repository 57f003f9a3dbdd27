"""`edge-cer serve` and its client on loopback: two scripted sessions at once whose pictures equal local generation,
a server killed mid-request (one-line error, session resumable), a bounded load test, and the service's refusals.

The server runs in `.venv-serve` (PyTriton pins numpy < 2; ./setup.sh makes it); without it those tests are skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_cer.errors import EdgeCerError
from edge_cer.serve.command import SERVE_VENV
from edge_cer.serve.load import ServeProcess, loopback_ports
from edge_cer.session.data import list_sessions
from tests.session_helpers import protocol_text

SERVE_PYTHON = Path(os.environ.get("EDGE_CER_SERVE_PYTHON") or SERVE_VENV / "bin" / "python")
SCRIPT = Path(__file__).parents[1] / "edge_cer" / "session" / "default_script.toml"
# Slow pictures (600 txt2img steps: about a second on the tiny export, 80 took 0.13 s) so that a kill 0.3 s after the
# request lands while the picture is made; a long deadline keeps the pictures of the other trials.
SLOW_PICTURES = "[generation]\nsteps = 600\nstrength = 1.0\n[live]\ndeadline_s = 60\n"
needs_server = pytest.mark.skipif(not SERVE_PYTHON.is_file(),
                                  reason=f"{SERVE_PYTHON}: no serve venv (PyTriton pins numpy < 2); run ./setup.sh")


@pytest.fixture(scope="module")
def server(tiny_export, tmp_path_factory):
    if not SERVE_PYTHON.is_file():
        pytest.skip(f"{SERVE_PYTHON}: no serve venv; run ./setup.sh")
    pytest.importorskip("tritonclient.grpc", reason="the client needs tritonclient: pip install 'edge-cer[client]'")
    # Started as a script's background job starts it, with SIGINT ignored: SIGTERM must stop it all the same (it
    # did not, when SIGTERM was turned into a SIGINT).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        served = ServeProcess(tiny_export(), tmp_path_factory.mktemp("serve") / "serve.log", "--drain-s", "2").start()
    finally:
        signal.signal(signal.SIGINT, previous)
    yield served
    assert served.stop() == 0, served.log.read_text()[-3000:]
    assert "edge-cer serve: stopped" in served.log.read_text()


@pytest.fixture(scope="module")
def dark_stimuli(tmp_path_factory) -> Path:
    """Dark red stimuli: the tiny random models' grey pictures pass the safety gate against them (they are
    brighter and less red), so every AI trial keeps its picture and the comparison sees pictures, not refusals."""
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("stimuli")
    y, x = np.mgrid[0:90, 0:70]
    rows = []
    for k in range(6):
        rgb = np.stack([60 + (x * (3 + k)) % 80, (y * 2) % 30, (x + y + k) % 30], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"s{k}.png")
        rows.append(f"s{k},s{k}.png,{2 + k * 0.3:.1f},6.0")
    (folder / "norms.csv").write_text("id,file,valence,arousal\n" + "\n".join(rows) + "\n")
    return folder


def _run(*args: str, data: Path, participant: str, protocol: Path, stimuli: Path, wait: bool = True):
    command = [sys.executable, "-m", "edge_cer.cli", "run", "--participant", participant, "--data", str(data),
               "--scripted", str(SCRIPT), "--protocol", str(protocol), "--stimuli", str(stimuli), "--min-free-mb",
               "1", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process.communicate(timeout=300) + (process.returncode,) if wait else process


def _summary(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


def _pictures(folder: Path) -> dict[int, tuple]:
    con = sqlite3.connect(f"file:{folder / 'session.sqlite3'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT trial, picture_sha256, generation FROM trials").fetchall()
    finally:
        con.close()
    result = {}
    for trial, sha, generation in rows:
        params = dict(json.loads(generation)["params"]) if generation else {}
        params.pop("server", None)  # where it was made; and when the gate decided, on the wall clock
        params["safety"] = [{k: v for k, v in d.items() if k != "decided_at"} for d in params.get("safety", [])]
        result[trial] = (sha, params)
    return result


def _resume_keeps_trial_1_and_completes(server, data: Path, participant: str, protocol: Path, stimuli: Path) -> None:
    """A session stopped by a lost server holds trial 1 only and is running; `run --resume` against `server` ends it
    with every AI trial's picture."""
    (session,) = list_sessions(data)
    assert session.state == "running" and set(_pictures(session.folder)) == {1}
    out, err, code = _run("--server", server.url, "--resume", data=data, participant=participant, protocol=protocol,
                          stimuli=stimuli)
    assert code == 0, err
    summary = _summary(out)
    assert summary["state"] == "completed" and summary["trials_recorded"] == summary["trials_planned"] == 2
    assert all(sha for sha, _ in _pictures(session.folder).values())


@needs_server
def test_two_sessions_at_once_equal_local_generation(server, tiny_export, dark_stimuli, tmp_path):
    protocol = tmp_path / "ai.toml"
    protocol.write_text(protocol_text(trials_per_condition=2, feedback='["ai"]'))
    remote = {p: _run("--server", server.url, data=tmp_path / f"served-{p}", participant=p, protocol=protocol,
                      stimuli=dark_stimuli, wait=False) for p in ("P001", "P002")}
    local = {p: _run("--engines", str(tiny_export()), data=tmp_path / f"local-{p}", participant=p, protocol=protocol,
                     stimuli=dark_stimuli, wait=False) for p in remote}
    for participant, process in remote.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        local_out, local_err = local[participant].communicate(timeout=300)
        assert local[participant].returncode == 0, local_err
        served, here = _summary(out), _summary(local_out)
        assert served["trials_recorded"] == here["trials_recorded"] == 4
        pictures = _pictures(Path(served["folder"]))
        assert all(sha for sha, _ in pictures.values()), "every AI trial has its picture"
        assert pictures == _pictures(Path(here["folder"])), "served pictures and records equal local generation"


@needs_server
def test_server_killed_mid_request_one_line_error_and_the_session_resumes(server, tiny_export, dark_stimuli,
                                                                           tmp_path):
    protocol = tmp_path / "slow.toml"
    protocol.write_text(protocol_text(trials_per_condition=1, feedback='["ai"]') + SLOW_PICTURES)
    doomed = ServeProcess(tiny_export(), tmp_path / "serve.log", "--drain-s", "2").start()
    data = tmp_path / "data"
    run = _run("--server", doomed.url, data=data, participant="P003", protocol=protocol, stimuli=dark_stimuli,
               wait=False)
    try:
        assert run.stdout.readline().strip() == "trial 1 recorded"
        time.sleep(0.3)  # trial 2's request is in flight
        doomed.stop(signal.SIGKILL)
        out, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 2
    error = err.strip().splitlines()[-1]
    assert error.startswith("edge-cer run: error: grpc://127.0.0.1:") and "--resume" in error, err
    # Resumed against another server (a restarted one is the same to the client, which re-sends its stimuli).
    _resume_keeps_trial_1_and_completes(server, data, "P003", protocol, dark_stimuli)


@needs_server
def test_load_test_reports_latency_percentiles_and_throughput(server, stimulus_png):
    from edge_cer.serve.load import load_test

    stats = load_test(server.url, stimulus_png, clients=3, requests=2, steps=2)
    row = stats.row()
    assert row["pictures"] == 6 and 0 < row["p50_s"] <= row["p95_s"] and row["pictures_per_s"] > 0


@needs_server
def test_a_stimulus_the_server_lost_is_sent_again(server, stimulus_png):
    from edge_cer.serve.client import RemoteGenerator

    generator = RemoteGenerator(server.url)
    generator._known.add(hashlib.sha256(stimulus_png.read_bytes()).hexdigest())  # as if sent before a restart
    picture = generator.generate(stimulus_png, "it is over now", seed=5, strength=0.6, ip_scale=0.6, steps=2)
    assert picture.png.startswith(b"\x89PNG") and picture.params["seed"] == 5


@needs_server
def test_a_stale_generation_is_cancelled(server, stimulus_png):
    from edge_cer.serve.client import RemoteGenerator

    picture = RemoteGenerator(server.url).generate(stimulus_png, "never mind", seed=1, strength=0.6, ip_scale=0.6,
                                                    steps=2, callback_on_step_end=lambda *_: False)
    assert picture.params["interrupted"] is True and picture.png == b""


def test_no_server_is_a_one_line_error():
    pytest.importorskip("tritonclient.grpc", reason="the client needs tritonclient")
    from edge_cer.serve.client import RemoteGenerator

    (port,) = loopback_ports(1)
    with pytest.raises(EdgeCerError, match=r"^--server grpc://127\.0\.0\.1:\d+: no edge-cer server ready") as exc:
        RemoteGenerator(f"127.0.0.1:{port}", connect_timeout_s=0.5)
    assert "\n" not in str(exc.value)
    with pytest.raises(EdgeCerError, match="expected grpc://HOST:PORT"):
        RemoteGenerator("http://127.0.0.1:8000")


def test_serve_without_its_venv_says_how_to_make_it(tiny_export, monkeypatch, capsys):
    from edge_cer.cli import main

    monkeypatch.setenv("EDGE_CER_SERVE_PYTHON", "/nonexistent/python")
    if __import__("importlib").util.find_spec("pytriton") is not None:
        pytest.skip("this venv has PyTriton: serve runs in it")
    assert main(["serve", "--engines", str(tiny_export())]) == 2
    assert "run ./setup.sh" in capsys.readouterr().err


def test_service_refuses_bad_requests_and_serves_local_pictures(tiny_export, stimulus_png):
    """The server's side without a server: each refusal is one record; a picture equals the local generator's."""
    from edge_cer.engine import EngineGenerator
    from edge_cer.image import load_image
    from edge_cer.pipeline import SDPipeline
    from edge_cer.serve.protocol import BAD_REQUEST, GENERATE, PRECOMPUTE, UNKNOWN_STIMULUS, dumps, loads
    from edge_cer.serve.service import GenerationService

    pipeline = SDPipeline.from_export(tiny_export())
    service = GenerationService(pipeline)
    data = stimulus_png.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    request = dict(stimulus_sha256=sha, prompt="he is safe now", seed=2, strength=0.6, ip_scale=0.6, steps=2,
                   guidance=7.5, negative_prompt=None, scheduler=None)

    def call(model, req, picture=b""):
        record, payload = service.handle(model, dumps(req), picture)
        return loads(record), payload

    assert call(GENERATE, request)[0]["kind"] == UNKNOWN_STIMULUS
    assert "do not match" in call(PRECOMPUTE, request, data[:-1] + b"x")[0]["error"]
    assert call(GENERATE, dict(request, seed="2"), data)[0]["error"] == "request field 'seed' must be int, not str"
    assert call(GENERATE, dict(request, strength=1.5), data)[0]["kind"] == BAD_REQUEST
    record, png = call(GENERATE, request)  # cached by hash since the last request that sent it
    local = EngineGenerator(pipeline).render(load_image(stimulus_png), "he is safe now", seed=2, strength=0.6,
                                             ip_scale=0.6, steps=2)
    assert png == local.png and record["params"] == local.params


@pytest.mark.slow
@needs_server
def test_tui_server_killed_mid_request_one_calm_line_and_the_session_resumes(server, tiny_export, dark_stimuli,
                                                                              tmp_path):
    """`edge-cer tui --server` in a real terminal (tmux): kill -9 of the server while trial 2's picture is made. The
    experimenter reads one line on screen; the app exits 2 with the summary and that line on stderr, no traceback;
    the session keeps trial 1 and resumes against a running server."""
    from tests.test_tui_tmux import Terminal
    from tests.tui_helpers import DURATIONS

    protocol = tmp_path / "slow.toml"
    protocol.write_text(protocol_text(time_scale=1.0, trials_per_condition=1, feedback='["ai"]') + DURATIONS
                        + SLOW_PICTURES)
    doomed = ServeProcess(tiny_export(), tmp_path / "serve.log", "--drain-s", "2").start()
    data = tmp_path / "data"
    term = Terminal(tmp_path, f"--data {data} --protocol {protocol} --stimuli {dark_stimuli} --server {doomed.url} "
                              "--participant P004 --pictures halfcell --min-free-mb 0", linger=True)
    try:
        term.wait_for("ready", timeout=120)
        term.keys("Enter")
        term.wait_for("Press Enter to begin.")
        term.keys("Enter")
        for trial in (1, 2):
            term.wait_for("How negative do you feel right now?", timeout=60)
            term.keys("7")
            term.wait_for("Type here, then press Enter")
            term.keys("-l", "It is only a film set.")
            term.keys("Enter")
            if trial == 1:
                term.wait_for("How negative do you feel now?", timeout=60)
                term.keys("3")
                term.wait_for("Take a short break.")
                term.keys("Enter")
        time.sleep(0.3)  # trial 2's request is in flight
        doomed.stop(signal.SIGKILL)
        shown = " ".join(term.wait_for("The session has stopped", timeout=60).split())
        assert "lost in trial 2" in shown and "resume" in shown, shown
        term.keys("Enter")
        end = time.monotonic() + 20
        while "exit=" not in (term.out.read_text() if term.out.exists() else "") and time.monotonic() < end:
            time.sleep(0.1)
        stderr = term.wait_for("edge-cer tui: error:").strip()  # the terminal after the app: its stderr alone
    finally:
        term.close()
        doomed.stop(signal.SIGKILL)
    printed = term.out.read_text()
    assert "exit=2" in printed, (printed, stderr)
    assert "Traceback" not in stderr and stderr.startswith("edge-cer tui: error: the picture server was lost in "
                                                           "trial 2 (grpc://127.0.0.1:"), stderr
    assert "resume" in stderr.splitlines()[-1], stderr
    summary = json.loads(printed[: printed.rindex("exit=")])
    assert summary["state"] == "running" and summary["trials_recorded"] == 1
    # Resumed against a running server (the TUI's setup-screen resume is the Pilot test's; here the scripted run).
    _resume_keeps_trial_1_and_completes(server, data, "P004", protocol, dark_stimuli)
