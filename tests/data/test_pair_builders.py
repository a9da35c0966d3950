"""Tie-disentangled pair builder and top-fraction selection."""

import numpy as np
import pytest

from alignax.data.pair_builders import OVERALL, select_top_fraction, tie_disentangled_pairs


def naive_pairs(overall, verdicts, disentangle, include_overall):
    out = []
    for i, (o, v) in enumerate(zip(overall, verdicts)):
        opposite = any(x > 0 for x in v) and any(x < 0 for x in v)
        if o != 0 or (opposite and disentangle):
            out += [(i, k, x > 0) for k, x in enumerate(v) if x != 0]
        if o != 0 and include_overall:
            out.append((i, OVERALL, o > 0))
    return sorted(out, key=lambda t: (t[0], t[1]))


def test_golden_example():
    overall = [1, 0, 0, -1, 0]
    verdicts = [[1, 0], [1, -1], [1, 1], [-1, 1], [0, 0]]
    idx, dim, first = tie_disentangled_pairs(overall, verdicts)
    # pair 0: A > B on dim 0; pair 1 (tie, opposite): A > B on 0 and B > A on 1;
    # pair 2 (tie, same direction): dropped; pair 3: both dims; pair 4: nothing
    np.testing.assert_array_equal(idx, [0, 1, 1, 3, 3])
    np.testing.assert_array_equal(dim, [0, 0, 1, 0, 1])
    np.testing.assert_array_equal(first, [True, True, False, False, True])
    idx, dim, first = tie_disentangled_pairs(overall, verdicts, disentangle_ties=False,
                                             include_overall=True)
    np.testing.assert_array_equal(idx, [0, 0, 3, 3, 3])
    np.testing.assert_array_equal(dim, [OVERALL, 0, OVERALL, 0, 1])
    np.testing.assert_array_equal(first, [True, True, False, False, True])


@pytest.mark.parametrize("disentangle", [True, False])
@pytest.mark.parametrize("include_overall", [True, False])
def test_matches_naive_reference(disentangle, include_overall):
    rng = np.random.default_rng(0)
    overall = rng.integers(-1, 2, size=200)
    verdicts = rng.integers(-1, 2, size=(200, 3))
    idx, dim, first = tie_disentangled_pairs(overall, verdicts, disentangle_ties=disentangle,
                                             include_overall=include_overall)
    got = list(zip(idx.tolist(), dim.tolist(), first.tolist()))
    assert got == naive_pairs(overall, verdicts, disentangle, include_overall)


def test_swapping_a_and_b_flips_every_winner():
    rng = np.random.default_rng(1)
    overall = rng.integers(-1, 2, size=50)
    verdicts = rng.integers(-1, 2, size=(50, 2))
    a = tie_disentangled_pairs(overall, verdicts, include_overall=True)
    b = tie_disentangled_pairs(-overall, -verdicts, include_overall=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], ~b[2])


def test_builder_errors():
    with pytest.raises(ValueError, match=r"overall \[P\] and dimension_verdicts \[P, K\]"):
        tie_disentangled_pairs([1, 0], [[1, 0]])
    with pytest.raises(ValueError, match="verdicts in"):
        tie_disentangled_pairs([2], [[1, 0]])
    with pytest.raises(ValueError, match="verdicts in"):
        tie_disentangled_pairs([1], [[0.5, 0]])


def test_select_top_fraction():
    s = np.array([0.3, 2.0, -1.0, 2.0, 0.5])
    np.testing.assert_array_equal(select_top_fraction(s, 0.4), [False, True, False, True, False])
    # ceil(0.5 * 5) = 3 kept; exactly that many even with ties
    np.testing.assert_array_equal(select_top_fraction(s, 0.5), [False, True, False, True, True])
    np.testing.assert_array_equal(select_top_fraction(s, 1.0), np.ones(5, bool))
    rng = np.random.default_rng(2)
    x = rng.normal(size=101)
    m = select_top_fraction(x, 0.3)
    assert m.sum() == 31 and x[m].min() >= x[~m].max()
    with pytest.raises(ValueError, match="fraction must be in"):
        select_top_fraction(s, 0.0)
    with pytest.raises(ValueError, match="scores must have rank 1"):
        select_top_fraction(s[None], 0.5)
