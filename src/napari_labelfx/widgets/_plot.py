"""A small live loss plot (matplotlib on Qt) for the Train panel."""
from __future__ import annotations

import math

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer

#: Most one redraw per this many milliseconds: a redraw renders every tick label on the main thread
#: (150-230 ms on a loaded 2-core machine, the longest event-loop stalls while training).
REDRAW_MS = 1000


class LossPlot(FigureCanvasQTAgg):
    """Training and validation loss against iterations.

    A change is drawn at once when the plot has been quiet for ``REDRAW_MS``; changes within that time are
    drawn together at its end. Margins are fixed (no tight layout, which measured every text on each draw).
    """

    def __init__(self) -> None:
        self.figure = Figure(figsize=(3.2, 2.0), dpi=90)
        super().__init__(self.figure)
        self.ax = self.figure.add_subplot(111)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._on_timer)
        self._pending = False
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.markers: list[tuple[int, str]] = []
        self.curves: dict[str, tuple[list, list]] = {}
        self.setMinimumHeight(160)
        self._draw_now()

    def draw(self) -> None:
        # matplotlib queues draw_idle on a timer; when the panel (and this widget's C++ side) is
        # deleted before the timer fires, Qt raises in update(): nothing is left to draw then
        try:
            super().draw()
        except RuntimeError as exc:
            if "has been deleted" not in str(exc):
                raise

    def clear(self) -> None:
        self.train.clear()
        self.val.clear()
        self.markers.clear()
        self.curves.clear()
        self._timer.stop()  # a new run: its first point is drawn at once
        self._pending = False
        self._draw_now()

    def _redraw(self) -> None:
        """Draw now when the plot has been quiet, else once the current interval ends."""
        if self._timer.isActive():
            self._pending = True
            return
        self._draw_now()
        self._timer.start()

    def _on_timer(self) -> None:
        if self._pending:
            self._pending = False
            self._draw_now()
            self._timer.start()

    def add_train(self, it: int, loss: float) -> None:
        if math.isfinite(loss):
            self.train.append((it, loss))
            self._redraw()

    def add_val(self, it: int, loss: float) -> None:
        if math.isfinite(loss):
            self.val.append((it, loss))
            self._redraw()

    def add_marker(self, it: int, label: str) -> None:
        """A vertical line, e.g. where label correction switched on."""
        self.markers.append((it, label))
        self._redraw()

    def set_curve(self, name: str, x: list, y: list) -> None:
        """An extra named series on a second axis (e.g. agreement with the initial labels and its fit)."""
        self.curves[name] = (list(x), list(y))
        self._redraw()

    def _draw_now(self) -> None:
        ax = self.ax
        ax.clear()
        if self.train:
            x, y = zip(*self.train)
            # a line needs two points: the first loss shows as a dot, so the plot is never blank
            ax.plot(x, y, label="train", color="tab:blue", lw=1, marker="o" if len(x) == 1 else None, ms=3)
        if self.val:
            x, y = zip(*self.val)
            ax.plot(x, y, "o-", label="validation", color="tab:orange", lw=1, ms=3)
        for it, label in self.markers:
            ax.axvline(it, color="tab:red", ls="--", lw=1)
            ax.text(it, ax.get_ylim()[1], label, fontsize=7, color="tab:red", va="top")
        if self.curves:
            if not hasattr(self, "ax2") or self.ax2 not in self.figure.axes:
                self.ax2 = ax.twinx()
            self.ax2.clear()
            for name, (x, y) in self.curves.items():
                self.ax2.plot(x, y, "--", lw=1, label=name)
            self.ax2.tick_params(labelsize=7)
            self.ax2.legend(fontsize=6, loc="lower right")
        self.figure.subplots_adjust(left=0.2, bottom=0.24, top=0.95, right=0.84 if self.curves else 0.96)
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        if self.train or self.val:
            ax.legend(fontsize=7, loc="upper right")
        self.draw_idle()
