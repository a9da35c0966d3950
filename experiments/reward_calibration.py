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
policy (a 1-layer transformer) gives the canonical answer 90% of the time and states a confidence
near 10 p_k (roughly calibrated). The reward model is linear in gold correctness y and stated
confidence, r = a y + b (s - 1/2) + d y (s - 1/2); it is fit by the BT loss on pairs where the
chosen response is the correct one, except that on half of the pairs it is the one stating more
confidence (the bias). PPO-M fits it with alignax.losses.reward.calibrated_reward_loss on the
same pairs plus augmented ones (high confidence: 7-10, low: 0-3). PPO-C uses the vanilla RM with
the confidence stripped (s - 1/2 set to 0), centred on the SFT policy's samples (BT leaves the
offset free, and the shaping depends on |r|), shaped by
alignax.losses.reward.confidence_adjusted_rewards (w = 0.5, EMA alpha = 0.1, state kept in the
reward function). The RL algorithm is the GRPO recipe (alignax.algorithms.policy_gradient) for
every variant, used in place of PPO. Metrics on held-out instances (one sample each): accuracy,
mean stated confidence and the ECE of s against correctness (10 bins). The linear RMs of all
seeds of a variant train as one program (`alignax.train.small.fit_small`, <variant>/reward_model);
RL runs per seed in <variant>/seed_<s>/rl.

Claims checked: (1) vanilla RL on the biased RM drives the stated confidence to the top (mean
s >= 0.9) and raises the ECE above the SFT policy's; (2) PPO-M and (3) PPO-C cut vanilla's ECE
by >= 50% relative, with accuracy within 2 points of vanilla's.

Both PPO-M's RM and PPO-C's shaping are linear in s, so the RL optimum for an item is an extreme
confidence (10 where the expected reward slope is positive, 0 where it is negative), never
s = p_k. How much of vanilla's ECE that removes therefore depends on the difficulty profile:
with graded p_k (the default) items of middling p_k keep a large gap; with "known or guessed"
items (`--config.item_accuracy=[1.0,1.0,0.95,0.9,0.25,0.25,0.25,0.25]`) extremes are nearly
calibrated.

    alignax run experiments/reward_calibration.py              # full setting, 3 seeds
    alignax run experiments/reward_calibration.py:smoke        # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.algorithms import policy_gradient, sft
from alignax.algorithms.cached import cached_run
from alignax.algorithms.common import make_model
from alignax.eval.metrics import expected_calibration_error
from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.reward import (bradley_terry_loss, calibrated_reward_loss,
                                   confidence_adjusted_rewards)
from alignax.tasks.language import BOS_ID
from alignax.train.plots import plot_variant_bars
from alignax.train.small import fit_small

METHODS = ("vanilla", "ppo_m", "ppo_c")
NUM_ANSWERS = 4
NUM_CONF = 11


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
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
    c.num_eval = 4096 if not smoke else 32
    c.rl = policy_gradient.default_config(
        iterations=60 if not smoke else 1, prompts_per_iteration=16 if not smoke else 2,
        num_samples=8 if not smoke else 2, max_new_tokens=2, advantage="grpo", kl_coef=0.01,
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
    model = make_model(model_cfg, "lm")
    key = {"sft": cfg, "items": qa.p.tolist()}
    return model, jax.device_get(cached_run(
        "qa_sft", key, lambda _, workdir: _train_sft(qa, cfg, model_cfg, workdir),
        cache_dir=cache)["params"])


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
                    data={k: jnp.asarray(v) for k, v in pairs.items()}, seeds=seeds,
                    per_seed_data=True, desc="reward model")
    return np.asarray(fit.params)


# --- all seeds of a variant ------------------------------------------------------------------

def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """The reward models of all seeds in one program each, then RL and evaluation per seed.

    `workdir` is <root>/<variant>: the linear RMs train in <workdir>/reward_model (and PPO-M's
    in <workdir>/calibrated_reward_model), seed s's RL in <workdir>/seed_<s>/rl; the SFT policy
    is cached in <root>/cache by default."""
    seeds, method = [int(s) for s in config.seeds], config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {METHODS}")
    cache = config.cache_dir or os.path.join(os.path.dirname(workdir), "cache")
    qa = QA(config.item_accuracy)
    model, ref_params = _sft_policy(qa, config.sft.to_dict(), cache)
    per_seed = [_rm_pairs(qa, config.rm, seed) for seed in seeds]
    pairs = {k: np.stack([p[k] for p in per_seed]) for k in per_seed[0]}
    aug = [_augmented_confidences(config.rm, pairs["chosen_y"].shape[1], s) for s in seeds]
    pairs.update({k: np.stack([a[k] for a in aug]) for k in aug[0]})
    w_vanilla = fit_reward_models(os.path.join(workdir, "reward_model"), pairs, config.rm,
                                  calibrated=False, seeds=seeds)
    w = w_vanilla if method != "ppo_m" else fit_reward_models(
        os.path.join(workdir, "calibrated_reward_model"), pairs, config.rm, calibrated=True,
        seeds=seeds)
    sample = jax.jit(lambda params, ids, key: _sample(model, params, ids, key))
    return {seed: _rl_and_eval(config, os.path.join(workdir, f"seed_{seed}"), qa, model,
                               ref_params, w_vanilla[i], w[i], sample, seed)
            for i, seed in enumerate(seeds)}


def _rl_and_eval(config, workdir, qa, model, ref_params, w_vanilla, w, sample, seed):
    """GRPO of one seed on its reward (`w`, or PPO-C's shaping of `w_vanilla`) into
    <workdir>/rl, and the metrics of the SFT and the RL policy on held-out instances."""
    method = config.method
    rng = np.random.default_rng([seed, 5])
    items, labels = qa.instances(rng, int(config.num_prompts))
    prompt_ids = qa.prompts(items)
    labels = jnp.asarray(labels)

    @jax.jit
    def rm_reward(responses, rows, weights):
        correct, s = qa.parse(responses, labels[rows])
        return _features(correct, s) @ weights

    @jax.jit
    def stripped_reward(responses, rows):
        correct, _ = qa.parse(responses, labels[rows])
        return _features(correct, jnp.full_like(correct, 0.5)) @ jnp.asarray(w_vanilla)

    if method == "ppo_c":
        # centre the confidence-free reward on the reference policy's samples
        m = int(config.ppo_c.num_reference_samples)
        rows = jnp.asarray(rng.integers(0, len(items), m))
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
        weights = jnp.asarray(w)

        def reward_fn(rollout):
            return rm_reward(rollout.ids[:, -2:], rollout.prompt_index, weights)

    cfg = config.rl.to_dict()
    out = policy_gradient.train(cfg, os.path.join(workdir, "rl"), model=model,
                                init_params=ref_params, ref_params=ref_params,
                                prompt_ids=prompt_ids, prompt_mask=np.ones_like(prompt_ids, bool),
                                reward_fn=reward_fn, reward_state=reward_state, seed=seed)

    eval_items, eval_labels = qa.instances(np.random.default_rng([seed, 6]),
                                           int(config.num_eval))
    eval_ids = qa.prompts(eval_items)
    key = jax.random.key(seed + 2000)

    @jax.jit
    def scores(responses):
        correct, s = qa.parse(responses, eval_labels)
        return {"accuracy": correct.mean(), "mean_confidence": s.mean(),
                "ece": expected_calibration_error(s, correct, num_bins=10),
                "top_confidence_rate": (s >= 1.0).mean()}

    def evaluate(params):
        return {k: float(v) for k, v in scores(sample(params, eval_ids, key)).items()}

    result = {f"ref_{k}": v for k, v in evaluate(ref_params).items()}
    result.update(evaluate(out["params"]))
    result.update({"rm_w_correct": float(w[0]), "rm_w_conf": float(w[1]),
                   "rm_w_correct_x_conf": float(w[2])})
    return result


def _sample(model, params, ids, key):
    """One sampled 2-token response per prompt: [n, 2] ids."""
    from alignax.sampling import sample

    out = sample(model, params, ids, jnp.ones_like(ids, bool), key, max_new_tokens=2,
                 num_samples=1, temperature=1.0)
    return out.tokens


# --- claims and plots ------------------------------------------------------------------------

def claims(results) -> list[Claim]:
    out = []
    if "vanilla" not in results:
        return out
    v_conf = metric(results, "vanilla", "mean_confidence")
    v_ece = metric(results, "vanilla", "ece")
    ref_ece = metric(results, "vanilla", "ref_ece")
    v_acc = metric(results, "vanilla", "accuracy")
    out.append(Claim(
        name="vanilla RL on the biased RM drives the stated confidence to the top (mean >= 0.9) "
             "and raises the ECE above the SFT policy's",
        passed=v_conf >= 0.9 and v_ece > ref_ece,
        measured={"vanilla_mean_confidence": v_conf, "vanilla_ece": v_ece, "sft_ece": ref_ece},
        detail=f"mean confidence {v_conf:.3f}; ECE {ref_ece:.3f} (SFT) -> {v_ece:.3f}"))
    for m, label in (("ppo_m", "PPO-M"), ("ppo_c", "PPO-C")):
        if m not in results:
            continue
        ece, acc = metric(results, m, "ece"), metric(results, m, "accuracy")
        cut = 1.0 - ece / v_ece if v_ece > 0 else 0.0
        out.append(Claim(
            name=f"{label} cuts vanilla's ECE by >= 50% relative with accuracy within 2 points",
            passed=cut >= 0.5 and abs(acc - v_acc) <= 0.02,
            measured={f"{m}_ece": ece, "vanilla_ece": v_ece, "relative_cut": cut,
                      f"{m}_accuracy": acc, "vanilla_accuracy": v_acc},
            detail=f"ECE {v_ece:.3f} -> {ece:.3f} ({100 * cut:.0f}% cut); accuracy "
                   f"{v_acc:.3f} vs {acc:.3f}"))
    return out


def plots(results, workdir: str) -> list[str]:
    """ECE, accuracy and stated confidence per variant (and the SFT policy), mean +- std."""
    names = [v for v in METHODS if v in results]
    if not names:
        return []
    keys = ("ece", "accuracy", "mean_confidence")
    sft = {"metrics": {k: results[names[0]]["metrics"][f"ref_{k}"] for k in keys}}
    return [plot_variant_bars({"SFT": sft, **{v: results[v] for v in names}},
                              [(k, k) for k in keys],
                              os.path.join(workdir, "plots", "calibration.png"),
                              title="Reward calibration: ECE / accuracy / stated confidence")]
