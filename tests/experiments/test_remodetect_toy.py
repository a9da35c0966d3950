"""The ReMoDetect toy (experiments/remodetect.py): config, fine-tuning switch and claims."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from alignax.experiment import load_module
from alignax.losses.detection import remodetect_loss, replay_regularizer
from alignax.losses.reward import bradley_terry_loss

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
remo = load_module(os.path.join(REPO, "experiments", "remodetect.py"))


def test_get_config_rejects_unknown_argument():
    with pytest.raises(ValueError, match="unknown argument"):
        remo.get_config("tiny")


def test_full_config_holds_out_an_aligned_lm_per_seed():
    c = remo.get_config()
    assert len(c.seeds) >= 5 and len(c.aligned) > len(c.seeds)
    # every seed holds out a different aligned LM
    assert len({s % len(c.aligned) for s in c.seeds}) == len(c.seeds)
    assert len(c.finetune.learning_rates) >= 2
    assert c.num_triplets == c.num_eval_prompts  # one compiled sampler shape
    assert set(c.variants) == {"remodetect", "no_mix"}


def test_finetune_switch_selects_the_loss(tmp_path):
    """use_mix selects the ReMoDetect loss (True) or the no-y_MIX loss (False); the update
    reads the batch schedule's rows."""
    apply = lambda params, ids, mask: (ids * params["w"]).sum(-1)  # noqa: E731
    rng = np.random.default_rng(0)
    data = {k: rng.normal(size=(1, 6, 3)).astype(np.float32)
            for k in ("lm", "mix", "human", "replay")}
    data["replay_init"] = rng.normal(size=(1, 6)).astype(np.float32)
    data["idx"], data["ridx"] = np.arange(4)[None, None], np.arange(2, 6)[None, None]
    params = {"w": jnp.asarray([0.3, -0.2, 0.1])}
    lr, coef = 0.1, 0.5
    cfg = ml_collections.ConfigDict(dict(steps=1, replay_coef=coef))
    for use_mix in (True, False):
        fit = remo.finetune(str(tmp_path / str(use_mix)), apply, params, data, cfg,
                            use_mix=use_mix, seeds=[0], learning_rate=lr)
        idx, ridx = data["idx"][0, 0], data["ridx"][0, 0]

        def loss(p):
            r = lambda k, i: apply(p, data[k][0, i], None)  # noqa: E731
            rr, rr0 = r("replay", ridx), data["replay_init"][0, ridx]
            if use_mix:
                return remodetect_loss(r("lm", idx), r("mix", idx), r("human", idx),
                                       rr, rr0, replay_coef=coef)
            return (bradley_terry_loss(r("lm", idx), r("human", idx)).mean()
                    + coef * replay_regularizer(rr, rr0).mean())

        g = jax.grad(loss)(params)["w"]
        # one Adam step from zero state moves each weight by -lr * sign(grad)
        np.testing.assert_allclose(fit.seed_params(0)["w"], params["w"] - lr * np.sign(g),
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(fit.final_loss[0], loss(params), rtol=1e-5)


def test_finetune_keeps_the_step_of_the_best_validation_auroc(tmp_path):
    """With a validation set the fit measures the AUROC of the RM score on it every
    `steps_per_log` updates and keeps each seed's best (the earliest on ties)."""
    apply = lambda params, ids, mask: (ids * params["w"]).sum(-1)  # noqa: E731
    # training pushes w[0] up (lm has feature 0, human none)
    data = {"lm": np.array([[[1.0, 0.0]]]), "mix": np.array([[[0.5, 0.0]]]),
            "human": np.array([[[0.0, 0.0]]]), "replay": np.zeros((1, 1, 2)),
            "replay_init": np.zeros((1, 1)),
            "idx": np.zeros((1, 6, 1), np.int64), "ridx": np.zeros((1, 6, 1), np.int64)}
    data = {k: np.asarray(v, np.float32) if k not in ("idx", "ridx") else v
            for k, v in data.items()}
    # validation: the aligned row scores w[0], the human row w[1] = 0.1: AUROC 1 once w[0] > 0.1
    val = {"ids": np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32),
           "labels": np.array([[1.0, 0.0]], np.float32)}
    cfg = ml_collections.ConfigDict(dict(steps=6, steps_per_log=2, replay_coef=0.0))
    params = {"w": jnp.asarray([0.0, 0.1])}
    fit = remo.finetune(str(tmp_path), apply, params, data, cfg, use_mix=False, seeds=[0],
                        learning_rate=0.1, val=val)
    scores = [row["seed_0/eval/val_auroc"] for row in fit.history]
    assert fit.best_score[0] == max(scores) == 1.0
    assert fit.best_step[0] == 2 * (1 + int(np.argmax(scores)))


def _results(**per_variant):
    """{variant: {metric: [per-seed values]}} -> run_experiment-style results."""
    out = {}
    for variant, metrics in per_variant.items():
        n = len(next(iter(metrics.values())))
        out[variant] = {"per_seed": {s: {k: v[s] for k, v in metrics.items()}
                                     for s in range(n)}}
    return out


def test_claims_decide_over_seeds():
    off = [0.85, 0.86, 0.84, 0.85, 0.86]
    results = _results(
        remodetect={"test_auroc_offshelf_heldout": off,
                    "test_auroc_heldout": [0.97, 0.96, 0.98, 0.97, 0.96]},
        no_mix={"test_auroc_offshelf_heldout": off,
                "test_auroc_heldout": [0.95, 0.95, 0.96, 0.96, 0.95]})
    out = remo.claims(results)
    assert [c.kind for c in out] == ["threshold", "threshold", "comparative"]
    assert [c.status for c in out] == ["PASS", "PASS", "PASS"]
    # the mean passes 0.95 but the interval does not clear it: inconclusive, not PASS
    results["remodetect"]["per_seed"][4]["test_auroc_heldout"] = 0.90
    assert out[1].status == "PASS" and remo.claims(results)[1].status == "INCONCLUSIVE"
    results = _results(
        remodetect={"test_auroc_offshelf_heldout": [0.7] * 5,
                    "test_auroc_heldout": [0.90, 0.91, 0.90, 0.92, 0.91]},
        no_mix={"test_auroc_offshelf_heldout": [0.7] * 5,
                "test_auroc_heldout": [0.95, 0.95, 0.96, 0.96, 0.95]})
    assert [c.status for c in remo.claims(results)] == ["FAIL", "FAIL", "FAIL"]
