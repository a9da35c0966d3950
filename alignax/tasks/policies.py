"""Reference models of the language testbed, trained once and cached on disk by config hash.

    policy = make_sft_policy(sft_policy_config())          # trains (~10 s on 2 CPU cores)
    policy = make_sft_policy(sft_policy_config())          # loads from the cache
    logits = policy.model.apply(policy.params, ids, mask)

    rm = make_proxy_rm(proxy_rm_config())                  # a proxy RM on gold-labelled pairs
    rewards = rm.model.apply(rm.params, ids, mask); gold = rm.gold(responses, prompts)

The cache key is a hash of the full config (task, model, data, optimizer, steps, seed), so any
change retrains. Parameters are stored as safetensors next to the config as JSON; nothing is
pickled. The cache directory is `cache_dir`, else $ALIGNAX_CACHE, else ~/.cache/alignax.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Mapping, NamedTuple

import jax
import numpy as np

from alignax.tasks.language import BigramLanguage
from alignax._src.config import with_overrides

CACHE_VERSION = 1


class Policy(NamedTuple):
    model: Any            # alignax.models.transformer.Model
    params: Any
    task: BigramLanguage
    path: str             # cache entry directory
    trained: bool         # True if this call trained it, False if it was loaded


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


def _plain(x):
    if hasattr(x, "to_dict"):
        x = x.to_dict()
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps({"version": CACHE_VERSION, "config": _plain(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> str:
    return os.environ.get("ALIGNAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "alignax")


def _flatten(params) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _unflatten(template, flat: Mapping[str, np.ndarray]):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for path, leaf in leaves:
        key = jax.tree_util.keystr(path)
        if key not in flat:
            raise ValueError(f"cached parameters lack {key}; delete the cache entry")
        value = flat[key]
        if value.shape != leaf.shape:
            raise ValueError(f"cached {key} has shape {value.shape}, expected {leaf.shape}")
        out.append(value.astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def publish_params(work: str, entry: str, params, meta: Mapping[str, Any]) -> None:
    """Writes params (safetensors) + config.json into `work`/entry, then renames it to `entry`
    (atomic: readers see a whole entry or none; for caches of trained params)."""
    from safetensors.numpy import save_file

    staged = os.path.join(work, "entry")
    os.makedirs(staged)
    save_file(_flatten(params), os.path.join(staged, "params.safetensors"))
    with open(os.path.join(staged, "config.json"), "w") as f:
        json.dump(dict(meta), f, indent=1, sort_keys=True)
    try:
        os.rename(staged, entry)  # a concurrent writer's entry wins; the content is equal
    except OSError:
        if not os.path.exists(os.path.join(entry, "params.safetensors")):
            raise


def load_cached_params(entry: str, model):
    """(params, meta) of a cache entry written by `publish_params`, or None if there is none."""
    from safetensors.numpy import load_file

    path = os.path.join(entry, "params.safetensors")
    if not os.path.exists(path):
        return None
    template = jax.eval_shape(model.init, jax.random.key(0))
    params = jax.tree.map(jax.numpy.asarray, _unflatten(template, load_file(path)))
    with open(os.path.join(entry, "config.json")) as f:
        return params, json.load(f)


def _model(config, task):
    from alignax.algorithms.common import make_model

    return make_model({**config["model"], "vocab_size": task.vocab_size,
                       "max_len": task.seq_len}, "lm")


def make_sft_policy(config: Mapping[str, Any] | None = None, *,
                    cache_dir: str | None = None) -> Policy:
    """The language task's SFT reference policy for `config`, trained once and cached.

    Training is next-token cross-entropy on `num_sequences` sequences of the chain
    (`alignax.algorithms.sft`). A later call with an equal config loads the cached parameters.
    For single-process use (the parameters are gathered to the host to be saved).
    """
    config = _plain(sft_policy_config() if config is None else config)
    task = BigramLanguage(**config["task"])
    model = _model(config, task)
    entry = os.path.join(cache_dir or default_cache_dir(), "sft", config_hash(config))
    cached = load_cached_params(entry, model)
    if cached is not None:
        return Policy(model, cached[0], task, entry, False)

    from alignax.algorithms import sft

    os.makedirs(os.path.dirname(entry), exist_ok=True)
    work = tempfile.mkdtemp(prefix="sft-", dir=os.path.dirname(entry))
    try:
        source = task.sft_examples(int(config["num_sequences"]), int(config["seed"]))
        stage = {"optimizer": config["optimizer"], "train": config["train"],
                 "model": {**config["model"], "vocab_size": task.vocab_size,
                           "max_len": task.seq_len}}
        result = sft.train(stage, os.path.join(work, "run"), train_source=source,
                           seed=int(config["seed"]))
        params = result["params"]
        publish_params(work, entry, params,
                 {"config": config, "final_nll": float(result["metrics"]["nll"])})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Policy(model, params, task, entry, True)


# --- Proxy reward model trained on gold-labelled preferences ------------------------------------

class ProxyRewardModel(NamedTuple):
    model: Any            # scalar reward model: apply(params, ids, mask) -> [B]
    params: Any
    gold: Any             # (responses [N, R], prompts [N, P]) -> [N] gold rewards
    task: BigramLanguage
    path: str
    trained: bool
    gold_accuracy: float  # held-out agreement with the gold ordering


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
    from alignax.tasks import gold as gold_lib

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
    from alignax.tasks.simulators import bradley_terry

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


def make_proxy_rm(config: Mapping[str, Any] | None = None, *,
                  cache_dir: str | None = None) -> ProxyRewardModel:
    """A scalar proxy RM trained (BT) on gold-labelled pairs of the language, cached by config.

    The proxy sees only `num_pairs` noisy labels; the gold stays available for evaluation (the
    overoptimisation setup: optimise the proxy, watch the gold).
    """
    from alignax.algorithms import reward_model
    from alignax.algorithms.common import make_model, stack_records

    config = _plain(proxy_rm_config() if config is None else config)
    task = BigramLanguage(**config["task"])
    gold = make_gold(task, config["gold"])
    model_cfg = {**config["model"], "vocab_size": task.vocab_size, "max_len": task.seq_len}
    model = make_model(model_cfg, "reward")
    entry = os.path.join(cache_dir or default_cache_dir(), "proxy_rm", config_hash(config))
    cached = load_cached_params(entry, model)
    if cached is not None:
        params, meta = cached
        return ProxyRewardModel(model, params, gold, task, entry, False,
                                float(meta["gold_accuracy"]))

    seed, temp = int(config["seed"]), float(config["label_temperature"])
    spurious = config.get("spurious", {"token": -1, "rate": 0.0})
    pairs = gold_preference_pairs(task, gold, int(config["num_pairs"]), seed=seed,
                                  temperature=temp, spurious_token=int(spurious["token"]),
                                  spurious_rate=float(spurious["rate"]))
    eval_pairs = stack_records(gold_preference_pairs(
        task, gold, int(config["num_eval_pairs"]), seed=10_000 + seed, temperature=temp))
    os.makedirs(os.path.dirname(entry), exist_ok=True)
    work = tempfile.mkdtemp(prefix="rm-", dir=os.path.dirname(entry))
    try:
        stage = {"optimizer": config["optimizer"], "train": config["train"], "model": model_cfg}
        result = reward_model.train(stage, os.path.join(work, "run"), train_source=pairs,
                                    seed=seed)
        params = result["params"]
        evaluate = reward_model.make_pairwise_eval(model.apply, eval_pairs,
                                                   gold_better=eval_pairs["label_correct"])
        acc = float(evaluate(params)["gold_accuracy"])
        publish_params(work, entry, params, {"config": config, "gold_accuracy": acc})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ProxyRewardModel(model, params, gold, task, entry, True, acc)
