"""Runs cached by config hash (`cached_run`) and the language testbed's cached reference models."""

import json
import os
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms.cached import cached_run, config_hash, make_proxy_rm, make_sft_policy
from alignax.ops import sequence_logprobs, shift_for_next_token
from alignax.tasks.policies import proxy_rm_config, sft_policy_config

SMALL = sft_policy_config(
    task=dict(vocab_size=12, prompt_len=3, response_len=6, concentration=0.3,
              label_temperature=0.05, seed=0),
    model=dict(d_model=32, n_layers=1, n_heads=2, d_ff=64), num_sequences=1024,
    train=dict(steps=250, batch_size=64, checkpoint_every=10_000, log_every=50, eval_every=0,
               progress=False))


def _held_out_nll(policy):
    task = policy.task
    seqs = np.stack([e["input_ids"] for e in task.sft_examples(512, seed=999)])

    @jax.jit  # one compiled program, not op by op
    def nll(params, ids):
        mask = jnp.ones_like(ids, bool)
        targets, target_mask = shift_for_next_token(ids, mask, mask)
        logps = sequence_logprobs(policy.model.apply(params, ids, mask), targets, target_mask)
        return -logps.sum() / target_mask.sum()

    return float(nll(policy.params, jnp.asarray(seqs)))


def test_sft_policy_trains_once_then_restores_its_final_checkpoint(tmp_path):
    first = make_sft_policy(SMALL, cache_dir=str(tmp_path))
    assert first.trained
    # an ordinary run folder named by the config's hash, with the config beside the checkpoints
    assert first.path == os.path.join(str(tmp_path), f"sft-{config_hash(SMALL)}")
    with open(os.path.join(first.path, "config.json")) as f:
        assert json.load(f) == SMALL
    assert "250" in os.listdir(os.path.join(first.path, "checkpoints"))  # the final step
    # it learned the language: held-out NLL near the chain's own entropy
    nll, floor = _held_out_nll(first), first.task.optimal_nll()
    assert floor <= nll + 0.02 and nll < floor + 0.1, (nll, floor)
    second = make_sft_policy(SMALL, cache_dir=str(tmp_path))
    assert not second.trained and second.path == first.path
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert os.listdir(str(tmp_path)) == [os.path.basename(first.path)]


def test_config_hash_is_order_free_and_sensitive_to_every_value():
    a = sft_policy_config()
    b = dict(reversed(list(a.items())))
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash({**a, "seed": 1})
    assert config_hash(a) != config_hash({**a, "model": {**a["model"], "d_model": 32}})


def test_proxy_rm_learns_the_gold_ordering_and_is_cached(tmp_path):
    config = proxy_rm_config(
        task=SMALL["task"], num_pairs=512, num_eval_pairs=256,
        model=dict(d_model=32, n_layers=1, n_heads=2, d_ff=64),
        train=dict(steps=150, batch_size=32, checkpoint_every=10_000, log_every=50,
                   eval_every=0, progress=False))
    rm = make_proxy_rm(config, cache_dir=str(tmp_path))
    assert rm.trained and rm.gold_accuracy > 0.7, rm.gold_accuracy
    assert os.path.basename(rm.path) == f"proxy_rm-{config_hash(config)}"
    again = make_proxy_rm(config, cache_dir=str(tmp_path))
    assert not again.trained and again.gold_accuracy == rm.gold_accuracy
    # the gold is the task's token-score reward
    rng = np.random.default_rng(0)
    prompts = rm.task.sample_prompts(rng, 4)
    responses = rm.task.sample_responses(rng, prompts)
    np.testing.assert_allclose(rm.gold(responses, prompts), rm.task.gold_reward(responses),
                               rtol=1e-6)


def _marker_run(log, active, lock):
    """A stand-in recipe: "trains" (slowly) unless its folder holds a finished marker."""

    def train_fn(config, workdir):
        with lock:
            active.append(1)
            overlap = len(active)
        done = os.path.join(workdir, "done")
        trained = not os.path.exists(done)
        if trained:
            time.sleep(0.5)
            with open(done, "w") as f:
                f.write(str(config["seed"]))
        with lock:
            active.pop()
            log.append((trained, overlap))
        return workdir

    return train_fn


def test_concurrent_callers_wait_for_one_training(tmp_path):
    log, active, lock = [], [], threading.Lock()
    train_fn = _marker_run(log, active, lock)
    out = []
    threads = [threading.Thread(target=lambda: out.append(
        cached_run("toy", {"seed": 3}, train_fn, cache_dir=str(tmp_path)))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(log) == [(False, 1), (False, 1), (True, 1)]  # one trains, never two at once
    assert len(set(out)) == 1 and os.path.basename(out[0]) == f"toy-{config_hash({'seed': 3})}"
    assert sorted(os.listdir(out[0])) == [".lock", "config.json", "done"]


def test_other_configs_get_other_folders_and_a_foreign_config_json_is_refused(tmp_path):
    log, active, lock = [], [], threading.Lock()
    train_fn = _marker_run(log, active, lock)
    a = cached_run("toy", {"seed": 0}, train_fn, cache_dir=str(tmp_path))
    b = cached_run("toy", {"seed": 1}, train_fn, cache_dir=str(tmp_path))
    assert a != b and [trained for trained, _ in log] == [True, True]
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump({"seed": 0}, f)
    with pytest.raises(ValueError, match="another config"):
        cached_run("toy", {"seed": 1}, train_fn, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="plain folder-name prefix"):
        cached_run("a/b", {"seed": 1}, train_fn, cache_dir=str(tmp_path))


def test_cache_dir_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNAX_CACHE", str(tmp_path))
    log, active, lock = [], [], threading.Lock()
    path = cached_run("toy", {"seed": 5}, _marker_run(log, active, lock))
    assert os.path.dirname(path) == str(tmp_path)


def test_results_are_committed_so_trained_and_restored_calls_share_programs(tmp_path):
    """A fresh run's arrays are uncommitted, a restored run's come committed from the checkpoint;
    jit caches the two separately. cached_run commits them all: one program serves both."""
    def train_fn(config, workdir):
        return {"w": jnp.ones(3) * config["scale"], "note": "x"}  # uncommitted, as computed

    out = cached_run("c", {"scale": 2.0}, train_fn, cache_dir=str(tmp_path))
    assert out["w"]._committed and out["note"] == "x"
    np.testing.assert_array_equal(out["w"], [2.0, 2.0, 2.0])
    f = jax.jit(lambda x: x + 1)
    f(out["w"])
    f(jax.device_put(np.ones(3, np.float32), jax.devices()[0]))  # a restored (committed) array
    assert f._cache_size() == 1
