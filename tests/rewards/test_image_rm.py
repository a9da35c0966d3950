"""Image reward models: shapes and batch invariance, the noise-aware RM lifted from a clean one
equals it at every t, the BT and distillation objectives against hand computations, and the
curriculum's stages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.rewards import image_rm

CFG = image_rm.ImageRMConfig(data_shape=(8, 8, 1), channels=(4, 8), hidden=8, time_dim=8)
NA = image_rm.ImageRMConfig(data_shape=(8, 8, 1), channels=(4, 8), hidden=8, time_dim=8,
                            time_conditioned=True)


def _images(n, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, 8, 8, 1), minval=-1, maxval=1)


def test_scores_are_per_image_and_batch_invariant():
    rm = image_rm.make_image_rm(CFG)
    params = rm.init(jax.random.key(0))
    x = _images(6)
    full = rm.apply(params, x)
    assert full.shape == (6,) and full.dtype == jnp.float32
    np.testing.assert_allclose(rm.apply(params, x[2:4]), full[2:4], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not time-conditioned"):
        rm.apply(params, x, jnp.zeros(6, jnp.int32))
    with pytest.raises(ValueError, match="divisible"):
        image_rm.ImageRMConfig(data_shape=(6, 6, 1), channels=(4, 8, 8))


def test_noise_aware_from_clean_equals_clean_at_every_t():
    clean = image_rm.make_image_rm(CFG)
    narf = image_rm.make_image_rm(NA)
    cp = clean.init(jax.random.key(1))
    np_ = image_rm.noise_aware_from_clean(cp, jax.random.key(2), NA)
    x = _images(5)
    want = clean.apply(cp, x)
    for t in (-1, 0, 7, 99):
        np.testing.assert_allclose(narf.apply(np_, x, t), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="needs t"):
        narf.apply(np_, x)
    # a trained shift makes the score depend on t
    moved = jax.tree.map(lambda a: a, np_)
    moved["time_hidden"]["kernel"] = jnp.ones_like(moved["time_hidden"]["kernel"])
    assert not np.allclose(narf.apply(moved, x, 3), narf.apply(moved, x, 50))


def test_bt_pair_loss_is_the_logistic_loss_of_the_score_margin():
    rm = image_rm.make_image_rm(CFG)
    params = rm.init(jax.random.key(3))
    chosen, rejected = _images(4, 1), _images(4, 2)
    loss = jax.jit(image_rm.bt_pair_loss(rm.apply))(params, {"chosen": chosen,
                                                             "rejected": rejected})
    margin = np.asarray(rm.apply(params, chosen) - rm.apply(params, rejected), np.float64)
    np.testing.assert_allclose(loss, np.mean(np.log1p(np.exp(-margin))), rtol=1e-5)


def test_distill_loss_matches_hand_computation():
    # a fake "RM" whose score is the first pixel plus t / 10
    def apply(params, x, t):
        return x[:, 0, 0, 0] * params + jnp.asarray(t, jnp.float32) / 10

    x = jnp.zeros((4, 8, 8, 1)).at[:, 0, 0, 0].set(jnp.array([1.0, 2.0, 4.0, 3.0]))
    t = jnp.array([0, 0, 0, 0])
    target = jnp.array([0.0, 1.0, 0.0, 2.0])
    batch = {"x": x, "t": t, "target": target}
    loss, m = image_rm.distill_loss(apply, standardized=False)(2.0, batch)
    np.testing.assert_allclose(loss, np.mean((np.array([2, 4, 8, 6]) - np.array(target)) ** 2))
    # standardised: invariant to an affine map of the prediction with positive scale
    l1, _ = image_rm.distill_loss(apply)(2.0, batch)
    l2, _ = image_rm.distill_loss(apply)(5.0, batch)
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    p = np.array([1, 2, 4, 3.0])
    z = lambda a: (a - a.mean()) / a.std()  # noqa: E731
    np.testing.assert_allclose(l1, np.mean((z(p) - z(np.array(target))) ** 2), rtol=1e-5)
    np.testing.assert_allclose(m["corr"], np.mean(z(p) * z(np.array(target))), rtol=1e-5)
    # the BT term: pairs (0, 1) and (2, 3), each ordered by the target
    l3, _ = image_rm.distill_loss(apply, standardized=False, pref_weight=1.0,
                                  pref_temperature=0.5)(1.0, batch)
    pred = np.array([1, 2, 4, 3.0])
    bt = np.mean([np.log1p(np.exp(-(pred[1] - pred[0]) / 0.5)),
                  np.log1p(np.exp(-(pred[3] - pred[2]) / 0.5))])
    np.testing.assert_allclose(l3, np.mean((pred - np.array(target)) ** 2) + bt, rtol=1e-5)


def test_curriculum_data_orders_levels_clean_to_noisy():
    finals = jnp.full((3, 8, 8, 1), 9.0)
    x0_hats = jnp.arange(4.0)[:, None, None, None, None] * jnp.ones((4, 3, 8, 8, 1))
    data = image_rm.curriculum_data(finals, x0_hats, jnp.array([30, 20, 10, 0]), jnp.arange(3.0))
    assert data["x"].shape == (5, 3, 8, 8, 1)
    np.testing.assert_array_equal(data["t"], [-1, 0, 10, 20, 30])
    np.testing.assert_array_equal(data["x"][:, 0, 0, 0, 0], [9, 3, 2, 1, 0])


@pytest.mark.parametrize("mode", image_rm.CURRICULA)
def test_curriculum_batches_follow_the_stages(mode):
    levels, steps = 4, 40
    data = {"x": jnp.arange(levels, dtype=jnp.float32)[:, None, None, None, None]
            * jnp.ones((levels, 6, 8, 8, 1)),
            "t": jnp.array([-1, 5, 10, 15]), "target": jnp.arange(6.0)}
    draw = jax.jit(image_rm.curriculum_batch_fn(3, steps, mode))
    seen = {}
    for step in range(steps):
        batch = draw(data, jax.random.key(step), jnp.int32(step))
        level = int(batch["level"])
        assert batch["x"].shape == (3, 8, 8, 1)
        np.testing.assert_array_equal(batch["x"][:, 0, 0, 0], level)  # one level per batch
        np.testing.assert_array_equal(batch["t"], data["t"][level])
        seen.setdefault(step * levels // steps, set()).add(level)
    for stage, got in seen.items():
        if mode == "sequential":
            assert got == {stage}
        elif mode == "cumulative":
            assert max(got) <= stage
    if mode == "uniform":
        assert max(seen[0]) > 0  # noisy levels from the start
    assert int(image_rm.curriculum_level(10**6, steps, levels)) == levels - 1


def test_level_spearman_and_distillation_step_improves_the_fit():
    # the noise-aware RM lifted from a clean one, one distillation gradient step on one level
    narf = image_rm.make_image_rm(NA)
    params = narf.init(jax.random.key(4))
    x = _images(16, 5)
    target = x.mean(axis=(1, 2, 3))
    data = {"x": jnp.stack([x, x]), "t": jnp.array([-1, 10]), "target": target}
    rho = image_rm.level_spearman(narf.apply, params, data)
    assert rho.shape == (2,) and np.all(np.abs(np.asarray(rho)) <= 1)
    loss_fn = image_rm.distill_loss(narf.apply)
    batch = {"x": x, "t": jnp.full((16,), 10), "target": target}
    grad = jax.grad(lambda p: loss_fn(p, batch)[0])(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))
    stepped = jax.tree.map(lambda p, g: p - 0.05 * g, params, grad)
    assert loss_fn(stepped, batch)[0] < loss_fn(params, batch)[0]
