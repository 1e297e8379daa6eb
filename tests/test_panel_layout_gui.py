"""Issue 13 item 10: Annotate + Train + Generate labels docked together fit a 1366x768 laptop screen
(every panel's content scrolls, buttons stay reachable), the method settings never draw rows over
each other when they change, and on a short screen the labelling panels share one tabbed dock."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")


def _dock_three(viewer):
    from napari_labelfx.widgets.annotate import AnnotateWidget
    from napari_labelfx.widgets.generate_labels import GenerateLabelsWidget
    from napari_labelfx.widgets.train import TrainWidget

    panels = {}
    for cls in (AnnotateWidget, TrainWidget, GenerateLabelsWidget):
        w = cls(viewer)
        panels[cls.__name__] = (w, viewer.window.add_dock_widget(w, name=cls.__name__, area="right"))
    return panels


def _settle(qtbot, ms=300):
    qtbot.wait(ms)


def test_three_panels_fit_a_laptop_screen_and_buttons_scroll_into_reach(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QPushButton

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    panels = _dock_three(viewer)
    window = viewer.window._qt_window
    window.resize(1366, 768)
    _settle(qtbot)
    total = 0
    for name, (w, dock) in panels.items():
        assert w.minimumSizeHint().height() <= 700, name
        total += dock.minimumSizeHint().height()
        body = w.scroll_area.widget()
        buttons = w.findChildren(QPushButton)
        assert buttons, name
        for b in buttons:  # every button is inside the scrolled content: reachable however short the dock
            assert body.isAncestorOf(b), (name, b.text())
    # stacked in one column, the three docks still fit the height a 768-px screen leaves
    assert total <= 700
    assert window.minimumSizeHint().height() <= 768
    assert window.height() <= 768
    # the whole Train panel (its last button included) can be scrolled into view
    train = panels["TrainWidget"][0]
    scroll = train.scroll_area
    bottom = train.undo_accept_btn.mapTo(scroll.widget(), train.undo_accept_btn.rect().bottomLeft()).y()
    assert bottom <= scroll.viewport().height() + scroll.verticalScrollBar().maximum()
    assert train.start_btn.mapTo(scroll.widget(), train.start_btn.rect().bottomLeft()).y() < 400  # Start: near the top


def _rows_overlap(form_widget) -> list[tuple[str, str]]:
    """Pairs of editors in a QFormLayout whose rectangles intersect (drawn over each other)."""
    from qtpy.QtWidgets import QFormLayout

    bad = []
    for form in form_widget.findChildren(QFormLayout):
        editors = [form.itemAt(r, QFormLayout.ItemRole.FieldRole) for r in range(form.rowCount())]
        widgets = [e.widget() for e in editors if e is not None and e.widget() is not None and e.widget().isVisible()]
        for a, b in zip(widgets, widgets[1:]):
            if a.geometry().intersects(b.geometry()):
                bad.append((a.objectName() or type(a).__name__, b.objectName() or type(b).__name__))
    return bad


def test_method_settings_rows_never_overlap(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    w = _dock_three(viewer)["TrainWidget"][0]  # a short dock: what squeezed the rows together before
    viewer.window._qt_window.resize(1366, 768)
    w.status.setText("iteration 120/400  loss 0.2345  1.3 it/s " + "and a long message that wraps " * 6)
    for method in ("supervised", "adele", "scribble", "sissi"):
        w.method_combo.setCurrentText(method)
        w.method_params.more.expand(animate=False)
        content = w.method_settings.content()
        # the expanded section grows to what its rows need after they changed (superqt alone keeps the
        # height it had when it was expanded, and the rows were drawn over each other)
        qtbot.waitUntil(lambda c=content: c.height() >= w.method_params.sizeHint().height(), timeout=5_000)
        assert not _rows_overlap(w.method_params), method


def test_labelling_panels_share_a_tab_on_a_short_screen(make_napari_viewer, qtbot, monkeypatch):
    from napari_labelfx.widgets import _layout

    viewer = make_napari_viewer(show=True)
    panels = _dock_three(viewer)
    _settle(qtbot)
    window = viewer.window._qt_window
    monkeypatch.setattr(_layout, "SHORT_SCREEN", 100_000)  # every screen is "short" here
    gen_w, gen_dock = panels["GenerateLabelsWidget"]
    _layout.arrange_docks(gen_w)
    _settle(qtbot)
    ann_dock = panels["AnnotateWidget"][1]
    train_dock = panels["TrainWidget"][1]
    assert ann_dock in window.tabifiedDockWidgets(gen_dock)
    assert train_dock not in window.tabifiedDockWidgets(gen_dock)  # Train keeps its own dock
    assert train_dock.geometry().y() > ann_dock.geometry().y()  # below the labelling panels
