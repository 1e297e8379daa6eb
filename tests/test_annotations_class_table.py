import json

import numpy as np
import pytest

from napari_labelfx.annotations import ClassEntry, ClassTable, ClassTableError
from napari_labelfx.annotations.class_table import BACKGROUND_COLOR, PALETTE, normalise_color


def test_defaults_background_first_and_palette():
    t = ClassTable(["nucleus", "cytoplasm"])
    assert t.names == ("background", "nucleus", "cytoplasm")
    assert t.values == (0, 1, 2)
    assert t.num_classes == 3 and len(t) == 3
    assert t.colors == (BACKGROUND_COLOR, PALETTE[0], PALETTE[1])
    assert t.index_of_value(2) == 2 and t.index_of("nucleus") == 1
    assert t.scribble_value("background") == 1 and t.scribble_value("cytoplasm") == 3
    assert t.class_index_of_scribble(3) == 2
    assert not t.multilabel and "nucleus" in t and "x" not in t


def test_empty_table_has_background_only():
    t = ClassTable()
    assert t.names == ("background",) and t.num_classes == 1 and t.foreground == ()


def test_edits_add_remove_rename_recolor():
    t = ClassTable(["a"])
    e = t.add("b", value=255, color=(0, 255, 0))
    assert e == ClassEntry("b", 255, "#00ff00")
    assert t.add("c").value == 256  # next value after the largest
    t.rename("a", "alpha")
    t.recolor("alpha", (1.0, 0.0, 0.0))
    assert t.entry("alpha").color == "#ff0000" and t.entry("alpha").value == 1
    t.remove("b")
    assert t.names == ("background", "alpha", "c")
    t.rename("background", "bg")  # background may be renamed but keeps value 0 / index 0
    assert t.background.name == "bg" and t.background.value == 0


@pytest.mark.parametrize(
    "action, match",
    [
        (lambda t: t.add("a"), "duplicate class name 'a'"),
        (lambda t: t.add("z", value=1), "label value 1 is already used by 'a'"),
        (lambda t: t.add("z", value=0), "reserved for background"),
        (lambda t: t.add("z", value=-3), "must be >= 0"),
        (lambda t: t.add("z", value=1.5), "must be an integer"),
        (lambda t: t.add("  "), "non-empty string"),
        (lambda t: t.add("z", color="#12"), "not a hex colour"),
        (lambda t: t.add("z", color=(300, 0, 0)), "outside"),
        (lambda t: t.remove("background"), "cannot be removed"),
        (lambda t: t.remove("nope"), "no class named 'nope'"),
        (lambda t: t.rename("a", "b"), "duplicate class name 'b'"),
        (lambda t: t.index_of_value(9), "label value 9 is not in the class table"),
        (lambda t: t.class_index_of_scribble(4), "scribble value 4 has no class"),
    ],
)
def test_edit_errors(action, match):
    t = ClassTable(["a", "b"])
    with pytest.raises(ClassTableError, match=match):
        action(t)
    assert isinstance(ClassTableError("x"), ValueError)


def test_duplicates_in_constructor():
    with pytest.raises(ClassTableError, match="duplicate class name"):
        ClassTable(["a", "a"])
    with pytest.raises(ClassTableError, match="already used"):
        ClassTable([("a", 3), ("b", 3)])


def test_colour_forms():
    assert normalise_color("#ABC") == "#aabbcc"
    assert normalise_color("#11223344") == "#112233"
    assert normalise_color([0.0, 0.5, 1.0, 0.3]) == "#0080ff"
    assert normalise_color(np.array([10, 20, 30], dtype=np.uint8)) == "#0a141e"


def test_label_colors_for_napari():
    t = ClassTable(["a"])
    full = t.label_colors()
    assert set(full) == {1}
    scr = t.label_colors(scribble=True)
    assert set(scr) == {1, 2} and scr[2] == t.entry("a").rgba and len(scr[1]) == 4


def test_dict_and_json_round_trip(tmp_path):
    t = ClassTable([("lung", 10, "#ff0000"), "heart"], multilabel=True)
    t.rename("background", "none")
    again = ClassTable.from_dict(json.loads(json.dumps(t.to_dict())))
    assert again == t and again.multilabel
    path = t.save(tmp_path / "sub" / "classes.json")
    loaded = ClassTable.load(path)
    assert loaded == t and loaded.names == ("none", "lung", "heart") and loaded.values == (0, 10, 11)
    assert [p.name for p in path.parent.iterdir()] == ["classes.json"]  # no temp file left
    assert loaded.copy() == loaded and loaded.copy() is not loaded


def test_load_errors(tmp_path):
    with pytest.raises(ClassTableError, match="not found"):
        ClassTable.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ClassTableError, match="bad.json: cannot read class table JSON"):
        ClassTable.load(bad)
    bad.write_text(json.dumps({"classes": [{"name": "a", "value": 1}]}))
    with pytest.raises(ClassTableError, match="no background entry"):
        ClassTable.load(bad)
    bad.write_text(json.dumps({"classes": [{"name": "bg", "value": 0}, {"name": "a", "value": 0}]}))
    with pytest.raises(ClassTableError, match="already used"):
        ClassTable.load(bad)
