"""Catalogue tries and trie-constrained decoding: the trie's arrays, beam search against brute
force, validity and distinctness, and the log-probs of the decoders against the training side.

Each test runs its decoders and model computations in one jitted program (eagerly, every
primitive of the decoding loops compiles on its own)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models import sequence_table as st
from alignax.sampling import trie as tr

V = 6


def table_logits_fn(space, params, features):
    """`logits_fn` of a sequence_table policy: the node of the prefix y_<t (sequence_table's
    numbering, V i + 1 + a) read from the tokens, its logits for each context's features."""
    phi = jnp.asarray(features, jnp.float32)
    logits = params["bias"] + jnp.einsum("bf,mfv->bmv", phi, params["weight"])  # [B, M, V]

    def logits_fn(tokens, t):
        node = jnp.zeros(tokens.shape[:2], jnp.int32)
        for j in range(space.length - 1):
            node = jnp.where(j < t, space.vocab_size * node + 1 + tokens[..., j], node)
        return jnp.take_along_axis(logits[:, None], node[..., None, None], axis=2)[:, :, 0]

    return logits_fn


def random_catalogue(space, fraction, seed):
    rng = np.random.default_rng(seed)
    keep = rng.random(space.num_sequences) < fraction
    return space.sequences[keep], np.flatnonzero(keep)


def test_trie_arrays_of_a_hand_catalogue():
    # items: [3, 1], [3, 4, 2], [5], [3, 1] (a duplicate of item 0)
    trie = tr.build_trie([[3, 1], [3, 4, 2], [5], [3, 1]], vocab_size=7, pad_id=0)
    np.testing.assert_array_equal(trie.tokens, [1, 2, 3, 4, 5])
    # breadth first: 0 root, 1 "3", 2 "5", 3 "3 1", 4 "3 4", 5 "3 4 2"
    np.testing.assert_array_equal(trie.depth, [0, 1, 1, 2, 2, 3])
    expected_child = np.full((6, 5), -1)
    expected_child[0, [2, 4]] = [1, 2]      # root: 3 -> 1, 5 -> 2
    expected_child[1, [0, 3]] = [3, 4]      # "3": 1 -> 3, 4 -> 4
    expected_child[4, 1] = 5                # "3 4": 2 -> 5
    np.testing.assert_array_equal(trie.child, expected_child)
    np.testing.assert_array_equal(trie.allowed, expected_child >= 0)
    np.testing.assert_array_equal(trie.node_item, [-1, -1, 2, 0, -1, 1])
    np.testing.assert_array_equal(trie.item_tokens, [[3, 1, 0], [3, 4, 2], [5, 0, 0], [3, 1, 0]])
    np.testing.assert_array_equal(trie.item_lengths, [2, 3, 1, 2])
    np.testing.assert_array_equal(trie.item_leaf, [3, 5, 2, 3])
    dense = trie.allowed_mask()
    assert dense.shape == (6, 7) and dense[0, 3] and dense[0, 5] and dense.sum() == 5
    assert trie.lookup([3, 1]) == 0 and trie.lookup([3, 4, 2]) == 1 and trie.lookup([5]) == 2
    assert trie.lookup([3]) == -1 and trie.lookup([3, 4, 6]) == -1 and trie.lookup([6]) == -1


@pytest.mark.parametrize("items, message", [
    ([], "at least one item"),
    ([[1], []], "item 1 has no tokens"),
    ([[1, 7]], r"outside \[0, 7\)"),
    ([[1, 2], [1, 2, 3]], "item 0 is a prefix of item 1"),
])
def test_bad_catalogues_are_one_line_errors(items, message):
    with pytest.raises(ValueError, match=message):
        tr.build_trie(items, vocab_size=7)


def test_beam_search_finds_the_exact_top_items_of_an_enumerable_policy():
    # beams >= the prefixes alive at every depth (V^2 = 36): beam search is exhaustive
    space = st.SequenceSpace(V, 3)
    seqs, index = random_catalogue(space, 0.4, seed=0)
    trie = tr.build_trie(seqs, vocab_size=V)
    w = 36

    @jax.jit
    def run():
        params = st.init_table(space, 3, key=jax.random.key(1), scale=1.5)
        phi = jax.random.normal(jax.random.key(2), (4, 3))
        fn = table_logits_fn(space, params, phi)
        beams = [tr.beam_search(trie, fn, batch_size=4, num_beams=w, renormalise=r)
                 for r in (False, True)]
        return (beams, st.sequence_log_probs(space, params, phi),
                st.token_log_probs(space, params, phi), st.node_log_probs(params, phi))

    beams, seq_lp, tok_lp, node_lp = jax.tree.map(np.asarray, run())
    for renormalise, out in zip((False, True), beams):
        full = seq_lp[:, index]  # [B, I]
        if renormalise:  # brute force of the constrained distribution: token by token
            tok = tok_lp[:, index]  # [B, I, L]
            lp = np.zeros_like(full)
            for t in range(3):
                for prefix in {tuple(s[:t]) for s in seqs}:
                    rows = [i for i, s in enumerate(seqs) if tuple(s[:t]) == prefix]
                    nxt = sorted({int(seqs[i][t]) for i in rows})
                    node = int(space.prefix_nodes[space.index(seqs[rows[0]])][t])
                    norm = np.log(np.exp(node_lp[:, node, nxt]).sum(-1))
                    lp[:, rows] += tok[:, rows, t] - norm[:, None]
        else:
            lp = full
        for b in range(4):
            top = np.argsort(-lp[b], kind="stable")[:w]
            np.testing.assert_array_equal(out.items[b], top)
            np.testing.assert_allclose(out.scores[b], lp[b, top], atol=1e-5)
        np.testing.assert_array_equal(out.ranks, np.tile(np.arange(w), (4, 1)))
        np.testing.assert_array_equal(out.tokens, seqs[out.items])
        assert bool(out.valid.all()) and bool(out.mask.all())


def test_beam_search_is_exact_at_group_size_on_a_product_distribution():
    # logits independent of the prefix: the top-G items' prefixes are among the top-G prefixes
    space = st.SequenceSpace(V, 3)
    rng = np.random.default_rng(3)
    seqs = space.sequences
    trie = tr.build_trie(seqs, vocab_size=V)
    logits = jnp.asarray(rng.normal(size=(2, 3, V)), jnp.float32)  # [B, L, V]

    def logits_fn(tokens, t):
        return jnp.broadcast_to(logits[:, t][:, None], (*tokens.shape[:2], V))

    g = 7
    out, logp = jax.tree.map(np.asarray, jax.jit(lambda: (
        tr.beam_search(trie, logits_fn, batch_size=2, num_beams=g),
        jax.nn.log_softmax(logits, -1)))())
    for b in range(2):
        scores = logp[b, 0][seqs[:, 0]] + logp[b, 1][seqs[:, 1]] + logp[b, 2][seqs[:, 2]]
        np.testing.assert_array_equal(out.items[b], np.argsort(-scores, kind="stable")[:g])


def test_variable_length_items_with_eos_and_a_catalogue_smaller_than_the_beam():
    eos, pad = 5, 0
    items = [[1, eos], [1, 2, eos], [2, 3, 4, eos], [3, eos], [2, eos]]
    trie = tr.build_trie(items, vocab_size=V, pad_id=pad)
    rng = np.random.default_rng(4)
    logits = jnp.asarray(rng.normal(size=(3, 4, V)), jnp.float32)  # depends on t only

    def logits_fn(tokens, t):
        return jnp.broadcast_to(logits[:, t][:, None], (*tokens.shape[:2], V))

    out, logp = jax.tree.map(np.asarray, jax.jit(lambda: (
        tr.beam_search(trie, logits_fn, batch_size=3, num_beams=7),
        jax.nn.log_softmax(logits, -1)))())
    for b in range(3):
        scores = np.array([sum(logp[b, t, y] for t, y in enumerate(s)) for s in items])
        np.testing.assert_array_equal(out.items[b, :5], np.argsort(-scores)[:5])
        np.testing.assert_allclose(out.scores[b, :5], np.sort(scores)[::-1], atol=1e-5)
        # 5 items for 7 beams: the last two found nothing
        np.testing.assert_array_equal(out.valid[b], [True] * 5 + [False] * 2)
        np.testing.assert_array_equal(out.items[b, 5:], [-1, -1])
        assert np.all(np.isneginf(out.scores[b, 5:]))
        for k in range(5):
            item = items[int(out.items[b, k])]
            row, m = out.tokens[b, k], out.mask[b, k]
            np.testing.assert_array_equal(row[:len(item)], item)
            assert m[:len(item)].all() and not m[len(item):].any()
            assert (row[len(item):] == pad).all()
            np.testing.assert_allclose(out.logps[b, k].sum(), scores[out.items[b, k]],
                                       atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decoders_never_return_invalid_items_and_beams_never_repeat_one(seed):
    space = st.SequenceSpace(V, 3)
    seqs, _ = random_catalogue(space, 0.15, seed=seed)
    trie = tr.build_trie(seqs, vocab_size=V)
    params = st.init_table(space, 2, key=jax.random.key(seed), scale=3.0)  # peaked policies
    phi = np.asarray(jax.random.normal(jax.random.key(seed + 10), (5, 2)))
    fn = table_logits_fn(space, params, phi)
    beams = tr.beam_search(trie, fn, batch_size=5, num_beams=8)
    samples = tr.constrained_sample(trie, fn, jax.random.key(seed), batch_size=5,
                                    num_samples=64)
    for out in (beams, samples):
        items, tokens = np.asarray(out.items), np.asarray(out.tokens)
        assert (items >= 0).all()
        for row_items, row_tokens in zip(items, tokens):
            for item, toks in zip(row_items, row_tokens):
                assert trie.lookup(toks) == item  # the tokens are the catalogue item's
    for row in np.asarray(beams.items):
        assert len(set(row.tolist())) == len(row)
    # the samples repeat items (a peaked policy); the beams cannot
    assert max(len(set(r.tolist())) for r in np.asarray(samples.items)) < 64


def test_decoder_log_probs_equal_the_training_side():
    space = st.SequenceSpace(V, 3)
    seqs, index = random_catalogue(space, 0.3, seed=5)
    trie = tr.build_trie(seqs, vocab_size=V)
    index_j = jnp.asarray(index)

    @jax.jit
    def run():
        params = st.init_table(space, 3, key=jax.random.key(6), scale=1.0)
        phi = jax.random.normal(jax.random.key(7), (4, 3))
        fn = table_logits_fn(space, params, phi)
        beams = tr.beam_search(trie, fn, batch_size=4, num_beams=9)
        samples = tr.constrained_sample(trie, fn, jax.random.key(8), batch_size=4,
                                        num_samples=9)
        checks = []
        for out in (beams, samples):
            # the model's own log-prob of the whole item, by path
            path = st.path_log_probs(space, params, index_j[out.items], phi[:, None])
            # teacher forcing on the logits of each position gives both kinds, token by token
            logits = jnp.stack([fn(out.tokens, t) for t in range(3)], axis=2)  # [B, K, L, V]
            checks.append((path, tr.teacher_forced_logps(trie, logits, out.tokens)))
        return beams, samples, st.sequence_log_probs(space, params, phi), checks

    beams, samples, seq_lp, checks = jax.tree.map(np.asarray, run())
    for out, (path, (lp, clp, mask)) in zip((beams, samples), checks):
        # the model's own log-prob of the whole item: the training update's log pi(y | x)
        seq_index = index[out.items]
        expected = np.take_along_axis(seq_lp, seq_index, axis=1)
        np.testing.assert_allclose(out.logps.sum(-1), expected, atol=1e-5)
        np.testing.assert_allclose(out.logps.sum(-1), path, atol=1e-5)
        np.testing.assert_array_equal(mask, out.mask)
        np.testing.assert_allclose(out.logps, lp, atol=1e-5)
        np.testing.assert_allclose(out.constrained_logps, clp, atol=1e-5)
    # the beams' ranking score is the sum of the model's log-probs (renormalise=False)
    np.testing.assert_allclose(beams.scores, beams.logps.sum(-1), atol=1e-5)


def test_constrained_sampling_draws_from_the_renormalised_distribution():
    items = [[0, 1], [0, 2], [1, 1], [3, 0], [3, 3]]
    trie = tr.build_trie(items, vocab_size=4)
    rng = np.random.default_rng(9)
    logits_np = (rng.normal(size=(1, 2, 4)) * 1.5).astype(np.float32)
    logits = jnp.asarray(logits_np)

    def logits_fn(tokens, t):
        # the second token's logits depend on the first token (a prefix tree)
        shift = jnp.where(t > 0, tokens[..., 0:1].astype(jnp.float32), 0.0)
        return logits[:, t][:, None] + shift

    temperatures = (1.0, 0.7)
    draws = jax.tree.map(np.asarray, jax.jit(lambda: [tr.constrained_sample(
        trie, logits_fn, jax.random.key(0), batch_size=1, num_samples=20000, temperature=t)
        for t in temperatures])())
    for temperature, out in zip(temperatures, draws):
        expected = []
        for item in items:
            p = 1.0
            for t, y in enumerate(item):
                allowed = sorted({s[t] for s in items if s[:t] == item[:t]})
                lg = logits_np[0, t] + (item[0] if t > 0 else 0.0)
                q = np.exp(lg / temperature)
                p *= q[y] / q[allowed].sum()
            expected.append(p)
        freq = np.bincount(out.items[0], minlength=len(items)) / 20000
        np.testing.assert_allclose(freq, expected, atol=0.015)
        # constrained_logps are the log-probs of the distribution drawn from
        first = out.items[0]
        np.testing.assert_allclose(np.exp(out.constrained_logps[0].sum(-1)),
                                   np.asarray(expected)[first], rtol=1e-4)


def test_beam_rollout_of_a_causal_lm_matches_the_training_forward():
    from alignax.algorithms import online
    from alignax.models.transformer import TransformerConfig, make_lm

    model = make_lm(TransformerConfig(vocab_size=12, d_model=16, n_layers=1, n_heads=2,
                                      n_kv_heads=1, d_ff=32, max_len=16))
    params = jax.jit(model.init)(jax.random.key(0))
    eos = 11
    items = [[4, eos], [4, 5, eos], [6, 7, 8, eos], [6, eos], [9, 9, eos], [10, eos]]
    trie = tr.build_trie(items, vocab_size=12, pad_id=0)
    prompts = np.array([[0, 0, 1, 2], [3, 1, 2, 2], [0, 2, 3, 0]], np.int32)  # ragged
    mask = prompts != 0
    g = 6  # >= the prefixes alive at every depth: the beams are exactly the ranked catalogue
    build = tr.beam_rollout_from_config(trie)
    rollout_fn = build(model, {"max_new_tokens": 4}, g)
    rollout = jax.tree.map(np.asarray, rollout_fn(params, prompts, mask, jax.random.key(0)))
    assert rollout.ids.shape == (3 * g, 4 + 4) and rollout.response_len == 4
    np.testing.assert_array_equal(rollout.prompt_index, np.repeat(np.arange(3), g))
    logps = jax.jit(lambda p, ids, m: online.response_logps(model.apply, p, ids, m, 4))
    recomputed = logps(params, rollout.ids, rollout.mask)
    rmask = rollout.response_mask
    np.testing.assert_allclose(np.where(rmask, recomputed, 0.0), rollout.old_logps, atol=1e-5)
    # each group: g distinct catalogue items in decreasing log-prob order
    seq_lp = rollout.old_logps.sum(-1).reshape(3, g)
    assert np.all(np.diff(seq_lp, axis=1) <= 1e-6)
    for row in range(3 * g):
        toks = rollout.responses[row][rmask[row]]
        assert trie.lookup(toks) >= 0 and toks[-1] == eos
    # brute force: every item's log-prob under the model after each prompt (3 x 6 rows: the
    # shape of the rollout, one compiled forward)
    brute_ids, brute_mask = [], []
    for b in range(3):
        for item in items:
            brute_ids.append(np.concatenate([rollout.ids[b * g, :4],
                                             item + [0] * (4 - len(item))]))
            brute_mask.append(np.concatenate([rollout.mask[b * g, :4], [True] * len(item)
                                              + [False] * (4 - len(item))]))
    brute = np.asarray(logps(params, np.stack(brute_ids), np.stack(brute_mask)))
    for b in range(3):
        found = [trie.lookup(rollout.responses[b * g + k][rmask[b * g + k]]) for k in range(g)]
        assert len(set(found)) == g
        # every item's log-prob under the model, ranked
        scores = [float(brute[b * len(items) + i, :len(item)].sum())
                  for i, item in enumerate(items)]
        assert found == list(np.argsort(-np.array(scores))[:g])
    with pytest.raises(ValueError, match="max_new_tokens=3 must be the longest"):
        build(model, {"max_new_tokens": 3}, g)
    with pytest.raises(ValueError, match="num_beams=7 exceeds the catalogue.s 6 distinct items"):
        tr.beam_rollout(model, trie, num_beams=7)


def test_trie_nodes_follow_paths_and_flag_tokens_off_the_trie():
    trie = tr.build_trie([[3, 1], [3, 4, 2], [5]], vocab_size=7)
    nodes, ok = jax.jit(tr.trie_nodes)(trie, np.array([[3, 4, 2], [3, 1, 0], [5, 5, 0],
                                                       [2, 1, 0]]))
    np.testing.assert_array_equal(nodes, [[0, 1, 4], [0, 1, 3], [0, 2, 0], [0, 0, 0]])
    np.testing.assert_array_equal(ok, [[True, True, True], [True, True, False],
                                       [True, False, False], [False, False, False]])


def test_lookup_items_in_jit_equals_the_host_lookup():
    trie = tr.build_trie([[3, 1], [3, 4, 2], [5], [3, 1]], vocab_size=7, pad_id=0)
    rows = np.array([[3, 1, 0], [3, 4, 2], [5, 0, 0], [3, 0, 0], [3, 1, 2], [5, 5, 0],
                     [6, 0, 0], [3, 4, 0], [1, 3, 0]])
    expected = [0, 1, 2, -1, -1, -1, -1, -1, -1]
    # complete items (pad after the end), a prefix, a token after the end, off the trie
    np.testing.assert_array_equal(jax.jit(tr.lookup_items)(trie, rows), expected)
    rng = np.random.default_rng(0)
    space = st.SequenceSpace(V, 3)
    seqs, _ = random_catalogue(space, 0.3, seed=1)
    big = tr.build_trie(seqs, vocab_size=V)
    draws = rng.integers(0, V, (200, 3))
    draws[:100] = seqs[rng.integers(0, len(seqs), 100)]
    np.testing.assert_array_equal(jax.jit(tr.lookup_items)(big, draws),
                                  [big.lookup(r) for r in draws])


def test_the_loop_and_the_unrolled_decoders_agree(monkeypatch):
    space = st.SequenceSpace(V, 3)
    seqs, _ = random_catalogue(space, 0.3, seed=2)
    trie = tr.build_trie(seqs, vocab_size=V)
    params, phi = jax.jit(lambda: (st.init_table(space, 2, key=jax.random.key(3), scale=1.0),
                                   jax.random.normal(jax.random.key(4), (3, 2))))()
    fn = table_logits_fn(space, params, phi)

    def decode():  # jitted below: _UNROLL is read while tracing
        beams = tr.beam_search(trie, fn, batch_size=3, num_beams=5)
        draws = tr.constrained_sample(trie, fn, jax.random.key(5), batch_size=3, num_samples=6)
        return (beams, draws, tr.lookup_items(trie, draws.tokens),
                tr.trie_nodes(trie, beams.tokens))

    unrolled = jax.jit(lambda: decode())()
    monkeypatch.setattr(tr, "_UNROLL", 0)  # lax.fori_loop / lax.scan, as for long items
    looped = jax.jit(lambda: decode())()  # a new function: traced again
    for a, b in zip(jax.tree.leaves(unrolled), jax.tree.leaves(looped)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
