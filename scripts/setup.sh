#!/usr/bin/env bash
# Set up everything napari-labelfx needs on a fresh Debian/Ubuntu machine with Python >= 3.10:
# system libraries for Qt/OpenGL and a virtual X server (when root and missing), a virtual
# environment in .venv, a CPU build of PyTorch and the package with its GUI, test and export extras.
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${LABELFX_VENV:-.venv}

need_apt=()
for pkg in xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3 \
           libxkbcommon-x11-0 libxkbcommon0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
           libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 \
           libxcb-cursor0 libxcb-xkb1 libxrender1 libxi6; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else SUDO=""; fi
  if [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; then
    echo "[setup] installing system packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "[setup] warning: cannot install ${need_apt[*]} (not root, no sudo); the GUI may not start" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true

# torch first, pinned to a CPU build: an unpinned torch from PyPI pulls gigabytes of CUDA packages.
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing PyTorch (CPU build)"
  "$VPY" -m pip install -q "torch==2.13.0" || \
    "$VPY" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi

stamp="$VENV/.labelfx-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing napari-labelfx with its GUI, test and export extras"
  "$VPY" -m pip install -q -e ".[gui,qt,test,export]"
  touch "$stamp"
fi
echo "[setup] ready: $VENV"
