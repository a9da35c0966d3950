"""The sequence preference world: gold, reference policy, features and pair sampling."""

import jax.numpy as jnp
import numpy as np

from alignax.models import sequence_table as st
from alignax.tasks.sequence_prefs import PreferenceWorld, sample_pairs, token_features


def test_gold_is_unary_plus_adjacent_interactions():
    space = st.SequenceSpace(3, 3)
    w = PreferenceWorld(space, dim=2, seed=1)
    z = w.prompts(4, seed=5)
    g = w.gold(z)
    assert g.shape == (4, 27) and g.dtype == np.float32
    unary, bias, pair = w._gold_draws()
    y = space.sequences[14]
    want = sum(z[2] @ unary[t, :, y[t]] + bias[t, y[t]] for t in range(3)) \
        + pair[0, y[0], y[1]] + pair[1, y[1], y[2]]
    assert np.isclose(g[2, 14], want, atol=1e-5)
    # same seed, same world; other seed, other gold; prompts depend on the data seed only
    np.testing.assert_array_equal(PreferenceWorld(space, dim=2, seed=1).gold(z), g)
    assert not np.allclose(PreferenceWorld(space, dim=2, seed=2).gold(z), g)
    assert not np.allclose(w.prompts(4, seed=6), z)


def test_reference_is_a_nonuniform_log_linear_policy():
    space = st.SequenceSpace(4, 3)
    w = PreferenceWorld(space, dim=3, seed=0)
    ref = w.reference_params()
    assert ref["bias"].shape == (space.num_nodes, 4) and ref["weight"].shape == (
        space.num_nodes, 3, 4)
    lp = np.asarray(st.sequence_log_probs(space, ref, jnp.asarray(w.prompts(2, 0))))
    np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, atol=1e-5)
    ent = -(np.exp(lp) * lp).sum(-1)
    assert np.all(ent < np.log(space.num_sequences) - 0.1)


def test_token_features_one_hot():
    space = st.SequenceSpace(3, 2)
    f = token_features(space)
    assert f.shape == (9, 6)
    np.testing.assert_array_equal(f.sum(-1), 2)
    y = space.sequences[5]  # (1, 2)
    assert f[5, 0 * 3 + y[0]] == 1 and f[5, 1 * 3 + y[1]] == 1


def test_sample_pairs_follows_the_policy_and_streams_differ():
    space = st.SequenceSpace(2, 2)
    params = st.init_table(space)
    params["bias"] = params["bias"].at[0].set(jnp.array([3.0, 0.0]))  # first token 0 mostly
    z = np.zeros((3, 0), np.float32)
    p = sample_pairs(space, params, z, 2000, seed=0)
    assert p["prompt"].shape == p["a"].shape == p["b"].shape == (6000,)
    np.testing.assert_array_equal(np.bincount(p["prompt"]), [2000] * 3)
    first_zero = np.mean(space.sequences[p["a"], 0] == 0)
    assert abs(first_zero - 1 / (1 + np.exp(-3.0))) < 0.02
    q = sample_pairs(space, params, z, 2000, seed=0, stream=1)
    assert not np.array_equal(p["a"], q["a"])
    r = sample_pairs(space, params, z, 2000, seed=0)
    np.testing.assert_array_equal(p["a"], r["a"])
    hot = sample_pairs(space, params, z, 2000, seed=0, temperature=100.0)
    assert abs(np.mean(space.sequences[hot["a"], 0] == 0) - 0.5) < 0.05
