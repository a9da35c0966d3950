"""ReMoDetect: a reward model, fine-tuned on ordered triplets, detects aligned-LM text.

Paper: Lee et al. 2024, "ReMoDetect: Reward Models Recognize Aligned LLM's Generations"
(arXiv 2405.17382).
Aligned LMs are tuned to maximise a reward, so a reward model scores their text above human
text; continual preference fine-tuning on the order y_LM > y_MIX > y_HU (y_MIX: a human response
partly rewritten by an aligned LM) with a replay term toward the initial RM sharpens the gap.

Setting: the bigram language testbed (alignax.tasks). "Human" text is the cached SFT policy's
samples. Aligned LMs are that policy tuned by GRPO toward the gold reward (mean token score) with
different KL coefficients and seeds (cached, shared by variants and seeds). The off-the-shelf
detector is a BT reward model trained on gold-labelled pairs (alignax.algorithms.cached.
make_proxy_rm). Seed s holds out aligned LM number s: the detector is fine-tuned on triplets
from the other aligned LMs and tested on the held-out one. y_MIX keeps the first half of a human
response and lets an aligned LM continue it. The loss is alignax.losses.detection.remodetect_loss
(the replay term's squared form is unverified); its replay buffer is the RM's own training pairs.
Detection quality is the AUROC of the RM score between aligned-LM and human responses to
held-out prompts.

Claims checked (variant `remodetect`; `no_mix` drops every term with y_MIX):
(1) the off-the-shelf RM's AUROC on the held-out aligned LM is >= 0.8;
(2) after ReMoDetect fine-tuning it is >= 0.95;
(3) removing y_MIX from training lowers the held-out AUROC.

    alignax run experiments/remodetect.py              # full setting, 3 seeds
    alignax run experiments/remodetect.py:smoke        # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.algorithms import online, policy_gradient
from alignax.algorithms.cached import cached_run, make_proxy_rm, make_sft_policy
from alignax.algorithms.common import stack_records
from alignax.eval.ranking import auroc
from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.detection import remodetect_loss, replay_regularizer
from alignax.losses.reward import bradley_terry_loss
from alignax.tasks.gold import token_score_reward
from alignax.tasks.language import BOS_ID
from alignax.tasks.policies import (gold_preference_pairs, make_gold, proxy_rm_config,
                                    sft_policy_config)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.use_mix = True
    c.variants = {"remodetect": {"use_mix": True}, "no_mix": {"use_mix": False}}
    c.cache_dir = ""  # "" = <workdir root>/cache, shared by variants and seeds
    task = dict(vocab_size=32, prompt_len=4, response_len=12, concentration=0.5,
                label_temperature=0.05, seed=0)
    model = dict(d_model=32, n_layers=1, n_heads=2, d_ff=96)
    quiet = dict(checkpoint_every=10_000, log_every=50, eval_every=0, progress=False)
    c.policy = sft_policy_config(task=task, model=model,
                                 num_sequences=2048 if not smoke else 128,
                                 train=dict(steps=400 if not smoke else 5, batch_size=64, **quiet))
    c.rm = proxy_rm_config(task=task, model=model, num_pairs=1024 if not smoke else 32,
                           num_eval_pairs=256 if not smoke else 32,
                           train=dict(steps=300 if not smoke else 5, batch_size=32, **quiet))
    # aligned LMs: GRPO toward the gold reward, one (kl_coef, seed) each
    c.aligned = [dict(kl_coef=0.003, seed=0), dict(kl_coef=0.01, seed=1),
                 dict(kl_coef=0.03, seed=2), dict(kl_coef=0.01, seed=3)]
    if smoke:
        c.aligned = c.aligned[:2]
    c.grpo = policy_gradient.default_config(
        iterations=30 if not smoke else 1, prompts_per_iteration=16 if not smoke else 2,
        num_samples=4, max_new_tokens=task["response_len"], checkpoint_every=10_000,
        optimizer=dict(name="adamw", learning_rate=1e-3, warmup_steps=0, schedule="constant",
                       clip_norm=1.0, kwargs=dict(weight_decay=0.0)))
    c.num_prompts = 512 if not smoke else 16          # GRPO prompt pool
    # fine-tuning triplets and AUROC prompts (aligned + human responses to each); equal sizes
    # share one compiled sampler
    c.num_triplets = 512 if not smoke else 16
    c.num_eval_prompts = 512 if not smoke else 16
    c.finetune = dict(steps=300 if not smoke else 3, batch_size=32 if not smoke else 8,
                      learning_rate=3e-4, replay_coef=1.0, replay_batch=32 if not smoke else 8)
    return c


# --- aligned LMs (cached) --------------------------------------------------------------------

def _aligned_policy(config, policy, spec, cache):
    """GRPO from the SFT policy toward the gold token-score reward; cached by config hash."""
    key = {"policy": config.policy.to_dict(), "grpo": config.grpo.to_dict(),
           "num_prompts": int(config.num_prompts), "spec": dict(spec)}
    return jax.device_get(cached_run(
        "aligned", key, lambda _, workdir: _train_aligned(config, policy, spec, workdir),
        cache_dir=cache)["params"])


def _train_aligned(config, policy, spec, workdir):
    task, seed = policy.task, int(spec["seed"])
    prompts = task.sample_prompts(np.random.default_rng([seed, 91]), int(config.num_prompts))
    ids = _with_bos(prompts)
    scores = task.token_scores()

    def reward_fn(rollout):
        return token_score_reward(rollout.responses, scores)

    cfg = {**config.grpo.to_dict(), "kl_coef": float(spec["kl_coef"])}
    return policy_gradient.train(cfg, workdir, model=policy.model, init_params=policy.params,
                                 ref_params=policy.params, prompt_ids=ids,
                                 prompt_mask=np.ones_like(ids, bool), reward_fn=reward_fn,
                                 seed=seed)


def _scorer(model, chunk: int):
    """`(params, ids [N, T]) -> [N]` RM scores, in fixed-size chunks (one compiled shape)."""
    apply = _cached(("score", model.config), lambda: jax.jit(model.apply))

    def score(params, ids):
        n = len(ids)
        pad = (-n) % chunk
        ids = np.concatenate([ids, np.repeat(ids[:1], pad, axis=0)]).astype(np.int32)
        out = [np.asarray(apply(params, ids[i:i + chunk], np.ones((chunk, ids.shape[1]), bool)))
               for i in range(0, len(ids), chunk)]
        return np.concatenate(out)[:n]

    return score


def _with_bos(tokens):
    return np.concatenate([np.full((len(tokens), 1), BOS_ID, np.int32), tokens],
                          axis=1).astype(np.int32)


def _sampler(model, max_new_tokens):
    rollout = _cached(("sample", model.config, max_new_tokens), lambda: jax.jit(
        online.make_rollout(model, num_samples=1, max_new_tokens=max_new_tokens)))

    def sample(params, context, key):
        """[N, C] contexts (with bos) -> [N, max_new_tokens] sampled tokens."""
        out = rollout(params, context, np.ones_like(context, bool), key)
        return np.asarray(out.ids[:, context.shape[1]:])

    return sample


# --- one run ---------------------------------------------------------------------------------

def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    seed = int(config.seed)
    cache = config.cache_dir or os.path.join(os.path.dirname(os.path.dirname(workdir)), "cache")
    policy = make_sft_policy(config.policy.to_dict(), cache_dir=cache)
    rm = make_proxy_rm(config.rm.to_dict(), cache_dir=cache)
    task = policy.task
    r_len = task.response_len
    half = r_len // 2
    aligned = [_aligned_policy(config, policy, spec, cache) for spec in config.aligned]
    held_out = seed % len(aligned)
    train_ids = [k for k in range(len(aligned)) if k != held_out]
    sample_full = _sampler(policy.model, r_len)
    sample_half = _sampler(policy.model, r_len - half)
    score = _scorer(rm.model, chunk=2 * int(config.num_eval_prompts))
    scores = task.token_scores()

    # fine-tuning triplets: one aligned LM (of the training ones) per prompt
    rng = np.random.default_rng([seed, 3])
    n = int(config.num_triplets)
    prompts = task.sample_prompts(rng, n)
    ctx = _with_bos(prompts)
    which = rng.integers(0, len(train_ids), n)
    key = jax.random.key(seed)
    k_hu, k_lm, k_mix, k_eval = jax.random.split(key, 4)
    human = sample_full(policy.params, ctx, k_hu)
    lm = np.zeros_like(human)
    mix = human.copy()
    for j, k in enumerate(train_ids):
        rows = which == j
        lm[rows] = sample_full(aligned[k], ctx, jax.random.fold_in(k_lm, j))[rows]
        mix_ctx = np.concatenate([ctx, human[:, :half]], axis=1)
        mix[rows, half:] = sample_half(aligned[k], mix_ctx, jax.random.fold_in(k_mix, j))[rows]
    triplets = {name: task.sequences(prompts, y) for name, y in
                (("lm", lm), ("mix", mix), ("human", human))}

    # replay buffer: the RM's own training pairs, scored by the initial RM
    gold = make_gold(task, config.rm.gold)
    pairs = stack_records(gold_preference_pairs(
        task, gold, int(config.rm.num_pairs), seed=int(config.rm.seed),
        temperature=float(config.rm.label_temperature)))
    replay = np.concatenate([pairs["chosen_ids"], pairs["rejected_ids"]]).astype(np.int32)
    replay_init = score(rm.params, replay)

    tuned = _finetune(rm, triplets, replay, replay_init, config.finetune,
                      bool(config.use_mix), seed)

    # evaluation on held-out prompts: every aligned LM and the human text
    eval_prompts = task.eval_prompts(int(config.num_eval_prompts), 70 + seed)
    ectx = _with_bos(eval_prompts)
    k_h, *k_a = jax.random.split(k_eval, 1 + len(aligned))
    ev_human = task.sequences(eval_prompts, sample_full(policy.params, ectx, k_h))
    ev_aligned = [task.sequences(eval_prompts, sample_full(p, ectx, kk))
                  for p, kk in zip(aligned, k_a)]

    labels = np.concatenate([np.ones(len(ev_human)), np.zeros(len(ev_human))])
    area = _cached("auroc", lambda: jax.jit(auroc))

    def detect(params, seqs):
        return float(area(score(params, np.concatenate([seqs, ev_human])), labels))

    out = {"rm_gold_accuracy": rm.gold_accuracy,
           "human_gold": float(np.mean(task.gold_reward(ev_human[:, -r_len:]))),
           "held_out_index": float(held_out),
           "held_out_gold": float(np.mean(task.gold_reward(ev_aligned[held_out][:, -r_len:]))),
           "auroc_offshelf_heldout": detect(rm.params, ev_aligned[held_out]),
           "auroc_heldout": detect(tuned, ev_aligned[held_out])}
    out["auroc_offshelf_train"] = float(np.mean([detect(rm.params, ev_aligned[k])
                                                 for k in train_ids]))
    out["auroc_train"] = float(np.mean([detect(tuned, ev_aligned[k]) for k in train_ids]))
    out["aligned_gold_mean"] = float(np.mean(
        [scores[a[:, -r_len:]].mean() for a in ev_aligned]))
    out["replay_drift"] = float(np.mean((score(tuned, replay) - replay_init) ** 2))
    return out


def _finetune(rm, triplets, replay, replay_init, cfg, use_mix: bool, seed: int):
    """Continual preference fine-tuning of the RM (a jitted lax.scan over steps)."""
    steps, bsz, rbsz = int(cfg.steps), int(cfg.batch_size), int(cfg.replay_batch)
    rng = np.random.default_rng([seed, 11])
    idx = rng.integers(0, len(triplets["lm"]), (steps, bsz))
    ridx = rng.integers(0, len(replay), (steps, rbsz))
    data = {k: jnp.asarray(v) for k, v in triplets.items()}
    data.update(replay=jnp.asarray(replay), replay_init=jnp.asarray(replay_init))
    fit = _cached(("finetune", rm.model.config, float(cfg.replay_coef),
                   float(cfg.learning_rate)),
                  lambda: _make_fit(rm.model.apply, float(cfg.replay_coef),
                                    float(cfg.learning_rate)))
    return fit(rm.params, data, jnp.asarray(idx), jnp.asarray(ridx),
               jnp.float32(1.0 if use_mix else 0.0))


def _make_fit(apply, coef, learning_rate):
    """`fit(params, data, idx [S, B], ridx [S, M], use_mix) -> params`, jitted.

    With use_mix = 1 the loss is `remodetect_loss`; with 0 the y_MIX terms are dropped
    (BT of y_LM over y_HU plus the same replay term). A traced switch: one compiled program."""
    opt = optax.adam(learning_rate)

    def r(params, ids):
        return apply(params, ids, jnp.ones_like(ids, bool))

    def loss_fn(params, data, i, j, use_mix):
        lm, mix, hu = (r(params, data[k][i]) for k in ("lm", "mix", "human"))
        rr, rr0 = r(params, data["replay"][j]), data["replay_init"][j]
        full = remodetect_loss(lm, mix, hu, rr, rr0, replay_coef=coef)
        no_mix = (jnp.mean(bradley_terry_loss(lm, hu))
                  + coef * jnp.mean(replay_regularizer(rr, rr0)))
        return use_mix * full + (1.0 - use_mix) * no_mix

    @jax.jit
    def fit(params, data, idx, ridx, use_mix):
        def step(carry, ij):
            params, state = carry
            grads = jax.grad(loss_fn)(params, data, *ij, use_mix)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), (idx, ridx))
        return params

    return fit


_COMPILED: dict = {}


def _cached(key, make):
    """A jitted function per key (model config, sizes), reused by later runs in the process."""
    if key not in _COMPILED:
        _COMPILED[key] = make()
    return _COMPILED[key]


# --- claims and plots ------------------------------------------------------------------------

def claims(results) -> list[Claim]:
    out = []
    if "remodetect" not in results:
        return out
    off = metric(results, "remodetect", "auroc_offshelf_heldout")
    out.append(Claim(
        name="the off-the-shelf RM detects a held-out aligned LM: AUROC >= 0.8",
        passed=off >= 0.8, measured={"auroc_offshelf_heldout": off},
        detail=f"off-the-shelf AUROC {off:.3f} (mean over seeds)"))
    tuned = metric(results, "remodetect", "auroc_heldout")
    out.append(Claim(
        name="after ReMoDetect fine-tuning the AUROC on a held-out aligned LM is >= 0.95",
        passed=tuned >= 0.95, measured={"auroc_heldout": tuned, "auroc_offshelf_heldout": off},
        detail=f"AUROC {off:.3f} -> {tuned:.3f} (mean over seeds)"))
    if "no_mix" in results:
        nomix = metric(results, "no_mix", "auroc_heldout")
        out.append(Claim(
            name="removing y_MIX from training lowers the held-out AUROC",
            passed=nomix < tuned,
            measured={"auroc_heldout": tuned, "auroc_heldout_no_mix": nomix},
            detail=f"with y_MIX {tuned:.4f}, without {nomix:.4f} (means over seeds)"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Bar chart: held-out and in-distribution AUROC, off-the-shelf vs fine-tuned, per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars, labels = [], []
    for variant in results:
        for name, label in (("auroc_offshelf_heldout", "RM\nheld-out LM"),
                            ("auroc_heldout", "tuned\nheld-out LM"),
                            ("auroc_train", "tuned\ntrain LMs")):
            m = results[variant]["metrics"].get(name)
            if m is not None:
                bars.append((m["mean"], m.get("std", 0.0)))
                labels.append(f"{variant}\n{label}")
    if not bars:
        return []
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(bars)), 4))
    x = np.arange(len(bars))
    ax.bar(x, [b[0] for b in bars], yerr=[b[1] for b in bars], color="tab:blue", alpha=0.8)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0.5, 1.0)
    ax.axhline(0.95, color="gray", ls="--", lw=1)
    ax.set_ylabel("AUROC (aligned vs human)")
    ax.set_title("ReMoDetect on the bigram language")
    fig.tight_layout()
    path = os.path.join(workdir, "plots", "auroc.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
