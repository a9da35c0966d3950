"""TRL's GRPO loss types beyond the clip: SAPO's soft gate, VESPO's gamma weights and the
off-policy sequence mask, against the published formulas computed by hand in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses.policy_gradient import off_policy_sequence_mask, sapo_loss, vespo_loss

LOGPS = np.log(np.array([[0.5, 0.2, 0.9], [0.3, 0.6, 0.1]], np.float32))
OLD = np.log(np.array([[0.4, 0.25, 0.9], [0.3, 0.3, 0.5]], np.float32))
MASK = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
ADV = np.array([1.5, -0.7], np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_sapo_golden_values_and_gradient():
    tau_pos, tau_neg = 1.0, 1.05
    loss, stats = jax.jit(lambda lp: sapo_loss(lp, OLD, ADV, MASK))(LOGPS)
    r = np.exp(LOGPS.astype(np.float64) - OLD)
    tau = np.where(ADV[:, None] > 0, tau_pos, tau_neg)
    want = -4.0 / tau * _sigmoid(tau * (r - 1.0)) * ADV[:, None] * MASK
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["ratio"], r * MASK, rtol=1e-5)
    # d L / d log pi = -4 sigma' (tau (r - 1)) r A: at r = 1 exactly -A (the policy gradient)
    grad = jax.jit(jax.grad(lambda lp: sapo_loss(lp, OLD, ADV, MASK)[0].sum()))(
        jnp.asarray(LOGPS))
    s = _sigmoid(tau * (r - 1.0))
    np.testing.assert_allclose(grad, -4.0 * s * (1 - s) * r * ADV[:, None] * MASK, rtol=1e-5,
                               atol=1e-7)
    on_policy = jax.jit(jax.grad(lambda lp: sapo_loss(lp, LOGPS, ADV, MASK)[0].sum()))(
        jnp.asarray(LOGPS))
    np.testing.assert_allclose(on_policy, -ADV[:, None] * MASK, rtol=1e-6)
    check_grads(jax.jit(lambda lp: sapo_loss(lp, OLD, ADV, MASK)[0].sum()),
                (jnp.asarray(LOGPS),), order=1, modes=["rev"])


def test_sapo_temperature_by_advantage_sign_and_garbage_off_mask():
    logps = np.array([[-1.0, -np.inf]], np.float32)  # the off-mask entry may be anything
    old = np.array([[-1.3, 0.0]], np.float32)
    mask = np.array([[1.0, 0.0]], np.float32)
    r = np.exp(0.3)
    f = jax.jit(lambda a: sapo_loss(logps, old, a, mask, temperature_pos=3.0,
                                    temperature_neg=0.5)[0])
    for adv, tau in ((2.0, 3.0), (-2.0, 0.5), (0.0, 0.5)):  # A <= 0 takes tau_neg
        loss = f(np.array([adv], np.float32))
        np.testing.assert_allclose(loss, [[-4 / tau * _sigmoid(tau * (r - 1)) * adv, 0.0]],
                                   rtol=1e-6)
    g = jax.jit(jax.grad(lambda lp: sapo_loss(lp, old, np.array([1.0], np.float32),
                                              mask)[0].sum()))(jnp.asarray(logps))
    assert np.all(np.isfinite(g)) and g[0, 1] == 0
    with pytest.raises(ValueError, match="temperatures"):
        sapo_loss(logps, old, np.array([1.0]), mask, temperature_neg=0.0)


def _phi(log_w, adv, k_pos=2.0, lam_pos=3.0, k_neg=3.0, lam_neg=2.0):
    k = np.where(adv >= 0, k_pos, k_neg)
    lam = np.where(adv >= 0, lam_pos, lam_neg)
    w = np.exp(log_w)
    return np.exp(lam) * w ** k * np.exp(-lam * w)  # e^lambda w^k e^{-lambda w}


def test_vespo_golden_values_and_gradient():
    loss, stats = jax.jit(lambda lp: vespo_loss(lp, OLD, ADV, MASK))(LOGPS)
    log_w = ((LOGPS.astype(np.float64) - OLD) * MASK).sum(-1)
    phi = _phi(log_w, ADV)
    np.testing.assert_allclose(stats["phi"], phi, rtol=1e-5)
    np.testing.assert_allclose(stats["ratio"], np.exp(log_w), rtol=1e-5)
    want = -phi[:, None] * ADV[:, None] * LOGPS * MASK
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-7)
    # phi is a constant of the gradient: d L / d log pi_t = -phi A
    grad = jax.jit(jax.grad(lambda lp: vespo_loss(lp, OLD, ADV, MASK)[0].sum()))(
        jnp.asarray(LOGPS))
    np.testing.assert_allclose(grad, -phi[:, None] * ADV[:, None] * MASK, rtol=1e-5)
    # on-policy: phi(1) = 1, the plain policy gradient
    _, on = vespo_loss(LOGPS, LOGPS, ADV, MASK)
    np.testing.assert_allclose(on["phi"], [1.0, 1.0], rtol=1e-6)


def test_vespo_token_advantages_clamps_and_other_parameters():
    adv = np.array([[1.0, -1.0, 2.0], [-0.5, 0.5, 0.0]], np.float32)
    loss, stats = vespo_loss(LOGPS, OLD, adv, MASK, k_pos=1.0, lambda_pos=0.5, k_neg=4.0,
                             lambda_neg=0.0)
    log_w = ((LOGPS.astype(np.float64) - OLD) * MASK).sum(-1)[:, None]
    phi = _phi(log_w, adv, 1.0, 0.5, 4.0, 1e-4)  # lambda clamped at 1e-4
    np.testing.assert_allclose(stats["phi"], phi * MASK, rtol=1e-5)
    np.testing.assert_allclose(loss, -phi * adv * LOGPS * MASK, rtol=1e-5, atol=1e-7)
    # a far-off sequence: log w clamped to [log 1e-8, 20], weights finite and tiny
    far = np.full((1, 3), -30.0, np.float32)
    loss, stats = vespo_loss(far, np.zeros((1, 3), np.float32), np.array([1.0], np.float32),
                             np.ones((1, 3), np.float32))
    # rtol 1e-4: log(1e-8) = -18.42 is held in float32 (ulp ~1.9e-6) and exponentiated, so
    # the ratio carries a relative error up to ~18.42 * 2^-24 * a few ulps ~ 1e-5..1e-4
    np.testing.assert_allclose(stats["ratio"], [1e-8], rtol=1e-4)
    np.testing.assert_allclose(stats["phi"], _phi(np.log(1e-8), np.array([1.0])), rtol=1e-4)
    assert np.all(np.isfinite(loss))


def test_off_policy_mask_drops_negative_advantages_that_drifted():
    old = np.array([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0], [-1.0, -1.0, -9.0]], np.float32)
    logps = np.array([[-2.0, -2.0, -2.0], [-2.0, -2.0, -2.0], [-1.5, -1.5, 0.0]], np.float32)
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]], np.float32)
    adv = np.array([-1.0, 1.0, -1.0], np.float32)
    # mean (old - logps) over valid tokens: 1.0, 1.0, 0.5 (the masked token ignored)
    got = jax.jit(lambda lp: off_policy_sequence_mask(lp, old, adv, mask, threshold=0.6))(logps)
    np.testing.assert_array_equal(got, [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(
        off_policy_sequence_mask(logps, old, adv, mask, threshold=1.0), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(  # token advantages: by each token's sign
        off_policy_sequence_mask(logps, old, np.array([[-1, 1, 0]] * 3, np.float32), mask,
                                 threshold=0.6), [[0, 1, 1], [0, 1, 1], [1, 1, 1]])
    g = jax.grad(lambda lp: off_policy_sequence_mask(lp, old, adv, mask, threshold=0.6).sum())(
        jnp.asarray(logps))
    assert not np.any(g)  # no gradient through the mask
    with pytest.raises(ValueError, match="off_policy_mask_threshold"):
        off_policy_sequence_mask(logps, old, adv, mask, threshold=-1.0)


def test_compiled_once_for_new_values():
    traces = []

    @jax.jit
    def f(lp, old, adv):
        traces.append(1)
        return (sapo_loss(lp, old, adv, MASK)[0].sum() + vespo_loss(lp, old, adv, MASK)[0].sum()
                + off_policy_sequence_mask(lp, old, adv, MASK, threshold=0.5).sum())

    f(LOGPS, OLD, ADV)
    f(LOGPS - 0.1, OLD + 0.2, -ADV)
    assert len(traces) == 1
