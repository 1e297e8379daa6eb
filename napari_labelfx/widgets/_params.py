"""A small form for a method's parameters, built from its ``defaults`` (numbers, booleans, text).

The method's ``important`` parameters are shown; the others sit in a folded "More settings" section.
"""
from __future__ import annotations

import json
from typing import Any

from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox, QVBoxLayout, QWidget
from superqt import QCollapsible

_INT_LIMIT = 2**31 - 1


class MethodParamsForm(QWidget):
    """Editors for one method's parameters; ``values()`` returns only those that differ from defaults."""

    def __init__(self) -> None:
        super().__init__()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        main = QWidget()
        self._form = QFormLayout(main)
        more = QWidget()
        self._more_form = QFormLayout(more)
        self.more = QCollapsible("More settings")
        self.more.addWidget(more)
        lay.addWidget(main)
        lay.addWidget(self.more)
        self._editors: dict[str, tuple[Any, Any]] = {}
        self.important: tuple[str, ...] = ()

    def set_method(self, name: str) -> None:
        from ..engine.factory import method_defaults

        for form in (self._form, self._more_form):
            while form.rowCount():
                form.removeRow(0)
        self._editors = {}
        try:
            defaults, important, _ = method_defaults(name)
            self.important = tuple(k for k in important if k in defaults)
        except (KeyError, ValueError):
            defaults, self.important = {}, ()
        self.more.setVisible(len(defaults) > len(self.important))
        for key, value in defaults.items():
            if isinstance(value, bool):
                ed: Any = QCheckBox()
                ed.setChecked(value)
            elif isinstance(value, int) and abs(value) < _INT_LIMIT:
                # the full int32 range: a narrower box would clamp large defaults (e.g. chunk sizes)
                # and send the clamped value as if the person had changed it
                ed = QSpinBox(minimum=-_INT_LIMIT, maximum=_INT_LIMIT)
                ed.setValue(value)
            elif isinstance(value, float):
                ed = QDoubleSpinBox(minimum=-1e6, maximum=1e6, decimals=5)
                ed.setValue(value)
            else:
                ed = QLineEdit(json.dumps(value) if not isinstance(value, str) else value)
            (self._form if key in self.important else self._more_form).addRow(key, ed)
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
