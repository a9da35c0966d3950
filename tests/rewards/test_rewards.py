"""Rule rewards, BLEU, aggregation (weighted, log-tamed, hypervolume, gradient weights), RMs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.rewards import (bleu_reward, contains_tokens, cosine_reward, ensemble, ensemble_reward,
                             exact_match, gradient_weight_update, hypervolume,
                             hypervolume_multiplier, length_penalty, log_tamed_sum,
                             overlong_penalty, pareto_front, reward_model_reward, sentence_bleu,
                             verifier_reward, weighted_sum)


def test_exact_match_and_verifier():
    np.testing.assert_array_equal(exact_match([3, None, 7], [3, 1, 8]), [1, 0, 0])
    with pytest.raises(ValueError):
        exact_match([1], [1, 2])
    r = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(verifier_reward(r, lambda i, x: x.sum() > 5), [0, 1])


def test_format_and_length_rewards():
    r = np.array([[5, 6, 7, 0], [5, 9, 0, 0]])
    m = r != 0
    np.testing.assert_array_equal(contains_tokens(r, m, [9, 7]), [1, 1])
    np.testing.assert_array_equal(contains_tokens(r, m, [9, 7], mode="all"), [0, 0])
    np.testing.assert_array_equal(contains_tokens(r, m, [0]), [0, 0])  # padding never counts
    np.testing.assert_allclose(length_penalty(m, target=2.0), [-0.5, 0.0])
    lengths = np.arange(11)
    mask = lengths[:, None] > np.arange(10)[None, :]
    out = overlong_penalty(mask, max_length=8, cache=4)
    # 0 up to L = 4, then linear down to -1 at L = 8, and -1 beyond
    np.testing.assert_allclose(out, [0, 0, 0, 0, 0, -0.25, -0.5, -0.75, -1, -1, -1])


def test_sentence_bleu_golden_values():
    ref = [1, 2, 3, 4, 5, 6]
    assert sentence_bleu(ref, [ref]) == pytest.approx(1.0)
    assert sentence_bleu([7, 8, 9, 10], [ref]) == 0.0  # no unigram overlap
    # hand-computed: hyp = ref[:4] -> p1 = 1, p2..p4 = 1 (smoothed (k+1)/(k+1)); BP = e^(1-6/4)
    assert sentence_bleu([1, 2, 3, 4], [ref]) == pytest.approx(np.exp(1 - 6 / 4), rel=1e-6)
    # clipping: a repeated token counts at most as often as in a reference
    p1 = sentence_bleu([1, 1, 1, 1], [ref], max_n=1)
    assert p1 == pytest.approx(0.25 * np.exp(1 - 6 / 4), rel=1e-6)
    # the closest reference length sets the brevity penalty
    assert sentence_bleu([1, 2, 3, 4], [ref, [1, 2, 3, 4]]) == pytest.approx(1.0)
    out = bleu_reward(np.array([[1, 2, 3, 4, 5, 6], [7, 8, 0, 0, 0, 0]]),
                      np.array([[1] * 6, [1, 1, 0, 0, 0, 0]], bool), [[ref], [ref]])
    np.testing.assert_allclose(out, [1.0, 0.0])


def test_cosine_reward():
    a = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(cosine_reward(a, jnp.array([[2.0, 0.0], [-1.0, -1.0]])),
                               [1.0, -1.0], rtol=1e-6)


def test_weighted_and_log_tamed_sums():
    r = jnp.array([[1.0, 2.0, 3.0], [0.0, 10.0, 100.0]])
    np.testing.assert_allclose(weighted_sum(r, [1.0, 0.5]), [1.0, 7.0, 53.0])
    tamed = log_tamed_sum(r, [1.0, 1.0])
    # the second reward varies far more (std/mean), so it is log1p-ed; the first is not
    np.testing.assert_allclose(tamed, np.array([1.0, 2.0, 3.0]) + np.log1p([0.0, 10.0, 100.0]),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        weighted_sum(r, [1.0])


def test_ensemble_modes():
    r = jnp.array([[1.0, 2.0], [3.0, 2.0], [2.0, 2.0]])
    np.testing.assert_allclose(ensemble(r), [2.0, 2.0])
    np.testing.assert_allclose(ensemble(r, mode="min"), [1.0, 2.0])
    np.testing.assert_allclose(ensemble(r, mode="mean_minus_std", lam=0.5),
                               [2.0 - 0.5 * np.std([1, 3, 2]), 2.0], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown ensemble mode"):
        ensemble(r, mode="max")


def test_pareto_front_and_hypervolume():
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [1.5, 1.5]])
    np.testing.assert_array_equal(pareto_front(pts), pts[:3])
    # union of three boxes from the origin: 3 + 4 + 3 - 2 - 1 - 2 + 1 = 6
    assert hypervolume(pts, [0.0, 0.0]) == pytest.approx(6.0)
    # Monte Carlo check on a random front
    rng = np.random.default_rng(0)
    front = rng.random((6, 3))
    u = rng.random((200_000, 3))
    mc = np.mean(np.any(np.all(u[:, None, :] <= front[None], axis=-1), axis=1))
    assert hypervolume(front, np.zeros(3)) == pytest.approx(mc, abs=0.01)
    # a point that adds no volume gives the base multiplier 0.5; a big gain saturates at 2
    assert hypervolume_multiplier(pts[:3], [1.0, 1.0], [0.0, 0.0]) == pytest.approx(0.5)
    assert hypervolume_multiplier(pts[:3], [10.0, 10.0], [0.0, 0.0]) == pytest.approx(2.0)


def test_gradient_weights_favour_the_objective_that_helps_all():
    g = jnp.array([[1.0, 1.0], [1.0, 0.9], [-1.0, 0.0]])  # 0 and 1 agree, 2 conflicts
    w = gradient_weight_update(jnp.full(3, 1 / 3), g, step_size=0.5)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    assert int(jnp.argmax(w)) in (0, 1) and int(jnp.argmin(w)) == 2
    trees = [{"a": row[:1], "b": row[1:]} for row in g]
    np.testing.assert_allclose(gradient_weight_update(jnp.full(3, 1 / 3), trees, step_size=0.5),
                               w, rtol=1e-6)


class _Rollout:
    def __init__(self, ids):
        self.ids = jnp.asarray(ids)
        self.mask = jnp.ones_like(self.ids, bool)


def test_reward_model_and_ensemble_rewards():
    def apply(params, ids, mask):
        return params["w"] * ids.sum(-1).astype(jnp.float32)

    rollout = _Rollout([[1, 2], [3, 4]])
    np.testing.assert_allclose(reward_model_reward(apply, {"w": 2.0})(rollout), [6.0, 14.0])
    members = [{"w": jnp.float32(1.0)}, {"w": jnp.float32(3.0)}]
    np.testing.assert_allclose(ensemble_reward(apply, members)(rollout), [6.0, 14.0])
    np.testing.assert_allclose(ensemble_reward(apply, members, mode="min")(rollout), [3.0, 7.0])
    np.testing.assert_allclose(ensemble_reward(apply, members, mode="mean_minus_std",
                                               lam=1.0)(rollout), [3.0, 7.0])
    assert jax.jit(lambda ids: apply({"w": 1.0}, ids, None))(rollout.ids).shape == (2,)


def test_cosine_reward_under_jit_with_broadcasting():
    """The broadcast shapes where sum(a b) / (|a| |b|) was miscompiled on XLA:CPU (jax 0.10.2)."""
    import jax
    import numpy as np

    from alignax.rewards import cosine_reward

    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 1728, 1, 16)).astype(np.float32)
    b = rng.normal(size=(128, 1, 1, 16)).astype(np.float32)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(jax.jit(cosine_reward)(a, b), (unit(a) * unit(b)).sum(-1),
                               atol=1e-5)
