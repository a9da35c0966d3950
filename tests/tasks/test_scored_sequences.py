import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models import sequence_table as st
from alignax.tasks.scored_sequences import (ScoredSequenceWorld, best_vs_lower_pairs,
                                            judge_scores)


def _world(**kw):
    return ScoredSequenceWorld(st.SequenceSpace(3, 4), dim=5, seed=7, **kw)


def test_gold_spans_zero_to_ten_per_prompt_and_is_additive():
    world = _world()
    z = world.prompts(6, seed=1)
    gold = world.gold(z)
    assert gold.shape == (6, 81)
    np.testing.assert_allclose(gold.min(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(gold.max(1), 10.0, atol=1e-4)
    # additive: the best response takes each position's best token
    u = world.token_utilities(z)
    best = world.space.index(u.argmax(-1))
    np.testing.assert_array_equal(gold.argmax(1), best)
    # the same world gives the same gold; another seed another one
    np.testing.assert_array_equal(world.gold(z), gold)
    other = ScoredSequenceWorld(world.space, dim=5, seed=8).gold(z)
    assert not np.allclose(other, gold)


def test_prompts_depend_on_the_data_seed_only():
    world = _world()
    np.testing.assert_array_equal(world.prompts(4, 3), world.prompts(4, 3))
    assert not np.allclose(world.prompts(4, 3), world.prompts(4, 4))
    assert world.prompts(4, 3).dtype == np.float32


def test_reference_is_token_independent_and_ignores_extra_features():
    world = _world(kappa=2.0, ref_noise=0.0)
    z = world.prompts(3, 0)
    ref = world.reference_params(extra_features=2)
    assert ref["weight"].shape == (world.space.num_nodes, 7, 3)
    feats = np.concatenate([z, np.ones((3, 2), np.float32)], 1)
    feats0 = np.concatenate([z, np.zeros((3, 2), np.float32)], 1)
    lp = np.asarray(st.sequence_log_probs(world.space, ref, jnp.asarray(feats)))
    lp0 = np.asarray(st.sequence_log_probs(world.space, ref, jnp.asarray(feats0)))
    np.testing.assert_allclose(lp, lp0, atol=1e-5)
    # without noise: log pi(y) = kappa * S(x, y) - const, so it is affine in the gold
    gold = world.gold(z)
    for p in range(3):
        slope = np.polyfit(gold[p], lp[p], 1)
        np.testing.assert_allclose(np.polyval(slope, gold[p]), lp[p], atol=1e-3)
        assert slope[0] > 0
    # a larger kappa gives a better reference
    def mean_gold(kappa):
        w = _world(kappa=kappa)
        lp = st.sequence_log_probs(w.space, w.reference_params(), jnp.asarray(z))
        return float((np.exp(np.asarray(lp)) * gold).sum(1).mean())
    assert mean_gold(3.0) > mean_gold(1.0) > mean_gold(0.0)
    np.testing.assert_allclose(mean_gold(0.0), gold.mean(1).mean(), rtol=1e-5)


def test_judge_scores_are_clipped_integers_and_exact_without_noise():
    rng = np.random.default_rng(0)
    gold = np.array([0.2, 4.6, 9.9, 5.5])
    np.testing.assert_array_equal(judge_scores(gold, 0.0, rng), [0, 5, 10, 6])
    noisy = judge_scores(np.full(2000, 9.5), 3.0, rng)
    assert noisy.max() == 10 and noisy.min() >= 0
    np.testing.assert_array_equal(noisy, np.rint(noisy))


def test_best_vs_lower_pairs():
    scores = np.array([[3, 7, 7, 1], [5, 5, 5, 5], [2, 9, 4, 4]], np.float32)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        keep, c, r = best_vs_lower_pairs(scores, rng)
        np.testing.assert_array_equal(keep, [True, False, True])
        assert c[0] == 1 and c[2] == 1  # the first of the best
        assert r[0] in (0, 3) and r[2] in (0, 2, 3)
        assert scores[0, r[0]] < scores[0, c[0]]
        seen.add(int(r[0]))
    assert seen == {0, 3}  # a random lower one, not always the same


if __name__ == "__main__":
    pytest.main([__file__])
