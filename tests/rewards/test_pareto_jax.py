"""The traced grid hypervolume equals the host inclusion-exclusion one; gains and multipliers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.rewards import aggregate
from alignax.rewards.pareto_jax import (hypervolume_gains, hypervolume_jax,
                                        hypervolume_multipliers)


@pytest.mark.parametrize("dim", [2, 3])
def test_grid_hypervolume_equals_inclusion_exclusion(dim):
    rng = np.random.default_rng(dim)
    hv = jax.jit(hypervolume_jax)
    for _ in range(5):
        pts = rng.random((6, dim))
        ref = rng.random(dim) * 0.3
        assert float(hv(pts, ref)) == pytest.approx(aggregate.hypervolume(pts, ref), rel=1e-5)
    # by hand: two boxes [0,2]x[0,1] and [0,1]x[0,3] overlap in [0,1]x[0,1]: 2 + 3 - 1
    assert float(hypervolume_jax([[2.0, 1.0], [1.0, 3.0]], [0.0, 0.0])) == pytest.approx(4.0)


def test_masked_rows_and_points_below_the_reference_add_nothing():
    pts, ref = jnp.array([[2.0, 1.0], [1.0, 3.0], [5.0, -1.0]]), jnp.zeros(2)
    hv = jax.jit(hypervolume_jax)
    assert float(hv(pts, ref, jnp.ones(3, bool))) == pytest.approx(4.0)  # third is below
    assert float(hv(pts, ref, jnp.array([True, False, True]))) == pytest.approx(2.0)
    assert float(hv(pts, ref, jnp.zeros(3, bool))) == 0.0


def test_gains_and_multipliers_match_the_host_multiplier():
    front = np.array([[0.5, 0.3], [0.2, 0.6], [9.0, 9.0]])
    valid = np.array([True, True, False])
    cands = np.array([[0.6, 0.6], [0.1, 0.1], [0.4, 0.2], [3.0, 0.05]])
    ref = np.array([0.1, 0.1])
    gains = np.asarray(jax.jit(hypervolume_gains)(front, cands, ref, valid))
    base = aggregate.hypervolume(front[:2], ref)
    for c, g in zip(cands, gains):
        assert g == pytest.approx(aggregate.hypervolume(np.vstack([front[:2], c]), ref) - base,
                                  abs=1e-6)
    mult = np.asarray(jax.jit(hypervolume_multipliers)(front, cands, ref, valid))
    np.testing.assert_allclose(
        mult, [aggregate.hypervolume_multiplier(front[:2], c, ref) for c in cands], rtol=1e-5)
    assert mult[1] == pytest.approx(0.5) and mult[2] == pytest.approx(0.5)  # add nothing
    # an empty front: the gain is the candidate's own box
    np.testing.assert_allclose(
        jax.jit(hypervolume_gains)(front, cands[:1], ref, np.zeros(3, bool)), [0.25], rtol=1e-5)
