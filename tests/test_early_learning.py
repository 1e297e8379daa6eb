"""The ADELE rule: a saturating agreement curve starts correction, a straight one does not."""
import numpy as np
import pytest

from napari_labelfx.methods.early_learning import (
    EarlyLearningError,
    adele_curve,
    adele_derivative,
    fit_early_learning,
)


def test_saturating_curve_starts_at_the_hand_computed_epoch():
    # y = 0.8 (1 - exp(-x / 2)): y'(e) / y'(1) = exp(-(e - 1) / 2); r > 0.9 once e - 1 > 2 ln 10 = 4.6
    x = np.arange(1, 11)
    fit = fit_early_learning(adele_curve(x, 0.8, 1.0, 2.0))
    assert fit.a == pytest.approx(0.8, abs=1e-3)
    assert fit.b == pytest.approx(1.0, abs=1e-3)
    assert fit.c == pytest.approx(2.0, rel=1e-2)
    assert fit.start_epoch == 6
    assert not fit.started(5) and fit.started(6) and fit.started(9)


def test_linear_curve_does_not_start():
    fit = fit_early_learning(0.1 + 0.04 * np.arange(1, 11))
    assert fit.start_epoch is None
    assert not fit.started(10)


def test_noisy_saturating_curve_starts_and_derivative_matches_numeric():
    rng = np.random.default_rng(0)
    x = np.arange(1, 13)
    y = adele_curve(x, 0.7, 0.6, 1.5) + rng.normal(0, 0.005, x.size)
    fit = fit_early_learning(y)
    assert fit.start_epoch is not None and 2 <= fit.start_epoch <= 12
    assert np.all((0 <= fit.relative_change) & (fit.relative_change <= 1))
    h = 1e-6
    num = (adele_curve(3 + h, 0.7, 0.6, 1.5) - adele_curve(3 - h, 0.7, 0.6, 1.5)) / (2 * h)
    assert adele_derivative(3.0, 0.7, 0.6, 1.5) == pytest.approx(num, rel=1e-5)


def test_bounds_hold_and_bad_input_raises():
    fit = fit_early_learning([0.2, 0.9, 0.95, 0.96, 0.96])
    assert 0 <= fit.a <= 1 and 0 <= fit.b <= 1 and fit.c >= 0
    with pytest.raises(EarlyLearningError, match="at least 3"):
        fit_early_learning([0.1, 0.2])
    with pytest.raises(EarlyLearningError, match="finite"):
        fit_early_learning([0.1, np.nan, 0.3])
