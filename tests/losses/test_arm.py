"""GenARM's autoregressive reward-model loss, by hand (alignax.losses.autoregressive_rm_loss).

L = -log sigma(beta_r (sum_t log pi_r(y_w,t) - sum_t log pi_r(y_l,t))), masked sums (Xu et al.
2024, arXiv 2410.08193). The toy experiment trains the ARM through the direct recipe's
reference-free CPO loss with alpha = 0, which is the same objective: checked here.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses import autoregressive_rm_loss
from alignax.losses.direct import cpo_loss


def _log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def test_hand_computed_values_with_masks():
    chosen = jnp.array([[-0.5, -1.0, -2.0], [-0.1, -0.2, -9.0]])
    rejected = jnp.array([[-1.5, -0.5, -7.0], [-3.0, -1.0, -1.0]])
    cmask = jnp.array([[1, 1, 0], [1, 1, 1]], bool)
    rmask = jnp.array([[1, 1, 1], [1, 0, 0]], bool)
    out = jax.jit(lambda *a: autoregressive_rm_loss(*a, beta_r=0.5))(chosen, rejected, cmask,
                                                                      rmask)
    # row 0: r_w = -1.5, r_l = -9.0; row 1: r_w = -9.3, r_l = -3.0
    expected = [-_log_sigmoid(0.5 * (-1.5 + 9.0)), -_log_sigmoid(0.5 * (-9.3 + 3.0))]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # masked == sliced: tokens off the mask do not matter, whatever their value
    garbage = chosen.at[0, 2].set(-1e4)
    np.testing.assert_allclose(autoregressive_rm_loss(garbage, rejected, cmask, rmask,
                                                      beta_r=0.5), out, rtol=1e-6)


def test_swap_symmetry_extremes_and_gradients():
    rng = np.random.default_rng(0)
    c = jnp.asarray(-np.abs(rng.normal(size=(4, 5))), jnp.float32)
    r = jnp.asarray(-np.abs(rng.normal(size=(4, 5))), jnp.float32)
    m = jnp.asarray(rng.random((4, 5)) > 0.3)
    fwd = autoregressive_rm_loss(c, r, m, m, beta_r=2.0)
    bwd = autoregressive_rm_loss(r, c, m, m, beta_r=2.0)
    # -log s(d) - (-log s(-d)) = -d
    d = 2.0 * (np.where(m, c, 0).sum(-1) - np.where(m, r, 0).sum(-1))
    np.testing.assert_allclose(fwd - bwd, -d, rtol=1e-5, atol=1e-5)
    check_grads(lambda x: autoregressive_rm_loss(x, r, m, m, beta_r=2.0).sum(), (c,), order=1,
                modes=["rev"], atol=1e-2, rtol=1e-2)
    big = jnp.full((1, 3), -1e4)
    g = jax.grad(lambda x: autoregressive_rm_loss(x, jnp.zeros((1, 3)), jnp.ones((1, 3)),
                                                  jnp.ones((1, 3)), beta_r=1.0).sum())(big)
    assert np.all(np.isfinite(g)) and np.allclose(g, -1.0)  # saturated: d loss / d logp = -1
    with pytest.raises(ValueError, match="beta_r"):
        autoregressive_rm_loss(c, r, m, m, beta_r=-1.0)


def test_equals_reference_free_cpo_without_its_nll_term():
    rng = np.random.default_rng(1)
    c = jnp.asarray(-np.abs(rng.normal(size=(6, 4))), jnp.float32)
    r = jnp.asarray(-np.abs(rng.normal(size=(6, 4))), jnp.float32)
    m = jnp.asarray(rng.random((6, 4)) > 0.2)
    arm = autoregressive_rm_loss(c, r, m, m, beta_r=0.3)
    cpo, _ = cpo_loss(jnp.where(m, c, 0).sum(-1), jnp.where(m, r, 0).sum(-1),
                      chosen_lengths=m.sum(-1), beta=0.3, alpha=0.0)
    np.testing.assert_allclose(arm, cpo, rtol=1e-6)
