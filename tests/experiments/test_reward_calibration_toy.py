"""The reward-calibration toy (experiments/reward_calibration.py): task, biased RM, PPO-M RM."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from alignax.experiment import Claim, load_module

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
rc = load_module(os.path.join(REPO, "experiments", "reward_calibration.py"))


def test_get_config_rejects_unknown_argument():
    with pytest.raises(ValueError, match="unknown argument"):
        rc.get_config("tiny")


def test_instances_follow_item_accuracy():
    qa = rc.QA([1.0, 0.5, 0.25])
    items, labels = qa.instances(np.random.default_rng(0), 60_000)
    hit = labels == qa.canonical[items]
    for k, p in enumerate([1.0, 0.5, 0.25]):
        assert abs(hit[items == k].mean() - p) < 0.015
    assert qa.vocab_size <= 32


def test_parse_correctness_and_confidence():
    qa = rc.QA([1.0, 0.5])
    responses = np.array([[qa.answer0 + 1, qa.conf0 + 10],
                          [qa.answer0 + 2, qa.conf0 + 3],
                          [qa.item0, qa.answer0]])          # invalid answer and confidence
    correct, s = qa.parse(responses, np.array([1, 1, 0]))
    np.testing.assert_allclose(correct, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(s, [1.0, 0.3, 0.0], rtol=1e-6)


def test_biased_rm_rewards_confidence_and_calibrated_rm_rewards_it_only_when_right(tmp_path):
    cfg = rc.get_config()
    qa = rc.QA(cfg.item_accuracy)
    pairs = rc._rm_pairs(qa, cfg.rm, seed=0)
    # the bias: chosen responses state more confidence on average
    assert pairs["chosen_s"].mean() > pairs["rejected_s"].mean() + 0.1
    pairs.update(rc._augmented_confidences(cfg.rm, len(pairs["chosen_y"]), seed=0))
    stacked = {k: v[None] for k, v in pairs.items()}  # one seed
    (w,) = rc.fit_reward_models(str(tmp_path / "bt"), stacked, cfg.rm, calibrated=False,
                                seeds=[0])
    (wm,) = rc.fit_reward_models(str(tmp_path / "ppo_m"), stacked, cfg.rm, calibrated=True,
                                 seeds=[0])
    slope = lambda w, y: w[1] + y * w[2]  # noqa: E731  d r / d s for correctness y
    assert w[0] > 0 and slope(w, 0.0) > 0.5 and slope(w, 1.0) > 0.5
    assert wm[0] > 0 and slope(wm, 1.0) > 0.3 and slope(wm, 0.0) < slope(w, 0.0) - 1.0
    r = rc._features(jnp.array([1.0, 1.0]), jnp.array([0.9, 0.1])) @ jnp.asarray(wm)
    assert float(r[0]) > float(r[1])


def _results(ece, acc, conf=0.5, ref_ece=0.05, kl=0.01):
    """Synthetic per-seed results: ece, acc lists over 5 seeds."""
    per_seed = {s: {"test_ece": e, "test_accuracy": a, "test_mean_confidence": conf,
                    "test_ref_ece": ref_ece, "chosen_kl_coef": kl}
                for s, (e, a) in enumerate(zip(ece, acc))}
    return {"per_seed": per_seed}


def test_claims_decide_over_seeds():
    vanilla = _results([0.40, 0.41, 0.39, 0.40, 0.42], [0.62, 0.63, 0.61, 0.62, 0.62], conf=0.99)
    results = {"vanilla": vanilla,
               # ~52% cut on every seed, within a point of vanilla
               "ppo_m": _results([0.19, 0.19, 0.19, 0.19, 0.20], [0.62, 0.62, 0.61, 0.62, 0.63]),
               # ~40% cut, 7 points of accuracy lost
               "ppo_c": _results([0.24, 0.25, 0.23, 0.24, 0.25], [0.55, 0.56, 0.54, 0.55, 0.55])}
    out = rc.claims(results)
    assert all(isinstance(c, Claim) for c in out)
    assert [c.kind for c in out] == ["sanity", "comparative", "comparative", "comparative",
                                     "comparative"]
    assert [c.status for c in out[1:]] == ["PASS", "PASS", "FAIL", "FAIL"]
    assert out[0].passed
    np.testing.assert_allclose(out[1].mean, np.mean([1 - 0.19 / 0.40, 1 - 0.19 / 0.41,
                                                     1 - 0.19 / 0.39, 1 - 0.19 / 0.40,
                                                     1 - 0.20 / 0.42]))
    # the sanity check fails when one seed's confidence stays low
    results["vanilla"]["per_seed"][3]["test_mean_confidence"] = 0.6
    assert not rc.claims(results)[0].passed
