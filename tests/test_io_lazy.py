"""Opening a ~200 MB file must not read it: peak RSS growth stays below 1/4 of the file size.

The measurement runs benchmarks/lazy_open.py, which measures each file in a fresh interpreter,
so memory held by other tests cannot hide or inflate the peak.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "lazy_open.py"


@pytest.mark.timeout(240)
def test_lazy_open_memory_is_a_fraction_of_file_size(tmp_path):
    pytest.importorskip("psutil")
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parent.parent))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--size-mb", "200", "--dir", str(tmp_path),
         "--formats", "tiff_stack", "tiff_tiled_2d", "zarr"],
        env=env, capture_output=True, text=True, timeout=220,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    for name, case in result["cases"].items():
        assert case["file_bytes"] > 150 * 2**20, name  # the file really is large
        assert case["touched_bytes"] > 0, name  # a slice really was read
        for key in ("rss_increase_read_image", "rss_increase_read_layers"):
            assert case[key] < case["file_bytes"] / 4, (name, key, case)
