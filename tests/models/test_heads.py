"""Reward heads: outputs, padding invariance, GPM skew-symmetry, yes-token score, MLPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models.heads import (gpm_score, make_gaussian_reward_model,
                                  make_multi_objective_reward_model,
                                  make_preference_embedding_model, make_token_reward_model,
                                  yes_token_score)
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.models.transformer import TransformerConfig

CFG = TransformerConfig(vocab_size=30, d_model=32, n_layers=1, n_heads=4, d_ff=48)
IDS = jax.random.randint(jax.random.key(0), (3, 6), 2, 30)
MASK = jnp.ones((3, 6), bool)


def _left_pad(ids, mask, k=2):
    return (jnp.concatenate([jnp.zeros((ids.shape[0], k), ids.dtype), ids], axis=1),
            jnp.concatenate([jnp.zeros((ids.shape[0], k), bool), mask], axis=1))


def test_multi_objective_head_mixes_objectives_with_prompt_gates():
    model = make_multi_objective_reward_model(CFG, num_objectives=4, gate_hidden=16)
    params = model.init(jax.random.key(1))
    prompt_mask = jnp.arange(6)[None, :] < jnp.array([[2], [3], [4]])
    out = jax.jit(model.apply)(params, IDS, MASK, prompt_mask=prompt_mask)
    assert out["objectives"].shape == (3, 4) and out["gates"].shape == (3, 4)
    np.testing.assert_allclose(out["gates"].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["rewards"], (out["gates"] * out["objectives"]).sum(-1),
                               rtol=1e-6)
    axes = model.logical_axes(params)
    assert axes["head"]["gate"]["fc1"]["kernel"] == (None, None)
    # padding invariance (prompt mask padded alongside)
    ids, mask = _left_pad(IDS, MASK)
    _, pmask = _left_pad(IDS, prompt_mask)
    padded = model.apply(params, ids, mask, prompt_mask=pmask)
    np.testing.assert_allclose(padded["rewards"], out["rewards"], atol=1e-5)


def test_gaussian_head_and_padding_invariance():
    model = make_gaussian_reward_model(CFG)
    params = model.init(jax.random.key(2))
    out = model.apply(params, IDS, MASK)
    assert out["mean"].shape == (3,) and out["log_var"].shape == (3,)
    padded = model.apply(params, *_left_pad(IDS, MASK))
    np.testing.assert_allclose(padded["mean"], out["mean"], atol=1e-5)
    np.testing.assert_allclose(padded["log_var"], out["log_var"], atol=1e-5)


def test_gpm_embedding_is_unit_and_score_is_skew_symmetric():
    model = make_preference_embedding_model(CFG, embed_dim=6, gate_hidden=8)
    params = model.init(jax.random.key(3))
    out = model.apply(params, IDS, MASK)
    v, eigen = out["embedding"], out["eigen"]
    np.testing.assert_allclose(jnp.linalg.norm(v, axis=-1), 1.0, rtol=1e-5)
    assert eigen.shape == (3, 3) and np.all(eigen >= 0)
    np.testing.assert_allclose(eigen.sum(-1), 3.0, rtol=1e-5)
    w = jnp.roll(v, 1, axis=0)
    np.testing.assert_allclose(gpm_score(v, w, eigen), -gpm_score(w, v, eigen), atol=1e-6)
    np.testing.assert_allclose(gpm_score(v, v, eigen), 0.0, atol=1e-6)
    # golden: one block, v1 = (1, 0), v2 = (0, 1): b1 a2 - a1 b2 = 0 - 1 = -1
    np.testing.assert_allclose(gpm_score(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]])), [-1.0])
    with pytest.raises(ValueError, match="even"):
        make_preference_embedding_model(CFG, embed_dim=5).init(jax.random.key(0))


def test_token_head_is_zero_on_padding_and_padding_invariant():
    model = make_token_reward_model(CFG)
    params = model.init(jax.random.key(4))
    out = model.apply(params, IDS, MASK)
    ids, mask = _left_pad(IDS, MASK)
    padded = model.apply(params, ids, mask)
    assert out.shape == (3, 6)
    np.testing.assert_array_equal(padded[:, :2], 0.0)
    np.testing.assert_allclose(padded[:, 2:], out, atol=1e-5)


def test_yes_token_score():
    logits = jnp.zeros((2, 3, 4)).at[0, 1, 2].set(jnp.log(3.0)).at[1, 2, 2].set(5.0)
    mask = jnp.array([[1, 1, 0], [1, 1, 1]], bool)
    # row 0: last valid position 1, probs (1, 1, 3, 1)/6 -> log p(2) = log 0.5
    score = yes_token_score(logits, mask, yes_id=2)
    np.testing.assert_allclose(score[0], np.log(0.5), rtol=1e-6)
    np.testing.assert_allclose(yes_token_score(logits, mask, yes_id=2, no_id=0), [np.log(3), 5.0],
                               rtol=1e-6)


def test_mlp_model():
    model = make_mlp(MLPConfig(in_dim=5, hidden=(8, 8)))
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (7, 5))
    out = jax.jit(model.apply)(params, x)
    assert out.shape == (7,) and out.dtype == jnp.float32
    # batch-size independent up to float32 matmul rounding
    np.testing.assert_allclose(model.apply(params, x[:3]), out[:3], atol=1e-6)
    multi = make_mlp(MLPConfig(in_dim=5, hidden=(8,), out_dim=3))
    assert multi.apply(multi.init(jax.random.key(0)), x).shape == (7, 3)
    with pytest.raises(ValueError, match="features"):
        model.apply(params, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="activation"):
        MLPConfig(in_dim=2, activation="nope")
