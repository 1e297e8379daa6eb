#!/usr/bin/env bash
# The prepared GPU check of issue 16 (benchmarks/gpu_check.py): CUDA training with mixed precision
# (supervised, mean teacher), our tiled inference against MONAI's sliding window on the same network,
# distributed prediction with one dask worker per GPU; one JSON summary at the end (and $OUT/gpu_check.json).
# Under 5 minutes on one H100/H200 (the python side skips steps past --budget-s, 240 s by default).
#
# On the GPU machine (no internet; its image has CUDA torch but not zarr/dask/distributed/monai):
#   here:   bash benchmarks/gpu_check_wheels.sh           # wheels into .whl/ (git-ignored)
#   there:  run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=330)
# Anywhere else: bash benchmarks/gpu_check.sh --device cpu --quick   (what tests/test_gpu_check.py checks)
set -uo pipefail
cd "$(dirname "$0")/.."

# 1. a Python whose torch sees CUDA: $LABELFX_PYTHON, the image's python3, then this project's .venv
#    (.venv holds a CPU-only torch here, so on the GPU machine it is the last resort, not the first)
PY=""
for cand in "${LABELFX_PYTHON:-}" python3 .venv/bin/python; do
  [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 || continue
  if "$cand" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    PY=$cand; break
  fi
done
if [ -z "$PY" ]; then
  for cand in "${LABELFX_PYTHON:-}" .venv/bin/python python3; do
    [ -n "$cand" ] && "$cand" -c "import torch" >/dev/null 2>&1 && { PY=$cand; break; }
  done
  [ -z "$PY" ] && { echo "gpu_check: no Python with torch found (set LABELFX_PYTHON)" >&2; exit 2; }
  echo "gpu_check: no Python here has a CUDA-enabled torch; using $PY (only --device cpu can pass)" >&2
fi
echo "gpu_check: python $PY" >&2

# 2. packages the image lacks, from wheels carried in .whl/ (made by benchmarks/gpu_check_wheels.sh)
if compgen -G ".whl/*.whl" >/dev/null && ! "$PY" -c "import zarr, dask, distributed, monai" >/dev/null 2>&1; then
  SITE=${TMPDIR:-/tmp}/labelfx_gpu_check_site
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_check: installing the carried wheels failed; going on with what imports" >&2
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# 3. the check; a hard stop under 5 minutes in case a step hangs (the summary is then missing: see the log)
exec timeout 290 "$PY" benchmarks/gpu_check.py "$@"
