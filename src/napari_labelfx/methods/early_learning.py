"""End of early learning (the ADELE rule): when does a network start memorising label noise?

After each epoch the trainer scores the training images against the INITIAL noisy labels (IoU for
segmentation, AP50 for detection). Early on the score rises fast (the network learns the clean
signal); once it only creeps up, the network is fitting the noise. ADELE (Liu et al., CVPR 2022)
fits ``y = a (1 - exp(-x^b / c))`` to the scores and switches label correction on at the first epoch
where the fitted slope has fallen by more than ``threshold`` (90 %) relative to the slope at epoch 1:

* fit by least squares (trust-region reflective), bounds ``a, b in [0, 1]``, ``c >= 0``, start
  ``(1, 1, 1)``, per-point ``sigma = geomspace(1, 0.1)`` so that later points weigh more;
* ``y'(x) = (a b / c) x^(b - 1) exp(-x^b / c)``;
* ``r(e) = ||y'(e)| - |y'(1)|| / |y'(1)|`` for the observed epochs, ``r > 1 -> 0``;
* start epoch = (number of epochs with ``r <= threshold``) + 1.

The rule needs at least three points. Only the observed epochs are judged: a curve that has not
flattened within them (a straight line) yields no start, so correction waits (the original code
judged a fixed horizon of 15 epochs; judging what was seen avoids switching on by extrapolation).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

__all__ = ["EarlyLearningFit", "EarlyLearningError", "adele_curve", "adele_derivative", "fit_early_learning"]

#: Fewest points the fit accepts (three parameters).
MIN_POINTS = 3
#: Lower bound of ``c`` in the fit: ``c >= 0`` in the paper, kept off zero to avoid dividing by it.
_C_FLOOR = 1e-8


class EarlyLearningError(ValueError):
    """The agreement curve cannot be fitted (too few or non-finite points)."""


def adele_curve(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """``y = a (1 - exp(-x^b / c))``."""
    x = np.asarray(x, np.float64)
    return a * (1.0 - np.exp(-np.power(x, b) / c))


def adele_derivative(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """``y'(x) = (a b / c) x^(b - 1) exp(-x^b / c)``."""
    x = np.asarray(x, np.float64)
    return (a * b / c) * np.power(x, b - 1.0) * np.exp(-np.power(x, b) / c)


@dataclass(frozen=True)
class EarlyLearningFit:
    """Result of :func:`fit_early_learning`.

    Attributes
    ----------
    a, b, c : fitted parameters.
    epochs : the epochs 1..E of the scores.
    fitted : the fitted curve at those epochs.
    relative_change : ``r(e)`` for those epochs (``r > 1`` set to 0).
    start_epoch : first epoch of correction, or None while the curve has not flattened.
    """

    a: float
    b: float
    c: float
    epochs: np.ndarray
    fitted: np.ndarray
    relative_change: np.ndarray
    start_epoch: int | None

    def started(self, epoch: int) -> bool:
        """True when correction is on at ``epoch`` (1-based)."""
        return self.start_epoch is not None and epoch >= self.start_epoch


def fit_early_learning(scores: Sequence[float], threshold: float = 0.9) -> EarlyLearningFit:
    """Fit the ADELE curve to per-epoch scores and apply the relative-derivative rule.

    Parameters
    ----------
    scores : agreement with the initial labels after epochs 1, 2, ... (at least 3 finite values).
    threshold : relative slope drop that marks the end of early learning (0.9 = slope down 90 %).

    Returns
    -------
    EarlyLearningFit

    Raises
    ------
    EarlyLearningError
        Fewer than three scores, or a non-finite one.
    """
    y = np.asarray(scores, np.float64).ravel()
    if y.size < MIN_POINTS:
        raise EarlyLearningError(f"the ADELE fit needs at least {MIN_POINTS} epochs of scores, got {y.size}")
    if not np.all(np.isfinite(y)):
        raise EarlyLearningError(f"the agreement scores must be finite, got {y.tolist()}")
    if not 0.0 < threshold < 1.0:
        raise EarlyLearningError(f"threshold must be in (0, 1), got {threshold}")
    x = np.arange(1, y.size + 1, dtype=np.float64)
    sigma = np.geomspace(1.0, 0.1, y.size)  # later epochs weigh more (they decide the flattening)

    def residuals(p: np.ndarray) -> np.ndarray:
        return (adele_curve(x, *p) - y) / sigma

    fit = least_squares(residuals, x0=[1.0, 1.0, 1.0], bounds=([0.0, 0.0, _C_FLOOR], [1.0, 1.0, np.inf]),
                        method="trf")
    a, b, c = (float(v) for v in fit.x)
    d = np.abs(adele_derivative(x, a, b, c))
    d1 = d[0]
    if d1 <= 0 or not np.isfinite(d1):
        # a flat fit (a or b = 0): no learning signal at all, nothing to judge
        r = np.zeros_like(x)
    else:
        r = np.abs(d - d1) / d1
        r[r > 1.0] = 0.0  # as in ADELE: a slope that grew (b > 1 cannot happen here) is not a flattening
    flattened = r > threshold
    start = int(np.sum(r <= threshold)) + 1 if flattened.any() else None
    return EarlyLearningFit(a, b, c, x, adele_curve(x, a, b, c), r, start)
