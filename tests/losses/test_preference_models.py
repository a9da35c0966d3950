"""Segment (regret / partial return), PAL, MiCRo, PPO-M/C, goal-conditioned, GenARM and CRM."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax import losses
from alignax.losses import (autoregressive_rm_loss, bradley_terry_loss, calibrated_reward_loss,
                            confidence_adjusted_rewards, curriculum_drop_rate,
                            goal_contrastive_loss, hedge_routing_update, ideal_point_loss,
                            ideal_points, mixture_bradley_terry_loss, partial_return_loss,
                            peer_review_masks, prefix_goal_values, regret_preference_loss)
from tests.test_utils import count_compilations

RNG = np.random.default_rng(0)


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _f32(*shape, scale=1.0):
    return jnp.asarray(RNG.normal(size=shape) * scale, jnp.float32)


@pytest.mark.parametrize("fn", [partial_return_loss, regret_preference_loss])
def test_segment_losses_match_numpy_and_masking(fn):
    c, r = _f32(4, 5), _f32(4, 3)
    mc = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], bool)
    mr = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1], [0, 0, 0]], bool)
    # garbage (even inf) off the mask must not leak
    c_bad = jnp.where(mc, c, jnp.inf)
    out = fn(c_bad, r, mc, mr, temperature=0.5)
    d = (np.where(mc, c, 0).sum(-1) - np.where(mr, r, 0).sum(-1)) / 0.5
    np.testing.assert_allclose(out, -_log_sigmoid(d), rtol=1e-5)
    # masked == sliced
    for i in range(4):
        one = fn(c[i:i + 1, :mc[i].sum()], r[i:i + 1, :mr[i].sum()],
                 np.ones((1, mc[i].sum()), bool), np.ones((1, mr[i].sum()), bool),
                 temperature=0.5)
        np.testing.assert_allclose(one[0], out[i], rtol=1e-5)
    # P(c > r) + P(r > c) = 1 (swap symmetry, equal shapes)
    a, b = _f32(3, 4), _f32(3, 4)
    m = np.ones((3, 4), bool)
    np.testing.assert_allclose(np.exp(-fn(a, b, m, m)) + np.exp(-fn(b, a, m, m)), 1.0,
                               rtol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        fn(a, b, m, m, temperature=0.0)


def test_regret_gradients_finite_at_extremes_and_check_grads():
    m = jnp.ones((2, 3), bool)
    g = jax.grad(lambda x: regret_preference_loss(x, -x, m, m).sum())(jnp.full((2, 3), -1e4))
    assert np.isfinite(np.asarray(g)).all()
    check_grads(lambda a, b: regret_preference_loss(a, b, m, m).sum(), (_f32(2, 3), _f32(2, 3)),
                order=2, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_ideal_points_are_convex_combinations_of_prototypes():
    logits, protos = _f32(6, 3), _f32(3, 4)
    a = ideal_points(logits, protos)
    w = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(a, w @ np.asarray(protos), rtol=1e-5, atol=1e-6)
    one_hot = ideal_points(jnp.array([[50.0, 0.0, 0.0]]), protos)
    np.testing.assert_allclose(one_hot[0], protos[0], atol=1e-5)
    with pytest.raises(ValueError, match="prototypes"):
        ideal_points(_f32(2, 4), protos)


def test_ideal_point_loss_matches_numpy_and_is_symmetric():
    fc, fr, a = _f32(5, 4), _f32(5, 4), _f32(5, 4)
    out = ideal_point_loss(fc, fr, a)
    d = ((np.asarray(fr) - a) ** 2).sum(-1) - ((np.asarray(fc) - a) ** 2).sum(-1)
    np.testing.assert_allclose(out, -_log_sigmoid(d), rtol=1e-5)
    np.testing.assert_allclose(np.exp(-out) + np.exp(-ideal_point_loss(fr, fc, a)), 1.0,
                               rtol=1e-5)
    # one shared ideal point [d] broadcasts
    np.testing.assert_allclose(ideal_point_loss(fc, fr, a[0]),
                               ideal_point_loss(fc, fr, jnp.broadcast_to(a[0], (5, 4))),
                               rtol=1e-6)
    check_grads(lambda x, y, z: ideal_point_loss(x, y, z).sum(), (fc[:2], fr[:2], a[:2]),
                order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_mixture_bradley_terry():
    c, r, logits = _f32(6, 3), _f32(6, 3), _f32(6, 3)
    out = mixture_bradley_terry_loss(c, r, logits)
    w = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    p = (w / (1 + np.exp(-(np.asarray(c) - np.asarray(r))))).sum(-1)
    np.testing.assert_allclose(out, -np.log(p), rtol=1e-5)
    # K = 1 is BT; global weights [K] broadcast over the batch
    np.testing.assert_allclose(mixture_bradley_terry_loss(c[:, :1], r[:, :1], jnp.zeros(1)),
                               bradley_terry_loss(c[:, 0], r[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(mixture_bradley_terry_loss(c, r, logits[0]),
                               mixture_bradley_terry_loss(c, r, jnp.broadcast_to(logits[0],
                                                                                 (6, 3))),
                               rtol=1e-6)
    # stable and differentiable at extreme margins
    big = jnp.array([[-1e4, -2e4]])
    out = mixture_bradley_terry_loss(big, -big, jnp.zeros(2))
    assert np.isfinite(np.asarray(out)).all() and float(out[0]) > 1e4
    g = jax.grad(lambda x: mixture_bradley_terry_loss(x, -x, jnp.zeros(2)).sum())(big)
    assert np.isfinite(np.asarray(g)).all()
    check_grads(lambda x, y, z: mixture_bradley_terry_loss(x, y, z).sum(),
                (c[:2], r[:2], logits[:2]), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_hedge_routing_moves_weight_to_the_head_that_explains_the_context():
    # head 1 agrees with this user's labels, heads 0 and 2 disagree
    n = 20
    c = jnp.stack([-jnp.ones(n), jnp.ones(n), jnp.zeros(n)], axis=1)
    r = jnp.zeros((n, 3))
    log_w = jnp.log(jnp.full(3, 1 / 3))
    new = hedge_routing_update(log_w, c, r, learning_rate=0.1)
    np.testing.assert_allclose(np.exp(new).sum(), 1.0, rtol=1e-6)
    assert int(np.argmax(new)) == 1
    losses = -_log_sigmoid(np.asarray(c - r)).sum(0)
    expected = np.asarray(log_w) - 0.1 * losses
    expected = expected - np.log(np.exp(expected).sum())
    np.testing.assert_allclose(new, expected, rtol=1e-5)


def test_calibrated_reward_loss_is_bt_plus_augmented_pairs():
    arrs = [_f32(5) for _ in range(6)]
    out = calibrated_reward_loss(*arrs, calibration_weight=0.5)
    c, r, ch, cl, rh, rl = (np.asarray(a) for a in arrs)
    expected = -_log_sigmoid(c - r) - 0.5 * (_log_sigmoid(ch - cl) + _log_sigmoid(rl - rh))
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    np.testing.assert_allclose(calibrated_reward_loss(*arrs, calibration_weight=0.0),
                               bradley_terry_loss(arrs[0], arrs[1]), rtol=1e-6)


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_confidence_adjusted_rewards_golden(self):
        r = jnp.array([2.0, -2.0, 2.0, -2.0, 1.0])
        s = jnp.array([1.0, 1.0, 0.0, 0.0, 0.5])
        out = self.variant(lambda *a: confidence_adjusted_rewards(*a, weight=0.5))(r, s, 0.0)
        # delta = 0.5 |r| (s - 0.5): confident good +0.5, confident bad -0.5, unsure good -0.5 ...
        chex.assert_trees_all_close(out, np.array([2.5, -2.5, 1.5, -1.5, 1.0]), rtol=1e-6)


def test_goal_contrastive_loss_matches_numpy_and_is_scale_invariant():
    s, gp, gn = _f32(4, 6), _f32(4, 6), _f32(4, 6)
    out = goal_contrastive_loss(s, gp, gn)

    def cos(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    expected = -_log_sigmoid(cos(s, gp)) - _log_sigmoid(-cos(s, gn))
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    np.testing.assert_allclose(goal_contrastive_loss(3 * s, 0.1 * gp, 7 * gn), out, rtol=1e-5)
    # aligned positive, opposite negative: the minimum 2 log(1 + e^-1)
    v = jnp.ones((1, 6))
    np.testing.assert_allclose(goal_contrastive_loss(v, v, -v), 2 * np.log1p(np.exp(-1)),
                               rtol=1e-5)
    g = jax.grad(lambda x: goal_contrastive_loss(x, gp, gn).sum())(jnp.zeros((4, 6)))
    assert np.isfinite(np.asarray(g)).all()
    check_grads(lambda x: goal_contrastive_loss(x, gp[:2], gn[:2]).sum(), (s[:2],), order=1,
                modes=["rev"], atol=1e-2, rtol=1e-2)
    vals = prefix_goal_values(_f32(2, 3, 6), gp[0])
    chex.assert_shape(vals, (2, 3))
    assert np.all(np.abs(vals) <= 1 + 1e-6)


def test_autoregressive_rm_loss():
    c, r = -jnp.abs(_f32(3, 4)), -jnp.abs(_f32(3, 4))
    m = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    out = autoregressive_rm_loss(c, r, m, m, beta_r=0.1)
    d = 0.1 * (np.where(m, c, 0).sum(-1) - np.where(m, r, 0).sum(-1))
    np.testing.assert_allclose(out, -_log_sigmoid(d), rtol=1e-5)
    with pytest.raises(ValueError, match="beta_r"):
        autoregressive_rm_loss(c, r, m, m, beta_r=0.0)


def test_peer_review_masks_select_each_models_confident_pairs_for_the_other():
    ma = jnp.array([3.0, -1.0, 0.5, 2.0, -4.0, 1.0, 0.0, 5.0, -2.0, 0.2])
    mb = -ma
    for_a, for_b = peer_review_masks(ma, mb, drop_rate=0.4)
    assert float(for_b.sum()) == 6 and float(for_a.sum()) == 6
    # B trains on A's six largest margins, A on B's
    np.testing.assert_array_equal(np.flatnonzero(for_b), np.sort(np.argsort(-ma)[:6]))
    np.testing.assert_array_equal(np.flatnonzero(for_a), np.sort(np.argsort(-mb)[:6]))
    keep_all, _ = peer_review_masks(ma, mb, drop_rate=0.0)
    assert float(keep_all.sum()) == 10

    def select(a, b, tau):
        return peer_review_masks(a, b, drop_rate=tau)

    jitted = jax.jit(select)
    with count_compilations("select") as n:
        counts = [float(jitted(ma, mb, tau)[1].sum())
                  for tau in curriculum_drop_rate(jnp.arange(0, 12, 2), max_rate=0.5,
                                                  warmup_steps=10)]
    assert n() == 1
    assert counts == sorted(counts, reverse=True) and counts[0] == 10 and counts[-1] == 5


def test_curriculum_drop_rate_ramps_then_holds():
    rates = [float(curriculum_drop_rate(t, max_rate=0.4, warmup_steps=4)) for t in range(7)]
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4], rtol=1e-6)
    assert float(curriculum_drop_rate(3, max_rate=0.4, warmup_steps=0)) == pytest.approx(0.4)


def test_new_entries_are_exported_and_name_their_papers():
    for fn in (partial_return_loss, regret_preference_loss, ideal_point_loss,
               mixture_bradley_terry_loss, calibrated_reward_loss, goal_contrastive_loss,
               autoregressive_rm_loss):
        assert fn.__name__ in losses.__all__, fn.__name__
        assert "arXiv" in fn.__doc__ or "et al." in fn.__doc__, fn.__name__
    for fn in (peer_review_masks, hedge_routing_update, ideal_points):
        assert fn.__name__ in losses.__all__, fn.__name__
