"""Objective-mismatch diagnostics (alignax.eval.mismatch)."""

import numpy as np
import pytest

from alignax.eval import mismatch


def test_drawdown_and_monotone_rise():
    up = np.array([0.0, 1.0, 0.98, 2.0, 3.0])
    dip = np.array([0.0, 2.0, 1.0, 2.5, 3.0])
    assert mismatch.max_drawdown(up) == pytest.approx(0.02)
    np.testing.assert_allclose(mismatch.max_drawdown(np.stack([up, dip])), [0.02, 1.0])
    assert mismatch.rises_monotonically(np.stack([up, dip]), tol=0.05).tolist() == [True, False]
    assert not mismatch.rises_monotonically(np.array([1.0, 1.5, 0.5]))
    assert not mismatch.rises_monotonically(up, tol=0.0)


def test_peak_then_fall():
    curves = np.array([[0.0, 1.0, 2.0, 1.5],     # falls by 25% of the gain
                       [0.0, 1.0, 2.0, 1.95],    # 2.5%: below min_drop
                       [0.0, 1.0, 2.0, 3.0],     # still rising
                       [1.0, 0.5, 0.2, 0.1]])    # never above the start
    flag, drop = mismatch.peak_then_fall(curves, min_drop=0.1)
    assert flag.tolist() == [True, False, False, False]
    np.testing.assert_allclose(drop[:3], [0.25, 0.025, 0.0])
    assert np.isnan(drop[3])
    with pytest.raises(ValueError):
        mismatch.peak_then_fall(np.array([1.0]))


def test_overoptimised_needs_both():
    proxy = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 2.0, 1.0, 3.0]])
    gold = np.array([[0.0, 1.0, 0.5, 0.2], [0.0, 1.0, 0.5, 0.2]])
    assert mismatch.overoptimised(proxy, gold).tolist() == [True, False]


def test_zoo_rank_correlation():
    acc = np.array([[0.6, 0.7, 0.8, 0.9], [0.6, 0.7, 0.8, 0.9]])
    gain = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    np.testing.assert_allclose(mismatch.zoo_rank_correlation(acc, gain), [1.0, -1.0], atol=1e-6)
