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
held-out prompts. The fine-tuning of every seed of a variant runs as one program
(`alignax.train.small.fit_small`, Adam on the seed's pre-drawn batch schedule) into
<variant>/finetune.

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
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small


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
    apply = jax.jit(model.apply)

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
    rollout = jax.jit(online.make_rollout(model, num_samples=1, max_new_tokens=max_new_tokens))

    def sample(params, context, key):
        """[N, C] contexts (with bos) -> [N, max_new_tokens] sampled tokens."""
        out = rollout(params, context, np.ones_like(context, bool), key)
        return np.asarray(out.ids[:, context.shape[1]:])

    return sample


# --- all seeds of a variant ------------------------------------------------------------------

def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed's triplets and evaluation; the fine-tuning of all seeds in one program.

    `workdir` is <root>/<variant>: the RM fine-tuning writes its metrics and checkpoints to
    <workdir>/finetune; the cached policies and RMs live in <root>/cache by default."""
    seeds = [int(s) for s in config.seeds]
    cache = config.cache_dir or os.path.join(os.path.dirname(workdir), "cache")
    policy = make_sft_policy(config.policy.to_dict(), cache_dir=cache)
    rm = make_proxy_rm(config.rm.to_dict(), cache_dir=cache)
    task = policy.task
    r_len = task.response_len
    half = r_len // 2
    aligned = [_aligned_policy(config, policy, spec, cache) for spec in config.aligned]
    sample_full = _sampler(policy.model, r_len)
    sample_half = _sampler(policy.model, r_len - half)
    score = _scorer(rm.model, chunk=2 * int(config.num_eval_prompts))
    scores = task.token_scores()

    # replay buffer: the RM's own training pairs, scored by the initial RM (shared by the seeds)
    gold = make_gold(task, config.rm.gold)
    pairs = stack_records(gold_preference_pairs(
        task, gold, int(config.rm.num_pairs), seed=int(config.rm.seed),
        temperature=float(config.rm.label_temperature)))
    replay = np.concatenate([pairs["chosen_ids"], pairs["rejected_ids"]]).astype(np.int32)
    replay_init = score(rm.params, replay)

    # fine-tuning triplets of every seed: one aligned LM (of the seed's training ones) per prompt
    per_seed = []
    for seed in seeds:
        held_out = seed % len(aligned)
        train_ids = [k for k in range(len(aligned)) if k != held_out]
        rng = np.random.default_rng([seed, 3])
        n = int(config.num_triplets)
        prompts = task.sample_prompts(rng, n)
        ctx = _with_bos(prompts)
        which = rng.integers(0, len(train_ids), n)
        k_hu, k_lm, k_mix, k_eval = jax.random.split(jax.random.key(seed), 4)
        human = sample_full(policy.params, ctx, k_hu)
        lm = np.zeros_like(human)
        mix = human.copy()
        for j, k in enumerate(train_ids):
            rows = which == j
            lm[rows] = sample_full(aligned[k], ctx, jax.random.fold_in(k_lm, j))[rows]
            mix_ctx = np.concatenate([ctx, human[:, :half]], axis=1)
            mix[rows, half:] = sample_half(aligned[k], mix_ctx,
                                           jax.random.fold_in(k_mix, j))[rows]
        data = {name: task.sequences(prompts, y) for name, y in
                (("lm", lm), ("mix", mix), ("human", human))}
        data.update(replay=replay, replay_init=replay_init,
                    **_batch_schedule(config.finetune, n, len(replay), seed))
        per_seed.append((held_out, train_ids, k_eval, data))

    data = {k: np.stack([d[k] for *_, d in per_seed]) for k in per_seed[0][-1]}
    fit = finetune(os.path.join(workdir, "finetune"), rm.model.apply, rm.params, data,
                   config.finetune, use_mix=bool(config.use_mix), seeds=seeds)

    labels = np.concatenate([np.ones(int(config.num_eval_prompts)),
                             np.zeros(int(config.num_eval_prompts))])
    area = jax.jit(auroc)
    out = {}
    for i, (seed, (held_out, train_ids, k_eval, _)) in enumerate(zip(seeds, per_seed)):
        tuned = fit.seed_params(i)
        # evaluation on held-out prompts: every aligned LM and the human text
        eval_prompts = task.eval_prompts(int(config.num_eval_prompts), 70 + seed)
        ectx = _with_bos(eval_prompts)
        k_h, *k_a = jax.random.split(k_eval, 1 + len(aligned))
        ev_human = task.sequences(eval_prompts, sample_full(policy.params, ectx, k_h))
        ev_aligned = [task.sequences(eval_prompts, sample_full(p, ectx, kk))
                      for p, kk in zip(aligned, k_a)]

        def detect(params, seqs, ev_human=ev_human):
            return float(area(score(params, np.concatenate([seqs, ev_human])), labels))

        res = {"rm_gold_accuracy": rm.gold_accuracy,
               "human_gold": float(np.mean(task.gold_reward(ev_human[:, -r_len:]))),
               "held_out_index": float(held_out),
               "held_out_gold": float(np.mean(
                   task.gold_reward(ev_aligned[held_out][:, -r_len:]))),
               "auroc_offshelf_heldout": detect(rm.params, ev_aligned[held_out]),
               "auroc_heldout": detect(tuned, ev_aligned[held_out])}
        res["auroc_offshelf_train"] = float(np.mean([detect(rm.params, ev_aligned[k])
                                                     for k in train_ids]))
        res["auroc_train"] = float(np.mean([detect(tuned, ev_aligned[k]) for k in train_ids]))
        res["aligned_gold_mean"] = float(np.mean(
            [scores[a[:, -r_len:]].mean() for a in ev_aligned]))
        res["replay_drift"] = float(np.mean((score(tuned, replay) - replay_init) ** 2))
        res["finetune_final_loss"] = float(fit.final_loss[i])
        out[seed] = res
    return out


# --- continual preference fine-tuning ---------------------------------------------------------

def _batch_schedule(cfg, num_triplets: int, num_replay: int, seed: int) -> dict:
    """Triplet indices idx [steps, B] and replay indices ridx [steps, M] of every update."""
    steps, bsz, rbsz = int(cfg.steps), int(cfg.batch_size), int(cfg.replay_batch)
    rng = np.random.default_rng([seed, 11])
    return {"idx": rng.integers(0, num_triplets, (steps, bsz)),
            "ridx": rng.integers(0, num_replay, (steps, rbsz))}


def make_finetune_loss(apply, replay_coef: float, use_mix: bool):
    """`loss_fn(params, batch) -> loss` of the fine-tuning.

    With use_mix the loss is `remodetect_loss` (y_LM > y_MIX > y_HU plus the replay term);
    without, the y_MIX terms are dropped (BT of y_LM over y_HU plus the same replay term).
    `batch` holds lm, mix, human [B, T] ids, replay [M, T] ids and replay_init [M] rewards."""
    def r(params, ids):
        return apply(params, ids, jnp.ones_like(ids, bool))

    def loss_fn(params, batch):
        lm, hu = r(params, batch["lm"]), r(params, batch["human"])
        rr, rr0 = r(params, batch["replay"]), batch["replay_init"]
        if use_mix:
            return remodetect_loss(lm, r(params, batch["mix"]), hu, rr, rr0,
                                   replay_coef=replay_coef)
        return (jnp.mean(bradley_terry_loss(lm, hu))
                + replay_coef * jnp.mean(replay_regularizer(rr, rr0)))

    return loss_fn


def finetune(workdir: str, apply, init_params, data, cfg, *, use_mix: bool, seeds):
    """Adam fine-tuning of the RM from `init_params` for every seed at once (`fit_small`).

    data: per-seed arrays with a leading [S] axis: lm, mix, human [S, N, T], replay [S, M', T],
    replay_init [S, M'], and the batch schedule idx [S, steps, B], ridx [S, steps, M]: update t
    uses triplets idx[t] and replay rows ridx[t]. Returns the `SmallFit` (params [S, ...])."""
    def batch_fn(d, rng, step):
        del rng
        i, j = d["idx"][step], d["ridx"][step]
        return {"lm": d["lm"][i], "mix": d["mix"][i], "human": d["human"][i],
                "replay": d["replay"][j], "replay_init": d["replay_init"][j]}

    return fit_small(workdir, loss_fn=make_finetune_loss(apply, float(cfg.replay_coef), use_mix),
                     init_params=init_params, tx=optax.adam(float(cfg.learning_rate)),
                     num_steps=int(cfg.steps), data=data, seeds=seeds, per_seed_data=True,
                     batch_fn=batch_fn, with_step=True, desc="finetune")


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
    """Held-out and in-distribution AUROC, off-the-shelf vs fine-tuned, per variant."""
    panels = (("auroc_offshelf_heldout", "RM, held-out LM"),
              ("auroc_heldout", "tuned, held-out LM"), ("auroc_train", "tuned, train LMs"))
    series = {v: ([r["metrics"][k]["mean"] for k, _ in panels],
                  [r["metrics"][k]["std"] for k, _ in panels]) for v, r in results.items()}
    if not series:
        return []
    return [plot_grouped_bars([label for _, label in panels], series,
                              os.path.join(workdir, "plots", "auroc.png"),
                              title="ReMoDetect on the bigram language",
                              ylabel="AUROC (aligned vs human)", ylim=(0.5, 1.0))]
