"""The PAL toy (experiments/pal.py): generating model, oracle labels and the PAL margin."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.experiment import load_module
from alignax.losses.reward import ideal_point_loss
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.train.few_shot import user_weights_loss

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pal = load_module(os.path.join(REPO, "experiments", "pal.py"))


def test_get_config_rejects_unknown_argument():
    with pytest.raises(ValueError, match="unknown argument"):
        pal.get_config("big")


def test_group_ideal_points_have_the_set_norm_and_differ_by_seed():
    data = pal.get_config().data
    b = pal.group_ideal_points(data, seed=1)
    assert b.shape == (data.num_groups, data.dim)
    assert not np.allclose(b, pal.group_ideal_points(data, seed=2))
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), data.ideal_norm)


def test_comparisons_follow_the_ideal_point_model():
    data = pal.get_config().data
    ideal = pal.group_ideal_points(data, 0)
    groups = np.array([0, 1, 2])
    out = pal.comparisons(ideal, groups, 4000, data, np.random.default_rng(0))
    assert out["chosen"].shape == (3, 4000, data.dim)
    # the chosen item is closer to the user's ideal point about as often as the oracle says
    a = ideal[groups][:, None]
    closer = (np.sum((out["chosen"] - a) ** 2, -1) < np.sum((out["rejected"] - a) ** 2, -1))
    np.testing.assert_array_equal(closer, out["oracle"] == 1)
    assert 0.8 < out["oracle"].mean() < 0.95


def test_pal_margin_agrees_with_the_ideal_point_loss():
    f = make_mlp(MLPConfig(in_dim=4, hidden=(), out_dim=4))
    params = {"f": f.init(jax.random.key(0)), "prototypes": jnp.ones((3, 4))}
    params["prototypes"] = jax.random.normal(jax.random.key(1), (3, 4))
    c, r = jax.random.normal(jax.random.key(2), (2, 5, 4))
    logits = jax.random.normal(jax.random.key(3), (5, 3))
    margin = pal.pal_margin(f, params, c, r, logits)
    a = jax.nn.softmax(logits, -1) @ params["prototypes"]
    loss = ideal_point_loss(f.apply(params["f"], c), f.apply(params["f"], r), a)
    np.testing.assert_allclose(-jax.nn.log_sigmoid(margin), loss, rtol=1e-5)


def test_pal_beats_bt_on_a_small_run(tmp_path):
    config = pal.get_config("smoke")
    out = {}
    for method in ("pal", "bt"):
        config.method = method
        out[method] = pal.run_seeds(config, str(tmp_path / method))[0]
        lr = f"lr={float(config.train.learning_rates[0]):g}"
        assert os.path.exists(tmp_path / method / ("pal_a" if method == "pal" else "bt") / lr
                              / "metrics.jsonl")
    assert out["pal"]["test_seen_accuracy"] > out["bt"]["test_seen_accuracy"] + 0.1
    assert set(out["pal"]) >= {f"test_unseen_accuracy_{s}" for s in (2, 5, 10, 20)}


def _adam_alone(chosen, rejected, prototypes, mask, *, steps, learning_rate, l2):
    """The reference: one user's logits fitted alone by a plain loop of optax Adam updates from
    the uniform mixture (zeros)."""
    tx = optax.adam(learning_rate)
    w = jnp.zeros((prototypes.shape[0],), jnp.float32)
    grad = jax.grad(functools.partial(user_weights_loss, l2=l2))

    def update(carry, _):
        w, opt = carry
        updates, opt = tx.update(grad(w, chosen, rejected, prototypes, mask), opt, w)
        return (optax.apply_updates(w, updates), opt), None

    (w, _), _ = jax.lax.scan(update, (w, tx.init(w)), None, length=steps)
    return w


def test_joint_few_shot_fit_equals_separate_user_fits(tmp_path):
    """All unseen users' logits in one fit (summed losses) == each user fitted alone."""
    config = pal.get_config("smoke")
    config.few_shot.steps = 20
    config.few_shot.l2 = 0.01
    shots = [2, 5]
    seeds = [0, 1]
    f = make_mlp(MLPConfig(in_dim=config.data.dim, hidden=(), out_dim=config.data.dim))
    keys = [jax.random.key(s) for s in seeds]
    params = {"f": jax.tree.map(lambda *x: jnp.stack(x), *[f.init(k) for k in keys]),
              "prototypes": jnp.stack([jax.random.normal(jax.random.fold_in(k, 1), (3, 8))
                                       for k in keys])}
    per_seed = [pal.make_seed_data(config, s) for s in seeds]
    data = {k: jnp.asarray(np.stack([d[k] for d in per_seed])) for k in per_seed[0]}
    logits, acc = pal.fit_unseen_users(config, str(tmp_path), f, params, data, seeds, shots)
    num_users = data["pool_chosen"].shape[1]
    assert logits.shape == (2, 2, num_users, 3) and acc.shape == (2, 2)
    fit_one = functools.partial(_adam_alone, steps=20,
                                learning_rate=config.few_shot.learning_rate, l2=0.01)
    fit_users = jax.jit(jax.vmap(fit_one, in_axes=(0, 0, None, 0)))  # each user alone
    pool_size = data["pool_chosen"].shape[2]
    for i in range(len(seeds)):
        p = jax.tree.map(lambda x, i=i: x[i], params)
        fc = f.apply(p["f"], data["pool_chosen"][i])
        fr = f.apply(p["f"], data["pool_rejected"][i])
        for j, s in enumerate(shots):
            mask = jnp.broadcast_to(jnp.arange(pool_size) < s, (num_users, pool_size))
            alone = fit_users(fc, fr, p["prototypes"], mask)
            np.testing.assert_allclose(logits[i, j], alone, rtol=1e-5, atol=1e-6)
