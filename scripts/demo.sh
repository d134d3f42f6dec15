#!/usr/bin/env bash
# Install the project into ./.venv and run the embedded demo: the whole train-eval-export flow on a
# small real image set made locally (scikit-learn's handwritten digits), on the CPU, no cloud.
# Extra arguments go to `irv2 demo` (e.g. --workdir DIR).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/irv2 demo "$@"
