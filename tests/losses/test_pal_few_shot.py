"""PAL few-shot personalisation: user_weights_loss (alignax.train.few_shot), fitted through the
one trainer (alignax.train.small.fit_small)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from alignax.train.few_shot import user_weights_loss
from alignax.train.small import fit_small
from tests.test_utils import count_compilations

RNG = np.random.default_rng(0)


def _f32(*shape, scale=1.0):
    return jnp.asarray(RNG.normal(size=shape) * scale, jnp.float32)


def _numpy_loss(w, c, r, p, mask=None, l2=0.0):
    w, c, r, p = (np.asarray(a, np.float64) for a in (w, c, r, p))
    soft = np.exp(w - w.max()) / np.exp(w - w.max()).sum()
    a = soft @ p
    d = ((r - a) ** 2).sum(-1) - ((c - a) ** 2).sum(-1)
    losses = np.logaddexp(0.0, -d)
    m = np.ones(len(c)) if mask is None else np.asarray(mask, np.float64)
    return (m * losses).sum() / max(1.0, m.sum()) + l2 * (w ** 2).sum()


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_golden_value_by_hand(self):
        # K = 2 prototypes at 0 and 2 on a line (d = 1), w = 0 -> ideal point a = 1.
        # chosen 1 (distance 0), rejected 3 (distance 4): loss = log(1 + e^-4); l2 adds 0.
        w = jnp.zeros(2)
        loss = self.variant(user_weights_loss)(w, jnp.array([[1.0]]), jnp.array([[3.0]]),
                                               jnp.array([[0.0], [2.0]]))
        chex.assert_shape(loss, ())
        chex.assert_trees_all_close(loss, np.log1p(np.exp(-4.0)), rtol=1e-6)


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_matches_numpy_reference_under_jit(l2):
    w, c, r, p = _f32(4), _f32(7, 5), _f32(7, 5), _f32(4, 5)
    mask = jnp.array([1, 1, 0, 1, 1, 0, 1], jnp.float32)
    got = jax.jit(functools.partial(user_weights_loss, l2=l2))(w, c, r, p, mask)
    np.testing.assert_allclose(got, _numpy_loss(w, c, r, p, mask, l2), rtol=1e-5)


def test_masked_equals_sliced():
    w, c, r, p = _f32(3), _f32(6, 4), _f32(6, 4), _f32(3, 4)
    mask = jnp.array([1, 0, 1, 1, 0, 0], jnp.float32)
    keep = np.flatnonzero(np.asarray(mask))
    np.testing.assert_allclose(user_weights_loss(w, c, r, p, mask),
                               user_weights_loss(w, c[keep], r[keep], p), rtol=1e-6)


def test_swapping_chosen_and_rejected_complements_the_probability():
    w, c, r, p = _f32(3), _f32(1, 4), _f32(1, 4), _f32(3, 4)
    prob_cr = jnp.exp(-user_weights_loss(w, c, r, p))
    prob_rc = jnp.exp(-user_weights_loss(w, r, c, p))
    np.testing.assert_allclose(prob_cr + prob_rc, 1.0, rtol=1e-5)


def test_gradients_match_finite_differences_and_stay_finite_at_extremes():
    c, r, p = _f32(5, 3), _f32(5, 3), _f32(4, 3)
    check_grads(lambda w: user_weights_loss(w, c, r, p, l2=0.1), (_f32(4),), order=2,
                modes=["rev"], atol=1e-2, rtol=1e-2)
    extreme_w = jnp.array([1e4, -1e4, 0.0, 50.0])
    g = jax.grad(user_weights_loss)(extreme_w, 100 * c, -100 * r, 10 * p)
    assert np.all(np.isfinite(np.asarray(g)))


def _fit_users(workdir, c, r, prototypes, mask=None, *, init=None, steps, learning_rate=0.1,
               l2=0.0, steps_per_log=None):
    """Fits U users' logits [U, K] through fit_small: one stacked tree, the users' losses summed
    (each user's gradient is its own, and Adam is elementwise). c, r [U, N, d], mask [U, N]."""
    mask = jnp.ones(c.shape[:2], jnp.float32) if mask is None else mask
    users_loss = jax.vmap(functools.partial(user_weights_loss, prototypes=prototypes, l2=l2))

    def loss_fn(logits, d):
        return users_loss(logits, d["chosen"], d["rejected"], mask=d["mask"]).sum()

    init = jnp.zeros((c.shape[0], prototypes.shape[0]), jnp.float32) if init is None else init
    fit = fit_small(str(workdir), loss_fn=loss_fn, init_params=init,
                    tx=optax.adam(learning_rate), num_steps=steps,
                    data={"chosen": c, "rejected": r, "mask": mask},
                    steps_per_log=steps if steps_per_log is None else steps_per_log)
    return fit.seed_params(0)


def _adam_alone(c, r, prototypes, *, steps, learning_rate=0.1):
    """The reference: one user's logits fitted alone by a plain loop of optax Adam updates from
    the uniform mixture (zeros)."""
    tx = optax.adam(learning_rate)
    w = jnp.zeros((prototypes.shape[0],), jnp.float32)
    opt = tx.init(w)
    grad = jax.jit(jax.grad(user_weights_loss))
    for _ in range(steps):
        updates, opt = tx.update(grad(w, c, r, prototypes), opt, w)
        w = optax.apply_updates(w, updates)
    return w


def test_fit_recovers_the_generating_prototype_and_lowers_the_loss(tmp_path):
    protos = jnp.array([[4.0, 0.0], [-2.0, 3.5], [-2.0, -3.5]])
    rng = np.random.default_rng(1)
    y1, y2 = rng.normal(size=(2, 40, 2))
    a = np.asarray(protos[2])
    first_wins = ((y2 - a) ** 2).sum(-1) > ((y1 - a) ** 2).sum(-1)  # noiseless user at p_2
    c = jnp.asarray(np.where(first_wins[:, None], y1, y2), jnp.float32)
    r = jnp.asarray(np.where(first_wins[:, None], y2, y1), jnp.float32)
    w = _fit_users(tmp_path, c[None], r[None], protos, steps=200, learning_rate=0.1)[0]
    chex.assert_shape(w, (3,))
    assert int(jnp.argmax(w)) == 2
    assert user_weights_loss(w, c, r, protos) < user_weights_loss(jnp.zeros(3), c, r, protos)


def test_all_masked_user_keeps_its_initial_logits(tmp_path):
    c, r, p = _f32(4, 3), _f32(4, 3), _f32(2, 3)
    init = jnp.array([0.3, -0.2])
    w = _fit_users(tmp_path, c[None], r[None], p, jnp.zeros((1, 4)), init=init[None], steps=20)[0]
    np.testing.assert_allclose(w, init, atol=1e-6)


def test_stacked_users_equal_separate_fits_and_compile_once(tmp_path):
    """Padded users fitted as one [U, K] tree == each user fitted alone on its own comparisons;
    the fit's update program compiles once and is reused by every logged chunk."""
    c, r, p = _f32(3, 6, 4), _f32(3, 6, 4), _f32(3, 4)
    mask = jnp.asarray(np.arange(6)[None] < np.array([[2], [4], [6]]), jnp.float32)
    with count_compilations("<lambda>") as compiles:  # fit_small's vmapped chunk of updates
        batched = _fit_users(tmp_path, c, r, p, mask, steps=30, steps_per_log=10)  # 3 chunks
    assert compiles() == 1
    for u in range(3):
        n = int(mask[u].sum())
        single = _adam_alone(c[u, :n], r[u, :n], p, steps=30)
        np.testing.assert_allclose(batched[u], single, rtol=1e-4, atol=1e-5)


def test_shape_errors_are_clear(tmp_path):
    c, r = _f32(4, 3), _f32(4, 3)
    with pytest.raises(ValueError, match="disagree on the feature dimension"):
        user_weights_loss(jnp.zeros(2), c, r, _f32(2, 5))
    # initial logits of the wrong length are rejected when the fit traces the loss
    with pytest.raises(ValueError, match=r"user_logits\(1, 3\) and prototypes\(2, 3\) disagree "
                                         r"on the number of prototypes"):
        _fit_users(tmp_path, c[None], r[None], _f32(2, 3), init=jnp.zeros((1, 3)), steps=1)
    # shape checks are chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError, match=r"different shapes: \[\(4, 3\), \(5, 3\)\]\. "
                                             r"\[chosen_features, rejected_features\]"):
        user_weights_loss(jnp.zeros(2), c, _f32(5, 3), _f32(2, 3))
    with pytest.raises(AssertionError, match=r"shape \(3,\) but expected \(4\)\. \[mask\]"):
        user_weights_loss(jnp.zeros(2), c, r, _f32(2, 3), jnp.ones(3))
    with pytest.raises(AssertionError, match=r"rank 2 .* but expected 1\. \[user_logits\]"):
        user_weights_loss(jnp.zeros((1, 2)), c, r, _f32(2, 3))
