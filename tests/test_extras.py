"""The runtime install stays small (its resolved requirements hold no statistics, plotting or torch stack), a
missing extra is one line with the install command, and `edge-cer --version` / `python -m edge_cer` work."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import edge_cer
from edge_cer.extras import extra_providing

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NOT_IN_RUNTIME = {"scikit-learn", "seaborn", "xarray", "matplotlib", "pingouin", "statsmodels", "torch", "pandas"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def metadata_lines() -> list[str]:
    """Requires-Dist as the wheel built from this pyproject.toml writes it (the installed metadata may be older)."""
    lines = list(PROJECT["dependencies"])
    for extra, reqs in PROJECT["optional-dependencies"].items():
        lines += [f'{r.split("#")[0].strip()}; extra == "{extra}"' for r in reqs]
    return lines


def test_runtime_requirements_resolve_without_the_analysis_stack_or_torch():
    """The transitive closure of the runtime requirements, through the metadata of what is installed here."""
    seen, todo = set(), [Requirement(r) for r in PROJECT["dependencies"]]
    while todo:
        req = todo.pop()
        name = normalise(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in requires(req.name) or []]
        except PackageNotFoundError:
            pytest.fail(f"{req.name} (a runtime requirement) is not installed here, so its requirements are unknown")
    assert {"numpy", "onnxruntime", "sherpa-onnx", "textual"} <= seen
    assert not seen & NOT_IN_RUNTIME, f"the runtime install pulls {sorted(seen & NOT_IN_RUNTIME)}"


@pytest.mark.parametrize("module, extra", [("pandas", "analysis"), ("pingouin.bayesian", "analysis"),
                                           ("torch", "export"), ("diffusers", "export"), ("cuda", "gpu"),
                                           ("tensorrt", "gpu"), ("pytest", "dev"), ("numpy", None), ("onnxruntime", None),
                                           ("nope", None)])
def test_each_missing_module_maps_to_its_extra(module, extra):
    assert extra_providing(module, metadata_lines()) == extra


@pytest.mark.parametrize("argv, missing, line", [
    (["analyze", "data", "--out", "out"], "pandas", "pip install 'edge-cer[analysis]'"),
    (["simulate", "--out", "out"], "pandas", "pip install 'edge-cer[analysis]'"),
    (["export", "sd", "--model", "m", "--ip-adapter", "a", "--out", "o"], "torch", "pip install torch==2.13.0"),
])
def test_a_missing_extra_is_one_line_with_the_install_command(argv, missing, line):
    """As in a runtime-only install: the module is absent (None in sys.modules), the metadata is this pyproject's."""
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            f"import edge_cer.extras as x; x.requires = lambda _: {metadata_lines()!r}\n"
            f"from edge_cer.cli import main; sys.exit(main({argv!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"needs {missing}" in result.stderr and line in result.stderr


def test_version_and_python_dash_m():
    for argv in (["-m", "edge_cer", "--version"], ["-m", "edge_cer.cli", "--version"]):
        out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=True, cwd=ROOT).stdout
        assert out.strip() == f"edge-cer {edge_cer.__version__}"


def test_python_floor_matches_the_code():
    """tomllib is 3.11+, so the package must not claim 3.10."""
    assert PROJECT["requires-python"].startswith(">=3.11")
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
