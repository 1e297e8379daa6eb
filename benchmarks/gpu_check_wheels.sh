#!/usr/bin/env bash
# Download (here, where PyPI answers) the wheels the GPU machine's image lacks, into .whl/ (git-ignored via
# .git/info/exclude), for benchmarks/gpu_check.sh to install there: the GPU machine reaches no registry.
# The image has Python 3.12 with CUDA torch, numpy, scipy, scikit-image, tifffile, safetensors, psutil, ...;
# it lacks zarr (and numcodecs, donfig, google-crc32c), dask and distributed (and their small pure-Python
# needs) and monai. Versions are those of this project's .venv. Then carry it: run(carry=[".whl"], ...).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
PY=${LABELFX_VENV:-.venv}/bin/python
WHEELS=(zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 dask==2026.8.0
        distributed==2026.8.0 tornado==6.6.1 tblib==3.2.2 zict==3.0.0 locket==1.0.0 partd==1.4.2
        importlib_metadata==10.2.0 monai==1.6.1)
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
ls -la .whl
du -sh .whl
