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


def test_proxy_rm_learns_the_gold_ordering_and_is_cached(tmp_path):
    from alignax.tasks.policies import make_proxy_rm, proxy_rm_config

    config = proxy_rm_config(
        task=SMALL["task"], num_pairs=512, num_eval_pairs=256,
        model=dict(d_model=32, n_layers=1, n_heads=2, d_ff=64),
        train=dict(steps=150, batch_size=32, checkpoint_every=10_000, log_every=50,
                   eval_every=0, progress=False))
    rm = make_proxy_rm(config, cache_dir=str(tmp_path))
    assert rm.trained and rm.gold_accuracy > 0.7, rm.gold_accuracy
    again = make_proxy_rm(config, cache_dir=str(tmp_path))
    assert not again.trained and again.gold_accuracy == rm.gold_accuracy
    # the gold is the task's token-score reward
    rng = np.random.default_rng(0)
    prompts = rm.task.sample_prompts(rng, 4)
    responses = rm.task.sample_responses(rng, prompts)
    np.testing.assert_allclose(rm.gold(responses, prompts), rm.task.gold_reward(responses),
                               rtol=1e-6)


def test_gold_preference_pairs_follow_the_gold_at_low_temperature():
    from alignax.tasks.policies import gold_preference_pairs, make_gold

    from alignax.tasks.language import BigramLanguage

    task = BigramLanguage(**SMALL["task"])
    pairs = gold_preference_pairs(task, make_gold(task, {"kind": "token_score"}), 400, seed=0,
                                  temperature=0.0)
    assert all(p["chosen_gold"] >= p["rejected_gold"] for p in pairs)
    assert pairs[0]["chosen_ids"].shape == (task.seq_len,)
    with pytest.raises(ValueError, match="unknown gold kind"):
        make_gold(task, {"kind": "nope"})
