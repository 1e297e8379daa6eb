"""benchmarks/eval_table.py: mean ± sd tables from eval reports."""
import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_table.py"


@pytest.fixture(scope="module")
def eval_table():
    spec = importlib.util.spec_from_file_location("eval_table", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _report(path: Path, seed: int, dice: float, ap50: float, corrected: float | None = None) -> None:
    labels = {"images": 2, "initial": {"AP50": 0.5, "AP75": 0.1, "AP": 0.2, "AR": 0.4}}
    if corrected is not None:
        labels["corrected"] = {"AP50": corrected, "AP75": 0.1, "AP": 0.2, "AR": 0.6}
    rep = {"seed": seed, "seconds": {"train": 10.0 * (seed + 1)},
           "metrics": {"dice": {"nucleus": dice}, "mean_dice": dice, "AP50": ap50, "AP75": 0.1, "AP": 0.2,
                       "AR": 0.3, "training_labels": labels}}
    path.write_text(json.dumps(rep))


def test_rows_columns_and_spread(eval_table, tmp_path, capsys):
    for s, (d, c) in enumerate([(0.6, 0.7), (0.8, 0.9)]):
        _report(tmp_path / f"a_s{s}.json", s, d, 0.5, corrected=c)
    _report(tmp_path / "b_s0.json", 0, 0.7, 0.4)
    assert eval_table.main(["--metric", "dice", "--row", f"adele={tmp_path}/a_s*.json",
                            "--row", f"sup={tmp_path}/b_s*.json", "--row", f"typo={tmp_path}/zz*.json"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:4] == ["method", "n", "nucleus", "mean dice"]
    assert header[-1] == "train s" and "labels AP50 corrected" in header
    adele = [c.strip() for c in lines[2].strip("|").split("|")]
    assert adele[:3] == ["adele", "2", "0.700 ± 0.141"]  # mean and sample sd of 0.6, 0.8
    assert adele[header.index("labels AP50 corrected")] == "0.800 ± 0.141"
    sup = [c.strip() for c in lines[3].strip("|").split("|")]
    assert sup[header.index("labels AP50 corrected")] == "-"  # a baseline corrects nothing
    assert len(lines) == 4 and "typo" in err  # the row without files is reported, not printed
