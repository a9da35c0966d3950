"""Weight-space averaging (alignax.train.merge): uniform and layer-group interpolation, the
mean-constrained ratios and their implicit gradient, and the alpha-only HMA objective through
fit_small."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.train import merge
from alignax.train.small import fit_small


def _trees():
    p0 = {"layers": {0: {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)},
                     1: {"kernel": jnp.ones((3, 1)), "bias": jnp.ones(1)}}}
    p1 = jax.tree.map(lambda x: x + 2.0, p0)
    return p0, p1


def test_interpolate_endpoints_and_middle():
    p0, p1 = _trees()
    for a in (0.0, 0.3, 1.0):
        out = merge.interpolate(p0, p1, a)
        for x0, x1, y in zip(jax.tree.leaves(p0), jax.tree.leaves(p1), jax.tree.leaves(out)):
            np.testing.assert_allclose(y, (1 - a) * x0 + a * x1, rtol=1e-6)


def test_layer_groups_by_prefix_and_function():
    p0, _ = _trees()
    g = merge.layer_groups(p0, [["['layers'][0]"], ["['layers'][1]"]])
    assert g["layers"][0]["kernel"] == 0 and g["layers"][1]["bias"] == 1
    assert merge.num_groups(g) == 2
    g2 = merge.layer_groups(p0, lambda path: 0 if "kernel" in path else 1)
    assert g2["layers"][0]["kernel"] == 0 and g2["layers"][0]["bias"] == 1
    with pytest.raises(ValueError, match="no layer group"):
        merge.layer_groups(p0, [["['layers'][0]"]])


def test_interpolate_groups_uses_each_groups_ratio():
    p0, p1 = _trees()
    g = merge.layer_groups(p0, [["['layers'][0]"], ["['layers'][1]"]])
    out = merge.interpolate_groups(p0, p1, jnp.array([0.25, 1.0]), g)
    np.testing.assert_allclose(out["layers"][0]["kernel"], 0.5)  # 0 + .25 * 2
    np.testing.assert_allclose(out["layers"][1]["bias"], 3.0)  # p1
    # equal ratios = uniform averaging
    same = merge.interpolate_groups(p0, p1, jnp.array([0.4, 0.4]), g)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(merge.interpolate(p0, p1, 0.4))):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match="alphas"):
        merge.interpolate_groups(p0, p1, jnp.array([0.5]), g)


@pytest.mark.parametrize("mean", [0.1, 0.5, 0.8])
def test_constrained_alphas_mean_and_range(mean):
    z = jnp.array([3.0, -2.0, 0.5, 0.0])
    a = merge.constrained_alphas(z, mean)
    assert float(a.mean()) == pytest.approx(mean, abs=1e-5)
    assert bool(jnp.all((a > 0) & (a < 1)))
    assert list(np.argsort(np.asarray(a))) == list(np.argsort(np.asarray(z)))
    np.testing.assert_allclose(merge.constrained_alphas(jnp.zeros(3), mean), mean, rtol=1e-5)
    with pytest.raises(ValueError):
        merge.constrained_alphas(z, 1.0)


def test_constrained_alphas_gradient_is_the_implicit_one():
    """The gradient of f(alpha(z)) matches central finite differences of the solved map, and
    moving along it keeps the mean (the gradient sums to zero against the constraint)."""
    z = jnp.array([0.7, -0.4, 1.2])
    w = jnp.array([1.0, -2.0, 0.5])

    def f(z):
        return jnp.sum(w * merge.constrained_alphas(z, 0.4) ** 2)

    g = np.asarray(jax.grad(f)(z))
    eps = 1e-2
    fd = np.array([(f(z.at[i].add(eps)) - f(z.at[i].add(-eps))) / (2 * eps) for i in range(3)])
    np.testing.assert_allclose(g, fd, rtol=2e-2, atol=1e-4)
    # d alpha / dz has columns summing to 0 over k (the mean cannot move)
    jac = np.asarray(jax.jacobian(lambda z: merge.constrained_alphas(z, 0.4))(z))
    np.testing.assert_allclose(jac.sum(0), 0.0, atol=1e-5)


def test_hma_loss_moves_ratio_to_the_group_that_pays(tmp_path):
    """The reward depends on group 1 only: the alpha-only optimisation raises alpha_1 and,
    to keep the mean, lowers alpha_0; the mean stays alpha_bar. Two seeds, per-seed models."""
    p0, p1 = _trees()
    g = merge.layer_groups(p0, [["['layers'][0]"], ["['layers'][1]"]])

    def reward_fn(params, batch):
        return jnp.sum(params["layers"][1]["kernel"])  # grows with alpha_1 (p1 > p0)

    loss = merge.hma_loss(g, 0.5, reward_fn)
    stack = lambda t: jax.tree.map(lambda x: jnp.stack([x, x]), t)  # noqa: E731
    fit = fit_small(str(tmp_path), loss_fn=loss, init_params=jnp.zeros(2),
                    tx=optax.adam(0.1), num_steps=100, seeds=[0, 1], per_seed_data=True,
                    data={"params0": stack(p0), "params1": stack(p1)}, has_aux=True)
    alphas = np.asarray(jax.vmap(lambda z: merge.constrained_alphas(z, 0.5))(fit.params))
    assert np.all(alphas[:, 1] > 0.9) and np.all(alphas[:, 0] < 0.1)
    np.testing.assert_allclose(alphas.mean(1), 0.5, atol=1e-5)
    assert fit.metrics["alpha_1"] > 0.9
