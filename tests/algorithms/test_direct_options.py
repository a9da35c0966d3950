"""The direct recipe's TRL options wired into `make_direct_loss`: loss mixtures (MPO, RPO),
LD-DPO, f-divergence DPO and WPO weighting, each against the same math assembled by hand from
the policy's and reference's token log-probs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import direct
from alignax.algorithms.direct import _pair_forward, make_direct_loss
from alignax.losses import (bco_pair_loss, dpo_loss, f_divergence_scores, hinge_loss,
                            length_desensitized_logps, wpo_weights)
from alignax.models.transformer import TransformerConfig, make_lm
from tests.algorithms import tiny_pairs
from alignax.ops import token_logprobs

MODEL = make_lm(TransformerConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=2, d_ff=24))
PARAMS = MODEL.init(jax.random.key(0))
REF = MODEL.init(jax.random.key(1))
RESP, BATCH = tiny_pairs()


def _token_logps(params):
    logits, targets, mask = _pair_forward(MODEL.apply, params, BATCH)
    return token_logprobs(logits, targets), mask, logits


def _seq(tl, mask):
    return (tl * mask).sum(-1)


def _pairs(x):
    return x[:3], x[3:]


def test_mixture_is_the_weighted_sum_and_sft_is_the_chosen_token_nll():
    tl, mask, _ = _token_logps(PARAMS)
    rtl, _, _ = _token_logps(REF)
    (pc, pr), (rc, rr) = _pairs(_seq(tl, mask)), _pairs(_seq(rtl, mask))
    sft = -float((tl[:3] * mask[:3]).sum() / mask[:3].sum())
    want = (0.8 * dpo_loss(pc, pr, rc, rr, beta=0.2)[0].mean()
            + 0.2 * bco_pair_loss(pc, pr, rc, rr, beta=0.2)[0].mean() + 1.0 * sft)
    fn = make_direct_loss(MODEL.apply, ["dpo", "bco_pair", "sft"], {"beta": 0.2},
                          loss_weights=[0.8, 0.2, 1.0])
    loss, metrics = fn(PARAMS, BATCH, None, REF)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss_sft"], sft, rtol=1e-5)


def test_ld_alpha_reweights_policy_and_reference_and_alpha_one_is_plain_dpo():
    tl, mask, _ = _token_logps(PARAMS)
    rtl, _, _ = _token_logps(REF)
    pc, pr = _pairs(length_desensitized_logps(tl, mask, 0.3))
    rc, rr = _pairs(length_desensitized_logps(rtl, mask, 0.3))
    got, _ = make_direct_loss(MODEL.apply, "dpo", {"beta": 0.2}, ld_alpha=0.3)(
        PARAMS, BATCH, None, REF)
    np.testing.assert_allclose(got, dpo_loss(pc, pr, rc, rr, beta=0.2)[0].mean(), rtol=1e-5)
    plain, _ = make_direct_loss(MODEL.apply, "dpo", {"beta": 0.2})(PARAMS, BATCH, None, REF)
    one, _ = make_direct_loss(MODEL.apply, "dpo", {"beta": 0.2}, ld_alpha=1.0)(
        PARAMS, BATCH, None, REF)
    np.testing.assert_allclose(one, plain, rtol=1e-6)


@pytest.mark.parametrize("div,alpha", [("forward_kl", 1.0), ("js_divergence", 1.0),
                                       ("alpha_divergence", 0.5)])
def test_f_divergence_replaces_the_log_ratios(div, alpha):
    tl, mask, _ = _token_logps(PARAMS)
    rtl, _, _ = _token_logps(REF)
    (pc, pr), (rc, rr) = _pairs(_seq(tl, mask)), _pairs(_seq(rtl, mask))
    sc = f_divergence_scores(pc - rc, div, alpha=alpha)
    sr = f_divergence_scores(pr - rr, div, alpha=alpha)
    for name, fn in (("dpo", dpo_loss), ("hinge", hinge_loss)):
        got, _ = make_direct_loss(MODEL.apply, name, {"beta": 0.2}, f_divergence=div,
                                  f_alpha=alpha)(PARAMS, BATCH, None, REF)
        want = fn(sc, sr, jnp.zeros(3), jnp.zeros(3), beta=0.2)[0].mean()
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_wpo_weights_every_pair_term():
    tl, mask, logits = _token_logps(PARAMS)
    rtl, _, _ = _token_logps(REF)
    (pc, pr), (rc, rr) = _pairs(_seq(tl, mask)), _pairs(_seq(rtl, mask))
    lss = jax.nn.logsumexp(2 * jax.nn.log_softmax(logits, -1), -1)
    w = wpo_weights(tl, lss, mask)
    got, metrics = make_direct_loss(MODEL.apply, "dpo", {"beta": 0.2}, use_weighting=True)(
        PARAMS, BATCH, None, REF)
    np.testing.assert_allclose(got, (dpo_loss(pc, pr, rc, rr, beta=0.2)[0] * w).mean(),
                               rtol=1e-5)
    assert 0 < float(metrics["wpo_weight"]) < 1


def test_option_errors_and_the_config_spelling():
    with pytest.raises(ValueError, match="applies to the losses"):
        make_direct_loss(None, "bco_pair", f_divergence="forward_kl")
    with pytest.raises(ValueError, match="unknown f_divergence"):
        make_direct_loss(None, "dpo", f_divergence="hellinger")
    with pytest.raises(ValueError, match="ld_alpha"):
        make_direct_loss(None, "dpo", ld_alpha=1.5)
    with pytest.raises(ValueError, match="logits_chunk"):
        make_direct_loss(None, "dpo", use_weighting=True, token_logps=True)
    with pytest.raises(ValueError, match="taken by none"):
        make_direct_loss(None, ["dpo", "sft"], {"gamma": 1.0})
    with pytest.raises(ValueError, match="2 losses"):
        make_direct_loss(None, ["dpo", "sft"], loss_weights=[1.0])
    with pytest.raises(ValueError, match="sft"):
        make_direct_loss(None, "sft")
    # the recipe config: RPO = dpo + alpha * sft, and its checks
    cfg = direct.validate({"loss": "dpo", "extra_losses": [["sft", 0.5]]})
    assert direct.loss_spec(cfg) == (["dpo", "sft"], [1.0, 0.5])
    with pytest.raises(ValueError, match="extra_losses entries"):
        direct.validate({"extra_losses": [["sft"]]})
    with pytest.raises(ValueError, match="precompute_ref_logps"):
        direct.validate({"ld_alpha": 0.5, "precompute_ref_logps": True})
    with pytest.raises(ValueError, match="unknown direct loss"):
        direct.validate({"extra_losses": [["nope", 1.0]]})
    assert direct.uses_reference(direct.validate({"loss": "simpo", "loss_kwargs": {},
                                                  "extra_losses": [["dpo", 1.0]]}))
