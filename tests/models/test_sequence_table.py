"""sequence_table: exact log-probs, expectations and KLs of the enumerable autoregressive policy,
checked against brute-force loops over prefixes and sequences."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models import sequence_table as st

SPACE = st.SequenceSpace(vocab_size=3, length=3)


def _params(key, features=2, scale=1.0):
    return st.init_table(SPACE, features, key=jax.random.key(key), scale=scale)


def _brute_logp(params, phi, tokens):
    """log pi(y | x) by walking the prefix tree by hand."""
    node, total = 0, 0.0
    for a in tokens:
        logits = np.asarray(params["bias"][node]) + phi @ np.asarray(params["weight"][node])
        logits = logits - logits.max()
        total += logits[a] - np.log(np.exp(logits).sum())
        node = SPACE.vocab_size * node + 1 + a
    return total


def test_enumeration_and_indices():
    assert SPACE.num_sequences == 27 and SPACE.num_nodes == 13
    seqs = SPACE.sequences
    assert seqs.shape == (27, 3)
    assert [tuple(r) for r in seqs] == list(itertools.product(range(3), repeat=3))
    np.testing.assert_array_equal(SPACE.index(seqs), np.arange(27))
    # the node of y_<t follows the breadth-first numbering of tasks.mdp.tree_mdp
    assert SPACE.prefix_nodes[SPACE.index([2, 1, 0]), 2] == 3 * (3 * 0 + 1 + 2) + 1 + 1
    with pytest.raises(ValueError, match="vocab_size >= 2"):
        st.SequenceSpace(1, 3)
    with pytest.raises(ValueError, match="too many"):
        st.SequenceSpace(64, 4)
    with pytest.raises(ValueError, match="in \\[0, 3\\)"):
        SPACE.index([0, 3, 1])


def test_log_probs_match_a_walk_of_the_tree_and_normalise():
    params = _params(0)
    phi = np.array([[0.5, -1.0], [2.0, 0.3]], np.float32)
    lp = np.asarray(st.sequence_log_probs(SPACE, params, phi))
    assert lp.shape == (2, 27)
    for i in range(2):
        for n, y in enumerate(SPACE.sequences):
            assert lp[i, n] == pytest.approx(_brute_logp(params, phi[i], y), abs=1e-5)
    np.testing.assert_allclose(jax.scipy.special.logsumexp(lp, axis=-1), 0.0, atol=1e-5)
    tok = st.token_log_probs(SPACE, params, phi)
    np.testing.assert_allclose(tok.sum(-1), lp, atol=1e-5)
    # the zero table is the uniform policy
    uniform = st.sequence_log_probs(SPACE, st.init_table(SPACE))
    np.testing.assert_allclose(uniform, -np.log(27.0), atol=1e-6)
    with pytest.raises(ValueError, match="pass features"):
        st.sequence_log_probs(SPACE, params)


def test_kl_entropy_expectation_and_sequential_kl_against_brute_force():
    p, q = _params(1), _params(2)
    phi = np.array([0.2, -0.7], np.float32)
    lp = np.array([_brute_logp(p, phi, y) for y in SPACE.sequences])
    lq = np.array([_brute_logp(q, phi, y) for y in SPACE.sequences])
    assert float(st.sequence_kl(SPACE, p, q, phi)) == pytest.approx(
        np.sum(np.exp(lp) * (lp - lq)), abs=1e-5)
    assert float(st.entropy(SPACE, p, phi)) == pytest.approx(-np.sum(np.exp(lp) * lp), abs=1e-5)
    values = np.arange(27, dtype=np.float32)
    assert float(st.expectation(SPACE, p, values, phi)) == pytest.approx(
        np.sum(np.exp(lp) * values), rel=1e-5)
    # sequential KL(ref || pi) of y: next-token KLs along y's prefixes, by hand
    seq = np.asarray(st.sequential_kl(SPACE, p, q, phi))
    for n, y in enumerate(SPACE.sequences):
        node, total = 0, 0.0
        for a in y:
            lpi = np.asarray(st.node_log_probs(p, phi))[node]
            lref = np.asarray(st.node_log_probs(q, phi))[node]
            total += np.sum(np.exp(lref) * (lref - lpi))
            node = 3 * node + 1 + a
        assert seq[n] == pytest.approx(total, abs=1e-5)
    # the chain rule: E_pi of the forward node KLs along y equals the sequence KL
    fwd = jnp.take(st.node_kl(p, q, phi), jnp.asarray(SPACE.prefix_nodes), axis=-1).sum(-1)
    assert float(st.expectation(SPACE, p, fwd, phi)) == pytest.approx(
        float(st.sequence_kl(SPACE, p, q, phi)), abs=1e-5)


def test_gradients_flow_and_vmap_over_seeds():
    params = jax.vmap(lambda k: st.init_table(SPACE, 2, key=k, scale=0.5))(
        jax.random.split(jax.random.key(0), 4))
    phi = jnp.ones((2,))
    gold = jnp.linspace(-1, 1, 27)
    value = jax.vmap(lambda p: st.expectation(SPACE, p, gold, phi))(params)
    assert value.shape == (4,)
    g = jax.grad(lambda p: st.expectation(SPACE, p, gold, phi))(jax.tree.map(lambda x: x[0],
                                                                             params))
    assert float(jnp.abs(g["bias"]).sum()) > 0 and float(jnp.abs(g["weight"]).sum()) > 0


def test_samples_follow_the_policy():
    params = _params(3, features=0, scale=1.5)
    draws = np.asarray(st.sample(SPACE, params, jax.random.key(0), 60_000))
    assert draws.shape == (60_000,) and draws.dtype == np.int32
    freq = np.bincount(draws, minlength=27) / draws.size
    probs = np.exp(np.asarray(st.sequence_log_probs(SPACE, params)))
    np.testing.assert_allclose(freq, probs, atol=0.01)
    batched = st.sample(SPACE, _params(4), jax.random.key(1), 5, features=jnp.ones((3, 2)))
    assert batched.shape == (3, 5)
    lp = st.sequence_log_probs(SPACE, _params(4), jnp.ones((3, 2)))
    np.testing.assert_array_equal(st.gather(lp, batched), np.take_along_axis(
        np.asarray(lp), np.asarray(batched), axis=-1))
    # temperature -> 0 is greedy over whole sequences
    cold = np.asarray(st.sample(SPACE, params, jax.random.key(2), 50, temperature=1e-4))
    assert (cold == int(np.argmax(probs))).all()


def test_path_log_probs_match_the_full_table_and_its_gradients():
    params = _params(3, features=2)
    phi = jax.random.normal(jax.random.key(4), (5, 2))
    index = jnp.array([0, 7, 26, 13, 13])
    full = st.gather(st.sequence_log_probs(SPACE, params, phi), index[:, None])[:, 0]
    np.testing.assert_allclose(st.path_log_probs(SPACE, params, index, phi), full, atol=1e-5)
    for i in range(5):
        tokens = SPACE.sequences[int(index[i])]
        np.testing.assert_allclose(st.path_log_probs(SPACE, params, index[i], phi[i]),
                                   _brute_logp(params, np.asarray(phi[i]), tokens), atol=1e-5)
    g_path = jax.grad(lambda p: st.path_log_probs(SPACE, p, index, phi).sum())(params)
    g_full = jax.grad(lambda p: st.gather(st.sequence_log_probs(SPACE, p, phi),
                                          index[:, None]).sum())(params)
    for k in g_full:
        np.testing.assert_allclose(g_path[k], g_full[k], atol=1e-5)
    shared = _params(5, features=0)  # no prompt features
    np.testing.assert_allclose(st.path_log_probs(SPACE, shared, index),
                               st.sequence_log_probs(SPACE, shared)[index], atol=1e-5)


def test_sample_paths_follow_the_policy():
    phi = jnp.array([[1.0, -0.5], [0.0, 2.0]])
    params = _params(5, features=2, scale=1.5)
    draws = np.asarray(jax.jit(lambda k: st.sample_paths(SPACE, params, k, 10_000, phi))(
        jax.random.key(0)))
    assert draws.shape == (2, 10_000) and draws.dtype == np.int32
    probs = np.exp(np.asarray(st.sequence_log_probs(SPACE, params, phi)))
    for row, p in zip(draws, probs):
        np.testing.assert_allclose(np.bincount(row, minlength=27) / row.size, p, atol=0.02)
