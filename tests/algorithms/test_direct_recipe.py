"""The direct recipe's loss wiring: reference-free losses and response lengths."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms.direct import loss_beta, loss_inputs, make_direct_loss, pair_logps
from alignax.losses import DIRECT_LOSS_INPUTS, DIRECT_LOSSES, REFERENCE_FREE_LOSSES
from alignax.losses import dpo_loss, sigmoid_norm_loss, simpo_loss
from alignax.models.transformer import TransformerConfig, make_lm
from tests.algorithms import tiny_pairs

MODEL = make_lm(TransformerConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=2, d_ff=24))
PARAMS = MODEL.init(jax.random.key(0))
REF = MODEL.init(jax.random.key(1))
RESP, BATCH = tiny_pairs()


def test_dpo_simpo_and_sigmoid_norm_through_the_recipe():
    pc, pr = pair_logps(MODEL.apply, PARAMS, BATCH)
    rc, rr = pair_logps(MODEL.apply, REF, BATCH)
    lc, lr = RESP.sum(-1), RESP[::-1].sum(-1)
    cases = {
        "dpo": dpo_loss(pc, pr, rc, rr, beta=0.2)[0],
        "simpo": simpo_loss(pc, pr, chosen_lengths=lc, rejected_lengths=lr, beta=0.2)[0],
        "sigmoid_norm": sigmoid_norm_loss(pc, pr, rc, rr, chosen_lengths=lc,
                                          rejected_lengths=lr, beta=0.2)[0],
    }
    for name, expected in cases.items():
        loss, metrics = make_direct_loss(MODEL.apply, name, {"beta": 0.2})(
            PARAMS, BATCH, None, REF)
        np.testing.assert_allclose(loss, expected.mean(), rtol=1e-6)
        assert "reward_margins" in metrics


def test_reference_free_loss_ignores_the_reference():
    fn = make_direct_loss(MODEL.apply, "simpo", {"beta": 0.2})
    a, _ = fn(PARAMS, BATCH, None, REF)
    b, _ = fn(PARAMS, BATCH, None, PARAMS)
    assert float(a) == float(b)


def test_tdpo_gets_the_sequential_kl_of_both_responses():
    from alignax.algorithms.direct import _pair_forward
    from alignax.losses import tdpo_loss
    from alignax.ops import sequential_kl

    logits, _, target_mask = _pair_forward(MODEL.apply, PARAMS, BATCH)
    ref_logits = _pair_forward(MODEL.apply, REF, BATCH)[0]
    kl = sequential_kl(ref_logits, logits, target_mask)
    assert (np.asarray(kl) > 0).all()
    pc, pr = pair_logps(MODEL.apply, PARAMS, BATCH)
    rc, rr = pair_logps(MODEL.apply, REF, BATCH)
    for variant in (1, 2):
        expected = tdpo_loss(pc, pr, rc, rr, chosen_seq_kl=kl[:3], rejected_seq_kl=kl[3:],
                             beta=0.2, variant=variant)[0].mean()
        fn = make_direct_loss(MODEL.apply, "tdpo", {"beta": 0.2, "variant": variant})
        loss, metrics = jax.jit(fn)(PARAMS, BATCH, None, REF)
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
        np.testing.assert_allclose(metrics["seq_kl_chosen"], kl[:3].mean(), rtol=1e-5)
    # with the policy equal to the reference, the KLs vanish and TDPO is DPO at zero margin
    loss, _ = make_direct_loss(MODEL.apply, "tdpo", {"beta": 0.2})(PARAMS, BATCH, None, PARAMS)
    np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-5)


def test_per_pair_inputs_come_from_the_batch():
    from alignax.losses import irepo_loss

    rate = np.array([0.9, 0.6, 0.75], np.float32)
    assert loss_inputs("irepo") == ("preference_rate",)
    fn = make_direct_loss(MODEL.apply, "irepo", {"beta": 0.2})
    loss, _ = fn(PARAMS, {**BATCH, "preference_rate": rate}, None, REF)
    pc, pr = pair_logps(MODEL.apply, PARAMS, BATCH)
    rc, rr = pair_logps(MODEL.apply, REF, BATCH)
    np.testing.assert_allclose(loss, irepo_loss(pc, pr, rc, rr, preference_rate=rate,
                                                beta=0.2)[0].mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="reads .*'preference_rate'.* from each batch"):
        make_direct_loss(MODEL.apply, "irepo", {"preference_rate": 0.5})


def test_declared_inputs_are_the_losses_required_keyword_inputs():
    # the registry's declarations, checked against the functions' signatures once, here
    for registry in (DIRECT_LOSSES, REFERENCE_FREE_LOSSES):
        for name, fn in registry.items():
            params = inspect.signature(fn).parameters.values()
            required = tuple(p.name for p in params
                             if p.kind is p.KEYWORD_ONLY and p.default is p.empty)
            assert DIRECT_LOSS_INPUTS.get(name, ()) == required, name


def test_precomputed_reference_logps_and_pair_weights():
    rc, rr = pair_logps(MODEL.apply, REF, BATCH)
    fn = make_direct_loss(MODEL.apply, "dpo", {"beta": 0.2})
    with_ref, _ = fn(PARAMS, BATCH, None, REF)
    precomputed, _ = fn(PARAMS, {**BATCH, "ref_logps": jnp.concatenate([rc, rr])}, None)
    np.testing.assert_allclose(precomputed, with_ref, rtol=1e-6)
    weighted, _ = fn(PARAMS, {**BATCH, "weight": jnp.array([1.0, 0.0, 1.0])}, None, REF)
    pc, pr = pair_logps(MODEL.apply, PARAMS, BATCH)
    per_pair = dpo_loss(pc, pr, rc, rr, beta=0.2)[0]
    np.testing.assert_allclose(weighted, (per_pair[0] + per_pair[2]) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="needs the reference"):
        fn(PARAMS, BATCH, None)


def test_loss_beta_reads_the_loss_kwargs_or_the_loss_default():
    assert loss_beta("dpo", {"beta": 0.3}) == 0.3
    assert loss_beta("dpo", None) == 0.1
    assert loss_beta("simpo", {}) == 2.0


def test_unknown_loss_and_missing_inputs():
    with pytest.raises(ValueError, match="unknown direct loss 'dpoo'"):
        make_direct_loss(MODEL.apply, "dpoo")
    with pytest.raises(ValueError, match=r"'irepo' needs \['preference_rate'\] in each batch"):
        make_direct_loss(MODEL.apply, "irepo")(PARAMS, BATCH, None, REF)
    assert jnp.isfinite(make_direct_loss(MODEL.apply, "orpo", {"lambda_": 0.1})(
        PARAMS, BATCH, None, REF)[0])
