"""The cached SFT reference policy of the language testbed."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.ops import sequence_logprobs, shift_for_next_token
from alignax.tasks.policies import config_hash, make_sft_policy, sft_policy_config

SMALL = sft_policy_config(
    task=dict(vocab_size=12, prompt_len=3, response_len=6, concentration=0.3,
              label_temperature=0.05, seed=0),
    model=dict(d_model=32, n_layers=1, n_heads=2, d_ff=64), num_sequences=1024,
    train=dict(steps=250, batch_size=64, checkpoint_every=10_000, log_every=50, eval_every=0,
               progress=False))


def _held_out_nll(policy):
    task = policy.task
    seqs = np.stack([e["input_ids"] for e in task.sft_examples(512, seed=999)])
    ids = jnp.asarray(seqs)
    mask = jnp.ones_like(ids, bool)
    targets, target_mask = shift_for_next_token(ids, mask, mask)
    logps = sequence_logprobs(policy.model.apply(policy.params, ids, mask), targets, target_mask)
    return float(-logps.sum() / target_mask.sum())


def test_trains_once_then_loads_the_same_parameters(tmp_path):
    first = make_sft_policy(SMALL, cache_dir=str(tmp_path))
    assert first.trained and os.path.exists(os.path.join(first.path, "params.safetensors"))
    # it learned the language: held-out NLL near the chain's own entropy
    nll, floor = _held_out_nll(first), first.task.optimal_nll()
    assert floor <= nll + 0.02 and nll < floor + 0.1, (nll, floor)
    second = make_sft_policy(SMALL, cache_dir=str(tmp_path))
    assert not second.trained and second.path == first.path
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # only the entry remains in the cache (the training workdir is removed)
    assert os.listdir(os.path.join(str(tmp_path), "sft")) == [os.path.basename(first.path)]


def test_config_hash_is_order_free_and_sensitive_to_every_value():
    a = sft_policy_config()
    b = dict(reversed(list(a.items())))
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash({**a, "seed": 1})
    assert config_hash(a) != config_hash({**a, "model": {**a["model"], "d_model": 32}})
    with pytest.raises(ValueError, match="unknown keys"):
        sft_policy_config(steps=3)
