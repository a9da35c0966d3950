"""The direct recipe's loss wiring: reference-free losses and response lengths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms.direct import make_direct_loss, pair_logps
from alignax.losses import dpo_loss, sigmoid_norm_loss, simpo_loss
from alignax.models.transformer import TransformerConfig, make_lm

MODEL = make_lm(TransformerConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=2, d_ff=24))
PARAMS = MODEL.init(jax.random.key(0))
REF = MODEL.init(jax.random.key(1))
RNG = np.random.default_rng(0)
RESP = np.array([[0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]], np.int32)
BATCH = {
    "chosen_ids": RNG.integers(1, 20, (3, 6)).astype(np.int32),
    "rejected_ids": RNG.integers(1, 20, (3, 6)).astype(np.int32),
    "chosen_mask": np.ones((3, 6), np.int32), "rejected_mask": np.ones((3, 6), np.int32),
    "chosen_response_mask": RESP, "rejected_response_mask": RESP[::-1].copy(),
}


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
    fn = make_direct_loss(MODEL.apply, "irepo", {"beta": 0.2}, batch_fields=("preference_rate",))
    loss, _ = fn(PARAMS, {**BATCH, "preference_rate": rate}, None, REF)
    pc, pr = pair_logps(MODEL.apply, PARAMS, BATCH)
    rc, rr = pair_logps(MODEL.apply, REF, BATCH)
    np.testing.assert_allclose(loss, irepo_loss(pc, pr, rc, rr, preference_rate=rate,
                                                beta=0.2)[0].mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="takes no inputs named"):
        make_direct_loss(MODEL.apply, "dpo", batch_fields=("preference_rate",))


def test_unknown_loss_and_missing_inputs():
    with pytest.raises(ValueError, match="unknown direct loss 'dpoo'"):
        make_direct_loss(MODEL.apply, "dpoo")
    with pytest.raises(ValueError, match=r"'irepo' needs \['preference_rate'\].*batch_fields"):
        make_direct_loss(MODEL.apply, "irepo")
    assert jnp.isfinite(make_direct_loss(MODEL.apply, "orpo", {"lambda_": 0.1})(
        PARAMS, BATCH, None, REF)[0])
