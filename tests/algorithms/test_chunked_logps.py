"""The direct and SFT losses with token log-probs from the model (`token_logps=True`, the path of
`logits_chunk > 0`) equal the full-logits path, in values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms.direct import make_direct_loss, make_pair_eval
from alignax.algorithms.sft import make_sft_loss
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.ops import chunked_token_logprobs

MODEL = make_lm(TransformerConfig(vocab_size=37, d_model=16, n_layers=1, n_heads=2, d_ff=24))
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


def stand_in_apply(params, input_ids, mask, targets=None, logits_range=None):
    """A causal LM whose `targets=` path computes chunked log-probs from the hidden states and
    the tied embedding table (what `CausalLM(..., targets=)` does with logits_chunk > 0)."""
    if targets is None:
        return MODEL.apply(params, input_ids, mask, logits_range=logits_range)
    _, hidden = MODEL.apply(params, input_ids, mask, logits_range=logits_range,
                            return_hidden=True)
    return chunked_token_logprobs(hidden, params["decoder"]["embed"]["embedding"], targets,
                                  chunk=8)  # V = 37: the last chunk overlaps


def _assert_tree_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss,batch", [("dpo", BATCH), ("dpo", ROLLOUT), ("tdpo", BATCH)])
def test_direct_loss_and_grads_equal_the_logits_path(loss, batch):
    kwargs = {"beta": 0.2}

    def run(apply_fn, token_logps):
        fn = make_direct_loss(apply_fn, loss, kwargs, token_logps=token_logps)
        return jax.jit(jax.value_and_grad(fn, has_aux=True))(PARAMS, batch, None, REF)

    (want, want_m), want_g = run(MODEL.apply, False)
    (got, got_m), got_g = run(stand_in_apply, True)  # tdpo falls back to the logits
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    _assert_tree_close(got_m, want_m)
    _assert_tree_close(got_g, want_g)


def test_pair_eval_equals_the_logits_path():  # pair_logps on both sides
    got = make_pair_eval(stand_in_apply, REF, BATCH, beta=0.1, token_logps=True)(PARAMS)
    _assert_tree_close(got, make_pair_eval(MODEL.apply, REF, BATCH, beta=0.1)(PARAMS))


def test_sft_loss_and_grads_equal_the_logits_path():
    batch = {"input_ids": BATCH["chosen_ids"], "mask": LEFT_PAD, "loss_mask": RESP}

    def run(apply_fn, token_logps):
        fn = make_sft_loss(apply_fn, token_logps=token_logps)
        return jax.jit(jax.value_and_grad(fn, has_aux=True))(PARAMS, batch, None)

    (want, want_m), want_g = run(MODEL.apply, False)
    (got, got_m), got_g = run(stand_in_apply, True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    _assert_tree_close(got_m, want_m)
    _assert_tree_close(got_g, want_g)
    assert bool(jnp.isfinite(got))
