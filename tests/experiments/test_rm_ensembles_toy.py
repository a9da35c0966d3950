"""The RM-ensemble toy (experiments/rm_ensembles.py): best-of-n reuse, member layout, checks."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.experiment import load_module
from alignax.models.transformer import TransformerConfig, make_lm, make_reward_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
rme = load_module(os.path.join(REPO, "experiments", "rm_ensembles.py"))


def test_get_config_rejects_unknown_argument():
    with pytest.raises(ValueError, match="unknown argument"):
        rme.get_config("large")
    assert len(rme.get_config().seeds) >= 5 and max(rme.get_config().ns) == 256


def test_bon_gold_uses_prefixes_of_one_candidate_list():
    scores = np.array([[0.1, 0.9, 0.5, 2.0], [3.0, 0.0, 1.0, 0.2]])
    gold = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    out = rme.bon_gold(scores, gold, [1, 2, 4])
    np.testing.assert_array_equal(out, [[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    # the oracle (scores = gold) never decreases with n
    oracle = rme.bon_gold(gold, gold, [1, 2, 3, 4])
    assert np.all(np.diff(oracle, axis=0) >= 0)


def test_member_layout_pretrain_varies_backbones_finetune_shares_one():
    singles, members = rme.member_layout(5)
    assert len(singles) == 9 and len(set(singles)) == 9
    assert sorted(singles[i][0] for i in members["pretrain"]) == [0, 1, 2, 3, 4]
    assert {singles[i][0] for i in members["finetune"]} == {0}
    assert sorted(singles[i][1] for i in members["finetune"]) == [0, 1, 2, 3, 4]


def test_underspecification_counts_only_close_pairs():
    acc = np.array([0.80, 0.805, 0.90])
    rng = np.random.default_rng(0)
    base = rng.normal(size=400)
    gold = np.stack([base, base + 0.5 + 0.01 * rng.normal(size=400), base])
    out = rme._underspecification(acc, gold)
    assert out["underspec_close_pairs"] == 1.0  # only (0, 1) is within 1 point
    assert out["underspec_frac_differ"] == 1.0 and out["underspec_max_z"] > 10
    same = rme._underspecification(acc, np.stack([base, base + 1e-3 * rng.normal(size=400),
                                                  base]))
    assert same["underspec_close_pairs"] == 1.0 and same["underspec_max_z"] < 5


@pytest.mark.slow  # an end-to-end training run: the system tier (make test-slow)
def test_pretrain_lowers_nll_and_finetune_starts_from_the_backbone(tmp_path):
    cfg = TransformerConfig(vocab_size=8, d_model=16, n_layers=1, n_heads=2, d_ff=16, max_len=6)
    lm, rm = make_lm(cfg), make_reward_model(cfg)
    seqs = np.tile(np.array([[1, 2, 3, 4, 5, 6]], np.int32), (16, 1))  # deterministic text
    fit = rme.pretrain_lms(str(tmp_path / "pretrain"), lm, np.stack([seqs, seqs]), [0, 1],
                           steps=60, batch_size=8, learning_rate=1e-2)
    assert fit.final_loss.shape == (2,) and np.all(fit.final_loss < 0.5)  # log(8) = 2.08 at init
    chosen, rejected = seqs, seqs[:, ::-1] % 8
    ft = rme.finetune_rms(str(tmp_path / "finetune"), rm, fit.params["decoder"], [0, 1], [0, 1],
                          np.stack([chosen, chosen]), np.stack([rejected, rejected]), steps=40,
                          batch_size=8, learning_rate=1e-2,
                          val={"chosen": np.stack([chosen[:4]] * 2),
                               "rejected": np.stack([rejected[:4]] * 2)}, steps_per_log=10)
    # early stopping on the validation pairs: a logged step, its accuracy recorded
    assert set(np.asarray(ft.best_step).tolist()) <= {10, 20, 30, 40}
    np.testing.assert_array_equal(ft.best_score, [1.0, 1.0])
    rms = ft.best_params
    r = rme.score_members(rm, rms, np.concatenate([chosen[:1], rejected[:1]]))
    assert r.shape == (2, 2) and np.all(r[:, 0] > r[:, 1])
    assert not np.allclose(jax.tree.leaves(rms)[0][0], jax.tree.leaves(rms)[0][1])
    assert jnp.isfinite(r).all()
