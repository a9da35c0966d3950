"""Advantages, KL estimators, PPO-clip / GSPO, value loss and the aggregation modes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses import aggregate, clipped_value_loss, entropy_bonus, gspo_loss, ppo_clip_loss
from alignax.ops import (batch_normalized_advantages, gae, group_normalized_advantages,
                         kl_estimate, leave_one_out_advantages)

RNG = np.random.default_rng(0)
B, T = 4, 6
MASK = (np.arange(T)[None, :] < np.array([[6], [3], [5], [1]])).astype(np.float32)


def naive_gae(r, v, m, gamma, lam):
    adv = np.zeros_like(r)
    for b in range(r.shape[0]):
        idx = np.flatnonzero(m[b])
        next_v, next_a = 0.0, 0.0
        for t in idx[::-1]:
            delta = r[b, t] + gamma * next_v - v[b, t]
            next_a = delta + gamma * lam * next_a
            next_v = v[b, t]
            adv[b, t] = next_a
    return adv


def test_gae_matches_the_recursion_and_golden():
    r = RNG.normal(size=(B, T)).astype(np.float32)
    v = RNG.normal(size=(B, T)).astype(np.float32)
    adv, ret = jax.jit(lambda *a: gae(*a, gamma=0.9, lam=0.8))(r, v, MASK)
    expected = naive_gae(r * MASK, v * MASK, MASK, 0.9, 0.8)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, (expected + v) * MASK, rtol=1e-5, atol=1e-6)


def test_gae_masked_equals_sliced():
    r = RNG.normal(size=(1, T)).astype(np.float32)
    v = RNG.normal(size=(1, T)).astype(np.float32)
    m = np.array([[1, 1, 1, 0, 0, 0]], np.float32)
    full, _ = gae(r, v, m)
    sliced, _ = gae(r[:, :3], v[:, :3], m[:, :3])
    np.testing.assert_allclose(full[:, :3], sliced, rtol=1e-6)
    np.testing.assert_array_equal(full[:, 3:], 0.0)


def test_batch_normalized_advantages():
    x = RNG.normal(size=(B, T)).astype(np.float32) * 3 + 2
    a = batch_normalized_advantages(x, MASK)
    valid = np.asarray(a)[MASK > 0]
    np.testing.assert_allclose([valid.mean(), valid.std()], [0.0, 1.0], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(a)[MASK == 0], 0.0)


def test_kl_estimators():
    np.testing.assert_allclose(
        [kl_estimate(jnp.array(-1.0), jnp.array(-2.0), k) for k in ("k1", "k2", "k3")],
        [1.0, 0.5, np.exp(-1.0)], rtol=1e-6)
    # unbiasedness of k1 and k3 for KL(p || q) of two categoricals, from samples of p
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.5, 0.3])
    true_kl = float(np.sum(p * np.log(p / q)))
    x = RNG.choice(3, size=200_000, p=p)
    for kind in ("k1", "k3"):
        est = float(jnp.mean(kl_estimate(jnp.log(p[x]), jnp.log(q[x]), kind)))
        assert abs(est - true_kl) < 0.01, (kind, est, true_kl)
    assert float(jnp.min(kl_estimate(jnp.log(p[x]), jnp.log(q[x]), "k3"))) >= 0


def test_sequence_advantages_broadcast_and_gradients():
    lp = jnp.asarray(RNG.normal(size=(B, T)) * 0.1, jnp.float32)
    old = jnp.asarray(RNG.normal(size=(B, T)) * 0.1, jnp.float32)
    adv = jnp.asarray(RNG.normal(size=B), jnp.float32)
    a, _ = ppo_clip_loss(lp, old, adv, MASK)
    b, _ = ppo_clip_loss(lp, old, jnp.broadcast_to(adv[:, None], (B, T)), MASK)
    np.testing.assert_allclose(a, b)
    check_grads(lambda x: aggregate(ppo_clip_loss(x, old, adv, MASK, clip_low=10.0)[0], MASK),
                (lp,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    g = jax.grad(lambda x: aggregate(ppo_clip_loss(x, old, adv, MASK)[0], MASK))(lp * 1e3)
    assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum",
                                  "seq_mean_token_sum_norm"])
def test_aggregation_modes_and_masked_equals_sliced(mode):
    x = RNG.normal(size=(B, T)).astype(np.float32)
    rows = [x[b, MASK[b] > 0] for b in range(B)]
    expected = {
        "token_mean": np.concatenate(rows).mean(),
        "seq_mean_token_mean": np.mean([r.mean() for r in rows]),
        "seq_mean_token_sum": np.mean([r.sum() for r in rows]),
        "seq_mean_token_sum_norm": np.mean([r.sum() / T for r in rows]),
    }[mode]
    np.testing.assert_allclose(aggregate(x, MASK, mode), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(x, MASK, "mean")


def test_compiled_once_for_new_values():
    from tests.test_utils import count_compilations

    def ppo_step(lp, old, adv):
        return aggregate(ppo_clip_loss(lp, old, adv, MASK)[0], MASK)

    f = jax.jit(ppo_step)
    args = [tuple(jnp.asarray(RNG.normal(size=s), jnp.float32) for s in ((B, T), (B, T), (B,)))
            for _ in range(3)]
    with count_compilations("ppo_step") as n:
        values = [float(f(*a)) for a in args]
    assert n() == 1 and len(set(values)) == 3


def test_gpo_loss_is_the_square_regression_of_the_log_ratio():
    from alignax.losses import gpo_loss

    rng = np.random.default_rng(3)
    logp, old, s = (jnp.asarray(rng.normal(size=6), jnp.float32) for _ in range(3))
    loss, metrics = gpo_loss(logp, old, s, eta=2.0, baseline=0.5)
    expected = (np.asarray(logp) - np.asarray(old) - 2.0 * (np.asarray(s) - 0.5)) ** 2
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["log_ratio"], np.asarray(logp) - np.asarray(old),
                               rtol=1e-6)
    # at the optimum the log-ratio equals eta (s - b): zero loss and zero gradient
    grad = jax.grad(lambda x: gpo_loss(x, old, s, eta=2.0, baseline=0.5)[0].sum())(
        old + 2.0 * (s - 0.5))
    np.testing.assert_allclose(grad, 0.0, atol=1e-5)
    # a sample preferred to the policy (s > b) gets its probability pushed up from the start
    grad = jax.grad(lambda x: gpo_loss(x, old, jnp.ones(6), eta=1.0)[0].sum())(old)
    assert (np.asarray(grad) < 0).all()


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_gae_golden(self):
        # one token, reward 1, value 0.5: advantage 0.5, return 1
        a1, r1 = self.variant(gae)(jnp.ones((1, 1)), jnp.full((1, 1), 0.5), jnp.ones((1, 1)))
        chex.assert_trees_all_close((a1[0, 0], r1[0, 0]), (np.float32(0.5), np.float32(1.0)),
                                    rtol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    def test_group_and_leave_one_out_advantages(self):
        rewards = jnp.array([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
        chex.assert_trees_all_close(
            self.variant(lambda r: leave_one_out_advantages(r, 3))(rewards),
            np.array([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]), rtol=1e-7)
        grpo = self.variant(lambda r: group_normalized_advantages(r, 3))(rewards)
        chex.assert_trees_all_close(grpo[:3],
                                    np.array([-1.0, 0.0, 1.0]) / (np.std([1, 2, 3]) + 1e-6),
                                    rtol=1e-5)
        chex.assert_trees_all_equal(grpo[3:], np.zeros(3))  # equal rewards: no signal, no NaN
        unscaled = self.variant(lambda r: group_normalized_advantages(r, 3, scale_by_std=False))
        chex.assert_trees_all_close(unscaled(rewards)[:3], np.array([-1.0, 0.0, 1.0]), rtol=1e-7)
        with pytest.raises(ValueError, match="groups of 4"):
            self.variant(lambda r: group_normalized_advantages(r, 4))(rewards)

    @chex.variants(with_jit=True, without_jit=True)
    def test_ppo_clip_golden_and_dual_clip(self):
        lp = jnp.log(jnp.array([[1.0, 1.5, 0.5, 0.5]]))
        old = jnp.zeros((1, 4))
        adv = jnp.array([[2.0, 1.0, 1.0, -1.0]])
        loss, m = self.variant(lambda *a: ppo_clip_loss(*a, clip_low=0.2))(
            lp, old, adv, jnp.ones((1, 4)))
        # ratio 1: -A; ratio 1.5, A > 0: clipped at 1.2; ratio 0.5, A > 0: unclipped -0.5;
        # ratio 0.5, A < 0: clipped at 0.8 -> 0.8
        chex.assert_trees_all_close(loss, np.array([[-2.0, -1.2, -0.5, 0.8]]), rtol=1e-6)
        chex.assert_trees_all_equal(m["clipped"], np.array([[0, 1, 0, 1]]))
        # clip-higher: the upper bound moves to 1.28
        hi, _ = self.variant(lambda *a: ppo_clip_loss(*a, clip_low=0.2, clip_high=0.28))(
            lp, old, adv, jnp.ones((1, 4)))
        chex.assert_trees_all_close(hi[0, 1], np.float64(-1.28), rtol=1e-6)
        # dual clip bounds a negative advantage's loss by -c A
        big = jnp.log(jnp.array([[10.0]]))
        d, _ = self.variant(lambda *a: ppo_clip_loss(*a, dual_clip=3.0))(
            big, jnp.zeros((1, 1)), jnp.array([[-1.0]]), jnp.ones((1, 1)))
        chex.assert_trees_all_close(d, np.array([[3.0]]), rtol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gspo(self):
        lp = jnp.log(jnp.array([[1.0, 1.2, 9.0], [0.9, 0.9, 0.0]]))
        mask = jnp.array([[1, 1, 0], [1, 1, 0]], jnp.float32)
        adv = jnp.array([1.0, -1.0])
        loss, m = self.variant(lambda *a: gspo_loss(*a, clip_low=0.05, clip_high=0.05))(
            lp, jnp.zeros((2, 3)), adv, mask)
        s = np.exp(np.array([np.log(1.2) / 2, np.log(0.9)]))  # geometric means over the 2 tokens
        chex.assert_trees_all_close(m["ratio"], s, rtol=1e-6)
        chex.assert_trees_all_close(loss, np.array([-1.05, 0.95]), rtol=1e-6)  # both clipped
        # one token per sequence, no clipping: the same as token-level PPO
        one = jnp.ones((2, 1))
        x = jnp.array([[0.01], [-0.02]])
        seq = self.variant(lambda *a: gspo_loss(*a, clip_low=1, clip_high=1))(x, 0 * x, adv, one)
        tok = self.variant(lambda *a: ppo_clip_loss(*a, clip_low=1))(x, 0 * x, adv, one)
        chex.assert_trees_all_close(seq[0], tok[0][:, 0], rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_value_loss_and_entropy(self):
        v = jnp.array([[1.0, 3.0]])
        loss = self.variant(lambda *a: clipped_value_loss(*a, clip=0.5))(
            v, jnp.array([[0.0, 0.0]]), jnp.array([[0.0, 0.0]]), jnp.ones((1, 2)))
        # max((1-0)^2, (0.5-0)^2)/2 = 0.5; max(9, 0.25)/2 = 4.5
        chex.assert_trees_all_close(loss, np.array([[0.5, 4.5]]), rtol=1e-7)
        ent = self.variant(entropy_bonus)(jnp.zeros((1, 2, 4)), jnp.array([[1.0, 0.0]]))
        chex.assert_trees_all_close(ent, np.array([[-np.log(4), 0.0]]), rtol=1e-6)
