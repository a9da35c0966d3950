"""Response-tree sampler and leaf-pair construction (alignax.sampling.tree)."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models.transformer import TransformerConfig, make_lm
from alignax.sampling.tree import sample_tree, shared_depth, tree_pairs

CFG = TransformerConfig(vocab_size=16, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=16)


@pytest.fixture(scope="module")
def lm():
    model = make_lm(CFG)
    return model, model.init(jax.random.key(0))


def _naive_shared_depth(b, d):
    """Reference: digits of the leaf index in base b, count the equal leading digits."""
    n = b ** d

    def digits(i):
        return [(i // b ** (d - 1 - k)) % b for k in range(d)]

    out = np.zeros((n, n), np.int32)
    for i, j in itertools.product(range(n), repeat=2):
        s = 0
        for x, y in zip(digits(i), digits(j)):
            if x != y:
                break
            s += 1
        out[i, j] = s
    return out


def test_shared_depth_golden_b2_d2():
    expected = np.array([[2, 1, 0, 0], [1, 2, 0, 0], [0, 0, 2, 1], [0, 0, 1, 2]])
    np.testing.assert_array_equal(shared_depth(2, 2), expected)


@pytest.mark.parametrize("b,d", [(2, 3), (3, 2), (2, 1), (4, 2)])
def test_shared_depth_matches_naive_reference_and_is_symmetric(b, d):
    s = shared_depth(b, d)
    np.testing.assert_array_equal(s, _naive_shared_depth(b, d))
    np.testing.assert_array_equal(s, s.T)
    assert np.all(np.diag(s) == d)


def test_tree_pairs_partition_all_pairs_by_strategy():
    b, d = 2, 3
    every = tree_pairs(b, d, "all")
    assert every.shape == (28, 2) and np.all(every[:, 0] < every[:, 1])
    sib, cous, root = (tree_pairs(b, d, s) for s in ("siblings", "cousins", "root"))
    np.testing.assert_array_equal(sib, [[0, 1], [2, 3], [4, 5], [6, 7]])
    assert len(cous) == 8 and len(root) == 16  # 4 * 2 pairs share one segment, 4 * 4 none
    together = {tuple(p) for p in np.concatenate([sib, cous, root])}
    assert together == {tuple(p) for p in every}


def test_tree_pairs_rejects_unknown_strategy_and_bad_shapes():
    with pytest.raises(ValueError, match="unknown pair strategy"):
        tree_pairs(2, 2, "random")
    with pytest.raises(ValueError, match="branching >= 2"):
        shared_depth(1, 3)


B_, D_, SEG = 2, 2, 2
PROMPTS = jnp.array([[1, 5, 6], [0, 1, 7], [1, 9, 3]], jnp.int32)  # second one left-padded


def _tree(model, params, fn=sample_tree):
    return fn(model, params, PROMPTS, PROMPTS != 0, jax.random.key(1), branching=B_, depth=D_,
              segment_len=SEG)


@pytest.fixture(scope="module")
def tree(lm):
    return _tree(*lm)


def test_sample_tree_shares_prefixes_exactly_as_the_tree_says(tree):
    leaves = B_ ** D_
    assert tree.tokens.shape == (3, leaves, D_ * SEG) and tree.logps.shape == tree.tokens.shape
    np.testing.assert_array_equal(tree.prompt_ids, [[1, 5, 6], [0, 1, 7], [1, 9, 3]])
    tokens = np.asarray(tree.tokens)
    s = shared_depth(B_, D_)
    for i, j in itertools.combinations(range(leaves), 2):
        k = s[i, j] * SEG
        np.testing.assert_array_equal(tokens[:, i, :k], tokens[:, j, :k])
    # leaves of one parent were drawn separately; some differ on their last segment
    assert np.any(tokens[:, 0::2, -SEG:] != tokens[:, 1::2, -SEG:])


def test_sample_tree_logps_match_a_teacher_forced_forward(lm, tree):
    model, params = lm
    b, leaves, r = tree.tokens.shape
    ids = jnp.concatenate([jnp.repeat(tree.prompt_ids, leaves, axis=0),
                           tree.tokens.reshape(b * leaves, r)], axis=1)
    full_mask = jnp.concatenate([jnp.repeat(tree.prompt_mask, leaves, axis=0),
                                 jnp.ones((b * leaves, r), bool)], axis=1)
    logits = model.apply(params, ids, full_mask)
    p = PROMPTS.shape[1]
    logp = jax.nn.log_softmax(logits[:, p - 1:-1], axis=-1)
    ref = jnp.take_along_axis(logp, ids[:, p:, None], axis=-1)[..., 0]
    np.testing.assert_allclose(tree.logps.reshape(b * leaves, r), ref, atol=1e-5)


def test_sample_tree_under_jit_equals_eager(lm, tree):
    model, params = lm
    fn = functools.partial(sample_tree, model, branching=B_, depth=D_, segment_len=SEG)
    jitted = jax.jit(fn)(params, PROMPTS, PROMPTS != 0, jax.random.key(1))
    np.testing.assert_array_equal(tree.tokens, jitted.tokens)
    np.testing.assert_allclose(tree.logps, jitted.logps, atol=1e-6)


def test_sample_tree_shape_errors(lm):
    model, params = lm
    prompts = jnp.array([[1, 4, 5]], jnp.int32)
    with pytest.raises(ValueError, match=r"prompt_ids \[B, P\]"):
        sample_tree(model, params, prompts[0], jnp.ones(3, bool), jax.random.key(0),
                    branching=2, depth=2, segment_len=2)
    with pytest.raises(ValueError, match="must be >= 1"):
        sample_tree(model, params, prompts, jnp.ones(prompts.shape, bool), jax.random.key(0),
                    branching=0, depth=2, segment_len=2)
    with pytest.raises(ValueError, match="stop_tokens"):
        sample_tree(model, params, prompts, jnp.ones(prompts.shape, bool), jax.random.key(0),
                    branching=2, depth=2, segment_len=2, stop_tokens=(3,))
