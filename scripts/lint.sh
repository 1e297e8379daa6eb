#!/usr/bin/env bash
# Static checks: ruff (must pass) and mypy on the library (widgets/ excluded), which must not report more
# errors than .ci/mypy-baseline holds. Lower that number when a change fixes some; never raise it to pass.
set -euo pipefail
cd "$(dirname "$0")/.."
VPY=${LABELFX_VENV:-.venv}/bin/python

echo "[lint] ruff"
"$VPY" -m ruff check .

echo "[lint] mypy"
baseline=$(cat .ci/mypy-baseline)
report=$("$VPY" -m mypy src/napari_labelfx 2>&1 || true)
count=$(printf '%s\n' "$report" | grep -c ': error:' || true)
if [ "$count" -gt "$baseline" ]; then
  printf '%s\n' "$report" | grep ': error:' >&2
  echo "[lint] mypy: $count errors, more than the $baseline of .ci/mypy-baseline (see above)" >&2
  exit 1
fi
echo "[lint] mypy: $count errors (baseline $baseline)"
