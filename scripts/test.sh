#!/usr/bin/env bash
# Set everything up (see setup.sh) and run the test suite under a virtual X server with OpenGL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONFAULTHANDLER=1
# Tests run on CPU, deterministically and without touching the user's napari settings.
export NAPARI_CONFIG="$(mktemp -d)/napari_settings.yaml"
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
  exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest "$@"
