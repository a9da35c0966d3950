"""SegmentInteractionReward: a gold that is not additive over tokens (alignax.tasks.path_gold)."""

import numpy as np
import pytest

from alignax.tasks.path_gold import SegmentInteractionReward


def _gold(**kw):
    return SegmentInteractionReward(**{"vocab_size": 12, "response_len": 6, "num_segments": 3,
                                       "dim": 3, "seed": 1, "num_special": 2, **kw})


def test_reward_equals_the_bilinear_form_of_segment_means():
    gold = _gold()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 12, (5, 6))
    emb, inter = gold.params()
    u = emb[y].reshape(5, 3, 2, 3).mean(2)
    want = np.mean([np.einsum("na,ab,nb->n", u[:, k - 1], inter, u[:, k]) for k in (1, 2)],
                   axis=0)
    np.testing.assert_allclose(gold(y), want, rtol=1e-5, atol=1e-6)
    assert gold(y).dtype == np.float32 and gold(y[None]).shape == (1, 5)
    # special ids have no embedding; the same seed gives the same world, another seed another
    np.testing.assert_array_equal(emb[:2], 0.0)
    np.testing.assert_array_equal(_gold().params()[1], inter)
    assert not np.allclose(_gold(seed=2).params()[1], inter)
    np.testing.assert_allclose(_gold(scale=3.0)(y), 3.0 * gold(y), rtol=1e-5)


def test_a_segment_is_credited_by_its_context_not_additively():
    gold = _gold(num_segments=2, response_len=4)
    rng = np.random.default_rng(3)
    # additive rewards satisfy r(a1 b1) + r(a2 b2) = r(a1 b2) + r(a2 b1) for segments a, b
    gaps = []
    for _ in range(20):
        a1, a2, b1, b2 = rng.integers(2, 12, (4, 2))
        r = gold(np.stack([np.r_[a1, b1], np.r_[a2, b2], np.r_[a1, b2], np.r_[a2, b1]]))
        gaps.append(abs(r[0] + r[1] - r[2] - r[3]))
    assert np.max(gaps) > 0.1
    # the order of tokens inside a segment does not matter (segment means)
    y = np.array([[2, 3, 4, 5]])
    np.testing.assert_allclose(gold(y), gold(np.array([[3, 2, 5, 4]])), rtol=1e-6)


def test_features_are_a_well_specified_linear_model_of_the_reward():
    gold = _gold()
    y = np.random.default_rng(1).integers(0, 12, (7, 6))
    phi = gold.features(y)
    assert phi.shape == (7, 144)
    np.testing.assert_allclose(phi @ gold.pair_weights(), gold(y), rtol=1e-4, atol=1e-5)
    # each of the K - 1 = 2 terms is a product of two frequency vectors summing to 1
    np.testing.assert_allclose(phi.sum(-1), 1.0)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="multiple of num_segments"):
        _gold(response_len=7)
    with pytest.raises(ValueError, match="num_segments must be >= 2"):
        _gold(num_segments=1, response_len=6)
    with pytest.raises(ValueError, match="expected 6"):
        _gold()(np.zeros((2, 5), np.int64))
