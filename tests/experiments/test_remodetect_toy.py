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
    assert len(c.seeds) >= 3 and len(c.aligned) > len(c.seeds)
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
    cfg = ml_collections.ConfigDict(dict(steps=1, learning_rate=lr, replay_coef=coef))
    for use_mix in (True, False):
        fit = remo.finetune(str(tmp_path / str(use_mix)), apply, params, data, cfg,
                            use_mix=use_mix, seeds=[0])
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


def test_claims_use_the_measured_numbers():
    def res(**stats):
        return {"metrics": {k: {"mean": v, "std": 0.0, "n": 3} for k, v in stats.items()},
                "per_seed": {}}

    results = {"remodetect": res(auroc_offshelf_heldout=0.85, auroc_heldout=0.96),
               "no_mix": res(auroc_offshelf_heldout=0.85, auroc_heldout=0.97)}
    assert [c.passed for c in remo.claims(results)] == [True, True, False]
    results["no_mix"] = res(auroc_offshelf_heldout=0.85, auroc_heldout=0.9)
    assert [c.passed for c in remo.claims(results)] == [True, True, True]
