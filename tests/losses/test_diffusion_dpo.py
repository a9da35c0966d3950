"""alignax.losses.diffusion_dpo: the Diffusion-DPO loss on eps predictions (Wallace et al. 2023)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses.diffusion_dpo import denoising_errors, diffusion_dpo_loss


def _arrays(seed, b=3, d=4):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal((b, d)), jnp.float32) for _ in range(6)]


def _naive(pw, pl, rw, rl, nw, nl, beta, weights=None, reduction="sum"):
    red = np.sum if reduction == "sum" else np.mean
    e = lambda a, n: red((np.asarray(a, np.float64) - np.asarray(n)) ** 2, -1)  # noqa: E731
    w = 1.0 if weights is None else np.asarray(weights, np.float64)
    z = -beta * w * ((e(pw, nw) - e(rw, nw)) - (e(pl, nl) - e(rl, nl)))
    return np.log1p(np.exp(-z)), z


def test_hand_computed_value():
    # one pair, one dim: noise 1; policy eps_w = 0.5 (error 0.25), ref eps_w = 0 (error 1);
    # policy eps_l = 0 (error 1), ref eps_l = 0.5 (error 0.25): h = (0.25 - 1) - (1 - 0.25) = -1.5
    pw, rw = jnp.array([[0.5]]), jnp.array([[0.0]])
    pl, rl = jnp.array([[0.0]]), jnp.array([[0.5]])
    noise = jnp.array([[1.0]])
    loss, m = jax.jit(lambda *a: diffusion_dpo_loss(*a, beta=2.0))(pw, pl, rw, rl, noise)
    # logit = -beta h = 3: loss = log(1 + e^-3)
    np.testing.assert_allclose(loss, [math.log1p(math.exp(-3.0))], rtol=1e-6)
    np.testing.assert_allclose(m["chosen_rewards"], [1.5], rtol=1e-6)  # -2 (0.25 - 1)
    np.testing.assert_allclose(m["rejected_rewards"], [-1.5], rtol=1e-6)  # -2 (1 - 0.25)
    np.testing.assert_allclose(m["reward_margins"], [3.0], rtol=1e-6)
    np.testing.assert_array_equal(m["reward_accuracies"], [1.0])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_matches_numpy_reference(reduction):
    pw, pl, rw, rl, nw, nl = _arrays(0)
    weights = jnp.array([1.0, 0.5, 2.0])
    loss, m = diffusion_dpo_loss(pw, pl, rw, rl, nw, nl, beta=0.3, weights=weights,
                                 reduction=reduction)
    want, z = _naive(pw, pl, rw, rl, nw, nl, 0.3, weights, reduction)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(m["reward_margins"], z, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(m["reward_accuracies"], (z > 0).astype(np.float32))


def test_shared_noise_is_the_default_and_mean_is_sum_over_dims():
    pw, pl, rw, rl, n, _ = _arrays(1)
    a, _ = diffusion_dpo_loss(pw, pl, rw, rl, n, beta=0.2)
    b, _ = diffusion_dpo_loss(pw, pl, rw, rl, n, n, beta=0.2)
    np.testing.assert_array_equal(a, b)
    # the reference code's per-dim mean with beta D equals the squared norm with beta
    c, _ = diffusion_dpo_loss(pw, pl, rw, rl, n, beta=0.2 * n.shape[1], reduction="mean")
    np.testing.assert_allclose(a, c, rtol=1e-5)


def test_policy_equal_to_reference_gives_log2_and_zero_accuracy():
    pw, pl, _, _, nw, nl = _arrays(2)
    loss, m = diffusion_dpo_loss(pw, pl, pw, pl, nw, nl, beta=5.0)
    np.testing.assert_allclose(loss, np.full(3, math.log(2.0)), rtol=1e-6)
    np.testing.assert_array_equal(m["reward_accuracies"], np.zeros(3))


def test_swapping_chosen_and_rejected_negates_the_margin():
    pw, pl, rw, rl, nw, nl = _arrays(3)
    l1, m1 = diffusion_dpo_loss(pw, pl, rw, rl, nw, nl, beta=0.7)
    l2, m2 = diffusion_dpo_loss(pl, pw, rl, rw, nl, nw, beta=0.7)
    np.testing.assert_allclose(m1["reward_margins"], -m2["reward_margins"], rtol=1e-6)
    # -log s(z) - (-log s(-z)) = -z
    np.testing.assert_allclose(l1 - l2, -m1["reward_margins"], rtol=1e-5, atol=1e-6)


def test_gradients_finite_checked_and_reference_frozen():
    pw, pl, rw, rl, nw, nl = _arrays(4)

    def total(pw, pl):
        return diffusion_dpo_loss(pw, pl, rw, rl, nw, nl, beta=0.5)[0].sum()

    check_grads(total, (pw, pl), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    g_ref = jax.grad(lambda r: diffusion_dpo_loss(pw, pl, r, rl, nw, nl, beta=0.5)[0].sum())(rw)
    np.testing.assert_array_equal(g_ref, np.zeros_like(rw))
    # extreme logits stay finite
    g = jax.grad(lambda a: diffusion_dpo_loss(a, pl, rw, rl, nw, nl, beta=1e4)[0].sum())(pw)
    assert np.all(np.isfinite(g))


def test_gradient_at_reference_moves_the_chosen_prediction_toward_its_noise():
    pw, pl, _, _, nw, nl = _arrays(5)
    beta = 0.4
    g_w, g_l = jax.grad(lambda a, b: diffusion_dpo_loss(a, b, pw, pl, nw, nl, beta=beta)[0]
                        .sum(), argnums=(0, 1))(pw, pl)
    # at theta = ref: dL/d eps_w = beta sigma(0) 2 (eps_w - noise_w) = beta (eps_w - noise_w)
    np.testing.assert_allclose(g_w, beta * (pw - nw), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_l, -beta * (pl - nl), rtol=1e-5, atol=1e-6)
    # a descent step lowers the chosen error and raises the rejected one
    e0w, e0l = denoising_errors(pw, nw), denoising_errors(pl, nl)
    e1w, e1l = denoising_errors(pw - 0.1 * g_w, nw), denoising_errors(pl - 0.1 * g_l, nl)
    assert np.all(e1w < e0w) and np.all(e1l > e0l)


def test_bad_arguments():
    pw, pl, rw, rl, nw, _ = _arrays(6)
    with pytest.raises(ValueError, match="reduction"):
        diffusion_dpo_loss(pw, pl, rw, rl, nw, beta=1.0, reduction="max")
    with pytest.raises(AssertionError):
        diffusion_dpo_loss(pw, pl[:2], rw, rl, nw, beta=1.0)
    with pytest.raises(AssertionError):
        diffusion_dpo_loss(pw, pl, rw, rl, nw, beta=1.0, weights=jnp.ones(2))


def test_no_retrace_on_second_call():
    traces = []

    @jax.jit
    def f(*a):
        traces.append(1)
        return diffusion_dpo_loss(*a, beta=0.1)[0]

    pw, pl, rw, rl, nw, nl = _arrays(7)
    f(pw, pl, rw, rl, nw, nl)
    f(pl, pw, rl, rw, nl, nw)
    assert len(traces) == 1
