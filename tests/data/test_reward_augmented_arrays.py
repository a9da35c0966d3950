import numpy as np
import pytest

from alignax.data.transforms import reward_augmented_arrays, score_conditioned_features


def test_reward_augmented_arrays_doubles_and_swaps():
    pairs = {"prompt": np.array([10, 11, 12]), "chosen": np.array([1, 2, 3]),
             "rejected": np.array([4, 5, 6]), "z": np.arange(6.0).reshape(3, 2)}
    out = reward_augmented_arrays(pairs, [9.0, 8.0, 7.0], [6.0, 8.0, 1.0])
    np.testing.assert_array_equal(out["chosen"], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(out["rejected"], [4, 5, 6, 1, 2, 3])
    np.testing.assert_array_equal(out["prompt"], [10, 11, 12, 10, 11, 12])
    np.testing.assert_array_equal(out["z"], np.concatenate([pairs["z"], pairs["z"]]))
    # (x + g(s_w), y_w > y_l) then (x + g(s_l), y_l > y_w)
    np.testing.assert_array_equal(out["target_score"], [9, 8, 7, 6, 8, 1])
    # the inputs are left alone
    np.testing.assert_array_equal(pairs["chosen"], [1, 2, 3])


def test_reward_augmented_arrays_custom_keys_and_errors():
    pairs = {"w": np.array([1]), "l": np.array([2])}
    out = reward_augmented_arrays(pairs, [3.0], [1.0], chosen_key="w", rejected_key="l")
    np.testing.assert_array_equal(out["w"], [1, 2])
    np.testing.assert_array_equal(out["l"], [2, 1])
    with pytest.raises(ValueError, match="no 'chosen'"):
        reward_augmented_arrays(pairs, [3.0], [1.0])
    with pytest.raises(ValueError, match="rows"):
        reward_augmented_arrays({"chosen": np.array([1, 2]), "rejected": np.array([3, 4])},
                                [1.0], [0.0])
    with pytest.raises(ValueError, match=r"\[B\]"):
        reward_augmented_arrays(pairs, [1.0, 2.0], [0.0], chosen_key="w", rejected_key="l")


def test_score_conditioned_features():
    z = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    out = score_conditioned_features(z, np.array([10.0, 0.0]))
    np.testing.assert_allclose(out, [[1, -2, 1, -2, 1], [0.5, 3, -0.5, -3, -1]])
    mid = score_conditioned_features(z, 5.0)  # the middle score: no conditioning signal
    np.testing.assert_allclose(mid, np.concatenate([z, np.zeros((2, 3))], 1))
    assert score_conditioned_features(z, 7.5, low=5.0, high=10.0)[0, -1] == 0.0
    assert out.dtype == np.float32


def test_score_conditioned_features_onehot_and_unconditioned():
    from alignax.data.transforms import score_feature_count

    z = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    out = score_conditioned_features(z, np.array([10.0, 1.2]), high=3.0, encoding="onehot")
    # levels 0..3: 10 clips to 3, 1.2 rounds to 1
    assert out.shape == (2, 2 + 4 * 2 + 4) == (2, score_feature_count(2, high=3.0,
                                                                      encoding="onehot"))
    np.testing.assert_allclose(out[0], [1, -2, 0, 0, 0, 0, 0, 0, 1, -2, 0, 0, 0, 1])
    np.testing.assert_allclose(out[1], [0.5, 3, 0, 0, 0.5, 3, 0, 0, 0, 0, 0, 1, 0, 0])
    for enc in ("scalar", "onehot"):
        none = score_conditioned_features(z, None, encoding=enc)
        assert none.shape[-1] == score_feature_count(2, encoding=enc)
        np.testing.assert_allclose(none[:, :2], z)
        assert not none[:, 2:].any()
    with pytest.raises(ValueError, match="encoding"):
        score_conditioned_features(z, 1.0, encoding="bits")
