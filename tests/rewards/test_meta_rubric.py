"""MPO's evolving rubric: audit selection, meta-analysis, refinement, merging, the meta step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.rewards import meta_rubric as mr
from alignax.rewards.rubrics import Rubric, rubric_score


def _audit(seed=0, a=16, f=4):
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(a, f)).astype(np.float32)
    w = rng.normal(size=f).astype(np.float32)
    gold = (phi @ rng.normal(size=f) + 0.3).astype(np.float32)
    return phi, w, gold


def test_linear_rubric_scores_the_weighted_items():
    rubric = mr.linear_rubric(jnp.array([1.0, -2.0, 0.5]))
    phi = jnp.array([[1.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    np.testing.assert_allclose(rubric_score(phi, rubric, gate_penalty=10.0), [0.0, 3.0])
    np.testing.assert_array_equal(rubric.hard_rules, 0.0)
    with pytest.raises(AssertionError, match="weights must be"):
        mr.linear_rubric(jnp.ones((2, 3)))


def test_audit_indices_are_the_top_scored_ties_lower_index_first():
    idx = jax.jit(mr.audit_indices, static_argnums=1)(jnp.array([0.1, 3.0, 2.0, 3.0, -1.0]), 3)
    np.testing.assert_array_equal(idx, [1, 3, 2])
    assert idx.dtype == jnp.int32
    with pytest.raises(ValueError, match="num_audits must be in"):
        mr.audit_indices(jnp.zeros(4), 5)
    with pytest.raises(ValueError, match="num_audits must be in"):
        mr.audit_indices(jnp.zeros(4), 0)


def test_meta_analysis_by_hand_and_numpy():
    # items: keyword count and repeats; the rubric ignores repeats, the gold penalises them
    phi = jnp.array([[1.0, 0.0], [2.0, 1.0], [3.0, 2.0]])
    r = phi @ jnp.array([1.0, 0.0])  # 1, 2, 3
    g = phi @ jnp.array([1.0, -1.5])  # 1, 0.5, 0
    # residual e = g - r = (0, -1.5, -3), centred (1.5, 0, -1.5); items centred (-1, 0, 1)
    np.testing.assert_allclose(mr.meta_analysis(phi, r, g), [-1.0, -1.0], rtol=1e-6)
    phi, w, gold = _audit(1)
    r = phi @ w
    e = gold - r
    ref = ((phi - phi.mean(0)) * (e - e.mean())[:, None]).mean(0)
    np.testing.assert_allclose(jax.jit(mr.meta_analysis)(phi, r, gold), ref, rtol=1e-5,
                               atol=1e-6)


def test_least_squares_refinement_matches_the_ridge_closed_form():
    phi, w, gold = _audit(2)
    r = phi @ w
    lam = 0.7
    out = jax.jit(mr.refine_weights, static_argnames=("method", "ridge"))(
        phi, r, gold, w, method="least_squares", ridge=lam)
    # the minimiser of sum (g - b - phi v)^2 + lam |v - w|^2 over (v, b), by an augmented
    # least-squares problem in float64
    a = np.concatenate([np.concatenate([phi, np.ones((len(phi), 1))], 1),
                        np.concatenate([np.sqrt(lam) * np.eye(4), np.zeros((4, 1))], 1)])
    y = np.concatenate([gold, np.sqrt(lam) * w]).astype(np.float64)
    sol = np.linalg.lstsq(a.astype(np.float64), y, rcond=None)[0]
    np.testing.assert_allclose(out, sol[:4], rtol=1e-4, atol=1e-5)


def test_least_squares_recovers_a_linear_gold_and_keeps_the_gate_part():
    phi, w, _ = _audit(3, a=64)
    w_gold = np.array([1.0, -1.5, 0.5, 0.0], np.float32)
    gold = phi @ w_gold + 2.0  # an offset is free
    out = mr.refine_weights(phi, phi @ w, gold, w, ridge=1e-4)
    np.testing.assert_allclose(out, w_gold, atol=1e-3)
    # a score part outside the weighted items (the hard rules' gate) is not refitted
    gate = np.where(phi[:, 0] > 0, 0.0, -10.0).astype(np.float32)
    out = mr.refine_weights(phi, phi @ w + gate, gold + gate, w, ridge=1e-4)
    np.testing.assert_allclose(out, w_gold, atol=1e-3)


def test_collinear_items_share_the_correction_near_the_old_weights():
    # on the audited samples repeats = count - 1: the audit cannot separate the two items
    count = np.array([2.0, 3.0, 4.0, 5.0], np.float32)
    phi = np.stack([count, count - 1], 1)
    w = np.array([1.0, 0.0], np.float32)
    gold = phi @ np.array([1.0, -1.5], np.float32)
    out = np.asarray(mr.refine_weights(phi, phi @ w, gold, w, ridge=1e-4))
    # slope of the gold along the audited samples: 1 - 1.5 = -0.5, split as the minimum-norm
    # change from w: (1 - 0.75, -0.75)
    np.testing.assert_allclose(out, [0.25, -0.75], atol=1e-3)
    assert out[1] < 0  # the repeats item is added with a penalty


def test_step_refinement_is_one_gradient_step():
    phi, w, gold = _audit(4)
    r = phi @ w
    out = mr.refine_weights(phi, r, gold, w, method="step", step_size=0.3)
    np.testing.assert_allclose(out, w + 0.3 * np.asarray(mr.meta_analysis(phi, r, gold)),
                               rtol=1e-6)

    def half_msr(v):
        e = gold - phi @ v
        return 0.5 * jnp.mean(jnp.square(e - e.mean()))
    np.testing.assert_allclose(out, w - 0.3 * np.asarray(jax.grad(half_msr)(jnp.asarray(w))),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="method must be one of"):
        mr.refine_weights(phi, r, gold, w, method="lbfgs")
    with pytest.raises(ValueError, match="ridge must be > 0"):
        mr.refine_weights(phi, r, gold, w, ridge=0.0)


def test_merge_is_averaging():
    old, new = jnp.array([1.0, 0.0, 2.0]), jnp.array([0.0, -1.0, 2.0])
    np.testing.assert_allclose(mr.merge_weights(old, new), [0.5, -0.5, 2.0])
    np.testing.assert_allclose(mr.merge_weights(old, new, mix=0.0), old)
    np.testing.assert_allclose(mr.merge_weights(old, new, mix=1.0), new)
    with pytest.raises(ValueError, match="mix"):
        mr.merge_weights(old, new, mix=1.5)


def test_meta_step_tightens_the_exploited_item_and_keeps_hard_rules():
    rng = np.random.default_rng(5)
    count = rng.integers(1, 6, 16).astype(np.float32)
    phi = np.stack([count, count - 1, rng.uniform(size=16).astype(np.float32)], 1)
    gold = phi @ np.array([1.0, -1.5, 0.5], np.float32)
    rubric = Rubric(jnp.array([0.0, 0.0, 1.0]), jnp.array([1.0, 0.0, 0.5]))
    step = jax.jit(mr.meta_step, static_argnames=("method", "ridge", "mix", "gate_penalty"))
    out = step(rubric, phi, gold, ridge=1.0, mix=0.5, gate_penalty=0.0)
    np.testing.assert_array_equal(out.rubric.hard_rules, rubric.hard_rules)
    refined = mr.refine_weights(phi, rubric_score(phi, rubric, gate_penalty=0.0), gold,
                                rubric.principle_weights, ridge=1.0)
    np.testing.assert_allclose(out.rubric.principle_weights,
                               0.5 * (rubric.principle_weights + refined), rtol=1e-5)
    assert out.analysis[0] < 0 and out.analysis[1] < 0  # more keyword: over-scored
    assert out.rubric.principle_weights[1] < 0  # a penalty on repeats is added
    assert float(out.residual_after) < float(out.residual_before)
    # repeated meta steps on the same audit converge toward the audit's scores
    r = rubric
    for _ in range(10):
        r = step(r, phi, gold, ridge=1.0, mix=0.5, gate_penalty=0.0).rubric
    final = step(r, phi, gold, ridge=1.0, mix=0.5, gate_penalty=0.0)
    assert float(final.residual_before) < 1e-2 * float(out.residual_before)


def test_meta_step_vmaps_over_runs():
    phi = np.stack([_audit(s)[0] for s in range(3)])
    gold = np.stack([_audit(s)[2] for s in range(3)])
    w = np.stack([_audit(s)[1] for s in range(3)])

    def one(p, g, v):
        return mr.meta_step(mr.linear_rubric(v), p, g, gate_penalty=0.0).rubric.principle_weights
    batched = jax.jit(jax.vmap(one))(phi, gold, w)
    for i in range(3):
        np.testing.assert_allclose(batched[i], one(phi[i], gold[i], w[i]), rtol=1e-5,
                                   atol=1e-6)
