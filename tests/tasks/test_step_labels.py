"""alignax.tasks.step_labels: reference-guided labels equal the gold labels of `chains`;
Monte-Carlo rollout labels with a perfect completer equal them too, with a noisy completer they
agree at the rate a two-state Markov chain predicts; costs by hand; shapes and masks."""

import numpy as np
import pytest

from alignax.tasks import chains as ch
from alignax.tasks import step_labels as sl


def _chains(n, seed, steps=(1, 6), modulus=10):
    return ch.sample_chains(n, rng=np.random.default_rng(seed), num_steps=steps,
                            modulus=modulus)


def _corrupted(c, seed, consistent=True):
    rng = np.random.default_rng(seed)
    step = rng.integers(0, c.num_steps)
    values, lhs = ch.corrupt(c, step, rng=rng, consistent=consistent)
    return step, values, lhs


@pytest.mark.parametrize("consistent", [True, False])
def test_reference_labels_equal_gold_on_corruptions(consistent):
    c = _chains(200, 0)
    step, values, lhs = _corrupted(c, 1, consistent)
    for rule in ch.LABEL_RULES:
        out = sl.reference_labels(c, values, lhs, rule=rule)
        gold, mask = ch.step_labels(c, values, lhs, rule=rule)
        np.testing.assert_array_equal(out.labels, gold)
        np.testing.assert_array_equal(out.mask, mask)
        np.testing.assert_array_equal(out.soft, gold.astype(np.float32))
    out = sl.reference_labels(c, values, lhs)
    np.testing.assert_array_equal(ch.first_error(c, values, lhs), step)
    # first_error: 1 before the corrupted step, 0 at it, nothing after
    np.testing.assert_array_equal(out.mask.sum(1), step + 1)
    np.testing.assert_array_equal(out.labels.sum(1), step)
    np.testing.assert_array_equal(out.cost_steps, c.num_steps)
    np.testing.assert_array_equal(out.cost_tokens, 6 * c.num_steps)


def test_reference_labels_equal_gold_on_random_candidates():
    c = _chains(300, 2)
    rng = np.random.default_rng(3)
    gold = ch.reference_values(c)
    # mostly gold steps with random slips in results and left operands
    values = np.where(rng.random(gold.shape) < 0.2, rng.integers(0, 10, gold.shape), gold)
    lhs = ch.consistent_lhs(c, values)
    lhs = np.where(rng.random(gold.shape) < 0.1, rng.integers(0, 10, gold.shape), lhs)
    lhs, values = np.where(c.valid(), lhs, 0), np.where(c.valid(), values, 0)
    for rule in ch.LABEL_RULES:
        for lh in (lhs, None):
            out = sl.reference_labels(c, values, lh, rule=rule)
            want, mask = ch.step_labels(c, values, lh, rule=rule)
            np.testing.assert_array_equal(out.labels, want)
            np.testing.assert_array_equal(out.mask, mask)
    ok = sl.reference_labels(c, gold)
    np.testing.assert_array_equal(ok.labels, c.valid().astype(np.int32))


def test_value_alignment_marks_a_wrong_step_that_hits_a_reference_value():
    # 3 + 4 * 2 (mod 10): reference 7, 4; the candidate writes 4 at step 1 (wrong), then 8
    c = ch.Chains(np.array([3]), np.array([[0, 2]]), np.array([[4, 2]]), np.array([2]), 10)
    values = np.array([[4, 8]])
    step = sl.reference_labels(c, values, rule="local")
    value = sl.reference_labels(c, values, rule="local", alignment="value")
    np.testing.assert_array_equal(step.labels, [[0, 1]])  # 4 * 2 = 8 is right from its own 4
    np.testing.assert_array_equal(value.labels, [[1, 0]])  # 4 is a reference value; 8 is not
    np.testing.assert_array_equal(sl.reference_labels(c, values).labels, [[0, 0]])
    np.testing.assert_array_equal(sl.reference_labels(c, values).mask, [[1, 0]])
    with pytest.raises(ValueError, match="alignment must be one of"):
        sl.reference_labels(c, values, alignment="text")
    with pytest.raises(ValueError, match="rule must be one of"):
        sl.reference_labels(c, values, rule="last")


def test_rollout_labels_with_a_perfect_completer_equal_gold():
    # prime modulus: every op is a bijection, so every corruption changes the answer
    c = _chains(200, 4, modulus=7)
    step, values, lhs = _corrupted(c, 5)
    assert (ch.outcome_labels(c, values) == 0).all()
    out = sl.rollout_labels(c, values, lhs, complete=sl.noisy_completer(1.0), num_rollouts=3,
                            rng=np.random.default_rng(0))
    prefix, _ = ch.step_labels(c, values, lhs, rule="prefix")
    np.testing.assert_array_equal(out.labels, prefix)
    np.testing.assert_array_equal(out.mask, c.valid().astype(np.int32))
    np.testing.assert_array_equal(out.soft, prefix.astype(np.float32))
    fe, fe_mask = ch.step_labels(c, values, lhs)
    on = fe_mask.astype(bool)
    np.testing.assert_array_equal(out.labels[on], fe[on])
    # the inconsistent corruption: gold again on the first_error mask
    _, values, lhs = _corrupted(c, 6, consistent=False)
    out = sl.rollout_labels(c, values, lhs, complete=sl.noisy_completer(1.0), num_rollouts=1,
                            rng=np.random.default_rng(0))
    fe, fe_mask = ch.step_labels(c, values, lhs)
    on = fe_mask.astype(bool)
    np.testing.assert_array_equal(out.labels[on], fe[on])


def test_rollout_costs_and_batches_by_hand():
    c = ch.Chains(np.array([1, 2]), np.array([[0, 1, 2], [2, 0, 0]]),
                  np.array([[3, 1, 2], [3, 0, 0]]), np.array([3, 1]), 10)
    gold = ch.reference_values(c)
    calls = []

    def complete(prefixes, rng):
        calls.append(np.asarray(prefixes.length).copy())
        return sl.noisy_completer(1.0)(prefixes, rng)

    out = sl.rollout_labels(c, gold, complete=complete, num_rollouts=2,
                            rng=np.random.default_rng(0))
    # k = 3, M = 2: prefixes of 1 and 2 steps, rolled out 2 steps and 1 step, twice each
    np.testing.assert_array_equal(out.cost_steps, [2 * (2 + 1), 0])
    np.testing.assert_array_equal(out.cost_tokens, [6 * 6 + 3 * 2 * 2, 0])
    np.testing.assert_array_equal(np.concatenate(calls), [1, 1, 2, 2])
    np.testing.assert_array_equal(out.labels, [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(out.mask, [[1, 1, 1], [1, 0, 0]])
    calls.clear()
    again = sl.rollout_labels(c, gold, complete=complete, num_rollouts=2,
                              rng=np.random.default_rng(0), batch_size=3)
    assert [len(x) for x in calls] == [3, 1]
    np.testing.assert_array_equal(again.soft, out.soft)
    with pytest.raises(ValueError, match="num_rollouts must be >= 1"):
        sl.rollout_labels(c, gold, complete=complete, num_rollouts=0,
                          rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="complete must return"):
        sl.rollout_labels(c, gold, complete=lambda p, r: np.zeros(1), num_rollouts=2,
                          rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="step_accuracy must be in"):
        sl.noisy_completer(1.5)


def _reach_gold(steps, start_right, q, p):
    """P(a completion of `steps` steps ends at the gold value), by the two-state chain
    right -> right w.p. q; wrong -> right w.p. (1 - q) / (p - 1) (bijective ops, p prime)."""
    t = np.array([[q, 1 - q], [(1 - q) / (p - 1), 1 - (1 - q) / (p - 1)]])
    out = np.empty(len(steps))
    for i, (r, s) in enumerate(zip(steps, start_right)):
        out[i] = np.linalg.matrix_power(t, int(r))[0 if s else 1, 0]
    return out


def test_rollout_labels_with_a_noisy_completer_agree_at_the_predicted_rate():
    p, q, m = 7, 0.7, 4
    c = _chains(1500, 7, steps=(2, 5), modulus=p)
    step, values, lhs = _corrupted(c, 8)
    out = sl.rollout_labels(c, values, lhs, complete=sl.noisy_completer(q), num_rollouts=m,
                            rng=np.random.default_rng(9))
    fe, mask = ch.step_labels(c, values, lhs)
    rows, cols = np.nonzero(mask)
    right = cols < step[rows]  # gold prefix (label 1) vs the corrupted step (label 0)
    reach = _reach_gold(c.num_steps[rows] - 1 - cols, right, q, p)
    hit = 1 - (1 - reach) ** m  # P(hard label = 1)
    agree_p = np.where(right, hit, 1 - hit)
    agree = (out.labels[rows, cols] == fe[rows, cols]).mean()
    std = np.sqrt((agree_p * (1 - agree_p)).sum()) / len(rows)
    assert abs(agree - agree_p.mean()) < 4 * std, (agree, agree_p.mean(), std)
    assert 0.6 < agree < 0.99  # noisy, not gold and not chance
    soft = out.soft[rows, cols]
    std = np.sqrt((reach * (1 - reach) / m).sum()) / len(rows)
    assert abs(soft.mean() - reach.mean()) < 4 * std, (soft.mean(), reach.mean(), std)
    # padding: nothing labelled, nothing scored
    pad = ~c.valid()
    assert (out.labels[pad] == 0).all() and (out.mask[pad] == 0).all()
    assert (out.soft[pad] == 0).all()
    assert out.labels.shape == out.soft.shape == c.ops.shape


def _oracle_lm(params, tokens, mask):
    """A "perfect" policy: logits of the right result after each "x op b =" (read three tokens
    back), scaled by params (a large scale: greedy-like sampling)."""
    import jax
    import jax.numpy as jnp

    from alignax.tasks import arithmetic as ar

    del mask
    x = tokens - ch.DIGIT0
    op = jnp.argmax(tokens[..., None] == jnp.asarray(ch.OP_TOKENS), -1)
    right = ch.apply_ops(jnp.roll(x, 3, axis=1), jnp.roll(op, 2, axis=1),
                         jnp.roll(x, 1, axis=1), 10)
    return params * jax.nn.one_hot(ch.DIGIT0 + right, ar.VOCAB_SIZE)


def test_policy_completer_with_a_perfect_policy_is_the_perfect_completer():
    c = _chains(60, 7, steps=(2, 6))
    _, values, lhs = _corrupted(c, 8)
    complete = sl.make_policy_completer(_oracle_lm, chunk_size=16)(50.0)
    rng = np.random.default_rng(0)
    length = rng.integers(1, c.num_steps).astype(np.int32)
    pre = sl.Prefixes(c, values, lhs, length)
    ans = complete(pre, np.random.default_rng(1))
    assert ans.shape == (60,) and ans.dtype == np.int32
    # the gold continuation from y_L: the noisy completer with q = 1
    np.testing.assert_array_equal(ans, sl.noisy_completer(1.0)(pre, np.random.default_rng(2)))
    on_path = (values == ch.reference_values(c))[np.arange(60), length - 1]
    np.testing.assert_array_equal(ans[on_path], ch.answers(c)[on_path])
    # rollout labels from the perfect policy equal the perfect completer's, costs included
    a = sl.rollout_labels(c, values, lhs, complete=complete, num_rollouts=2,
                          rng=np.random.default_rng(3))
    b = sl.rollout_labels(c, values, lhs, complete=sl.noisy_completer(1.0), num_rollouts=2,
                          rng=np.random.default_rng(3))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_policy_completer_is_deterministic_in_rng_and_samples():
    c = _chains(40, 9, steps=(3, 5))
    gold = ch.reference_values(c)
    pre = sl.Prefixes(c, gold, ch.consistent_lhs(c, gold), np.ones(40, np.int32))
    complete = sl.make_policy_completer(_oracle_lm, chunk_size=32)(0.0)  # flat: uniform
    one = complete(pre, np.random.default_rng(5))
    np.testing.assert_array_equal(one, complete(pre, np.random.default_rng(5)))
    assert not np.array_equal(one, complete(pre, np.random.default_rng(6)))
    assert len(np.unique(one)) > 5 and ((one >= 0) & (one < 10)).all()
    with pytest.raises(ValueError, match="prefixes.length"):
        complete(sl.Prefixes(c, gold, gold, np.full(40, 9, np.int32)), np.random.default_rng(0))


def test_completion_cost_sums_to_the_rollout_cost():
    c = _chains(30, 11, steps=(1, 6))
    gold = ch.reference_values(c)
    m, seen = 3, []

    def complete(pre, rng):
        seen.append(sl.completion_cost(pre))
        return sl.noisy_completer(1.0)(pre, rng)

    out = sl.rollout_labels(c, gold, complete=complete, num_rollouts=m,
                            rng=np.random.default_rng(0))
    steps, tokens = (np.concatenate(x) for x in zip(*seen))
    assert steps.sum() == out.cost_steps.sum() and tokens.sum() == out.cost_tokens.sum()
    k = c.num_steps.astype(np.int64)
    assert out.cost_steps.sum() == (m * k * (k - 1) // 2).sum()
