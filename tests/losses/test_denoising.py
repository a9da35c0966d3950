"""Secrets of RLHF II denoising pieces and the reward-augmented data transform."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.data import PreferenceRecord
from alignax.data.transforms import reward_augmented_pairs
from alignax.losses import bradley_terry_loss, flip_by_strength, preference_strength


def test_preference_strength_and_flips():
    margins = jnp.array([[1.0, -2.0, 0.1], [3.0, -1.0, -0.1]])
    mean, _ = preference_strength(margins)  # values checked in TestGoldenValues
    ids_c = jnp.array([[1, 1], [2, 2], [3, 3]])
    ids_r = jnp.array([[4, 4], [5, 5], [6, 6]])
    c, r, s, flipped = flip_by_strength(ids_c, ids_r, mean)
    np.testing.assert_array_equal(flipped, [False, True, False])
    np.testing.assert_array_equal(c, [[1, 1], [5, 5], [3, 3]])
    np.testing.assert_array_equal(r, [[4, 4], [2, 2], [6, 6]])
    np.testing.assert_allclose(s, [2.0, 1.5, 0.0])


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_preference_strength_golden(self):
        margins = jnp.array([[1.0, -2.0, 0.1], [3.0, -1.0, -0.1]])
        mean, std = self.variant(preference_strength)(margins)
        chex.assert_trees_all_close(mean, np.array([2.0, -1.5, 0.0]), rtol=1e-7, atol=1e-7)
        chex.assert_trees_all_close(std, np.array([1.0, 0.5, 0.1]), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_per_example_smoothing_and_adaptive_margin(self):
        c, r = jnp.array([1.0, 0.5]), jnp.array([0.0, 0.4])
        eps = jnp.array([0.0, 0.3])  # smooth only the ambiguous pair
        out = self.variant(bradley_terry_loss)(c, r, margin=jnp.array([0.2, 0.0]),
                                               label_smoothing=eps)
        sp = lambda x: np.log1p(np.exp(-x))  # noqa: E731  -log sigmoid(x)
        chex.assert_trees_all_close(out, np.array([sp(0.8), 0.7 * sp(0.1) + 0.3 * sp(-0.1)]),
                                    rtol=1e-6)


def test_reward_augmented_pairs():
    recs = [PreferenceRecord("q?", "good", "bad", {"id": 1})]
    out = reward_augmented_pairs(recs, [8.0], [3.5])
    assert [(o.prompt, o.chosen, o.rejected) for o in out] == [
        ("<target score: 8>\nq?", "good", "bad"), ("<target score: 3.5>\nq?", "bad", "good")]
    assert out[1].extras == {"id": 1, "target_score": 3.5}
    with pytest.raises(ValueError, match="differ in length"):
        reward_augmented_pairs(recs, [1.0, 2.0], [1.0])
