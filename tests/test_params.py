"""Declared method parameters (core/params.py): checks, the methods' specs, --param, docs tables."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from napari_labelfx.cli import main
from napari_labelfx.core.params import Param, ParamError, ParamSpec
from napari_labelfx.engine.factory import check_method_params, method_defaults, method_spec, training_methods
from napari_labelfx.methods import MethodError, create_method

ROOT = Path(__file__).resolve().parents[1]


def test_numbers_respect_type_and_range():
    p = Param("tau", "float", 0.95, min=0, max=1, min_open=True, max_open=True)
    assert p.check(0.5) == 0.5 and p.check("0.25") == 0.25 and isinstance(p.check(1 / 2), float)
    for bad in (0, 1, 1.5, "x", True, None, float("nan")):
        with pytest.raises(ParamError, match=r"tau must be a number in \(0, 1\)"):
            p.check(bad, "method 'm'")
    n = Param("pool", "int", 3, min=1)
    assert n.check(4) == 4 and n.check(4.0) == 4 and isinstance(n.check(4.0), int)
    with pytest.raises(ParamError, match="pool must be an integer >= 1, got 2.5"):
        n.check(2.5)
    with pytest.raises(ParamError, match="an integer >= 1"):
        n.check(0)


def test_unions_choices_and_lists():
    k = Param("k", "count_or_fraction", 7000)
    assert k.check(7000) == 7000 and isinstance(k.check(7000.0), int)
    assert k.check(0.05) == 0.05 and isinstance(k.check(0.05), float)
    assert k.check(1) == 1 and isinstance(k.check(1), int)  # one reference, not the whole pool
    assert k.check(1.0) == 1.0 and isinstance(k.check(1.0), float)  # the whole pool
    for bad in (-3, 0, 2.5, "many"):
        with pytest.raises(ParamError, match=r"an integer count >= 1 or a fraction in \(0, 1\]"):
            k.check(bad)
    thr = Param("threshold", "float", "auto", min=0, max=1, min_open=True, max_open=True, choices=("auto", "otsu"))
    assert thr.check("otsu") == "otsu" and thr.check(0.4) == 0.4 and thr.check("0.4") == 0.4
    with pytest.raises(ParamError, match=r"'auto' or 'otsu' or a number in \(0, 1\)"):
        thr.check("median")
    mode = Param("unlabeled", "choice", "none", choices=("none", "self"))
    with pytest.raises(ParamError, match=r"one of \['none', 'self'\]"):
        mode.check("teacher")
    assert Param("s", "floats", "1,2").check("0.5, 1,2") == [0.5, 1.0, 2.0]
    assert Param("s", "floats", [1.0]).check([1, 2]) == [1.0, 2.0]
    words = Param("f", "words", "a,b", choices=("a", "b", "c"))
    assert words.check("c, a") == ["c", "a"]
    with pytest.raises(ParamError):
        words.check("a,z")
    flag = Param("flip", "bool", True)
    assert flag.check(False) is False and flag.check("true") is True
    with pytest.raises(ParamError, match="true or false"):
        flag.check(1)


def test_spec_resolve_fills_defaults_and_refuses_unknown_names():
    spec = ParamSpec((Param("a", "int", 1), Param("b", "bool", False))).with_retired("old")
    assert spec.resolve({"a": 2.0, "old": 5}, "method 'm'") == {"a": 2, "b": False}
    with pytest.raises(ParamError, match=r"method 'm' has no parameter\(s\) \['c'\]; its parameters are \['a', 'b'\]"):
        spec.resolve({"c": 1}, "method 'm'")
    with pytest.raises(ValueError, match="declared twice"):
        ParamSpec((Param("a", "int", 1), Param("a", "int", 2)))


# methods that other test modules register for their own tests (names starting with "_") are left out
@pytest.mark.parametrize("name", [n for n in training_methods() if not n.startswith("_")])
def test_every_method_declares_typed_documented_parameters(name):
    spec, description = method_spec(name)
    assert description
    for p in spec:
        assert p.type != "any", f"{name}.{p.name} has no declared type"
        assert p.help, f"{name}.{p.name} has no help text"
        p.check(p.default)  # every default passes its own declaration
    defaults, important, _ = method_defaults(name)
    assert set(important) <= set(defaults) and list(defaults) == spec.names()


def test_methods_check_their_parameters_with_one_line_naming_method_key_and_range():
    assert create_method("rpg", {"k": 0.05}).params["k"] == 0.05
    with pytest.raises(MethodError, match=r"^method 'rpg': k must be an integer count >= 1 or a fraction"):
        create_method("rpg", {"k": -3})
    with pytest.raises(MethodError, match=r"method 'adele': confidence must be a number in \(0, 1\], got 1.5"):
        create_method("adele", {"confidence": 1.5})
    assert create_method("mlds-mt").params["unlabeled"] == "mean-teacher"
    assert check_method_params("forest", {"sigmas": "1,2", "n_trees": 8.0}) == {"sigmas": [1.0, 2.0], "n_trees": 8}
    with pytest.raises(ParamError, match=r"method 'auto': scale must be 'auto' or a number in \[0.05, 1\]"):
        check_method_params("auto", {"scale": 3})


def test_cli_param_errors_exit_2_before_reading_data(tmp_path, capsys):
    missing = str(tmp_path / "nothing.tif")  # never read: the parameter check comes first
    rc = main(["train", "--method", "rpg", "--param", "k=-3", "--images", missing, "--labels", missing,
               "--out", str(tmp_path / "m")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == ("labelfx train: error: method 'rpg': k must be an integer count >= 1 or a fraction in (0, 1], "
                   "got -3")
    rc = main(["train", "--method", "forest", "--param", "kind=bush", "--images", missing, "--labels", missing,
               "--out", str(tmp_path / "m")])
    assert rc == 2 and "method 'forest': kind must be one of ['extra', 'random']" in capsys.readouterr().err
    rc = main(["eval", "--dataset", str(tmp_path), "--method", "chexseg", "--param", "threshold=median"])
    assert rc == 2 and "method 'chexseg': threshold must be 'auto' or 'otsu'" in capsys.readouterr().err


def test_docs_tables_match_the_declarations():
    spec = importlib.util.spec_from_file_location("method_params_doc", ROOT / "scripts" / "method_params_doc.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    assert text.count("<!-- params:") >= 11
    assert mod.render(text) == text, "docs/methods.md is stale: run python scripts/method_params_doc.py"
    stale = text.replace("| `pool` | 3 |", "| `pool` | 4 |")
    assert mod.render(stale) == text  # the check can fail: a hand edit is rewritten
