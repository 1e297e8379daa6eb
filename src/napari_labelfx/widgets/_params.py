"""A small form for a method's parameters, built from its declared spec (``core/params.py``).

Each ``Param.type`` has its editor: a check box (bool), a spin box bounded by the declared range
(int, float), a drop-down (choice), an editable drop-down for a number-or-word union (``threshold``:
``auto``, ``otsu`` or a number), a spin box taking counts and fractions (``count_or_fraction``: RPG's
``k``) and a text field for lists and text. The tooltip gives the help text and what the parameter
accepts. The method's ``important`` parameters are shown; the others sit in a folded "More settings".
"""
from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..core.params import Param

_INT_LIMIT = 2**31 - 1
_FLOAT_LIMIT = 1e9
#: Distance kept from an open bound (``(0, 1)``) by a spin box, at the spin boxes' 5 decimals.
_OPEN_STEP = 1e-5


def _bounds(param: Param, limit: float, step: float) -> tuple[float, float]:
    lo = -limit if param.min is None else param.min + (step if param.min_open else 0)
    hi = limit if param.max is None else param.max - (step if param.max_open else 0)
    return lo, hi


def make_editor(param: Param) -> Any:
    """The Qt editor of one declared parameter, showing its default."""
    default = param.default
    if param.type == "bool":
        ed: Any = QCheckBox()
        ed.setChecked(bool(default))
    elif param.type == "choice" or (param.type in ("int", "float") and param.choices):
        ed = QComboBox()
        ed.addItems(list(param.choices))
        if param.type != "choice":  # a word or a number: typed numbers are checked by the spec
            ed.setEditable(True)
        ed.setCurrentText(param.format(default))
    elif param.type == "int":
        # the full int32 range when open: a narrower box would clamp large defaults (e.g. chunk sizes)
        # and send the clamped value as if the person had changed it
        lo, hi = _bounds(param, _INT_LIMIT, 1)
        ed = QSpinBox(minimum=int(max(lo, -_INT_LIMIT)), maximum=int(min(hi, _INT_LIMIT)))
        ed.setValue(int(default))
    elif param.type == "float":
        lo, hi = _bounds(param, _FLOAT_LIMIT, _OPEN_STEP)
        ed = QDoubleSpinBox(minimum=lo, maximum=hi, decimals=5)
        ed.setValue(float(default))
    elif param.type == "count_or_fraction":
        # below 1 a fraction of the pool, from 1 a count: one box covers both
        ed = QDoubleSpinBox(minimum=_OPEN_STEP, maximum=float(param.max or _FLOAT_LIMIT), decimals=5)
        ed.setValue(float(default))
    else:  # text, comma-separated lists, unchecked values
        ed = QLineEdit(param.format(default))
    ed.setToolTip(f"{param.help}\nAccepts {param.allowed()}." if param.help else f"Accepts {param.allowed()}.")
    return ed


def editor_value(ed: Any) -> Any:
    """The raw value an editor holds (checked and converted by ``Param.check``)."""
    if isinstance(ed, QCheckBox):
        return ed.isChecked()
    if isinstance(ed, (QSpinBox, QDoubleSpinBox)):
        return ed.value()
    if isinstance(ed, QComboBox):
        return ed.currentText()
    return ed.text()


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
        from ._layout import follow_content

        self.more = follow_content(QCollapsible("More settings"))
        self.more.addWidget(more)
        lay.addWidget(main)
        lay.addWidget(self.more)
        self._editors: dict[str, tuple[Any, Param]] = {}
        self.important: tuple[str, ...] = ()
        self.method_name = ""

    def set_method(self, name: str) -> None:
        from ..engine.factory import method_spec
        for form in (self._form, self._more_form):
            while form.rowCount():
                form.removeRow(0)
        self._editors = {}
        self.method_name = name
        try:
            spec, _ = method_spec(name)
        except ValueError:  # an unknown name (e.g. while the combo box is filled): no form
            spec = None
        params = list(spec) if spec is not None else []
        self.important = tuple(p.name for p in params if p.important)
        self.more.setVisible(len(params) > len(self.important))
        for param in params:
            ed = make_editor(param)
            (self._form if param.important else self._more_form).addRow(param.name, ed)
            self._editors[param.name] = (ed, param)

    def values(self) -> dict[str, Any]:
        """The parameters that differ from their defaults, checked (a ``ParamError`` names a bad one)."""
        out: dict[str, Any] = {}
        for key, (ed, param) in self._editors.items():
            value = param.check(editor_value(ed), f"method {self.method_name!r}")
            if value != param.check(param.default):
                out[key] = value
        return out

    def set_values(self, values: dict[str, Any]) -> None:
        """Show ``values`` in the editors (e.g. a demo's settings); unknown names raise ``KeyError``."""
        for key, value in values.items():
            ed, param = self._editors[key]
            if isinstance(ed, QCheckBox):
                ed.setChecked(bool(value))
            elif isinstance(ed, (QSpinBox, QDoubleSpinBox)):
                ed.setValue(value)
            elif isinstance(ed, QComboBox):
                ed.setCurrentText(param.format(value))
            else:
                ed.setText(param.format(value))
