"""Gold and proxy reward against KL for PPO, GRPO, RLOO, RAFT, online DPO and best-of-N.

Papers: Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization" (arXiv 2210.10760):
optimising a learned proxy RM raises the gold reward at first and lowers it later, while the
proxy keeps rising; KL(pi || ref) is the budget axis. Methods: PPO (Ouyang et al. 2022), GRPO
(Shao et al. 2024), RLOO (Ahmadian et al. 2024), RAFT (Dong et al. 2023), online DPO (Guo et al.
2024) and best-of-N (KL = log N - (N - 1) / N, Stiennon et al. 2020).

Setting: the bigram language testbed (alignax.tasks). The reference policy is the cached SFT
policy; the gold reward is the mean token score; the proxy is a BT reward model trained on a few
hundred pairs (alignax.algorithms.cached.make_proxy_rm) whose labels are gold BT draws, except that
60% of them prefer the response with more of one bad token (gold score < -1): a planted flaw,
like the length bias of real preference data, that a policy can exploit. Each variant optimises
the proxy with a small KL penalty and is evaluated every few iterations on held-out prompts: gold
and proxy reward of its samples and the sequence KL to the reference.

Claims checked: (1) every method raises the proxy reward above the reference's; (2) the proxy is
overoptimised: along the GRPO run with the smallest KL penalty, the final gold reward is below the
best gold reward reached earlier while the final proxy reward is at least as high as at that point.

    alignax run experiments/rlhf_frontier.py              # full setting
    alignax run experiments/rlhf_frontier.py:smoke        # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from alignax import ops
from alignax.algorithms import online, online_dpo, policy_gradient, ppo, rejection
from alignax.algorithms.cached import make_proxy_rm, make_sft_policy
from alignax.experiment import Claim, is_smoke
from alignax.tasks.language import BOS_ID
from alignax.tasks.policies import proxy_rm_config, sft_policy_config
from alignax.train.plots import plot_curves

METHODS = ("ppo", "grpo", "rloo", "raft", "online_dpo", "bon")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.method = "grpo"
    c.variants = {m: {"method": m} for m in METHODS}
    # reference policy and proxy RM cache; "" = <workdir>/cache, shared by variants and seeds
    c.cache_dir = ""
    task = dict(vocab_size=32, prompt_len=4, response_len=12, concentration=0.5,
                label_temperature=0.05, seed=0)
    c.policy = sft_policy_config(task=task, num_sequences=4096 if not smoke else 256,
                                 train=dict(steps=600 if not smoke else 10, batch_size=64,
                                            checkpoint_every=10_000, log_every=50,
                                            eval_every=0, progress=False))
    # the proxy's planted flaw: 60% of its training labels prefer more of a bad token
    c.proxy = proxy_rm_config(task=task, num_pairs=256 if not smoke else 32,
                              num_eval_pairs=512 if not smoke else 32,
                              label_temperature=0.1,
                              spurious=dict(token=_spurious_token(task), rate=0.6),
                              train=dict(steps=300 if not smoke else 5, batch_size=32,
                                         checkpoint_every=10_000, log_every=50, eval_every=0,
                                         progress=False))
    c.num_prompts = 512 if not smoke else 16
    c.num_eval_prompts = 128 if not smoke else 8
    iters = 60 if not smoke else 2
    c.eval_every = 6 if not smoke else 1
    opt = dict(name="adamw", learning_rate=1e-3, warmup_steps=0, schedule="constant",
               clip_norm=1.0, kwargs=dict(weight_decay=0.0))
    common = dict(iterations=iters, prompts_per_iteration=16 if not smoke else 4,
                  max_new_tokens=task["response_len"], checkpoint_every=1000, optimizer=opt)
    c.ppo = ppo.default_config(**common, kl_coef=0.01, epochs=2, minibatches=2)
    c.ppo.optimizer.learning_rate = 3e-4
    c.grpo = policy_gradient.default_config(**common, num_samples=4, advantage="grpo",
                                            kl_coef=0.001)
    c.rloo = policy_gradient.default_config(**common, num_samples=4, advantage="rloo",
                                            kl_in="reward", kl_coef=0.01)
    c.raft = rejection.default_config(**common, num_samples=8, epochs=1)
    c.raft.optimizer.learning_rate = 3e-4
    c.online_dpo = online_dpo.default_config(**common, num_samples=4, loss_kwargs=dict(beta=0.1))
    c.online_dpo.optimizer.learning_rate = 3e-4
    c.bon = dict(ns=[1, 2, 4, 8, 16, 32] if not smoke else [1, 2])
    return c


def _spurious_token(task_cfg) -> int:
    """The most frequent token (in chain responses) among those with gold score below -1."""
    from alignax.tasks.language import BigramLanguage

    task = BigramLanguage(**task_cfg)
    rng = np.random.default_rng(0)
    responses = task.sample_responses(rng, task.sample_prompts(rng, 2000))
    scores = task.token_scores()
    bad = np.flatnonzero(scores < -1.0)
    counts = [(responses == t).mean() for t in bad]
    return int(bad[int(np.argmax(counts))])


def _eval_fn(policy, rm, prompts):
    """`params -> {gold, proxy, kl}` on held-out prompts (one sample each, fixed key)."""
    task = policy.task
    ids = np.concatenate([np.full((len(prompts), 1), BOS_ID, np.int32), prompts], axis=1)
    mask = np.ones_like(ids, bool)
    r = task.response_len
    rollout_fn = online.make_rollout(policy.model, num_samples=1, max_new_tokens=r)

    @jax.jit
    def evaluate(params):
        rollout = rollout_fn(params, ids, mask, jax.random.key(123))
        gold = rm.gold(rollout.responses, rollout.prompts[:, 1:])  # prompts without the bos
        proxy = rm.model.apply(rm.params, rollout.ids, rollout.mask)
        logits = online.response_logits(policy.model.apply, params, rollout.ids, rollout.mask, r)
        ref_logits = online.response_logits(policy.model.apply, policy.params, rollout.ids,
                                            rollout.mask, r)
        kl = ops.sequential_kl(logits, ref_logits, rollout.response_mask)  # KL(pi || ref)
        return {"gold": gold.mean(), "proxy": proxy.mean(), "kl": kl.mean()}

    return evaluate


def _best_of_n(policy, rm, prompts, ns, seed):
    """Best-of-N by the proxy from the reference: gold/proxy of the chosen sample for each N."""
    task = policy.task
    ids = np.concatenate([np.full((len(prompts), 1), BOS_ID, np.int32), prompts], axis=1)
    n_max = max(ns)
    rollout = jax.jit(online.make_rollout(policy.model, num_samples=n_max,
                                          max_new_tokens=task.response_len))(
        policy.params, ids, np.ones_like(ids, bool), jax.random.key(seed))
    proxy = np.asarray(rm.model.apply(rm.params, rollout.ids, rollout.mask)).reshape(-1, n_max)
    gold = np.asarray(rm.gold(rollout.responses, rollout.prompts[:, 1:])).reshape(-1, n_max)
    out = []
    for n in ns:
        pick = np.argmax(proxy[:, :n], axis=1)
        rows = np.arange(len(pick))
        out.append({"n": n, "kl": float(np.log(n) - (n - 1) / n),
                    "gold": float(gold[rows, pick].mean()),
                    "proxy": float(proxy[rows, pick].mean())})
    return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    seed, method = int(config.seed), config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {METHODS}")
    # workdir is <root>/<variant>/seed_<s>
    cache = config.cache_dir or os.path.join(os.path.dirname(os.path.dirname(workdir)), "cache")
    policy = make_sft_policy(config.policy.to_dict(), cache_dir=cache)
    rm = make_proxy_rm(config.proxy.to_dict(), cache_dir=cache)
    task = policy.task
    rng = np.random.default_rng([seed, 5])
    prompts = task.sample_prompts(rng, int(config.num_prompts))
    eval_prompts = task.eval_prompts(int(config.num_eval_prompts), 50 + seed)
    evaluate = _eval_fn(policy, rm, eval_prompts)
    ref_metrics = {k: float(v) for k, v in evaluate(policy.params).items()}
    result = {"ref_gold": ref_metrics["gold"], "ref_proxy": ref_metrics["proxy"],
              "proxy_rm_gold_accuracy": rm.gold_accuracy}

    if method == "bon":
        curve = _best_of_n(policy, rm, eval_prompts, list(config.bon.ns), seed)
        _save_curve(workdir, curve)
        best = curve[-1]
        result.update({"final_gold": best["gold"], "final_proxy": best["proxy"],
                       "final_kl": best["kl"], "max_gold": max(c["gold"] for c in curve)})
        return result

    ids = np.concatenate([np.full((len(prompts), 1), BOS_ID, np.int32), prompts], axis=1)
    mask = np.ones_like(ids, bool)
    proxy_score = jax.jit(rm.model.apply)

    def reward_fn(rollout):
        return proxy_score(rm.params, rollout.ids, rollout.mask)

    cfg = config[method].to_dict()
    cfg["eval_every"] = int(config.eval_every)
    common = dict(model=policy.model, init_params=policy.params, prompt_ids=ids,
                  prompt_mask=mask, reward_fn=reward_fn, eval_fn=evaluate, seed=seed)
    wd = os.path.join(workdir, method)
    if method == "ppo":
        from alignax.models.heads import make_token_reward_model

        value_model = make_token_reward_model(policy.model.config)
        out = ppo.train(cfg, wd, value_model=value_model,
                        init_value_params=value_model.init(jax.random.key(seed)),
                        ref_params=policy.params, **common)
    elif method in ("grpo", "rloo"):
        out = policy_gradient.train(cfg, wd, ref_params=policy.params, **common)
    elif method == "raft":
        out = rejection.train(cfg, wd, **common)
    else:
        out = online_dpo.train(cfg, wd, ref_params=policy.params, **common)
    curve = [{"kl": m["eval/kl"], "gold": m["eval/gold"], "proxy": m["eval/proxy"]}
             for m in out["history"] if "eval/gold" in m]
    curve = [{"kl": 0.0, "gold": ref_metrics["gold"], "proxy": ref_metrics["proxy"]}] + curve
    _save_curve(workdir, curve)
    best = int(np.argmax([c["gold"] for c in curve]))
    result.update({"final_gold": curve[-1]["gold"], "final_proxy": curve[-1]["proxy"],
                   "final_kl": curve[-1]["kl"], "max_gold": curve[best]["gold"],
                   "proxy_at_max_gold": curve[best]["proxy"]})
    return result


def _save_curve(workdir, curve):
    import json

    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "curve.json"), "w") as f:
        json.dump(curve, f, indent=1)


def _curves(results, workdir):
    import json

    out = {}
    for variant, res in results.items():
        for s in res["per_seed"]:
            path = os.path.join(workdir, variant, f"seed_{s}", "curve.json")
            if os.path.exists(path):
                with open(path) as f:
                    out.setdefault(variant, []).append(json.load(f))
    return out


def claims(results) -> list[Claim]:
    out = []
    raised = {v: float(np.mean([m["final_proxy"] - m["ref_proxy"]
                                for m in r["per_seed"].values()]))
              for v, r in results.items()}
    out.append(Claim(name="every method raises the proxy reward above the reference's",
                     passed=all(g > 0 for g in raised.values()),
                     measured={f"{v}_proxy_gain": g for v, g in raised.items()}))
    if "grpo" in results:
        seeds = results["grpo"]["per_seed"].values()
        drop = [m["max_gold"] - m["final_gold"] for m in seeds]
        proxy_up = [m["final_proxy"] - m["proxy_at_max_gold"] for m in seeds]
        gain = [m["max_gold"] - m["ref_gold"] for m in seeds]
        out.append(Claim(
            name="the proxy is overoptimised along GRPO: the final gold reward falls below its "
                 "best by at least 10% of the best gain while the proxy is at least as high "
                 "as there (means over seeds)",
            passed=(float(np.mean(drop)) >= 0.1 * float(np.mean(gain))
                    and float(np.mean(proxy_up)) >= 0),
            measured={"gold_drop_from_best": float(np.mean(drop)),
                      "best_gold_gain": float(np.mean(gain)),
                      "proxy_change_after_best_gold": float(np.mean(proxy_up))}))
    return out


def plots(results, workdir: str) -> list[str]:
    """Gold and proxy reward against sqrt(KL) for every method (mean over seeds)."""
    curves = _curves(results, workdir)
    if not curves:
        return []
    paths = []
    for key in ("gold", "proxy"):
        lines = {}
        for variant, runs in sorted(curves.items()):
            n = min(len(c) for c in runs)
            kl = np.mean([[p["kl"] for p in c[:n]] for c in runs], axis=0)
            lines[variant] = (np.sqrt(np.maximum(kl, 0.0)),
                              np.mean([[p[key] for p in c[:n]] for c in runs], axis=0))
        paths.append(plot_curves(
            lines, os.path.join(workdir, "plots", f"frontier_{key}.png"),
            title=f"Optimising a learned proxy RM: {key} reward against KL",
            xlabel="sqrt KL(pi || ref) (nats^0.5)", ylabel=f"{key} reward"))
    return paths
