"""Reward calibration in RLHF: PPO-M and PPO-C against a confidence-biased reward model.

Paper: Leng et al. 2024, "Taming Overconfidence in LLMs: Reward Calibration in RLHF" (arXiv
2410.09724). Reward
models prefer responses that state high confidence, so RLHF makes the policy overconfident.
PPO-M trains the RM on confidence-augmented pairs (a chosen answer is better with high stated
confidence, a rejected one with low); PPO-C shapes the reward online: with r the RM reward of
the response without its confidence and r_bar an EMA of batch-mean rewards,
r' = r +- w |r| (s - 0.5), + when r >= r_bar and - otherwise.

Setting: a toy question-answering language. A prompt names one of K items; the response is an
answer token (one of 4) and a confidence token c in 0..10 (s = c / 10). For item k the gold label
of an instance is the item's canonical answer with probability p_k, else one of the other three
(aleatoric: no policy can beat accuracy p_k); the p_k range from certain to a guess. The SFT
policy (a 1-layer transformer, cached, shared by variants and seeds) gives the canonical answer
90% of the time and states a confidence near 10 p_k (roughly calibrated). The reward model is
linear in gold correctness y and stated confidence, r = a y + b (s - 1/2) + d y (s - 1/2); it is
fit by the BT loss on pairs where the chosen response is the correct one, except that on half of
the pairs it is the one stating more confidence (the bias). PPO-M fits it with
alignax.losses.reward.calibrated_reward_loss on the same pairs plus augmented ones (high
confidence: 7-10, low: 0-3). PPO-C uses the vanilla RM with the confidence stripped (s - 1/2 set
to 0), centred on the SFT policy's samples (BT leaves the offset free, and the shaping depends on
|r|), shaped by alignax.losses.reward.confidence_adjusted_rewards (w = 0.5, EMA alpha = 0.1; the
running mean is a reward state in the checkpointed RL state, `policy_gradient.train(
reward_state=...)`). The RL algorithm is the GRPO recipe (alignax.algorithms.policy_gradient) for
every variant, used in place of PPO. Metrics (one sample per instance): accuracy, mean stated
confidence and the ECE of s against correctness (10 bins). The linear RMs of all seeds of a
variant train as one program (`alignax.train.small.fit_small`, <variant>/reward_model); RL runs
per seed and KL candidate in <variant>/seed_<s>/kl_<k>/rl.

Splits (docs/protocol.md): experiment seed s draws the RM's preference pairs, PPO-M's augmented
confidences and the RL prompts (instances) from data seed `split_seeds(s).train`, 4096
validation instances from `split_seeds(s).validation` and 4096 test instances from
`split_seeds(s).test`. Policy init (the cached SFT policy) and RL sampling use the seed itself.

Selection on validation: the KL coefficient of the RL stage (0.01 and 0.05 were both tried on
test before issue 18) is chosen per seed from `kl_grid` = (0.01, 0.05) by the lowest validation
ECE (`choose_on_validation`), the same grid, criterion and RL budget for vanilla, PPO-M and
PPO-C. The chosen coefficient and every candidate's validation ECE and accuracy are in the
per-seed metrics (`chosen_kl_coef`, `val_ece_kl_<k>`, `val_accuracy_kl_<k>`). Only the chosen
policy is evaluated on test.

Variants: vanilla (GRPO on the biased RM: the baseline), ppo_m, ppo_c; the SFT policy's test
metrics are reported as `test_ref_*`. Claims (5 seeds, 95% t intervals, paired by seed):
(1) sanity: vanilla RL on the biased RM drives the stated confidence to the top (mean s >= 0.9)
    and raises the ECE above the SFT policy's. It holds by construction of the toy: the BT RM
    fit on pairs where half the time the more confident response wins has a positive confidence
    slope for right and wrong answers alike, so any working RL raises s to 10; it shows the
    setting, not the paper's method.
(2), (4) comparative: PPO-M / PPO-C cut vanilla's test ECE by >= 50% relative (per seed
    1 - ECE_m / ECE_vanilla, mean >= 0.5);
(3), (5) comparative: ... with accuracy within 2 points of vanilla's (per seed
    |acc_m - acc_vanilla|, mean <= 0.02).

Both PPO-M's RM and PPO-C's shaping are linear in s, so the RL optimum for an item is an extreme
confidence (10 where the expected reward slope is positive, 0 where it is negative), never
s = p_k. How much of vanilla's ECE that removes therefore depends on the difficulty profile:
with graded p_k (the default) items of middling p_k keep a large gap; with "known or guessed"
items (`--config.item_accuracy=[1.0,1.0,0.95,0.9,0.25,0.25,0.25,0.25]`) extremes are nearly
calibrated.

    alignax run experiments/reward_calibration.py              # full setting, 5 seeds
    alignax run experiments/reward_calibration.py:smoke        # seconds, for the tests
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import policy_gradient, sft
from alignax.algorithms.cached import cached_run
from alignax.algorithms.common import make_model
from alignax.eval.metrics import expected_calibration_error
from alignax.experiment import is_smoke
from alignax.losses.reward import (bradley_terry_loss, calibrated_reward_loss,
                                   confidence_adjusted_rewards)
from alignax.tasks.language import BOS_ID
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_variant_bars
from alignax.train.small import fit_small

METHODS = ("vanilla", "ppo_m", "ppo_c")
NUM_ANSWERS = 4
NUM_CONF = 11


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "vanilla"
    c.variants = {m: {"method": m} for m in METHODS}
    c.cache_dir = ""  # "" = <workdir root>/cache (the SFT policy, shared by variants and seeds)
    # p_k: probability that item k's canonical answer is the gold label
    c.item_accuracy = [1.0, 0.95, 0.85, 0.7, 0.55, 0.4, 0.3, 0.25]
    c.sft = dict(num_sequences=4096 if not smoke else 64, canonical_rate=0.9, conf_noise=1.5,
                 seed=0, model=dict(d_model=32, n_layers=1, n_heads=2, d_ff=96),
                 optimizer=dict(name="adamw", learning_rate=3e-3, warmup_steps=0,
                                schedule="constant", clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
                 train=dict(steps=400 if not smoke else 5, batch_size=64, checkpoint_every=10_000,
                            log_every=100, eval_every=0, progress=False))
    c.rm = dict(num_pairs=4096 if not smoke else 64, correct_rate=0.9, bias_rate=0.5,
                canonical_rate=0.7, high=(7, 10), low=(0, 3), steps=500 if not smoke else 5,
                learning_rate=0.05)
    c.ppo_c = dict(weight=0.5, alpha=0.1, num_reference_samples=2048 if not smoke else 32)
    c.num_prompts = 2048 if not smoke else 16
    c.num_val = 4096 if not smoke else 32
    c.num_eval = 4096 if not smoke else 32
    # the RL stage's KL coefficient, chosen per seed by the lowest validation ECE (every variant)
    c.kl_grid = [0.01, 0.05] if not smoke else [0.01]
    c.rl = policy_gradient.default_config(
        iterations=60 if not smoke else 1, prompts_per_iteration=16 if not smoke else 2,
        num_samples=8 if not smoke else 2, max_new_tokens=2, advantage="grpo",
        kl_coef=0.01,  # replaced by each kl_grid candidate
        checkpoint_every=10_000,
        optimizer=dict(name="adamw", learning_rate=1e-3, warmup_steps=0, schedule="constant",
                       clip_norm=1.0, kwargs=dict(weight_decay=0.0)))
    return c


# --- the toy question-answering language ------------------------------------------------------

class QA:
    """Token layout: pad 0, bos 1, K item ids, 4 answer ids, 11 confidence ids (c = 0..10)."""

    def __init__(self, item_accuracy):
        self.p = np.asarray(item_accuracy, np.float64)
        self.k = len(self.p)
        self.item0 = 2
        self.answer0 = self.item0 + self.k
        self.conf0 = self.answer0 + NUM_ANSWERS
        self.vocab_size = self.conf0 + NUM_CONF
        self.canonical = np.arange(self.k) % NUM_ANSWERS  # item k's canonical answer index

    # equal layouts are one static argument of the jitted programs (`_scores`, `_rm_reward`)
    def __eq__(self, other):
        return isinstance(other, QA) and np.array_equal(self.p, other.p)

    def __hash__(self):
        return hash(tuple(self.p.tolist()))

    def instances(self, rng, n):
        """(items [n], gold answer index [n])."""
        items = rng.integers(0, self.k, n)
        keep = rng.random(n) < self.p[items]
        other = (self.canonical[items] + rng.integers(1, NUM_ANSWERS, n)) % NUM_ANSWERS
        return items, np.where(keep, self.canonical[items], other)

    def prompts(self, items):
        """[n, 2] ids: bos, item."""
        return np.stack([np.full(len(items), BOS_ID), self.item0 + items], 1).astype(np.int32)

    def parse(self, responses, labels):
        """[n, 2] response ids, [n] gold answers -> (correct [n] float, s [n] in [0, 1]).

        An answer outside the answer ids is wrong; a confidence outside the confidence ids
        counts as 0."""
        responses = jnp.asarray(responses)
        correct = (responses[:, 0] == self.answer0 + jnp.asarray(labels)).astype(jnp.float32)
        c = responses[:, 1] - self.conf0
        s = jnp.where((c >= 0) & (c < NUM_CONF), c, 0).astype(jnp.float32) / (NUM_CONF - 1)
        return correct, s


def _sft_policy(qa, cfg, cache):
    """The SFT policy (cached by config hash): canonical answers, roughly calibrated confidence."""
    model_cfg = {**cfg["model"], "vocab_size": qa.vocab_size, "max_len": 4}
    model = make_model(model_cfg, "lm")  # one Model per config (make_lm is memoised)
    key = {"sft": cfg, "items": qa.p.tolist()}
    return model, cached_run(
        "qa_sft", key, lambda _, workdir: _train_sft(qa, cfg, model_cfg, workdir),
        cache_dir=cache)["params"]


def _train_sft(qa, cfg, model_cfg, workdir):
    rng = np.random.default_rng([int(cfg["seed"]), 1])
    n = int(cfg["num_sequences"])
    items = rng.integers(0, qa.k, n)
    canon = rng.random(n) < float(cfg["canonical_rate"])
    answer = np.where(canon, qa.canonical[items],
                      (qa.canonical[items] + rng.integers(1, NUM_ANSWERS, n)) % NUM_ANSWERS)
    # the answer's probability of being right, stated as a noisy confidence
    right = np.where(canon, qa.p[items], (1 - qa.p[items]) / (NUM_ANSWERS - 1))
    conf = np.clip(np.round(10 * right + float(cfg["conf_noise"]) * rng.standard_normal(n)),
                   0, 10).astype(np.int32)
    seqs = np.concatenate([qa.prompts(items), (qa.answer0 + answer)[:, None],
                           (qa.conf0 + conf)[:, None]], axis=1).astype(np.int32)
    stage = {"optimizer": cfg["optimizer"], "train": cfg["train"], "model": model_cfg}
    return sft.train(stage, workdir, train_source=[{"input_ids": s} for s in seqs],
                     seed=int(cfg["seed"]))


# --- the reward model ------------------------------------------------------------------------

def _features(correct, s):
    """[n] correctness, [n] confidence -> [n, 3]: y, s - 1/2, y (s - 1/2)."""
    centred = s - 0.5
    return jnp.stack([correct, centred, correct * centred], axis=-1)


def _rm_pairs(qa, cfg, seed):
    """Biased preference pairs: (correct, s) of chosen and rejected responses, [n] each."""
    rng = np.random.default_rng([seed, 2])
    n = int(cfg.num_pairs)
    items, labels = qa.instances(rng, n)

    def response():
        canon = rng.random(n) < float(cfg.canonical_rate)
        answer = np.where(canon, qa.canonical[items],
                          (qa.canonical[items] + rng.integers(1, NUM_ANSWERS, n)) % NUM_ANSWERS)
        return (answer == labels).astype(np.float32), rng.integers(0, NUM_CONF, n) / 10.0

    (ya, sa), (yb, sb) = response(), response()
    # gold judgement: the correct one wins with prob correct_rate (a coin flip on ties)
    by_gold = np.where(ya != yb, (ya > yb) == (rng.random(n) < float(cfg.correct_rate)),
                       rng.random(n) < 0.5)
    # the bias: on bias_rate of the pairs the more confident response wins
    biased = (rng.random(n) < float(cfg.bias_rate)) & (sa != sb)
    a_wins = np.where(biased, sa > sb, by_gold)
    pick = lambda u, v: np.where(a_wins, u, v).astype(np.float32)  # noqa: E731
    return {"chosen_y": pick(ya, yb), "chosen_s": pick(sa, sb),
            "rejected_y": pick(yb, ya), "rejected_s": pick(sb, sa)}


def _augmented_confidences(cfg, n: int, seed: int) -> dict:
    """PPO-M's confidence augmentation of n pairs: high [2, n] and low [2, n] confidences
    (row 0 for the chosen response, row 1 for the rejected one)."""
    rng = np.random.default_rng([seed, 4])
    hi = rng.integers(cfg.high[0], cfg.high[1] + 1, (2, n)) / 10.0
    lo = rng.integers(cfg.low[0], cfg.low[1] + 1, (2, n)) / 10.0
    return {"high": hi.astype(np.float32), "low": lo.astype(np.float32)}


def fit_reward_models(workdir: str, pairs, cfg, *, calibrated: bool, seeds) -> np.ndarray:
    """Weights [S, 3] of the linear RM of every seed, by full-batch Adam from zero on the BT
    (or, `calibrated`, the PPO-M) loss, all seeds in one `fit_small` program.

    pairs: per-seed arrays with a leading [S] axis: chosen_y, chosen_s, rejected_y, rejected_s
    [S, n] (`_rm_pairs`) and high, low [S, 2, n] (`_augmented_confidences`)."""
    def loss_fn(w, p):
        r = lambda y, s: _features(y, s) @ w  # noqa: E731
        chosen, rejected = r(p["chosen_y"], p["chosen_s"]), r(p["rejected_y"], p["rejected_s"])
        if not calibrated:
            return bradley_terry_loss(chosen, rejected).mean()
        hi, lo = p["high"], p["low"]
        return calibrated_reward_loss(
            chosen, rejected, r(p["chosen_y"], hi[0]), r(p["chosen_y"], lo[0]),
            r(p["rejected_y"], hi[1]), r(p["rejected_y"], lo[1])).mean()

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=jnp.zeros(3, jnp.float32),
                    tx=optax.adam(float(cfg.learning_rate)), num_steps=int(cfg.steps),
                    data={k: jax.device_put(v) for k, v in pairs.items()}, seeds=seeds,
                    per_seed_data=True, desc="reward model")
    return np.asarray(fit.params)


# --- all seeds of a variant ------------------------------------------------------------------

def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """The reward models of all seeds in one program each, then RL (one run per KL candidate),
    the choice of the KL coefficient on validation and the test evaluation, per seed.

    `workdir` is <root>/<variant>: the linear RMs train in <workdir>/reward_model (and PPO-M's
    in <workdir>/calibrated_reward_model), seed s's RL with KL coefficient k in
    <workdir>/seed_<s>/kl_<k>/rl; the SFT policy is cached in <root>/cache by default."""
    seeds, method = [int(s) for s in config.seeds], config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {METHODS}")
    if not len(config.kl_grid):
        raise ValueError("kl_grid needs at least one KL coefficient")
    cache = config.cache_dir or os.path.join(os.path.dirname(workdir), "cache")
    qa = QA(config.item_accuracy)
    model, ref_params = _sft_policy(qa, config.sft.to_dict(), cache)
    train_seeds = [split_seeds(seed).train for seed in seeds]
    per_seed = [_rm_pairs(qa, config.rm, t) for t in train_seeds]
    pairs = {k: np.stack([p[k] for p in per_seed]) for k in per_seed[0]}
    aug = [_augmented_confidences(config.rm, pairs["chosen_y"].shape[1], t) for t in train_seeds]
    pairs.update({k: np.stack([a[k] for a in aug]) for k in aug[0]})
    w_vanilla = fit_reward_models(os.path.join(workdir, "reward_model"), pairs, config.rm,
                                  calibrated=False, seeds=seeds)
    w = w_vanilla if method != "ppo_m" else fit_reward_models(
        os.path.join(workdir, "calibrated_reward_model"), pairs, config.rm, calibrated=True,
        seeds=seeds)
    sample = functools.partial(_sample, model)  # the library's jitted sampler, one per model
    return {seed: _select_and_eval(config, os.path.join(workdir, f"seed_{seed}"), qa, model,
                                   ref_params, w_vanilla[i], w[i], sample, seed)
            for i, seed in enumerate(seeds)}


@functools.partial(jax.jit, static_argnums=0)
def _scores(qa, responses, labels):
    """{accuracy, mean_confidence, ece, top_confidence_rate} of responses [n, 2] against the
    gold answers labels [n]; one program per QA layout and shape."""
    correct, s = qa.parse(responses, labels)
    return {"accuracy": correct.mean(), "mean_confidence": s.mean(),
            "ece": expected_calibration_error(s, correct, num_bins=10),
            "top_confidence_rate": (s >= 1.0).mean()}


def _evaluator(qa, sample, instances, key):
    """`params -> {accuracy, mean_confidence, ece, top_confidence_rate}` on (items, labels):
    one sampled response per instance, drawn with `key`."""
    items, labels = instances
    ids = qa.prompts(items)
    labels = jax.device_put(labels)  # jnp.asarray would compile a staging program per shape

    def evaluate(params):
        return {k: float(v) for k, v in _scores(qa, sample(params, ids, key), labels).items()}

    return evaluate


def _kl_name(kl: float) -> str:
    return f"{float(kl):g}"


def _select_and_eval(config, workdir, qa, model, ref_params, w_vanilla, w, sample, seed):
    """RL of one seed for every KL candidate, the candidate of lowest validation ECE, and the
    test metrics of the SFT policy and of the chosen RL policy. The selection record is written
    to <workdir>/kl_selection.json."""
    splits = split_seeds(seed)
    validate = _evaluator(qa, sample, qa.instances(np.random.default_rng([splits.validation, 6]),
                                                   int(config.num_val)),
                          jax.random.key(seed + 3000))
    test = _evaluator(qa, sample, qa.instances(np.random.default_rng([splits.test, 6]),
                                               int(config.num_eval)),
                      jax.random.key(seed + 2000))
    params, val = {}, {}
    for kl in config.kl_grid:
        name = _kl_name(kl)
        params[name] = _rl(config, os.path.join(workdir, f"kl_{name}", "rl"), qa, model,
                           ref_params, w_vanilla, w, sample, seed, float(kl))
        val[name] = validate(params[name])
    chosen, record = choose_on_validation(val, lambda m: m["ece"], maximize=False)
    record["criterion"] = "validation ECE of the RL policy (one sample per instance)"
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "kl_selection.json"), "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    result = {f"test_ref_{k}": v for k, v in test(ref_params).items()}
    result.update({f"test_{k}": v for k, v in test(params[chosen]).items()})
    result.update({f"val_{k}": v for k, v in val[chosen].items()})
    result["chosen_kl_coef"] = float(chosen)
    for name, m in val.items():
        result[f"val_ece_kl_{name}"] = m["ece"]
        result[f"val_accuracy_kl_{name}"] = m["accuracy"]
    result.update({"rm_w_correct": float(w[0]), "rm_w_conf": float(w[1]),
                   "rm_w_correct_x_conf": float(w[2])})
    return result


@functools.partial(jax.jit, static_argnums=0)
def _rm_reward(qa, responses, labels, rows, weights):
    """The linear RM's reward of responses [n, 2] to the prompts `rows` [n] (gold answers
    labels [N]), weights [3] -> [n]; one program per QA layout and shape (every variant)."""
    correct, s = qa.parse(responses, labels[rows])
    return _features(correct, s) @ weights


@functools.partial(jax.jit, static_argnums=0)
def _stripped_reward(qa, responses, labels, rows, weights):
    """PPO-C's confidence-free reward: the linear RM with the confidence at 1/2, [n]."""
    correct, _ = qa.parse(responses, labels[rows])
    return _features(correct, jnp.full_like(correct, 0.5)) @ weights


def _rl(config, workdir, qa, model, ref_params, w_vanilla, w, sample, seed, kl_coef):
    """GRPO of one seed on its reward (`w`, or PPO-C's shaping of `w_vanilla`) with KL
    coefficient `kl_coef` into `workdir`, on training prompts; returns the policy params."""
    method = config.method
    rng = np.random.default_rng([split_seeds(seed).train, 5])
    items, labels = qa.instances(rng, int(config.num_prompts))
    prompt_ids = qa.prompts(items)
    labels = jax.device_put(labels)

    def rm_reward(responses, rows, weights):
        return _rm_reward(qa, responses, labels, rows, weights)

    w_stripped = jax.device_put(w_vanilla)

    def stripped_reward(responses, rows):
        return _stripped_reward(qa, responses, labels, rows, w_stripped)

    if method == "ppo_c":
        # centre the confidence-free reward on the reference policy's samples
        m = int(config.ppo_c.num_reference_samples)
        rows = jax.device_put(rng.integers(0, len(items), m))
        ref = sample(ref_params, prompt_ids[np.asarray(rows)], jax.random.key(seed + 1000))
        offset = float(stripped_reward(ref, rows).mean())
        # r_bar_0: the RM mean on the reference samples (0 after centring); a reward state in
        # the checkpointed train state, so a resumed run continues the running mean exactly
        reward_state = {"mean": jnp.float32(0.0)}
        weight, alpha = float(config.ppo_c.weight), float(config.ppo_c.alpha)

        def reward_fn(rollout, state):
            responses = rollout.ids[:, -2:]
            r = stripped_reward(responses, rollout.prompt_index) - offset
            mean = alpha * r.mean() + (1 - alpha) * state["mean"]
            _, s = qa.parse(responses, labels[rollout.prompt_index])
            return confidence_adjusted_rewards(r, s, mean, weight=weight), {"mean": mean}
    else:
        reward_state = None
        weights = jax.device_put(w)

        def reward_fn(rollout):
            return rm_reward(rollout.ids[:, -2:], rollout.prompt_index, weights)

    cfg = {**config.rl.to_dict(), "kl_coef": float(kl_coef)}
    out = policy_gradient.train(cfg, workdir, model=model, init_params=ref_params,
                                ref_params=ref_params, prompt_ids=prompt_ids,
                                prompt_mask=np.ones_like(prompt_ids, bool), reward_fn=reward_fn,
                                reward_state=reward_state, seed=seed)
    return out["params"]


def _sample(model, params, ids, key):
    """One sampled 2-token response per prompt: [n, 2] ids."""
    from alignax.sampling import sample

    out = sample(model, params, ids, jnp.ones_like(ids, bool), key, max_new_tokens=2,
                 num_samples=1, temperature=1.0)
    return out.tokens


# --- claims and plots ------------------------------------------------------------------------

def claims(results) -> list[protocol.Claim]:
    out = []
    if "vanilla" not in results:
        return out
    v_conf = protocol.per_seed(results, "vanilla", "test_mean_confidence")
    v_ece = protocol.per_seed(results, "vanilla", "test_ece")
    ref_ece = protocol.per_seed(results, "vanilla", "test_ref_ece")
    v_acc = protocol.per_seed(results, "vanilla", "test_accuracy")
    mean = lambda x: float(np.mean(list(x.values())))  # noqa: E731
    lo_conf = min(v_conf.values())
    rises = all(v_ece[s] > ref_ece[s] for s in v_ece)
    out.append(protocol.sanity(
        "vanilla RL on the confidence-biased RM drives the stated confidence to the top "
        "(mean >= 0.9 on every seed) and raises the ECE above the SFT policy's (every seed)",
        lo_conf >= 0.9 and rises,
        {"vanilla_mean_confidence": mean(v_conf), "vanilla_min_seed_confidence": lo_conf,
         "vanilla_ece": mean(v_ece), "sft_ece": mean(ref_ece)},
        detail="by construction: the RM's confidence slope is positive for right and wrong "
               f"answers; mean confidence {mean(v_conf):.3f}, ECE {mean(ref_ece):.3f} (SFT) -> "
               f"{mean(v_ece):.3f}"))
    for m, label in (("ppo_m", "PPO-M"), ("ppo_c", "PPO-C")):
        if m not in results:
            continue
        ece = protocol.per_seed(results, m, "test_ece")
        acc = protocol.per_seed(results, m, "test_accuracy")
        shared = [s for s in ece if s in v_ece]
        cut = {s: 1.0 - ece[s] / v_ece[s] for s in shared}
        gap = {s: abs(acc[s] - v_acc[s]) for s in shared}
        kl = protocol.per_seed(results, m, "chosen_kl_coef")
        v_kl = protocol.per_seed(results, "vanilla", "chosen_kl_coef")
        chosen = (f"KL chosen on validation: {label} {[kl[s] for s in shared]}, vanilla "
                  f"{[v_kl[s] for s in shared]}")
        out.append(protocol.decide(
            f"{label} cuts vanilla's test ECE by >= 50% relative (per seed 1 - ECE_{m} / "
            "ECE_vanilla)", cut, kind=protocol.COMPARATIVE, at_least=0.5,
            measured={f"{m}_ece": mean({s: ece[s] for s in shared}),
                      "vanilla_ece": mean({s: v_ece[s] for s in shared}),
                      "relative_cut": mean(cut)},
            detail=f"baseline: vanilla GRPO on the biased RM, same KL grid and criterion; "
                   f"{chosen}"))
        out.append(protocol.decide(
            f"{label}'s test accuracy is within 2 points of vanilla's (per seed "
            f"|acc_{m} - acc_vanilla| <= 0.02)", gap, kind=protocol.COMPARATIVE, at_most=0.02,
            measured={f"{m}_accuracy": mean({s: acc[s] for s in shared}),
                      "vanilla_accuracy": mean({s: v_acc[s] for s in shared}),
                      "mean_abs_difference": mean(gap)},
            detail=f"baseline: vanilla GRPO on the biased RM; {chosen}"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Test ECE, accuracy and stated confidence per variant (and the SFT policy), mean +- std."""
    names = [v for v in METHODS if v in results]
    if not names:
        return []
    keys = ("test_ece", "test_accuracy", "test_mean_confidence")
    sft = {"metrics": {k: results[names[0]]["metrics"][k.replace("test_", "test_ref_")]
                       for k in keys}}
    return [plot_variant_bars({"SFT": sft, **{v: results[v] for v in names}},
                              [(k, k) for k in keys],
                              os.path.join(workdir, "plots", "calibration.png"),
                              title="Reward calibration: ECE / accuracy / stated confidence")]
