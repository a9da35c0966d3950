"""Configs and gold-labelled data of the language testbed's reference models.

`sft_policy_config` and `proxy_rm_config` describe the SFT reference policy and a proxy reward
model of the bigram language (`alignax.tasks.language`); `make_gold` builds the gold reward a
config names and `gold_preference_pairs` draws preference pairs labelled by it. Training these
models and caching them by config hash is `alignax.algorithms.cached` (make_sft_policy,
make_proxy_rm).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from alignax._src.config import with_overrides
from alignax.tasks import gold as gold_lib
from alignax.tasks.language import BigramLanguage
from alignax.tasks.simulators import bradley_terry


def sft_policy_config(**overrides) -> dict:
    """Default SFT config of the language testbed's reference policy (a plain dict).

    Keys: task (BigramLanguage fields), model (TransformerConfig fields but vocab_size/max_len,
    which come from the task), num_sequences, seed, optimizer, train. `overrides` replace
    top-level keys.
    """
    config = {
        "task": dict(vocab_size=32, prompt_len=4, response_len=12, concentration=0.5,
                     label_temperature=0.05, seed=0),
        "model": dict(d_model=64, n_layers=2, n_heads=4, d_ff=176),
        "num_sequences": 4096,
        "seed": 0,
        "optimizer": dict(name="adamw", learning_rate=3e-3, warmup_steps=0, schedule="constant",
                          clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
        "train": dict(steps=600, batch_size=64, checkpoint_every=10_000, log_every=50,
                      eval_every=0, progress=False),
    }
    return with_overrides(config, overrides, "keys")


# --- Proxy reward model on gold-labelled preferences --------------------------------------------

def proxy_rm_config(**overrides) -> dict:
    """Default config of a proxy RM on the language task (a plain dict).

    Keys: task, gold (kind "token_score" or "random_transformer", with the random model's
    d_model, n_layers, seed), num_pairs, num_eval_pairs, label_temperature (BT temperature of the
    gold labels), spurious (token, rate: that share of the training pairs is labelled by the
    count of `token` instead of the gold, a planted bias the proxy learns; token -1 = none),
    seed, model, optimizer, train.
    """
    config = {
        "task": sft_policy_config()["task"],
        "gold": dict(kind="token_score", d_model=32, n_layers=2, seed=0),
        "num_pairs": 2048,
        "num_eval_pairs": 512,
        "label_temperature": 0.05,
        "spurious": dict(token=-1, rate=0.0),
        "seed": 0,
        "model": dict(d_model=64, n_layers=2, n_heads=4, d_ff=176),
        "optimizer": dict(name="adamw", learning_rate=1e-3, warmup_steps=0, schedule="constant",
                          clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
        "train": dict(steps=400, batch_size=32, checkpoint_every=10_000, log_every=50,
                      eval_every=0, progress=False),
    }
    return with_overrides(config, overrides, "keys")


def make_gold(task: BigramLanguage, gold_cfg: Mapping[str, Any]):
    """The gold reward `(responses, prompts) -> [N]` named by `gold_cfg["kind"]`."""
    kind = gold_cfg.get("kind", "token_score")
    if kind == "token_score":
        scores = task.token_scores()
        return lambda responses, prompts: gold_lib.token_score_reward(responses, scores)
    if kind == "random_transformer":
        return gold_lib.RandomTransformerGold(
            task, d_model=int(gold_cfg.get("d_model", 32)),
            n_layers=int(gold_cfg.get("n_layers", 2)), seed=int(gold_cfg.get("seed", 0)))
    raise ValueError(f"unknown gold kind {kind!r}; use token_score or random_transformer")


def gold_preference_pairs(task: BigramLanguage, gold, n: int, *, seed: int,
                          temperature: float, spurious_token: int = -1,
                          spurious_rate: float = 0.0) -> list[dict[str, np.ndarray]]:
    """Pairs of chain responses to one prompt, labelled by BT draws from `gold`.

    With `spurious_rate` > 0, that share of the pairs is labelled instead by which response has
    more `spurious_token`s (ties keep the gold label): a planted bias for a proxy RM to learn.
    Records have the recipes' pair fields (chosen/rejected ids, masks, response masks) plus
    `chosen_gold`, `rejected_gold` and `label_correct` (1 if the chosen one is truly better).
    """
    rng = np.random.default_rng([task.seed, seed, 17])
    prompts = task.sample_prompts(rng, n)
    a, b = task.sample_responses(rng, prompts), task.sample_responses(rng, prompts)
    ra, rb = np.asarray(gold(a, prompts)), np.asarray(gold(b, prompts))
    a_wins = bradley_terry(ra, rb, rng=rng, temperature=temperature).astype(bool)
    if spurious_rate > 0:
        ca, cb = (a == spurious_token).sum(-1), (b == spurious_token).sum(-1)
        biased = (rng.random(n) < spurious_rate) & (ca != cb)
        a_wins = np.where(biased, ca > cb, a_wins)
    chosen = task.sequences(prompts, np.where(a_wins[:, None], a, b))
    rejected = task.sequences(prompts, np.where(a_wins[:, None], b, a))
    rc, rr = np.where(a_wins, ra, rb), np.where(a_wins, rb, ra)
    response = np.zeros(task.seq_len, np.int32)
    response[1 + task.prompt_len:] = 1
    ones = np.ones(task.seq_len, np.int32)
    return [{"chosen_ids": chosen[i], "rejected_ids": rejected[i], "chosen_mask": ones,
             "rejected_mask": ones, "chosen_response_mask": response,
             "rejected_response_mask": response, "chosen_gold": np.float32(rc[i]),
             "rejected_gold": np.float32(rr[i]), "label_correct": np.float32(rc[i] > rr[i])}
            for i in range(n)]
