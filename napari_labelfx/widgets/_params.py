"""A small form for a method's parameters, built from its ``defaults`` (numbers, booleans, text)."""
from __future__ import annotations

import json
from typing import Any

from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox, QWidget


class MethodParamsForm(QWidget):
    """Editors for one method's parameters; ``values()`` returns only those that differ from defaults."""

    def __init__(self) -> None:
        super().__init__()
        self._form = QFormLayout(self)
        self._editors: dict[str, tuple[Any, Any]] = {}

    def set_method(self, name: str) -> None:
        from ..methods import get_method

        while self._form.rowCount():
            self._form.removeRow(0)
        self._editors = {}
        try:
            defaults = dict(get_method(name).defaults)
        except (KeyError, ValueError):
            defaults = {}
        for key, value in defaults.items():
            if isinstance(value, bool):
                ed: Any = QCheckBox()
                ed.setChecked(value)
            elif isinstance(value, int):
                ed = QSpinBox(minimum=-1_000_000, maximum=1_000_000)
                ed.setValue(value)
            elif isinstance(value, float):
                ed = QDoubleSpinBox(minimum=-1e6, maximum=1e6, decimals=5)
                ed.setValue(value)
            else:
                ed = QLineEdit(json.dumps(value) if not isinstance(value, str) else value)
            self._form.addRow(key, ed)
            self._editors[key] = (ed, value)

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, (ed, default) in self._editors.items():
            if isinstance(ed, QCheckBox):
                v: Any = ed.isChecked()
            elif isinstance(ed, (QSpinBox, QDoubleSpinBox)):
                v = ed.value()
            else:
                text = ed.text()
                if isinstance(default, str):
                    v = text
                else:
                    try:
                        v = json.loads(text)
                    except json.JSONDecodeError:
                        v = text
            if v != default:
                out[key] = v
        return out
