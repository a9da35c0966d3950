"""models.shared_tree: prefix-tree node logits with position and bigram parameters shared
across prefixes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models import sequence_table as st
from alignax.models.shared_tree import (init_shared, node_context, shared_node_logits,
                                        table_params)

SPACE = st.SequenceSpace(3, 3)


def _node_of(prefix):
    node = 0
    for a in prefix:
        node = SPACE.vocab_size * node + 1 + a
    return node


def test_node_context_matches_walking_the_tree():
    depth, last = node_context(SPACE)
    assert depth.shape == last.shape == (SPACE.num_nodes,)
    assert depth[0] == 0 and last[0] == SPACE.vocab_size
    for prefix in [(0,), (2,), (1, 0), (2, 2)]:
        n = _node_of(prefix)
        assert depth[n] == len(prefix) and last[n] == prefix[-1]


def test_zero_params_give_the_base_and_logits_follow_the_formula():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((SPACE.num_nodes, 3)).astype(np.float32)
    np.testing.assert_allclose(shared_node_logits(SPACE, init_shared(SPACE), base), base)
    params = {"position": jnp.asarray(rng.standard_normal((3, 3)), jnp.float32),
              "previous": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)}
    logits = np.asarray(shared_node_logits(SPACE, params, base))
    n = _node_of((2, 1))
    np.testing.assert_allclose(logits[n], base[n] + params["position"][2] + params["previous"][1],
                               rtol=1e-6)
    np.testing.assert_allclose(logits[0], base[0] + params["position"][0] + params["previous"][3],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="base must be"):
        shared_node_logits(SPACE, params, base[:3])


def test_an_update_from_one_response_moves_responses_that_share_no_prefix():
    """The point of sharing: raising log pi(0, 1, 2) also raises (1, 1, 2), which shares no
    prefix with it; a table leaves every other branch's conditional alone."""
    base = np.zeros((SPACE.num_nodes, 3), np.float32)

    def logp(params):
        return st.sequence_log_probs(SPACE, table_params(shared_node_logits(SPACE, params,
                                                                            base)))

    y, other = SPACE.index([0, 1, 2]), SPACE.index([1, 1, 2])
    grad = jax.grad(lambda p: logp(p)[y])(init_shared(SPACE))
    step = jax.tree.map(lambda p, g: p + 0.5 * g, init_shared(SPACE), grad)
    before, after = np.asarray(logp(init_shared(SPACE))), np.asarray(logp(step))
    assert after[y] > before[y]
    assert after[other] > before[other]
    np.testing.assert_allclose(np.exp(after).sum(), 1.0, rtol=1e-5)
