"""Runs trained once per config: ordinary run folders addressed by the hash of their config.

    result = cached_run("sft", config, lambda cfg, workdir: sft.train(cfg, workdir, ...))

`cached_run` is the one way to cache a trained model. The run folder is
`<cache_dir>/<name>-<config_hash(config)>`; it holds `config.json` and whatever the recipe writes
(checkpoints/, metrics.jsonl, ...). `train_fn(config, workdir)` is the ordinary recipe call: the
trainer (`alignax.train.loop`) resumes from the folder's newest checkpoint, so the first call
trains, an interrupted one continues, and a call on a finished run restores its final state
without training. Nothing is pickled; any change of the config is a new folder. config.json is
written atomically; one found unreadable (a disk error, a copy cut short) is rewritten from the
config with a `CachedConfigWarning` (the folder's name is the config's hash, so nothing is
guessed), and an unreadable checkpoint falls back to the previous one like any run's.

The language testbed's reference models are cached this way:

    policy = make_sft_policy(sft_policy_config())          # trains (~10 s on 2 CPU cores)
    policy = make_sft_policy(sft_policy_config())          # restores the final checkpoint
    logits = policy.model.apply(policy.params, ids, mask)

    rm = make_proxy_rm(proxy_rm_config())                  # a proxy RM on gold-labelled pairs
    rewards = rm.model.apply(rm.params, ids, mask); gold = rm.gold(responses, prompts)

The cache directory is `cache_dir`, else $ALIGNAX_CACHE, else ~/.cache/alignax.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import warnings
from typing import Any, Callable, Mapping, NamedTuple, TypeVar

import jax
import numpy as np

from alignax.algorithms import common, reward_model, sft
from alignax.data.errors import DataError
from alignax.tasks.language import BigramLanguage
from alignax.tasks.policies import (gold_preference_pairs, make_gold, proxy_rm_config,
                                    sft_policy_config)
from alignax.train.writers import atomic_write_text

CACHE_VERSION = 1
CONFIG_FILE = "config.json"
_LOCK_FILE = ".lock"

Result = TypeVar("Result")


class CachedConfigWarning(UserWarning):
    """A cached run's config.json was unreadable and has been rewritten from the config."""


def _plain(x):
    """A JSON-able copy of a config: ConfigDicts and mappings to dicts, tuples to lists."""
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


@contextlib.contextmanager
def _exclusive(path: str):
    """Holds an exclusive fcntl lock on `path` (released when the process dies, too)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_config(workdir: str, config: dict) -> None:
    """Writes config.json (atomically), or checks that the one there is `config`.

    An unreadable config.json (not UTF-8 or not JSON: cut short, overwritten) is rewritten with
    a CachedConfigWarning: it is derived from `config`, whose hash names the folder.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    text = json.dumps(config, indent=1, sort_keys=True)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                found = json.load(f)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            reason = (f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError)
                      else "not UTF-8")
            warnings.warn(f"{path} was unreadable ({reason}); rewrote it from the config, whose "
                          "hash names the folder", CachedConfigWarning, stacklevel=3)
        else:
            if found != json.loads(text):
                raise DataError(f"{path} holds another config than the one hashed to this "
                                f"folder; delete the folder {workdir}", path=path)
            return
    atomic_write_text(path, text)


def cached_run(name: str, config: Mapping[str, Any],
               train_fn: Callable[[dict, str], Result], *,
               cache_dir: str | None = None) -> Result:
    """`train_fn(config, workdir)` in the run folder `<cache_dir>/<name>-<config_hash(config)>`.

    The folder is an ordinary run folder with `config.json` beside the recipe's checkpoints and
    metrics. `train_fn` must train with the library's trainer (any recipe of
    `alignax.algorithms`, or `alignax.train.loop.fit`), which restores the folder's newest
    checkpoint: the first call trains, a later call with an equal config restores the final
    state without training, and a call after an interruption finishes the run. Its result is
    returned as is.

    Concurrent callers in one or several processes of a host are serialised by an exclusive
    fcntl lock on `<folder>/.lock`: a second caller waits while the first trains, then restores.
    In a multi-process JAX run (jax.process_count() > 1) every process must make the call (the
    trainer is collective) and nothing is locked; process 0 writes config.json.

    Args:
      name: the cache's name for this kind of run (a plain folder-name prefix, e.g. "sft").
      config: JSON-able config (mappings, ConfigDicts, lists, numbers, strings): the whole
        description of the run, hashed into the folder name.
      train_fn: `(config, workdir) -> result`; `config` is the plain-dict copy of `config`.
      cache_dir: the cache directory; None uses $ALIGNAX_CACHE, else ~/.cache/alignax.

    Returns:
      What `train_fn` returns, its arrays committed to their devices (as a restored run's are),
      so a trained and a restored result call the same compiled programs.
    """
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"cache name must be a plain folder-name prefix, got {name!r}")
    plain = _plain(config)
    workdir = os.path.join(cache_dir or default_cache_dir(), f"{name}-{config_hash(plain)}")
    os.makedirs(workdir, exist_ok=True)
    if jax.process_count() > 1:
        if jax.process_index() == 0:
            _write_config(workdir, plain)
        return _committed(train_fn(plain, workdir))
    with _exclusive(os.path.join(workdir, _LOCK_FILE)):
        _write_config(workdir, plain)
        return _committed(train_fn(plain, workdir))


def _committed(result):
    """`result` with every jax.Array committed to its devices (`device_put` to its own
    sharding; a no-op for the committed ones). A restored run's arrays come committed from the
    checkpoint and a fresh run's may not: jit caches the two separately, so without this every
    program a cached result flows into would compile once for the run that trained and again for
    the calls that restored. An array on one device is placed on that device
    (`SingleDeviceSharding`): a recipe trained on a one-device mesh returns `NamedSharding`
    arrays, another cached result (a `fit_small` policy) single-device ones, and a program that
    takes both (a sampler called with either policy) would compile once for each placement."""
    def place(x):
        if not isinstance(x, jax.Array):
            return x
        devices = x.sharding.device_set
        return jax.device_put(x, next(iter(devices)) if len(devices) == 1 else x.sharding)

    return jax.tree.map(place, result)


def _trained(fit_result, steps: int) -> bool:
    """Whether the fit that gave `fit_result` ran training steps (it did not only restore)."""
    return fit_result.resumed_from is None or fit_result.resumed_from < steps


# --- The language testbed's SFT reference policy ------------------------------------------------

class Policy(NamedTuple):
    model: Any            # alignax.models.transformer.Model
    params: Any
    task: BigramLanguage
    path: str             # run folder
    trained: bool         # True if this call trained it, False if it was restored


def make_sft_policy(config: Mapping[str, Any] | None = None, *,
                    cache_dir: str | None = None) -> Policy:
    """The language task's SFT reference policy for `config`, trained once and cached.

    Training is next-token cross-entropy on `num_sequences` sequences of the chain
    (`alignax.algorithms.sft`) in the `cached_run` folder "sft-<hash>". `config` defaults to
    `alignax.tasks.policies.sft_policy_config()`.
    """
    config = _plain(sft_policy_config() if config is None else config)
    task = BigramLanguage(**config["task"])

    def train(config, workdir):
        stage = {"optimizer": config["optimizer"], "train": config["train"],
                 "model": {**config["model"], "vocab_size": task.vocab_size,
                           "max_len": task.seq_len}}
        source = task.sft_examples(int(config["num_sequences"]), int(config["seed"]))
        return {**sft.train(stage, workdir, train_source=source, seed=int(config["seed"])),
                "workdir": workdir}

    out = cached_run("sft", config, train, cache_dir=cache_dir)
    return Policy(out["model"], out["params"], task, out["workdir"],
                  _trained(out["fit"], int(config["train"]["steps"])))


# --- Proxy reward model trained on gold-labelled preferences ------------------------------------

class ProxyRewardModel(NamedTuple):
    model: Any            # scalar reward model: apply(params, ids, mask) -> [B]
    params: Any
    gold: Any             # (responses [N, R], prompts [N, P]) -> [N] gold rewards
    task: BigramLanguage
    path: str             # run folder
    trained: bool
    gold_accuracy: float  # held-out agreement with the gold ordering


def make_proxy_rm(config: Mapping[str, Any] | None = None, *,
                  cache_dir: str | None = None) -> ProxyRewardModel:
    """A scalar proxy RM trained (BT) on gold-labelled pairs of the language, cached by config.

    The proxy sees only `num_pairs` noisy labels; the gold stays available for evaluation (the
    overoptimisation setup: optimise the proxy, watch the gold). Trained in the `cached_run`
    folder "proxy_rm-<hash>"; `config` defaults to `alignax.tasks.policies.proxy_rm_config()`.
    """
    config = _plain(proxy_rm_config() if config is None else config)
    task = BigramLanguage(**config["task"])
    gold = make_gold(task, config["gold"])
    seed, temp = int(config["seed"]), float(config["label_temperature"])

    def train(config, workdir):
        spurious = config.get("spurious", {"token": -1, "rate": 0.0})
        pairs = gold_preference_pairs(task, gold, int(config["num_pairs"]), seed=seed,
                                      temperature=temp, spurious_token=int(spurious["token"]),
                                      spurious_rate=float(spurious["rate"]))
        stage = {"optimizer": config["optimizer"], "train": config["train"],
                 "model": {**config["model"], "vocab_size": task.vocab_size,
                           "max_len": task.seq_len}}
        return {**reward_model.train(stage, workdir, train_source=pairs, seed=seed),
                "workdir": workdir}

    out = cached_run("proxy_rm", config, train, cache_dir=cache_dir)
    eval_pairs = common.stack_records(gold_preference_pairs(
        task, gold, int(config["num_eval_pairs"]), seed=10_000 + seed, temperature=temp))
    evaluate = reward_model.make_pairwise_eval(out["model"].apply, eval_pairs,
                                               gold_better=eval_pairs["label_correct"])
    acc = float(evaluate(out["params"])["gold_accuracy"])
    return ProxyRewardModel(out["model"], out["params"], gold, task, out["workdir"],
                            _trained(out["fit"], int(config["train"]["steps"])), acc)
