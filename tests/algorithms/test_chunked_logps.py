"""The direct and SFT losses with token log-probs from a `logits_chunk > 0` model
(`token_logps=True`, what the recipes' `train` picks) equal the full-logits path of the plain
model, in values and gradients."""

import jax
import numpy as np
import pytest

from alignax.algorithms.direct import make_direct_loss
from alignax.algorithms.sft import make_sft_loss
from alignax.models.transformer import TransformerConfig, make_lm

CFG = dict(vocab_size=37, d_model=16, n_layers=1, n_heads=2, d_ff=24)
MODEL = make_lm(TransformerConfig(**CFG))
CHUNKED = make_lm(TransformerConfig(**CFG, logits_chunk=8))  # V = 37: the last chunk overlaps
PARAMS = MODEL.init(jax.random.key(0))
REF = MODEL.init(jax.random.key(1))
RNG = np.random.default_rng(0)
RESP = np.array([[0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]], np.int32)
LEFT_PAD = np.array([[1] * 6, [0, 1, 1, 1, 1, 1], [1] * 6], np.int32)
BATCH = {
    "chosen_ids": RNG.integers(1, 37, (3, 6)).astype(np.int32),
    "rejected_ids": RNG.integers(1, 37, (3, 6)).astype(np.int32),
    "chosen_mask": LEFT_PAD, "rejected_mask": np.ones((3, 6), np.int32),
    "chosen_response_mask": RESP, "rejected_response_mask": RESP[::-1].copy(),
}
ROLLOUT = {  # stacked rows [prompt 3, response 4], rows [0, 2) chosen
    "ids": RNG.integers(1, 37, (4, 7)).astype(np.int32),
    "mask": np.ones((4, 7), np.int32),
    "response_mask": np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]],
                              np.int32),
}


def _assert_tree_close(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch,tie", [(BATCH, True), (ROLLOUT, False)])
def test_direct_loss_and_grads_equal_the_logits_path(batch, tie):
    """DPO through make_direct_loss(token_logps=True) with a logits_chunk > 0 model (what
    `train` picks) equals the logits path of the logits_chunk = 0 model: offline pairs with the
    tied head ([V, D] table), stacked rollout rows (logits_range) with an untied [D, V] head."""
    plain, chunked = (MODEL, CHUNKED) if tie else (
        make_lm(TransformerConfig(**CFG, tie_embeddings=False)),
        make_lm(TransformerConfig(**CFG, tie_embeddings=False, logits_chunk=8)))
    params, ref = (PARAMS, REF) if tie else (plain.init(jax.random.key(2)),
                                             plain.init(jax.random.key(3)))

    def run(model, token_logps):
        fn = make_direct_loss(model.apply, "dpo", {"beta": 0.2}, token_logps=token_logps)
        return jax.jit(jax.value_and_grad(fn, has_aux=True))(params, batch, None, ref)

    (want, want_m), want_g = run(plain, False)
    (got, got_m), got_g = run(chunked, True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    _assert_tree_close(got_m, want_m)
    _assert_tree_close(got_g, want_g)


def test_tdpo_falls_back_to_the_logits():  # its sequential KL needs the distributions
    def run(model, token_logps):
        fn = make_direct_loss(model.apply, "tdpo", {"beta": 0.2}, token_logps=token_logps)
        return jax.jit(fn)(PARAMS, BATCH, None, REF)

    _assert_tree_close(run(CHUNKED, True), run(MODEL, False))


def test_sft_loss_and_grads_equal_the_logits_path():
    batch = {"input_ids": BATCH["chosen_ids"], "mask": LEFT_PAD, "loss_mask": RESP}

    def run(apply_fn, token_logps):
        fn = make_sft_loss(apply_fn, token_logps=token_logps)
        return jax.jit(jax.value_and_grad(fn, has_aux=True))(PARAMS, batch, None)

    (want, want_m), want_g = run(MODEL.apply, False)
    (got, got_m), got_g = run(CHUNKED.apply, True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    _assert_tree_close(got_m, want_m)
    _assert_tree_close(got_g, want_g)
