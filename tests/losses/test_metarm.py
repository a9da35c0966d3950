"""MetaRM's difference loss and meta step, and the pair-contrastive term (Secrets of RLHF II)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.losses.metarm import (difference_loss, meta_adapted_params, metarm_loss,
                                   pair_contrastive_loss)
from alignax.losses.reward import bradley_terry_loss


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_difference_loss_values():
    r = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 3.0]], np.float32)
    got = np.asarray(difference_loss(r))
    expected = [0.5, np.mean([_sigmoid(1.0), _sigmoid(3.0), _sigmoid(2.0)])]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # symmetric in the order of the group's responses, and grows as they spread apart
    np.testing.assert_allclose(difference_loss(r[:, ::-1]), got, rtol=1e-6)
    assert float(difference_loss(2 * r)[1]) > float(got[1])
    with pytest.raises(ValueError, match=">= 2 responses"):
        difference_loss(np.zeros((3, 1)))


def _toy():
    """A linear RM r = x . w on 3-d features, labelled pairs and shifted groups."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal(3), jnp.float32)}
    chosen, rejected = (jnp.asarray(rng.standard_normal((8, 3)), jnp.float32) for _ in range(2))
    shifted = jnp.asarray(rng.standard_normal((4, 5, 3)) + 2.0, jnp.float32)

    def preference(p):
        return jnp.mean(bradley_terry_loss(chosen @ p["w"], rejected @ p["w"]))

    def difference(p):
        return jnp.mean(difference_loss(shifted @ p["w"]))

    return params, preference, difference


def test_meta_step_is_one_ascent_step_on_the_difference_objective():
    params, _, difference = _toy()
    adapted = meta_adapted_params(params, difference, inner_lr=0.3)
    g = jax.grad(difference)(params)["w"]
    np.testing.assert_allclose(adapted["w"], params["w"] + 0.3 * g, rtol=1e-6)
    assert float(difference(adapted)) > float(difference(params))  # the ascent raises J


def test_metarm_gradient_flows_through_the_inner_step():
    params, preference, difference = _toy()
    eta = 0.5
    # inner_lr 0: the plain preference loss and its gradient
    np.testing.assert_allclose(metarm_loss(preference, difference, params, inner_lr=0.0),
                               preference(params), rtol=1e-6)
    # the value is L at theta' = theta + eta grad J
    adapted = meta_adapted_params(params, difference, inner_lr=eta)
    np.testing.assert_allclose(metarm_loss(preference, difference, params, inner_lr=eta),
                               preference(adapted), rtol=1e-6)
    full = jax.grad(lambda p: metarm_loss(preference, difference, p, inner_lr=eta))(params)["w"]
    first = jax.grad(lambda p: metarm_loss(preference, difference, p, inner_lr=eta,
                                           first_order=True))(params)["w"]
    # first order: the preference gradient at theta'
    np.testing.assert_allclose(first, jax.grad(preference)(adapted)["w"], rtol=1e-5)
    # full: (I + eta Hess J) grad L(theta'), checked against central finite differences
    w0 = np.asarray(params["w"], np.float64)
    h = 1e-3
    numeric = []
    for i in range(3):
        e = np.zeros(3)
        e[i] = h
        up = metarm_loss(preference, difference, {"w": jnp.asarray(w0 + e, jnp.float32)},
                         inner_lr=eta)
        down = metarm_loss(preference, difference, {"w": jnp.asarray(w0 - e, jnp.float32)},
                           inner_lr=eta)
        numeric.append((float(up) - float(down)) / (2 * h))
    np.testing.assert_allclose(full, numeric, rtol=2e-2, atol=2e-3)
    assert not np.allclose(full, first, rtol=1e-3)  # the second-order term is there
    with pytest.raises(ValueError, match="inner_lr"):
        metarm_loss(preference, difference, params, inner_lr=-1.0)


def test_pair_contrastive_loss():
    rng = np.random.default_rng(1)
    c, r = (rng.standard_normal((16, 8)).astype(np.float32) for _ in range(2))
    same = np.asarray(pair_contrastive_loss(c, r, c, r, temperature=0.1))
    assert same.shape == (16,)
    # identical views: each pair finds its own difference among 16, far below chance log(16)
    assert float(same.mean()) < 0.5 * np.log(16)
    # views that belong to other pairs: a higher loss
    perm = rng.permutation(16)
    mixed = np.asarray(pair_contrastive_loss(c, r, c[perm], r[perm], temperature=0.1))
    assert float(mixed.mean()) > float(same.mean()) + 1.0
    # symmetric in the two views; only the difference h(y_c) - h(y_r) matters
    np.testing.assert_allclose(pair_contrastive_loss(c, r, c[perm], r[perm]),
                               pair_contrastive_loss(c[perm], r[perm], c, r), rtol=1e-5)
    shift = rng.standard_normal(8).astype(np.float32)
    np.testing.assert_allclose(pair_contrastive_loss(c + shift, r + shift, c, r), same,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        pair_contrastive_loss(c, r, c, r, temperature=0.0)
