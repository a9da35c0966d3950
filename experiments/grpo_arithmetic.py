"""GRPO with an exact-match reward on verifiable modular-arithmetic chains.

Papers: Shao et al. 2024, "DeepSeekMath" (arXiv 2402.03300), GRPO: group-normalised advantages
of a verifiable reward, the clipped surrogate and a k3 KL to the reference in the loss; DeepSeek-R1
(arXiv 2501.12948) for RL from exact-match rewards.

Setting: chains like "3+4*2-1?" (operations applied left to right mod 10, 1 to 4 steps;
alignax.tasks.arithmetic) with step-by-step solutions "3+4=7;7*2=4;4-1=3;>3". Per seed: (1) SFT
a tiny Llama-style LM on a few solved chains, stopped early so that it is right only part of the
time (the reference policy), (2) GRPO from it on training prompts with reward 1 for a correct
final answer, (3) greedy exact-match accuracy of both policies on held-out chains, overall and
per number of steps.

Claim checked: GRPO raises held-out exact-match accuracy above the SFT policy on every seed.

    alignax run experiments/grpo_arithmetic.py            # full setting, 3 seeds
    alignax run experiments/grpo_arithmetic.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from alignax.algorithms import online, policy_gradient, sft
from alignax.experiment import Claim, is_smoke, metric
from alignax.tasks import arithmetic


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.task = dict(modulus=10, min_steps=1, max_steps=4, seed=0)
    c.data = dict(num_sft=2000 if not smoke else 64, num_prompts=2000 if not smoke else 32,
                  num_eval=400 if not smoke else 16)
    c.model = dict(d_model=64, n_layers=2, n_heads=4, d_ff=176)
    c.sft = dict(
        optimizer=dict(name="adamw", learning_rate=3e-3, warmup_steps=0, schedule="constant",
                       clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
        # stopped early on purpose: right on about half of the chains, leaving room for RL
        train=dict(steps=200 if not smoke else 10, batch_size=64 if not smoke else 8,
                   checkpoint_every=10_000, log_every=25, eval_every=0, progress=False),
    )
    c.grpo = policy_gradient.default_config(
        iterations=200 if not smoke else 2, prompts_per_iteration=32 if not smoke else 4,
        num_samples=8 if not smoke else 2, temperature=1.0, advantage="grpo", kl_coef=0.02,
        epochs=1, minibatches=2 if not smoke else 1, checkpoint_every=20, log_every=1,
        optimizer=dict(name="adamw", learning_rate=3e-4, warmup_steps=0, schedule="constant",
                       clip_norm=1.0, kwargs=dict(weight_decay=0.0)))
    c.grpo.stop_tokens = (arithmetic.EOS_ID,)
    return c


def _model(config, task):
    from alignax.algorithms.common import make_model

    max_len = task.max_prompt_len() + task.max_solution_len()
    return make_model({**config.model.to_dict(), "vocab_size": arithmetic.VOCAB_SIZE,
                       "max_len": max_len}, "lm")


def make_accuracy_eval(model, task, problems):
    """`params -> metrics`: greedy exact-match accuracy on `problems`, overall and per k."""
    ids, mask = arithmetic.prompt_ids(problems, max_len=task.max_prompt_len())
    greedy = jax.jit(online.make_rollout(model, num_samples=1, temperature=0.0,
                                         max_new_tokens=task.max_solution_len(),
                                         stop_tokens=(arithmetic.EOS_ID,)))
    steps = np.array([p.num_steps for p in problems])

    def evaluate(params):
        rollout = greedy(params, ids, mask.astype(bool), jax.random.key(0))
        correct = arithmetic.exact_match_reward(problems, np.asarray(rollout.responses))
        out = {"accuracy": float(correct.mean())}
        for k in np.unique(steps):
            out[f"accuracy_steps_{k}"] = float(correct[steps == k].mean())
        return out

    return evaluate


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    seed = int(config.seed)
    task = arithmetic.ArithmeticTask(**config.task)
    model = _model(config, task)
    max_len = task.max_prompt_len() + task.max_solution_len()
    sft_problems = task.sample_problems(config.data.num_sft, seed=100 + seed)
    ref = sft.train({**config.sft.to_dict(), "model": {
        **config.model.to_dict(), "vocab_size": arithmetic.VOCAB_SIZE, "max_len": max_len}},
        os.path.join(workdir, "sft"),
        train_source=arithmetic.sft_examples(sft_problems, max_len=max_len), seed=seed)

    train_problems = task.sample_problems(config.data.num_prompts, seed=200 + seed)
    eval_problems = task.sample_problems(config.data.num_eval, seed=300 + seed)
    prompt_ids, prompt_mask = arithmetic.prompt_ids(train_problems,
                                                    max_len=task.max_prompt_len())
    evaluate = make_accuracy_eval(model, task, eval_problems)

    def reward_fn(rollout):
        problems = [train_problems[i] for i in np.asarray(rollout.prompt_index)]
        return arithmetic.exact_match_reward(problems, np.asarray(rollout.responses))

    cfg = config.grpo.to_dict()
    cfg["max_new_tokens"] = task.max_solution_len()
    before = evaluate(ref["params"])
    out = policy_gradient.train(cfg, os.path.join(workdir, "grpo"), model=model,
                                init_params=ref["params"], ref_params=ref["params"],
                                prompt_ids=prompt_ids, prompt_mask=prompt_mask.astype(bool),
                                reward_fn=reward_fn, eval_fn=evaluate, seed=seed)
    after = {k[len("eval/"):]: v for k, v in out["eval"].items()}
    history = out["history"]
    result = {f"sft_{k}": v for k, v in before.items()}
    result.update({f"grpo_{k}": v for k, v in after.items()})
    result.update({
        "grpo_accuracy_gain": after["accuracy"] - before["accuracy"],
        "train_reward_first": float(np.mean([m["reward"] for m in history[:5]])),
        "train_reward_last": float(np.mean([m["reward"] for m in history[-5:]])),
        "kl_ref_seq_last": history[-1].get("kl_ref_seq", float("nan")),
        "response_length_last": history[-1]["response_length"],
    })
    return result


def claims(results) -> list[Claim]:
    res = results["default"]
    gains = [m["grpo_accuracy_gain"] for m in res["per_seed"].values()]
    return [Claim(
        name="GRPO raises held-out exact-match accuracy above the SFT policy on every seed",
        passed=all(g > 0 for g in gains),
        measured={"sft_accuracy": metric(results, "default", "sft_accuracy"),
                  "grpo_accuracy": metric(results, "default", "grpo_accuracy"),
                  "gain_min": float(np.min(gains))},
    )]


def plots(results, workdir: str) -> list[str]:
    """Training reward per iteration, one curve per seed."""
    from alignax.train.plots import plot_curves
    from alignax.train.writers import read_metrics

    curves = {}
    for variant, res in results.items():
        for s in res["per_seed"]:
            path = os.path.join(workdir, variant, f"seed_{s}", "grpo", "metrics.jsonl")
            if os.path.exists(path):
                rows = read_metrics(path)
                curves[f"seed {s}"] = ([r["step"] for r in rows], [r["reward"] for r in rows])
    if not curves:
        return []
    out = os.path.join(workdir, "plots", "grpo_reward.png")
    plot_curves(curves, out, xlabel="GRPO iteration", ylabel="exact-match reward (train)",
                title="GRPO on arithmetic chains")
    return [out]

