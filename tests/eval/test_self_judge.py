"""alignax.eval.self_judge: step scores from token log-probs, solution scores, first-error
prediction, ProcessBench accuracies and F1, threshold choice and judge precision, against hand
computations and naive NumPy references; masks, jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.eval import self_judge as sj


def test_step_ids_from_spans_by_hand():
    start = jnp.array([[1, 4, -1], [0, 2, 3]])
    end = jnp.array([[4, 6, -1], [2, 3, 5]])
    ids = sj.step_ids_from_spans(start, end, 7)
    assert ids.tolist() == [[-1, 0, 0, 0, 1, 1, -1], [0, 0, 1, 2, 2, -1, -1]]


def test_step_scores_by_hand_with_token_mask():
    lp = jnp.array([[-9.0, -1.0, -2.0, -3.0, -0.5, -1.5]])
    ids = jnp.array([[-1, 0, 0, 1, 1, 2]])
    own = jnp.array([[True, True, True, True, False, True]])
    sc = sj.step_scores(lp, ids, own, num_steps=4)
    # step 0: tokens 1, 2 -> sum -3, mean -1.5; step 1: token 3 only (4 masked) -> -3;
    # step 2: token 5 -> -1.5; step 3: no token
    np.testing.assert_allclose(sc.total[0], [-3.0, -3.0, -1.5, 0.0])
    np.testing.assert_allclose(sc.mean[0], [-1.5, -3.0, -1.5, 0.0])
    assert sc.count[0].tolist() == [2, 1, 1, 0] and sc.mask[0].tolist() == [True] * 3 + [False]
    # without a token mask every token in a step counts
    full = sj.step_scores(lp, ids, num_steps=3)
    np.testing.assert_allclose(full.mean[0], [-1.5, -1.75, -1.5])


def test_step_scores_matches_naive_reference_under_jit_and_vmap():
    rng = np.random.default_rng(0)
    lp = -rng.random((3, 4, 12)).astype(np.float32) * 3
    ids = rng.integers(-1, 5, (3, 4, 12))
    mask = rng.random((3, 4, 12)) < 0.8
    fn = jax.jit(jax.vmap(lambda a, b, c: sj.step_scores(a, b, c, num_steps=5)))
    sc = fn(lp, ids, mask)
    for s in range(3):
        for b in range(4):
            for k in range(5):
                sel = (ids[s, b] == k) & mask[s, b]
                total = lp[s, b][sel].sum()
                np.testing.assert_allclose(sc.total[s, b, k], total, rtol=1e-6, atol=1e-6)
                mean = total / sel.sum() if sel.any() else 0.0
                np.testing.assert_allclose(sc.mean[s, b, k], mean, rtol=1e-6, atol=1e-6)
                assert bool(sc.mask[s, b, k]) == bool(sel.any())


def test_solution_scores_min_is_the_weakest_step():
    s = jnp.log(jnp.array([[0.9, 0.2, 0.7], [0.5, 0.4, 0.1]]))
    m = jnp.array([[True, True, True], [True, True, False]])
    np.testing.assert_allclose(sj.solution_scores(s, m), [0.2, 0.4], rtol=1e-6)
    np.testing.assert_allclose(sj.solution_scores(s, m, "product"), [0.9 * 0.2 * 0.7, 0.2],
                               rtol=1e-6)


def test_first_error_by_hand():
    s = jnp.array([[-0.1, -3.0, -0.2, -4.0],   # first below -1: step 1
                   [-0.1, -0.2, -0.3, -5.0],   # step 3 is padding: no error, k = 3
                   [-2.0, -0.1, -0.1, -0.1]])  # step 0
    m = jnp.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]], bool)
    assert sj.first_error(s, m, -1.0).tolist() == [1, 3, 0]
    # tau per row (broadcast over the batch) and a strict inequality at the threshold
    assert sj.first_error(s, m, jnp.array([-3.0, -0.25, -3.0])).tolist() == [3, 2, 4]


def test_processbench_scores_by_hand():
    # k = 3 for all; gold: 3 erroneous (first errors 0, 1, 2) and 2 correct (3)
    gold = jnp.array([0, 1, 2, 3, 3])
    pred = jnp.array([0, 2, 2, 3, 1])
    k = jnp.full(5, 3)
    out = sj.processbench_scores(pred, gold, k)
    acc_err, acc_ok = 2 / 3, 1 / 2
    np.testing.assert_allclose(out["error_accuracy"], acc_err, rtol=1e-6)
    np.testing.assert_allclose(out["correct_accuracy"], acc_ok, rtol=1e-6)
    np.testing.assert_allclose(out["f1"], 2 * acc_err * acc_ok / (acc_err + acc_ok), rtol=1e-6)
    assert float(out["num_erroneous"]) == 3 and float(out["num_correct"]) == 2
    # a mask drops rows; all wrong gives F1 0 (no division by zero)
    masked = sj.processbench_scores(pred, gold, k, jnp.array([1, 0, 1, 1, 0], bool))
    np.testing.assert_allclose(masked["f1"], 1.0)
    zero = sj.processbench_scores(jnp.array([1, 0]), jnp.array([0, 2]), jnp.array([2, 2]))
    assert float(zero["f1"]) == 0.0


def test_threshold_choice_matches_a_naive_grid_search():
    rng = np.random.default_rng(1)
    b, kk = 40, 5
    k = rng.integers(2, kk + 1, b)
    mask = np.arange(kk)[None] < k[:, None]
    gold = np.where(rng.random(b) < 0.5, k, (rng.random(b) * k).astype(int))
    s = -rng.random((b, kk)) * 0.5
    s[np.arange(b), np.minimum(gold, kk - 1)] -= np.where(gold < k, 2.0 + rng.random(b), 0.0)
    cands = np.linspace(-3.0, 0.0, 31).astype(np.float32)

    def naive_f1(tau):
        pred = []
        for i in range(b):
            bad = [j for j in range(k[i]) if s[i, j] < tau]
            pred.append(bad[0] if bad else k[i])
        pred = np.array(pred)
        err, ok = gold < k, gold == k
        a = (pred[err] == gold[err]).mean()
        c = (pred[ok] == k[ok]).mean()
        return 0.0 if a + c == 0 else 2 * a * c / (a + c)

    f1 = np.asarray(jax.jit(sj.threshold_f1)(s, mask, gold, cands))
    np.testing.assert_allclose(f1, [naive_f1(t) for t in cands], rtol=1e-5, atol=1e-6)
    tau, best = sj.choose_threshold(s, mask, gold, cands)
    assert float(best) == pytest.approx(f1.max())
    assert float(tau) == cands[int(np.argmax(f1))]  # ties: the first candidate
    # vmapped over a leading axis (seeds): one threshold per row
    taus, _ = jax.vmap(lambda a: sj.choose_threshold(a, mask, gold, cands))(np.stack([s, s]))
    assert taus.shape == (2,) and float(taus[0]) == float(tau)


def test_judge_precision_recall_by_hand():
    accepted = jnp.array([True, True, True, False, False, True])
    correct = jnp.array([True, False, False, True, False, True])
    out = sj.judge_precision_recall(accepted, correct)
    np.testing.assert_allclose(out["precision"], 2 / 4)
    np.testing.assert_allclose(out["recall"], 2 / 3)
    np.testing.assert_allclose(out["accept_rate"], 4 / 6)
    bucket = jnp.array([False, True, True, True, False, False])
    sub = sj.judge_precision_recall(accepted, correct, bucket)
    np.testing.assert_allclose(sub["precision"], 0.0)   # 2 accepted, both flawed
    np.testing.assert_allclose(sub["recall"], 0.0)
    none = sj.judge_precision_recall(jnp.zeros(3, bool), jnp.ones(3, bool))
    assert float(none["precision"]) == 0.0 and float(none["num_accepted"]) == 0.0
