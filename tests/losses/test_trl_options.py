"""TRL DPOConfig options as pure functions: f-divergence scores, LD-DPO log-probs, WPO weights
and length-normalised IPO, against the published formulas written out in numpy."""

import numpy as np
import pytest

from alignax.losses import (f_divergence_scores, ipo_loss, ipo_norm_loss,
                            length_desensitized_logps, wpo_weights)

U = np.array([-3.0, -0.5, 0.0, 0.7, 2.5], np.float32)


@pytest.mark.parametrize("name,alpha,expected", [
    ("reverse_kl", 1.0, U),
    ("forward_kl", 1.0, 1 - 1 / np.exp(U)),                 # f'(t) = 1 - 1/t
    ("js_divergence", 1.0, np.log(2 * np.exp(U) / (np.exp(U) + 1))),  # log(2t / (t + 1))
    ("alpha_divergence", 0.5, (np.exp(U) ** -0.5 - 1) / -0.5),       # (t^(a-1) - 1)/(a-1)
    ("alpha_divergence", 1.0, U),                           # the reverse-KL limit
])
def test_f_divergence_scores_are_f_prime_of_the_ratio(name, alpha, expected):
    np.testing.assert_allclose(f_divergence_scores(U, name, alpha=alpha), expected, rtol=1e-5,
                               atol=1e-6)


def test_f_divergence_alpha_is_clipped_and_unknown_names_fail():
    big = f_divergence_scores(np.array([200.0]), "alpha_divergence", alpha=2.0)
    assert np.isfinite(big).all() and float(big[0]) == pytest.approx(np.expm1(80.0), rel=1e-5)
    with pytest.raises(ValueError, match="f-divergence"):
        f_divergence_scores(U, "hellinger")


def test_length_desensitized_logps_weights_the_longer_responses_excess():
    tl = np.arange(1, 13, dtype=np.float32).reshape(4, 3) * -0.1  # rows: c0, c1, r0, r1
    mask = np.array([[1, 1, 1], [0, 1, 0], [1, 0, 0], [1, 1, 1]], np.float32)
    alpha = 0.25
    # pair 0: chosen 3 tokens, rejected 1 -> shared 1; pair 1: chosen 1, rejected 3 -> shared 1
    expected = []
    for row, (m, shared) in enumerate(zip(mask, [1, 1, 1, 1])):
        seen, total = 0, 0.0
        for t in range(3):
            if m[t]:
                seen += 1
                total += tl[row, t] * (1.0 if seen <= shared else alpha)
        expected.append(total)
    np.testing.assert_allclose(length_desensitized_logps(tl, mask, alpha), expected, rtol=1e-6)
    np.testing.assert_allclose(length_desensitized_logps(tl, mask, 1.0), (tl * mask).sum(-1),
                               rtol=1e-6)


def test_wpo_weights_are_products_of_normalised_geometric_means():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 5, 7)).astype(np.float32)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = rng.integers(0, 7, (4, 5))
    tl = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    lss = np.log((np.exp(logp) ** 2).sum(-1))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0], [1, 0, 0, 0, 0]],
                    np.float32)
    per_row = np.exp(((tl - lss) * mask).sum(-1) / mask.sum(-1))
    np.testing.assert_allclose(wpo_weights(tl, lss, mask), per_row[:2] * per_row[2:], rtol=1e-5)


def test_ipo_norm_is_ipo_on_token_averaged_log_ratios():
    pc, pr, rc, rr = (np.array(v, np.float32) for v in ([-4.0, -9.0], [-6.0, -3.0],
                                                          [-5.0, -8.0], [-5.5, -4.0]))
    lc, lr = np.array([4, 9]), np.array([3, 2])
    got, _ = ipo_norm_loss(pc, pr, rc, rr, chosen_lengths=lc, rejected_lengths=lr, beta=0.5)
    want, _ = ipo_loss(pc / lc, pr / lr, rc / lc, rr / lr, beta=0.5)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_bradley_terry_center_coef_adds_the_squared_reward_sum():
    from alignax.losses import bradley_terry_loss

    rc, rr = np.array([1.5, -0.2], np.float32), np.array([0.5, 0.4], np.float32)
    plain = bradley_terry_loss(rc, rr)
    np.testing.assert_allclose(bradley_terry_loss(rc, rr, center_coef=0.01),
                               plain + 0.01 * (rc + rr) ** 2, rtol=1e-6)
    np.testing.assert_allclose(plain, -np.log(1 / (1 + np.exp(-(rc - rr)))), rtol=1e-6)
