"""Matching trade-off paths at a reward level (alignax.eval.tradeoff)."""

import numpy as np

from alignax.eval import tradeoff


def test_first_reaching_and_fallback():
    v = np.array([[0.0, 0.2, 0.5, 0.4, 0.9],
                  [0.1, 0.1, 0.1, 0.3, 0.2]])
    idx, reached = tradeoff.first_reaching(v, np.array([0.45, 0.5]))
    assert idx.tolist() == [2, 3]  # row 0: first >= .45; row 1: none, so the best
    assert reached.tolist() == [True, False]
    idx, _ = tradeoff.first_reaching(np.array([np.nan, 1.0]), 0.5)
    assert int(idx) == 1


def test_levels_and_take():
    lv = tradeoff.level_from_gain(np.array([0.0, 1.0]), np.array([1.0, 3.0]), [0.25, 0.5])
    np.testing.assert_allclose(lv, [[0.25, 0.5], [1.5, 2.0]])
    vals = np.array([[1, 2, 3], [4, 5, 6]])
    assert tradeoff.take(vals, np.array([2, 0])).tolist() == [3, 4]


def test_match_level_mixture_hits_the_level():
    v = np.array([[0.0, 0.2, 0.5, 0.9],
                  [0.6, 0.7, 0.8, 0.9],
                  [0.0, 0.1, 0.1, 0.2]])
    level = np.array([0.35, 0.5, 0.5])
    lo, hi, w, reached = tradeoff.match_level(v, level)
    assert lo.tolist() == [1, 0, 3] and hi.tolist() == [2, 0, 3]
    assert reached.tolist() == [True, True, False]
    np.testing.assert_allclose(w, [0.5, 1.0, 1.0])
    np.testing.assert_allclose(tradeoff.mix(v, lo, hi, w)[0], 0.35)
    # another metric of the same candidates is mixed with the same weight
    acc = np.array([[1.0, 0.9, 0.7, 0.5]] * 3)
    np.testing.assert_allclose(tradeoff.mix(acc, lo, hi, w)[0], 0.8)
