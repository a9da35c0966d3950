"""alignax.tasks.chains: the array form of the arithmetic chains against alignax.tasks.arithmetic
(text, answers, step labels, step positions), the label rules by hand, corruption, sampling,
and the template sampler with a hand-made logits function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.tasks import arithmetic as ar
from alignax.tasks import chains as ch


def _chains(n=40, seed=0, steps=(1, 6)):
    return ch.sample_chains(n, rng=np.random.default_rng(seed), num_steps=steps)


def test_sampling_is_deterministic_and_in_range():
    a, b = _chains(seed=3), _chains(seed=3)
    for f in ("start", "ops", "operands", "num_steps"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.max_steps == 6 and a.num_steps.min() >= 1 and a.num_steps.max() <= 6
    valid = a.valid()
    assert (a.operands[valid] >= 1).all() and (a.operands[valid] <= 9).all()
    assert (a.operands[~valid] == 0).all() and (a.ops[~valid] == 0).all()
    assert not np.array_equal(_chains(seed=4).start, a.start)
    c = ch.sample_chains(5, rng=np.random.default_rng(0), num_steps=2, max_steps=4, ops=("*",))
    assert c.max_steps == 4 and (c.num_steps == 2).all() and (c.ops[c.valid()] == 2).all()
    np.testing.assert_array_equal(ch.difficulty(c), [2] * 5)
    with pytest.raises(ValueError, match="max_steps=2 < the largest k 3"):
        ch.sample_chains(2, rng=np.random.default_rng(0), num_steps=(1, 3), max_steps=2)
    with pytest.raises(ValueError, match="modulus must be in"):
        ch.sample_chains(2, rng=np.random.default_rng(0), num_steps=2, modulus=11)


def test_encoding_matches_the_arithmetic_text_and_positions():
    c = _chains()
    gold = ch.reference_values(c)
    ids, mask = ch.encode(c, gold)
    assert ids.shape == (c.size, ch.max_length(6))
    problems = ch.to_problems(c)
    ends, results = ch.step_end_positions(c), ch.result_positions(c)
    start, end = ch.step_spans(c)
    for i, p in enumerate(problems):
        want = [ar.BOS_ID] + ar.encode(ar.prompt_text(p) + ar.solution_text(p)) + [ar.EOS_ID]
        n = len(want)
        assert ids[i, :n].tolist() == want and mask[i].sum() == n == ch.lengths(c)[i]
        assert (ids[i, n:] == ar.PAD_ID).all()
        k = p.num_steps
        # arithmetic's step ends are relative to the ids it reads: the same row
        np.testing.assert_array_equal(ends[i, :k], ar.step_end_positions(ids[i]))
        assert (ends[i, k:] == -1).all() and (results[i, k:] == -1).all()
        np.testing.assert_array_equal(end[i, :k] - start[i, :k], [6] * k)
        assert ar.decode(ids[i, start[i, 0]:end[i, 0]]) == ar.solution_text(p).split(";")[0] + ";"
        assert ch.answers(c)[i] == p.answer and list(gold[i, :k]) == list(p.results)
        assert ids[i, ch.last_positions(c)[i]] == ar.EOS_ID
    np.testing.assert_array_equal(ch.decode_values(c, ids), gold)
    pids, pmask = ch.prompt_ids(c)
    want_ids, want_mask = ar.prompt_ids(problems)
    np.testing.assert_array_equal(pids, want_ids)
    np.testing.assert_array_equal(pmask, want_mask.astype(bool))
    back = ch.from_problems(problems, max_steps=6)
    for f in ("start", "ops", "operands", "num_steps"):
        np.testing.assert_array_equal(getattr(back, f), getattr(c, f))


def test_hand_example_labels_under_each_rule():
    # 3+4*2-1: gold 7, 4, 3. Written: 7, 5 (wrong), then 4 = 5-1 (consistent, locally right)
    c = ch.from_problems([ar.Problem(10, 3, ("+", "*", "-"), (4, 2, 1))])
    values = np.array([[7, 5, 4]])
    ids, _ = ch.encode(c, values)
    assert ar.decode(ids[0], skip_special=True) == "3+4*2-1?3+4=7;7*2=5;5-1=4;>4"
    labels, mask = ch.step_labels(c, values)  # first_error
    assert labels.tolist() == [[1, 0, 0]] and mask.tolist() == [[1, 1, 0]]
    labels, mask = ch.step_labels(c, values, rule="prefix")
    assert labels.tolist() == [[1, 0, 0]] and mask.tolist() == [[1, 1, 1]]
    labels, mask = ch.step_labels(c, values, rule="local")
    assert labels.tolist() == [[1, 0, 1]] and mask.tolist() == [[1, 1, 1]]
    assert ch.first_error(c, values).tolist() == [1]
    assert ch.outcome_labels(c, values).tolist() == [0]
    # a left operand that is not the previous result: wrong even with the right arithmetic
    lhs = np.array([[3, 7, 3]])
    values = np.array([[7, 4, 2]])
    assert ch.locally_correct(c, values, lhs).tolist() == [[True, True, False]]
    assert ch.step_labels(c, np.array([[7, 4, 3]]))[0].tolist() == [[1, 1, 1]]
    assert ch.first_error(c, np.array([[7, 4, 3]])).tolist() == [3]
    with pytest.raises(ValueError, match="rule must be one of"):
        ch.step_labels(c, values, rule="suffix")


@pytest.mark.parametrize("consistent", [True, False])
def test_corruption_matches_arithmetic_labels(consistent):
    c = _chains(seed=5)
    rng = np.random.default_rng(0)
    step = rng.integers(0, c.num_steps)
    values, lhs = ch.corrupt(c, step, rng=rng, consistent=consistent)
    gold = ch.reference_values(c)
    ids, _ = ch.encode(c, values, lhs)
    np.testing.assert_array_equal(ch.first_error(c, values, lhs), step)
    for i, p in enumerate(ch.to_problems(c)):
        assert values[i, step[i]] != gold[i, step[i]]
        assert (values[i, :step[i]] == gold[i, :step[i]]).all()
        for rule in ("local", "prefix"):
            want = ar.step_labels(p, ids[i], rule=rule)
            assert ch.step_labels(c, values, lhs, rule=rule)[0][i, :p.num_steps].tolist() == want
    labels, mask = ch.step_labels(c, values, lhs)
    assert (labels.sum(1) == step).all() and (mask.sum(1) == step + 1).all()
    if consistent:  # the answer is wrong wherever some wrong value can change it
        erasable = [i for i, p in enumerate(ch.to_problems(c))
                    if int(step[i]) not in ar.corruptible_steps(p)]
        wrong = ch.outcome_labels(c, values) == 0
        assert all(wrong[i] for i in range(c.size) if i not in erasable)
    else:  # the later steps continue the gold chain
        last = step == c.num_steps - 1
        np.testing.assert_array_equal(ch.outcome_labels(c, values) == 0, last)


def test_repeat_take_concatenate():
    c = _chains(n=3, steps=(1, 2))
    r = c.repeat(2)
    assert r.size == 6 and r.start.tolist() == np.repeat(c.start, 2).tolist()
    both = ch.concatenate([c, _chains(n=2, steps=(4, 4))])
    assert both.max_steps == 4 and both.size == 5
    np.testing.assert_array_equal(ch.reference_values(both)[:3, :2], ch.reference_values(c))
    assert both.take(np.array([3, 4])).num_steps.tolist() == [4, 4]


def test_sample_values_fills_the_template_greedy_and_sampled():
    c = _chains(n=16, seed=2)
    gold = ch.reference_values(c)
    ids, mask = ch.encode(c, np.zeros(c.ops.shape, np.int32))

    def oracle(tokens):
        # logits of the right result after each "x op b =": read x, op, b three tokens back (x
        # is the previous written result: right only if the sampler wrote it there)
        x = tokens - ch.DIGIT0
        op = jnp.argmax(tokens[..., None] == jnp.asarray(ch.OP_TOKENS), -1)
        right = ch.apply_ops(jnp.roll(x, 3, axis=1), jnp.roll(op, 2, axis=1),
                             jnp.roll(x, 1, axis=1), 10)
        return 10.0 * jax.nn.one_hot(ch.DIGIT0 + right, ar.VOCAB_SIZE)

    f = jax.jit(lambda i, r, k, key, t: ch.sample_values(oracle, i, r, k, key, modulus=10,
                                                          temperature=t))
    values, logps = f(ids, ch.result_positions(c), c.num_steps, jax.random.key(0), 0.0)
    np.testing.assert_array_equal(values, gold)
    logps = np.asarray(logps)
    assert (logps[c.valid()] > -1e-3).all() and (logps[~c.valid()] == 0).all()
    # a flat distribution: every value drawn, all consistent chains, per-row temperature
    flat = lambda tokens: jnp.zeros(tokens.shape + (ar.VOCAB_SIZE,))  # noqa: E731
    temps = np.where(np.arange(16) < 8, 1.0, 0.0).astype(np.float32)
    v, lp = jax.jit(lambda key: ch.sample_values(flat, ids, ch.result_positions(c), c.num_steps,
                                                 key, modulus=10, temperature=temps))(
        jax.random.key(1))
    v = np.asarray(v)
    assert (v[8:][c.valid()[8:]] == 0).all()  # greedy on ties: the first digit
    assert len(np.unique(v[:8][c.valid()[:8]])) > 3
    np.testing.assert_allclose(np.asarray(lp)[c.valid()], np.log(0.1), rtol=1e-5)
    assert (v[~c.valid()] == 0).all()


def test_rows_without_the_prompt_are_the_solution_rows_shifted():
    c = _chains(seed=7)
    gold = ch.reference_values(c)
    full, full_mask = ch.encode(c, gold)
    short, mask = ch.encode(c, gold, with_prompt=False)
    assert short.shape == (c.size, ch.max_length(6, with_prompt=False))
    p = ch.prompt_lengths(c)
    for i in range(c.size):
        n = int(full_mask[i].sum())
        assert short[i, 0] == ar.BOS_ID
        assert short[i, 1:n - p[i] + 1].tolist() == full[i, p[i]:n].tolist()
        assert mask[i].sum() == ch.lengths(c, with_prompt=False)[i] == n - p[i] + 1
    shift = (p - 1)[:, None]
    valid = c.valid()
    for name in ("step_end_positions", "result_positions"):
        with_p = getattr(ch, name)(c)
        without = getattr(ch, name)(c, with_prompt=False)
        np.testing.assert_array_equal(without[valid], (with_p - shift)[valid])
        assert (without[~valid] == -1).all()
    np.testing.assert_array_equal(ch.last_positions(c, with_prompt=False),
                                  ch.last_positions(c) - (p - 1))
    assert (short[np.arange(c.size), ch.last_positions(c, with_prompt=False)] == ar.EOS_ID).all()
    np.testing.assert_array_equal(ch.decode_values(c, short, with_prompt=False), gold)


def _oracle(tokens):
    """Logits of the right result after each "x op b =" (x, op, b read three tokens back)."""
    x = tokens - ch.DIGIT0
    op = jnp.argmax(tokens[..., None] == jnp.asarray(ch.OP_TOKENS), -1)
    right = ch.apply_ops(jnp.roll(x, 3, axis=1), jnp.roll(op, 2, axis=1),
                         jnp.roll(x, 1, axis=1), 10)
    return 10.0 * jax.nn.one_hot(ch.DIGIT0 + right, ar.VOCAB_SIZE)


def test_continue_values_keeps_the_prefix_and_completes_from_its_last_result():
    c = _chains(n=32, seed=5)
    rng = np.random.default_rng(0)
    wrong = (ch.reference_values(c) + rng.integers(1, 10, c.ops.shape)) % 10
    wrong = np.where(c.valid(), wrong, 0)
    start = rng.integers(0, c.num_steps + 1).astype(np.int32)  # L in [0, k]
    kept = np.arange(c.max_steps)[None, :] < start[:, None]
    prefix = np.where(kept, wrong, 0).astype(np.int32)
    ids, _ = ch.encode(c, prefix)  # consistent: x_{L+1} = y_L
    f = jax.jit(lambda i, s, key: ch.continue_values(_oracle, i, ch.result_positions(c),
                                                     c.num_steps, s, key, modulus=10,
                                                     temperature=0.0))
    values, logps = (np.asarray(x) for x in f(ids, start, jax.random.key(0)))
    # by hand: the kept results, then the right result from the previous written one
    expect = prefix.copy()
    for i in range(c.size):
        a = int(c.start[i]) if start[i] == 0 else int(prefix[i, start[i] - 1])
        for j in range(start[i], c.num_steps[i]):
            a = int(ch.apply_ops(a, c.ops[i, j], c.operands[i, j], 10))
            expect[i, j] = a
    np.testing.assert_array_equal(values, expect)
    assert (logps[kept] == 0).all() and (logps[c.valid() & ~kept] > -1e-3).all()
    # start 0 is sample_values draw for draw (a flat distribution, sampled)
    flat = lambda tokens: jnp.zeros(tokens.shape + (ar.VOCAB_SIZE,))  # noqa: E731
    t, _ = ch.encode(c, np.zeros(c.ops.shape, np.int32))
    a = ch.sample_values(flat, t, ch.result_positions(c), c.num_steps, jax.random.key(3),
                         modulus=10)
    b = ch.continue_values(flat, t, ch.result_positions(c), c.num_steps,
                           np.zeros(c.size, np.int32), jax.random.key(3), modulus=10)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_gold_rows_and_result_nll():
    chains = ch.sample_chains(6, rng=np.random.default_rng(0), num_steps=(1, 4), modulus=10)
    rows = ch.gold_rows(chains)
    np.testing.assert_array_equal(rows["rpos"], ch.result_positions(chains))
    vocab = int(rows["ids"].max()) + 1

    def uniform(params, ids, mask):
        return jnp.zeros((*ids.shape, vocab))

    def oracle(params, ids, mask):  # all mass on the next token of the gold row
        nxt = jnp.concatenate([ids[:, 1:], ids[:, :1]], axis=1)
        return 50.0 * jax.nn.one_hot(nxt, vocab)

    np.testing.assert_allclose(ch.result_nll(uniform, None, rows), np.log(vocab), rtol=1e-6)
    assert float(ch.result_nll(oracle, None, rows)) < 1e-6
