"""The generative yes/no judge: shapes for points and images, batch invariance, the answer
cross-entropy against hand computations, widening is exact (logits and training), labels
simulated from a gold score, the reward against K references, and the reward-variance trace."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from alignax.rewards import generative_judge as gj

POINTS = gj.JudgeConfig(data_shape=(2,), width=8, depth=2)


def test_logits_for_points_and_images_are_per_pair():
    judge = gj.make_judge(POINTS)
    params = judge.init(jax.random.key(0))
    x, r = jax.random.normal(jax.random.key(1), (2, 6, 2))
    logits = judge.apply(params, x, r)
    assert logits.shape == (6, 2) and logits.dtype == jnp.float32
    np.testing.assert_allclose(judge.apply(params, x[2:4], r[2:4]), logits[2:4], rtol=1e-5,
                               atol=1e-6)
    img = gj.JudgeConfig(data_shape=(8, 8, 1), width=4, depth=1, num_criteria=3)
    ji = gj.make_judge(img)
    pi = ji.init(jax.random.key(2))
    xi, ri = jax.random.normal(jax.random.key(3), (2, 5, 8, 8, 1))
    crit = jnp.array([0, 1, 2, 0, 1])
    out = ji.apply(pi, xi, ri, crit)
    assert out.shape == (5, 2)
    # images are flattened: the same judge on [B, 64] inputs gives the same logits
    flat = gj.make_judge(gj.JudgeConfig(data_shape=(64,), width=4, depth=1, num_criteria=3))
    np.testing.assert_allclose(flat.apply(pi, xi.reshape(5, 64), ri.reshape(5, 64), crit), out,
                               rtol=1e-5, atol=1e-6)
    assert gj.num_params(pi) == (2 * 64 + 3) * 4 + 4 + 4 * 2 + 2
    with pytest.raises(ValueError, match="reads criteria"):
        ji.apply(pi, xi, ri)
    with pytest.raises(ValueError, match="num_criteria=0"):
        judge.apply(params, x, r, jnp.zeros(6, jnp.int32))
    with pytest.raises(ValueError, match="x_ref must be"):
        judge.apply(params, x, r[:, :1])
    with pytest.raises(ValueError, match="activation"):
        gj.JudgeConfig(activation="sigmoid")


def test_answer_loss_and_yes_probability_by_hand():
    logits = jnp.array([[1.0, 0.0], [0.5, 2.0], [-3.0, 4.0]])
    labels = jnp.array([1, 0, 1])
    want = [math.log1p(math.exp(-1.0)), math.log1p(math.exp(0.5 - 2.0)),
            math.log1p(math.exp(7.0))]
    np.testing.assert_allclose(jax.jit(gj.answer_loss)(logits, labels), want, rtol=1e-6)
    np.testing.assert_allclose(gj.yes_probability(logits),
                               1 / (1 + np.exp(-np.array([1.0, -1.5, -7.0]))), rtol=1e-6)
    # soft label 0.5 is the mean of the two hard losses
    np.testing.assert_allclose(gj.answer_loss(logits, jnp.full(3, 0.5)),
                               0.5 * (gj.answer_loss(logits, jnp.ones(3))
                                      + gj.answer_loss(logits, jnp.zeros(3))), rtol=1e-6)
    # swapping the answer tokens and the label is a symmetry
    np.testing.assert_allclose(gj.answer_loss(logits[:, ::-1], 1 - labels),
                               gj.answer_loss(logits, labels), rtol=1e-6)
    check_grads(lambda z: gj.answer_loss(z, labels).sum(), (logits,), order=1,
                modes=("rev",), atol=1e-3, rtol=1e-3)
    big = jnp.array([[200.0, -200.0], [-200.0, 200.0]])
    g = jax.grad(lambda z: gj.answer_loss(z, jnp.array([0, 1])).sum())(big)
    assert np.all(np.isfinite(g))


def test_widen_is_exact_for_logits_and_training():
    judge, wide = gj.make_judge(POINTS), gj.make_judge(gj.JudgeConfig(width=32, depth=2))
    params = judge.init(jax.random.key(4))
    padded = gj.widen(params, 32)
    assert jax.tree.map(jnp.shape, padded) == jax.tree.map(jnp.shape, wide.init(
        jax.random.key(0)))
    x, r = jax.random.normal(jax.random.key(5), (2, 16, 2))
    label = (x[:, 0] > r[:, 0]).astype(jnp.int32)
    np.testing.assert_allclose(wide.apply(padded, x, r), judge.apply(params, x, r), rtol=1e-5,
                               atol=1e-6)
    batch = {"x_gen": x, "x_ref": r, "label": label}
    grads = jax.grad(lambda p: gj.judge_loss(wide.apply)(p, batch)[0])(padded)
    assert float(jnp.abs(grads["hidden"][0]["kernel"][:, 8:]).max()) == 0.0
    assert float(jnp.abs(grads["hidden"][1]["kernel"][8:]).max()) == 0.0
    assert float(jnp.abs(grads["head"]["kernel"][8:]).max()) == 0.0
    tx = optax.adam(1e-2)

    def train(apply, p):
        state = tx.init(p)
        for _ in range(3):
            g = jax.grad(lambda q: gj.judge_loss(apply)(q, batch)[0])(p)
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
        return p

    narrow, widened = train(judge.apply, params), train(wide.apply, padded)
    np.testing.assert_allclose(widened["hidden"][1]["kernel"][:8, :8],
                               narrow["hidden"][1]["kernel"], rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(widened["hidden"][1]["kernel"][8:]).max()) == 0.0
    np.testing.assert_allclose(wide.apply(widened, x, r), judge.apply(narrow, x, r), rtol=1e-4,
                               atol=1e-5)
    with pytest.raises(ValueError, match="below"):
        gj.widen(padded, 8)


def test_simulated_labels_follow_bradley_terry():
    gold_gen = jnp.array([1.0, 0.0, 0.2, 0.5] * 5000)
    gold_ref = jnp.array([0.0, 1.0, 0.2, 0.0] * 5000)
    hard = gj.simulate_labels(jax.random.key(0), gold_gen, gold_ref, temperature=0.0)
    np.testing.assert_array_equal(hard[:4], [1, 0, 0, 1])
    soft = np.asarray(gj.simulate_labels(jax.random.key(1), gold_gen, gold_ref,
                                         temperature=0.5)).reshape(-1, 4).mean(0)
    want = 1 / (1 + np.exp(-np.array([2.0, -2.0, 0.0, 1.0])))
    np.testing.assert_allclose(soft, want, atol=0.02)


def test_reference_reward_is_the_mean_yes_probability_over_references():
    cfg = gj.JudgeConfig(data_shape=(2,), width=8, depth=1, num_criteria=2)
    judge = gj.make_judge(cfg)
    params = judge.init(jax.random.key(6))
    x = jax.random.normal(jax.random.key(7), (3, 2))
    refs = jax.random.normal(jax.random.key(8), (4, 2))
    crit = jnp.array([0, 1, 1])
    got = jax.jit(lambda p, a, b, c: gj.reference_reward(judge.apply, p, a, b, c))(
        params, x, refs, crit)
    want = [np.mean([float(gj.yes_probability(judge.apply(params, x[i:i + 1], refs[k:k + 1],
                                                          crit[i:i + 1]))[0])
                     for k in range(4)]) for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.all((np.asarray(got) > 0) & (np.asarray(got) < 1))


def test_a_judge_learns_a_gold_order_from_yes_no_labels():
    """A few hundred Adam steps on pairs labelled by a smooth gold: held-out accuracy > 0.85."""
    gold = lambda x: x[:, 0] - 0.5 * x[:, 1] ** 2  # noqa: E731
    judge = gj.make_judge(gj.JudgeConfig(data_shape=(2,), width=16, depth=1))
    k = jax.random.split(jax.random.key(9), 4)
    x, r = jax.random.normal(k[0], (2, 512, 2))
    label = gj.simulate_labels(k[1], gold(x), gold(r), temperature=0.1)
    xt, rt = jax.random.normal(k[2], (2, 256, 2))
    loss = gj.judge_loss(judge.apply)
    tx = optax.adam(2e-2)

    @jax.jit
    def fit(p):
        def step(carry, _):
            p, s = carry
            g = jax.grad(lambda q: loss(q, {"x_gen": x, "x_ref": r, "label": label})[0])(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(step, (p, tx.init(p)), None, length=300)[0][0]

    p = fit(judge.init(k[3]))
    acc = float(loss(p, {"x_gen": xt, "x_ref": rt,
                         "label": (gold(xt) > gold(rt)).astype(jnp.int32)})[1]["accuracy"])
    assert acc > 0.85, acc


def test_reward_trace_records_every_update_inside_a_scan():
    rewards = jnp.array([[0.1, 0.9, 0.5, 0.5], [0.6, 0.6, 0.6, 0.6], [0.0, 1.0, 0.0, 1.0]])
    gold = -rewards

    @jax.jit
    def run(trace):
        def step(t, xs):
            return gj.trace_update(t, *xs), None
        return jax.lax.scan(step, trace, (rewards, gold))[0]

    trace = run(gj.trace_init(5))
    assert int(trace.count) == 3
    np.testing.assert_allclose(trace.std[:3], np.asarray(rewards).std(-1), rtol=1e-6)
    np.testing.assert_allclose(trace.mean[:3], np.asarray(rewards).mean(-1), rtol=1e-6)
    np.testing.assert_allclose(trace.gold[:3], -np.asarray(rewards).mean(-1), rtol=1e-6)
    assert np.all(np.isnan(np.asarray(trace.std[3:])))
    s = gj.trace_summary(trace, window=2)
    np.testing.assert_allclose(s["initial_std"], np.asarray(rewards[:2]).std(-1).mean(),
                               rtol=1e-6)
    np.testing.assert_allclose(s["final_std"], np.asarray(rewards[1:]).std(-1).mean(),
                               rtol=1e-6)
    np.testing.assert_allclose(s["std_ratio"], s["final_std"] / s["initial_std"], rtol=1e-6)
    full = gj.trace_update(gj.trace_update(gj.trace_init(1), rewards[0]), rewards[1])
    assert int(full.count) == 2 and np.isnan(float(full.gold[0]))  # beyond U: dropped
    np.testing.assert_allclose(full.std[0], np.asarray(rewards[0]).std(), rtol=1e-6)
    spread = gj.reward_spread(rewards)
    np.testing.assert_allclose(spread["reward_var"], np.asarray(rewards).var(-1), rtol=1e-6)
