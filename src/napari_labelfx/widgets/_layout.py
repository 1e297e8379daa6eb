"""Layout helpers that keep the panels usable on a laptop screen (1366x768).

* :func:`scroll_body`: a panel's content inside a scroll area, so a docked panel asks for little
  height (napari stacks docks; without it three panels need about 1500 px and push the window
  taller than the screen) and every button stays reachable by scrolling.
* :func:`follow_content`: superqt's ``QCollapsible`` caps its content at the height it had when it
  was expanded; rows added later (another method's settings, an inner "More settings" section, a
  wrapped line) were then drawn over each other. The cap now follows the content.
* :func:`wrapping_label`: a word-wrapped label that is never squeezed below the lines it needs.
"""
from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QFrame, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

#: Smallest height of a panel's scroll area: a few rows stay visible in a crowded dock.
MIN_PANEL_HEIGHT = 160
#: Below this available screen height, LabelFX panels other than Train share one tabbed dock.
SHORT_SCREEN = 1000


class _PanelScroll(QScrollArea):
    """A vertical scroll area as wide as its content needs (no horizontal scrolling of a form) and as
    short as ``min_height``."""

    def __init__(self, min_height: int) -> None:
        super().__init__()
        self._min_height = min_height

    def minimumSizeHint(self) -> Any:  # noqa: N802 - Qt API
        hint = super().minimumSizeHint()
        body = self.widget()
        if body is not None:
            width = body.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width() + 2
            hint.setWidth(max(hint.width(), width))
        hint.setHeight(self._min_height)
        return hint

    def sizeHint(self) -> Any:  # noqa: N802 - Qt API
        hint = super().sizeHint()
        body = self.widget()
        if body is not None:  # ask for the whole content: the dock shrinks it to what the screen allows
            full = body.sizeHint()
            hint.setWidth(max(hint.width(), full.width() + self.verticalScrollBar().sizeHint().width() + 2))
            hint.setHeight(max(self._min_height, full.height()))
        return hint


def scroll_body(panel: QWidget, min_height: int = MIN_PANEL_HEIGHT, *, main: bool = False) -> QVBoxLayout:
    """Put a vertical scroll area in ``panel`` and return the layout to fill with its content.

    The area is kept as ``panel.scroll_area``; the panel's minimum height becomes ``min_height``
    whatever its content, and its content scrolls when the dock is shorter. On a short screen the
    panel, once docked, is arranged with the other LabelFX panels (see :func:`arrange_docks`);
    ``main`` marks the panel that keeps a dock of its own (Train).
    """
    outer = QVBoxLayout(panel)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = _PanelScroll(min_height)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    inner = QWidget()
    inner.setObjectName(MAIN_BODY if main else PANEL_BODY)
    scroll.setWidget(inner)
    outer.addWidget(scroll)
    panel.scroll_area = scroll  # type: ignore[attr-defined]
    panel.installEventFilter(_DockArranger(panel))
    return QVBoxLayout(inner)


PANEL_BODY = "labelfx_panel_body"
MAIN_BODY = "labelfx_main_panel_body"


def _dock_of(widget: QWidget) -> Any:
    from qtpy.QtWidgets import QDockWidget

    w = widget.parentWidget()
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parentWidget()
    return w


def arrange_docks(panel: QWidget) -> None:
    """On a screen shorter than ``SHORT_SCREEN``: dock ``panel`` as a tab with the other LabelFX panels
    of its dock area (Annotate, Generate labels, ...), and give the Train panel (its own dock) the
    larger part of the height. Taller screens and floating panels are left as napari docked them."""
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    dock = _dock_of(panel)
    window = dock.parentWidget() if dock is not None else None
    if not isinstance(window, QMainWindow) or dock.isFloating():
        return
    screen = window.screen() if hasattr(window, "screen") else None
    if screen is None or screen.availableGeometry().height() >= SHORT_SCREEN:
        return
    area = window.dockWidgetArea(dock)
    mine = [d for d in window.findChildren(QDockWidget)
            if d.isVisible() and not d.isFloating() and window.dockWidgetArea(d) == area]
    side = sorted((d for d in mine if d.findChild(QWidget, PANEL_BODY) is not None), key=lambda d: d.geometry().y())
    main = next((d for d in mine if d.findChild(QWidget, MAIN_BODY) is not None), None)
    if not side:
        return
    anchor = side[0]
    if main is not None and main.geometry().y() < anchor.geometry().y() and not window.tabifiedDockWidgets(anchor):
        window.splitDockWidget(anchor, main, Qt.Orientation.Vertical)  # Train below the labelling panels
    for d in side[1:]:
        if d not in window.tabifiedDockWidgets(anchor):
            window.tabifyDockWidget(anchor, d)
    if dock in side:
        dock.raise_()  # the panel just opened is the tab in front
    if main is not None:
        height = window.height()
        window.resizeDocks([anchor, main], [int(height * 0.4), int(height * 0.6)], Qt.Orientation.Vertical)


class _DockArranger(QObject):
    """Arranges a panel's dock once, after it is first shown (napari has placed it by then)."""

    def __init__(self, panel: QWidget) -> None:
        super().__init__(panel)
        self._panel = panel
        self._done = False

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if not self._done and event.type() == QEvent.Type.Show:
            self._done = True
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self._arrange)
        return False

    def _arrange(self) -> None:
        try:
            arrange_docks(self._panel)
        except RuntimeError:  # the panel was closed before the event loop ran this
            pass


class _FollowContent(QObject):
    """Event filter on a QCollapsible's content: a changed layout refits the expanded height."""

    def __init__(self, collapsible: Any) -> None:
        super().__init__(collapsible)
        self._collapsible = collapsible

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        c = self._collapsible
        if (event.type() == QEvent.Type.LayoutRequest and c.isExpanded()
                and not getattr(c, "_is_animating", False)):
            content = c.content()
            want = content.sizeHint().height() + 10
            if content.maximumHeight() != want:
                content.setMaximumHeight(want)
        return False


def follow_content(collapsible: Any) -> Any:
    """Let an expanded ``QCollapsible`` grow and shrink with its content; returns it.

    Its margins are tightened too: a folded section is then one header line, not a header and a gap.
    """
    lay = collapsible.layout()
    if lay is not None:
        lay.setContentsMargins(0, 2, 0, 2)
    content = collapsible.content()
    content.installEventFilter(_FollowContent(collapsible))
    return collapsible


def wrapping_label(text: str = "") -> QLabel:
    """A word-wrapped label whose height follows its wrapped lines (never cut off, never overlapped)."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label
