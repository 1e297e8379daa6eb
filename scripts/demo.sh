#!/usr/bin/env bash
# Set everything up (see setup.sh) and run the demo: napari with a sample image, pre-drawn scribbles and the
# Train panel, training live. Without a screen it runs under a virtual X server and saves screenshots.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
  echo "[demo] no screen: running under xvfb, screenshots go to out/demo/"
  exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/labelfx demo --screenshots out/demo "$@"
fi
exec .venv/bin/labelfx demo "$@"
