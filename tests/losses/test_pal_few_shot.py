"""PAL few-shot personalisation: user_weights_loss and fit_user_weights (alignax.train.few_shot)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.train.few_shot import fit_user_weights, user_weights_loss
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


def test_fit_recovers_the_generating_prototype_and_lowers_the_loss():
    protos = jnp.array([[4.0, 0.0], [-2.0, 3.5], [-2.0, -3.5]])
    rng = np.random.default_rng(1)
    y1, y2 = rng.normal(size=(2, 40, 2))
    a = np.asarray(protos[2])
    first_wins = ((y2 - a) ** 2).sum(-1) > ((y1 - a) ** 2).sum(-1)  # noiseless user at p_2
    c = jnp.asarray(np.where(first_wins[:, None], y1, y2), jnp.float32)
    r = jnp.asarray(np.where(first_wins[:, None], y2, y1), jnp.float32)
    w = jax.jit(functools.partial(fit_user_weights, steps=200, learning_rate=0.1))(c, r, protos)
    chex.assert_shape(w, (3,))
    assert int(jnp.argmax(w)) == 2
    assert user_weights_loss(w, c, r, protos) < user_weights_loss(jnp.zeros(3), c, r, protos)


def test_all_masked_user_keeps_its_initial_logits():
    c, r, p = _f32(4, 3), _f32(4, 3), _f32(2, 3)
    init = jnp.array([0.3, -0.2])
    w = fit_user_weights(c, r, p, jnp.zeros(4), init_logits=init, steps=20)
    np.testing.assert_allclose(w, init, atol=1e-6)


def test_vmap_over_users_equals_a_loop_and_does_not_retrace():
    c, r, p = _f32(3, 6, 4), _f32(3, 6, 4), _f32(3, 4)
    mask = jnp.asarray(np.arange(6)[None] < np.array([[2], [4], [6]]), jnp.float32)

    @jax.jit
    def fit_all(c, r, mask):
        return jax.vmap(functools.partial(fit_user_weights, prototypes=p, steps=30))(
            c, r, mask=mask)

    batched = fit_all(c, r, mask)
    for u in range(3):
        n = int(mask[u].sum())
        single = fit_user_weights(c[u, :n], r[u, :n], p, steps=30)
        np.testing.assert_allclose(batched[u], single, rtol=1e-4, atol=1e-5)
    with count_compilations("fit_all") as compiles:
        fit_all(c + 1.0, r, mask)
    assert compiles() == 0


def test_shape_errors_are_clear():
    c, r = _f32(4, 3), _f32(4, 3)
    with pytest.raises(ValueError, match="disagree on the feature dimension"):
        user_weights_loss(jnp.zeros(2), c, r, _f32(2, 5))
    with pytest.raises(ValueError, match="init_logits"):
        fit_user_weights(c, r, _f32(2, 3), init_logits=jnp.zeros(3))
    with pytest.raises(ValueError, match="expected equal shapes"):
        fit_user_weights(c, _f32(5, 3), _f32(2, 3))
    with pytest.raises(ValueError, match="mask"):
        user_weights_loss(jnp.zeros(2), c, r, _f32(2, 3), jnp.ones(3))
