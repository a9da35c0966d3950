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
like the length bias of real preference data, that a policy can exploit. The reference policy,
the proxy and its flaw are the "world", shared by all seeds. The flaw's rate (60%), the proxy's
256 pairs and label temperature 0.1 define the problem and were set after seeing results (with
0% or 30% planted labels the gold kept rising for every method: nothing to overoptimise); they
stay fixed. Each variant optimises the proxy with a small KL penalty (coefficients, learning
rates and 60 iterations from the first version, not re-tuned) and is evaluated every
`eval_every` iterations: gold and proxy reward of one sample per prompt and the sequence KL to
the reference, on validation prompts and on test prompts.

Splits (docs/protocol.md): experiment seed s draws its training prompts from data seed 3s, its
validation prompts from 3s + 1 and its test prompts from 3s + 2 (`split_seeds`); initialisation
and sampling use s.

Selection on validation: the gold peak of a run is the evaluated iteration with the highest
validation gold reward (`peak_iteration`; the reference, iteration 0, is not a candidate); the
gold and proxy at that iteration and at the end are then measured on test prompts. (The first
version took the maximum of the same noisy evaluations it then compared with, which biases the
drop upwards.) Best-of-N picks no step.

Claims (5 seeds, 95% Student t intervals over seeds):
- comparative (Gao et al.): along GRPO (the smallest KL penalty, 0.001 in the loss) the proxy is
  overoptimised: per seed, test gold at the validation peak minus test gold at the end, minus
  10% of the peak's test gold gain over the reference, is >= 0 (the final gold falls below the
  peak by at least 10% of the gain);
- comparative (Gao et al.): along GRPO the test proxy reward at the end is at least as high as at
  the gold peak (the proxy keeps rising while the gold falls);
- sanity: every method raises the test proxy reward above the reference's. Each method
  optimises that proxy directly, so this shows the optimisers work in this setting; it says
  nothing about Gao et al.'s finding, which is about the gold reward.

    alignax run experiments/rlhf_frontier.py              # full setting, 5 seeds
    alignax run experiments/rlhf_frontier.py:smoke        # seconds, for the tests

`:real` runs one method (`method`: ppo, grpo, rloo, raft, online_dpo or bon) of the same code
on a Hugging Face policy checkpoint (`model.path`, also the reference), a proxy reward
checkpoint (`proxy.path`, required: a one-label `*ForSequenceClassification` folder, e.g. one
trained by `examples/byom.py:rm`) and the prompts of `data.path` (any TRL format; the last
`data.eval_fraction` of the rows are test prompts, the fraction before them validation). Gao et
al.'s setting has a gold RM next to the proxy: with `gold.path` (another reward checkpoint) the
run reports the gold reward along training, the validation-chosen gold peak and the drop from
it (`test_gold_at_peak`, `test_final_gold`, `test_gold_drop_from_peak`: the claims' metrics);
without it the gold entries are NaN and only the proxy and KL(pi || ref) are measured. Policy
and reward checkpoints must share the tokenizer (rollout ids are scored as they are). PPO's
value model is the policy's backbone with a new value head. No claim is evaluated on a :real
run (one method, no toy comparison across methods).

    alignax run experiments/rlhf_frontier.py:real --workdir runs/frontier_real \
        --config.method=grpo --config.model.path=/ckpt/policy --config.proxy.path=/ckpt/rm \
        --config.gold.path=/ckpt/gold_rm --config.data.path=/data/prompts \
        --config.model.dtype=bfloat16 --config.model.logits_chunk=8192 --config.lora.rank=16
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from typing import Any, Callable, NamedTuple

from alignax import ops, protocol
from alignax.algorithms import online, online_dpo, policy_gradient, ppo, pretrained, real, rejection
from alignax.algorithms.cached import make_proxy_rm, make_sft_policy
from alignax.experiment import Claim
from alignax.tasks.language import BOS_ID
from alignax.tasks.policies import proxy_rm_config, sft_policy_config
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_curves

METHODS = ("ppo", "grpo", "rloo", "raft", "online_dpo", "bon")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "grpo"
    # the smoke test runs the policy-gradient recipe the claims use and this module's own
    # best-of-N; PPO, RLOO, RAFT and online DPO are the recipes of
    # tests/algorithms/test_online_recipes.py (each compiles its own rollout, update and eval
    # programs: 1/3 of the smoke's time was RAFT's), and the full run has every method
    c.variants = {m: {"method": m} for m in (METHODS if not smoke else ("grpo", "bon"))}
    # reference policy and proxy RM cache; "" = <workdir>/cache, shared by variants and seeds
    c.cache_dir = ""
    task = dict(vocab_size=32, prompt_len=4, response_len=12, concentration=0.5,
                label_temperature=0.05, seed=0)
    # the smoke test is compile-bound: a one-layer model halves every program's size
    model = ({} if not smoke else
             dict(model=dict(d_model=32, n_layers=1, n_heads=2, d_ff=64)))
    c.policy = sft_policy_config(task=task, num_sequences=4096 if not smoke else 256, **model,
                                 train=dict(steps=600 if not smoke else 10, batch_size=64,
                                            checkpoint_every=10_000, log_every=50,
                                            eval_every=0, progress=False))
    # the proxy's planted flaw: 60% of its training labels prefer more of a bad token
    c.proxy = proxy_rm_config(task=task, num_pairs=256 if not smoke else 32, **model,
                              num_eval_pairs=512 if not smoke else 32,
                              label_temperature=0.1,
                              spurious=dict(token=_spurious_token(task), rate=0.6),
                              train=dict(steps=300 if not smoke else 5, batch_size=32,
                                         checkpoint_every=10_000, log_every=50, eval_every=0,
                                         progress=False))
    # train / validation / test prompts (split_seeds); the gold peak is chosen on validation
    c.num_prompts = 512 if not smoke else 16
    c.num_val_prompts = 128 if not smoke else 8
    c.num_test_prompts = 128 if not smoke else 8
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


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): one method from `model.path` on the prompts of `data.path`,
    rewarded by the checkpoint at `proxy.path`, with the gold RM at `gold.path` if given."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    c.method = "grpo"
    real.add_real_fields(c, max_length=256)  # data.max_length: the prompt length P
    c.proxy = dict(path="")
    c.gold = dict(path="")  # "" = no gold RM: the gold metrics are NaN
    c.eval_every = 10
    common = dict(iterations=100, prompts_per_iteration=16, max_new_tokens=256,
                  checkpoint_every=10, optimizer=real.optimizer(1e-6),
                  stop_tokens=(-1,))  # -1: the eos
    c.ppo = ppo.default_config(**common, kl_coef=0.05, epochs=2, minibatches=2)
    c.grpo = policy_gradient.default_config(**common, num_samples=8, advantage="grpo",
                                            kl_coef=0.04)
    c.rloo = policy_gradient.default_config(**common, num_samples=8, advantage="rloo",
                                            kl_in="reward", kl_coef=0.05)
    c.raft = rejection.default_config(**common, num_samples=8, epochs=1)
    c.online_dpo = online_dpo.default_config(**common, num_samples=2,
                                             loss_kwargs=dict(beta=0.1))
    c.bon = dict(ns=[1, 2, 4, 8, 16])
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """The method name, and for :real the required paths and the method's recipe config."""
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; valid: {METHODS}")
    if not real.is_real(config):
        return
    real.require(config, "model.path", "data.path", "proxy.path",
                 what={"proxy.path": "a reward-model checkpoint folder"})
    if config.method in ("raft", "bon") and real.lora_config(config):
        raise ValueError(f"lora: method {config.method!r} has no adapters (RAFT trains the "
                         "full model, best-of-N trains nothing); set lora.rank=0")
    if config.method != "bon":
        recipe = {"ppo": ppo, "grpo": policy_gradient, "rloo": policy_gradient,
                  "raft": rejection, "online_dpo": online_dpo}[config.method]
        recipe.validate(_method_cfg(config, config.method))


def _method_cfg(config, method: str, stops=None) -> dict:
    if real.is_real(config):  # :real: the memory levers and the tokenizer's stop tokens
        return real.online_config(config, method, stops, lora=method != "raft",
                                  eval_every=int(config.eval_every))
    return {**config[method].to_dict(), "eval_every": int(config.eval_every)}


class World(NamedTuple):
    """What a run optimises and measures: the policy (model, reference params), the prompts
    of each split (left-padded ids [N, P], mask [N, P] bool), `proxy(proxy_params, ids, mask)
    -> [N]`, `gold(gold_params, rollout) -> [N]` (None: no gold), the response length R and
    the stop tokens. Params travel as arguments of the jitted programs, never as constants."""
    model: Any
    ref_params: Any
    prompts: dict
    proxy: Callable
    proxy_params: Any
    gold: Callable | None
    gold_params: Any
    response_len: int
    stop_tokens: tuple
    pad_id: int
    info: dict


def _toy_world(config, workdir: str, seed: int) -> World:
    """The bigram language: the cached SFT policy, the planted-flaw proxy and the gold."""
    # workdir is <root>/<variant>/seed_<s>
    cache = config.cache_dir or os.path.join(os.path.dirname(os.path.dirname(workdir)), "cache")
    policy = make_sft_policy(config.policy.to_dict(), cache_dir=cache)
    rm = make_proxy_rm(config.proxy.to_dict(), cache_dir=cache)
    task = policy.task
    data_seeds = split_seeds(seed)

    def with_bos(prompts):
        ids = np.concatenate([np.full((len(prompts), 1), BOS_ID, np.int32), prompts], axis=1)
        return {"prompt_ids": ids, "prompt_mask": np.ones_like(ids, bool)}

    prompts = {
        "train": with_bos(task.sample_prompts(np.random.default_rng([data_seeds.train, 5]),
                                              int(config.num_prompts))),
        "validation": with_bos(task.eval_prompts(int(config.num_val_prompts),
                                                 data_seeds.validation)),
        "test": with_bos(task.eval_prompts(int(config.num_test_prompts), data_seeds.test))}
    return World(policy.model, policy.params, prompts, rm.model.apply, rm.params,
                 # the gold reads the prompts without the bos
                 lambda _, rollout: rm.gold(rollout.responses, rollout.prompts[:, 1:]), None,
                 task.response_len, (), 0, {"proxy_rm_gold_accuracy": rm.gold_accuracy})


def _real_world(config, seed: int) -> World:
    """`:real`: the checkpoints at model.path / proxy.path / gold.path, the dataset's prompts."""
    tok = real.tokenizer(config)
    prompts = real.prompt_data(config, tok, int(config.data.max_length))
    model, params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    proxy_model, proxy_params = pretrained.model_and_params(
        real.model_config(config, config.proxy.path), "reward", seed=seed)
    gold, gold_params = None, None
    if config.gold.path:
        gold_model, gold_params = pretrained.model_and_params(
            real.model_config(config, config.gold.path), "reward", seed=seed)

        def gold(params, rollout):
            return gold_model.apply(params, rollout.ids, rollout.mask)
    method_cfg = config["grpo" if config.method == "bon" else config.method]
    return World(model, params, prompts, proxy_model.apply, proxy_params, gold, gold_params,
                 int(method_cfg.max_new_tokens), real.stop_tokens(tok, method_cfg.stop_tokens),
                 int(tok.pad_id), {})


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


def _eval_fn(world: World):
    """`params -> {val,test}_{gold, proxy, kl}` on validation and test prompts (one sample each,
    fixed key; both splits in one program; gold NaN without a gold RM)."""
    val, test = world.prompts["validation"], world.prompts["test"]
    n_val = len(val["prompt_ids"])
    ids = np.concatenate([val["prompt_ids"], test["prompt_ids"]])
    mask = np.concatenate([val["prompt_mask"], test["prompt_mask"]])
    r = world.response_len
    model = world.model
    rollout_fn = online.make_rollout(model, num_samples=1, max_new_tokens=r,
                                     stop_tokens=world.stop_tokens, pad_id=world.pad_id)

    @jax.jit
    def _evaluate(params, ref_params, proxy_params, gold_params):
        rollout = rollout_fn(params, ids, mask, jax.random.key(123))
        proxy = world.proxy(proxy_params, rollout.ids, rollout.mask)
        gold = (jnp.full_like(proxy, jnp.nan) if world.gold is None
                else world.gold(gold_params, rollout))
        logits = online.response_logits(model.apply, params, rollout.ids, rollout.mask, r)
        ref_logits = online.response_logits(model.apply, ref_params, rollout.ids,
                                            rollout.mask, r)
        kl = ops.sequential_kl(logits, ref_logits, rollout.response_mask)  # KL(pi || ref)
        out = {}
        for name, part in (("val", slice(0, n_val)), ("test", slice(n_val, None))):
            out.update({f"{name}_gold": gold[part].mean(), f"{name}_proxy": proxy[part].mean(),
                        f"{name}_kl": kl[part].mean()})
        return out

    return lambda params: _evaluate(params, world.ref_params, world.proxy_params,
                                    world.gold_params)


def _best_of_n(world: World, ns, seed):
    """Best-of-N by the proxy from the reference on the test prompts: gold/proxy of the chosen
    sample for each N."""
    test = world.prompts["test"]
    n_max = max(ns)
    rollout = jax.jit(online.make_rollout(world.model, num_samples=n_max,
                                          max_new_tokens=world.response_len,
                                          stop_tokens=world.stop_tokens, pad_id=world.pad_id))(
        world.ref_params, test["prompt_ids"], test["prompt_mask"], jax.random.key(seed))
    proxy = np.asarray(jax.jit(world.proxy)(world.proxy_params, rollout.ids, rollout.mask)
                       ).reshape(-1, n_max)
    gold = (np.full_like(proxy, np.nan) if world.gold is None
            else np.asarray(jax.jit(world.gold)(world.gold_params, rollout)).reshape(-1, n_max))
    out = []
    for n in ns:
        pick = np.argmax(proxy[:, :n], axis=1)
        rows = np.arange(len(pick))
        out.append({"n": n, "test_kl": float(np.log(n) - (n - 1) / n),
                    "test_gold": float(gold[rows, pick].mean()),
                    "test_proxy": float(proxy[rows, pick].mean())})
    return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    seed, method = int(config.seed), config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {METHODS}")
    world = (_real_world(config, seed) if real.is_real(config)
             else _toy_world(config, workdir, seed))
    evaluate = _eval_fn(world)
    ref = {k: float(v) for k, v in evaluate(world.ref_params).items()}
    result = {"test_ref_gold": ref["test_gold"], "test_ref_proxy": ref["test_proxy"],
              **world.info}

    if method == "bon":  # no step to choose: N = 1 .. max(ns) from the reference, on test
        curve = _best_of_n(world, list(config.bon.ns), seed)
        _save_curve(workdir, curve)
        best = curve[-1]
        result.update({"test_final_gold": best["test_gold"],
                       "test_final_proxy": best["test_proxy"],
                       "test_final_kl": best["test_kl"],
                       "test_proxy_gain": best["test_proxy"] - ref["test_proxy"]})
        return result

    proxy_score = jax.jit(world.proxy)

    def reward_fn(rollout):
        return proxy_score(world.proxy_params, rollout.ids, rollout.mask)

    cfg = _method_cfg(config, method, world.stop_tokens)
    train = world.prompts["train"]
    common = dict(model=world.model, init_params=world.ref_params,
                  prompt_ids=train["prompt_ids"], prompt_mask=train["prompt_mask"],
                  reward_fn=reward_fn, eval_fn=evaluate, seed=seed)
    wd = os.path.join(workdir, method)
    if method == "ppo":
        from alignax.models.heads import make_token_reward_model

        value_model = make_token_reward_model(world.model.config)
        value_params = value_model.init(jax.random.key(seed))
        if real.is_real(config):  # the policy's backbone with a new value head
            value_params = {**value_params, "decoder": world.ref_params["decoder"]}
        out = ppo.train(cfg, wd, value_model=value_model, init_value_params=value_params,
                        ref_params=world.ref_params, **common)
    elif method in ("grpo", "rloo"):
        out = policy_gradient.train(cfg, wd, ref_params=world.ref_params, **common)
    elif method == "raft":
        out = rejection.train(cfg, wd, **common)
    else:
        out = online_dpo.train(cfg, wd, ref_params=world.ref_params, **common)
    keys = [f"{split}_{k}" for split in ("val", "test") for k in ("gold", "proxy", "kl")]
    curve = [{"iteration": m["step"], **{k: m[f"eval/{k}"] for k in keys}}
             for m in out["history"] if "eval/val_gold" in m]
    _save_curve(workdir, [{"iteration": 0, **ref}] + curve)
    # the gold peak, chosen on validation prompts; measured on test prompts
    points = {f"iteration={c['iteration']}": c for c in curve}
    name, record = choose_on_validation(points, lambda c: c["val_gold"])
    peak, last = points[name], curve[-1]
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump({"peak": {**record, "metric": "validation gold reward"}}, f, indent=1)
    result.update({
        "peak_iteration": float(peak["iteration"]),
        "val_gold_at_peak": peak["val_gold"],
        "test_gold_at_peak": peak["test_gold"], "test_proxy_at_peak": peak["test_proxy"],
        "test_kl_at_peak": peak["test_kl"],
        "test_final_gold": last["test_gold"], "test_final_proxy": last["test_proxy"],
        "test_final_kl": last["test_kl"],
        "test_proxy_gain": last["test_proxy"] - ref["test_proxy"],
        "test_peak_gold_gain": peak["test_gold"] - ref["test_gold"],
        "test_gold_drop_from_peak": peak["test_gold"] - last["test_gold"],
    })
    return result


def _save_curve(workdir, curve):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "curve.json"), "w") as f:
        json.dump(curve, f, indent=1)


def _curves(results, workdir):
    out = {}
    for variant, res in results.items():
        for s in res["per_seed"]:
            path = os.path.join(workdir, variant, f"seed_{s}", "curve.json")
            if os.path.exists(path):
                with open(path) as f:
                    out.setdefault(variant, []).append(json.load(f))
    return out


DROP_FRACTION = 0.1  # the final gold falls below the peak by >= 10% of the peak's gain


def claims(results) -> list[Claim]:
    if "default" in results:  # :real: one method on a user's checkpoints, metrics only
        return []
    gains = {v: protocol.per_seed(results, v, "test_proxy_gain") for v in results}
    shown = {f"{v}_test_proxy_gain": float(np.mean(list(g.values()))) for v, g in gains.items()}
    lowest = min(min(g.values()) for g in gains.values())
    out = [protocol.sanity(
        "every method raises the test proxy reward above the reference's (on every seed)",
        lowest > 0, {**shown, "lowest_gain_over_methods_and_seeds": lowest},
        detail="each method optimises this proxy directly (best-of-N picks by it), so this "
               "checks that the optimisers work here; Gao et al.'s finding is about the gold "
               "reward")]
    if "grpo" not in results:
        return out
    seeds = results["grpo"]["per_seed"]
    margin = {s: m["test_gold_drop_from_peak"] - DROP_FRACTION * m["test_peak_gold_gain"]
              for s, m in seeds.items()}

    def mean(variant, key):
        return float(np.mean(list(protocol.per_seed(results, variant, key).values())))

    others = ", ".join(f"{v} {mean(v, 'test_gold_drop_from_peak'):+.3f}"
                       for v in results if v not in ("grpo", "bon"))
    out.append(protocol.decide(
        "the proxy is overoptimised along GRPO: the final test gold reward falls below the "
        f"gold at the validation-chosen peak by >= {DROP_FRACTION:.0%} of the peak's gain over "
        "the reference", margin, kind=protocol.COMPARATIVE, at_least=0.0,
        measured={"test_ref_gold": mean("grpo", "test_ref_gold"),
                  "test_gold_at_peak": mean("grpo", "test_gold_at_peak"),
                  "test_final_gold": mean("grpo", "test_final_gold"),
                  "test_gold_drop_from_peak": mean("grpo", "test_gold_drop_from_peak"),
                  "test_peak_gold_gain": mean("grpo", "test_peak_gold_gain"),
                  "peak_iteration": mean("grpo", "peak_iteration"),
                  "test_kl_at_peak": mean("grpo", "test_kl_at_peak"),
                  "test_final_kl": mean("grpo", "test_final_kl"),
                  "margin": float(np.mean(list(margin.values())))},
        detail="per seed: (test gold at the peak - test gold at the end) - "
               f"{DROP_FRACTION} x (test gold at the peak - the reference's); the peak is the "
               "evaluated iteration with the best validation gold; test gold drop from the "
               f"validation peak of the other methods (KL penalty in the reward for PPO and "
               f"RLOO): {others}"))
    out.append(protocol.compare(
        "along GRPO the test proxy reward at the end is at least as high as at the "
        "validation-chosen gold peak (the proxy keeps rising while the gold falls)", results,
        ("grpo", "test_final_proxy"), ("grpo", "test_proxy_at_peak"), at_least=0.0,
        detail="the same runs and peak as the overoptimisation claim"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Test gold and proxy reward against sqrt(KL) for every method (mean over seeds)."""
    curves = _curves(results, workdir)
    if not curves:
        return []
    paths = []
    for key in ("gold", "proxy"):
        lines = {}
        for variant, runs in sorted(curves.items()):
            n = min(len(c) for c in runs)
            kl = np.mean([[p["test_kl"] for p in c[:n]] for c in runs], axis=0)
            lines[variant] = (np.sqrt(np.maximum(kl, 0.0)),
                              np.mean([[p[f"test_{key}"] for p in c[:n]] for c in runs],
                                      axis=0))
        paths.append(plot_curves(
            lines, os.path.join(workdir, "plots", f"frontier_{key}.png"),
            title=f"Optimising a learned proxy RM: {key} reward against KL",
            xlabel="sqrt KL(pi || ref) (nats^0.5)", ylabel=f"{key} reward"))
    return paths
