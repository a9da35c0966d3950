"""The PAL toy (experiments/pal.py): generating model, oracle labels and the PAL margin."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.experiment import load_module
from alignax.losses.reward import ideal_point_loss

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
    f = pal._mlp(4, (), 4)
    params = {"f": f.init(jax.random.key(0)), "prototypes": jnp.ones((3, 4))}
    params["prototypes"] = jax.random.normal(jax.random.key(1), (3, 4))
    c, r = jax.random.normal(jax.random.key(2), (2, 5, 4))
    logits = jax.random.normal(jax.random.key(3), (5, 3))
    margin = pal.pal_margin(f, params, c, r, logits)
    a = jax.nn.softmax(logits, -1) @ params["prototypes"]
    loss = ideal_point_loss(f.apply(params["f"], c), f.apply(params["f"], r), a)
    np.testing.assert_allclose(-jax.nn.log_sigmoid(margin), loss, rtol=1e-5)


def test_pal_beats_bt_on_a_small_run():
    config = pal.get_config("smoke")
    config.unlock()
    config.seed = 0
    out = {}
    for method in ("pal", "bt"):
        config.method = method
        out[method] = pal.run(config, "")
    assert out["pal"]["seen_accuracy"] > out["bt"]["seen_accuracy"] + 0.1
    assert set(out["pal"]) >= {f"unseen_accuracy_{s}" for s in (2, 5, 10, 20)}
