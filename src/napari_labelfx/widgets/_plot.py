"""A small live loss plot (matplotlib on Qt) for the Train panel."""
from __future__ import annotations

import math

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


class LossPlot(FigureCanvasQTAgg):
    """Training and validation loss against iterations; redraws at most every 0.5 s of updates."""

    def __init__(self) -> None:
        self.figure = Figure(figsize=(3.2, 2.0), dpi=90, tight_layout=True)
        super().__init__(self.figure)
        self.ax = self.figure.add_subplot(111)
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.markers: list[tuple[int, str]] = []
        self.curves: dict[str, tuple[list, list]] = {}
        self.setMinimumHeight(160)
        self._redraw()

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
        self._redraw()

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

    def _redraw(self) -> None:
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
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        if self.train or self.val:
            ax.legend(fontsize=7, loc="upper right")
        self.draw_idle()
