"""ReMoDetect: a reward model, fine-tuned on ordered triplets, detects aligned-LM text.

Paper: Lee et al. 2024, "ReMoDetect: Reward Models Recognize Aligned LLM's Generations"
(arXiv 2405.17382).
Aligned LMs are tuned to maximise a reward, so a reward model scores their text above human
text; continual preference fine-tuning on the order y_LM > y_MIX > y_HU (y_MIX: a human response
partly rewritten by an aligned LM) with a replay term toward the initial RM sharpens the gap.

Setting: the bigram language testbed (alignax.tasks). "Human" text is the cached SFT policy's
samples. Aligned LMs are that policy tuned by GRPO toward the gold reward (mean token score) with
different KL coefficients and seeds (cached, shared by variants and seeds; the world, not data).
The off-the-shelf detector is a BT reward model trained on gold-labelled pairs (alignax.
algorithms.cached.make_proxy_rm). Seed s holds out aligned LM number s (6 aligned LMs, 5 seeds):
the detector is fine-tuned on triplets from the other aligned LMs and tested on the held-out
one. y_MIX keeps the first half of a human response and lets an aligned LM continue it. The loss
is alignax.losses.detection.remodetect_loss (the replay term's squared form is unverified); its
replay buffer is the RM's own training pairs. Detection quality is the AUROC of the RM score
between aligned-LM and human responses to the same prompts.

Splits (docs/protocol.md): seed s draws its fine-tuning triplet prompts from data seed
`split_seeds(s).train`, its validation prompts from `.validation` and its test prompts from
`.test` (`num_eval_prompts` each; responses sampled per prompt).

Selection on validation: the validation set holds, per validation prompt, a human response and
a response of one of the seed's *training* aligned LMs (the held-out LM is test only); its
score is the AUROC of aligned vs human. Fine-tuning runs `finetune.steps` Adam updates for each
learning rate of `finetune.learning_rates` and keeps, per seed, the (learning rate, step) of the
highest validation AUROC (`fit_small(select=("val_auroc", "max"))` every
`finetune.steps_per_log` updates, then `choose_on_validation` over the learning rates). The
"without y_MIX" ablation gets the same grid, budget and criterion. The choice is in the
per-seed metrics (`chosen_learning_rate`, `chosen_steps`, `val_auroc_lr_<lr>`). The fine-tuning
of every seed of a variant and learning rate runs as one program (`alignax.train.small.
fit_small`, Adam on the seed's pre-drawn batch schedule) into <variant>/finetune_lr_<lr>.

Variants: `remodetect` and `no_mix` (every term with y_MIX dropped); the off-the-shelf RM (no
fine-tuning) is reported in both. Claims (5 seeds, 95% t intervals):
(1) threshold: the off-the-shelf RM's test AUROC on the held-out aligned LM is >= 0.8;
(2) threshold: after ReMoDetect fine-tuning it is >= 0.95;
(3) comparative: removing y_MIX lowers the held-out test AUROC (remodetect - no_mix >= 0).

    alignax run experiments/remodetect.py              # full setting, 5 seeds
    alignax run experiments/remodetect.py:smoke        # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import online, policy_gradient
from alignax.algorithms.cached import cached_run, make_proxy_rm, make_sft_policy
from alignax.algorithms.common import stack_records
from alignax.eval.ranking import auroc
from alignax.experiment import is_smoke
from alignax.losses.detection import remodetect_loss, replay_regularizer
from alignax.losses.reward import bradley_terry_loss
from alignax.tasks.gold import token_score_reward
from alignax.tasks.language import BOS_ID
from alignax.tasks.policies import (gold_preference_pairs, make_gold, proxy_rm_config,
                                    sft_policy_config)
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
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
                 dict(kl_coef=0.03, seed=2), dict(kl_coef=0.01, seed=3),
                 dict(kl_coef=0.03, seed=4), dict(kl_coef=0.003, seed=5)]
    if smoke:
        c.aligned = c.aligned[:2]
    c.grpo = policy_gradient.default_config(
        iterations=30 if not smoke else 1, prompts_per_iteration=16 if not smoke else 2,
        num_samples=4, max_new_tokens=task["response_len"], checkpoint_every=10_000,
        optimizer=dict(name="adamw", learning_rate=1e-3, warmup_steps=0, schedule="constant",
                       clip_norm=1.0, kwargs=dict(weight_decay=0.0)))
    c.num_prompts = 512 if not smoke else 16          # GRPO prompt pool
    # fine-tuning triplets and the validation and test AUROC prompts (aligned + human responses
    # to each); equal sizes share one compiled sampler
    c.num_triplets = 512 if not smoke else 16
    c.num_eval_prompts = 512 if not smoke else 16
    # at most `steps` updates per learning rate; (learning rate, step) chosen on validation
    c.finetune = dict(steps=300 if not smoke else 3, steps_per_log=20 if not smoke else 1,
                      learning_rates=[3e-4, 1e-3] if not smoke else [3e-4],
                      batch_size=32 if not smoke else 8, replay_coef=1.0,
                      replay_batch=32 if not smoke else 8)
    return c


# --- aligned LMs (cached) --------------------------------------------------------------------

def _aligned_policy(config, policy, spec, cache):
    """GRPO from the SFT policy toward the gold token-score reward; cached by config hash."""
    key = {"policy": config.policy.to_dict(), "grpo": config.grpo.to_dict(),
           "num_prompts": int(config.num_prompts), "spec": dict(spec)}
    return cached_run(
        "aligned", key, lambda _, workdir: _train_aligned(config, policy, spec, workdir),
        cache_dir=cache)["params"]


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


# the jitted samplers per (model config, response length): the variants of one run share them,
# so each is traced and compiled once per process instead of once per variant (a fresh
# `make_rollout` closure is a new program to jax)
_SAMPLERS: dict = {}


def _sampler(model, max_new_tokens):
    key = (repr(model.config), int(max_new_tokens))
    if key not in _SAMPLERS:
        _SAMPLERS[key] = jax.jit(online.make_rollout(model, num_samples=1,
                                                     max_new_tokens=max_new_tokens))
    rollout = _SAMPLERS[key]

    def sample(params, context, key):
        """[N, C] contexts (with bos) -> [N, max_new_tokens] sampled tokens."""
        out = rollout(params, context, np.ones_like(context, bool), key)
        return np.asarray(out.ids[:, context.shape[1]:])

    return sample


# --- all seeds of a variant ------------------------------------------------------------------

def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed's triplets, validation set and test evaluation; the fine-tuning of all seeds
    in one program per learning rate, (learning rate, step) chosen on validation.

    `workdir` is <root>/<variant>: the RM fine-tuning with learning rate lr writes its metrics
    and checkpoints to <workdir>/finetune_lr_<lr>; the cached policies and RMs live in
    <root>/cache by default."""
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

    def responses_of(train_ids, ctx, which, key):
        """One response per context, from training aligned LM `train_ids[which[i]]`."""
        out = None
        for j, k in enumerate(train_ids):
            y = sample_full(aligned[k], ctx, jax.random.fold_in(key, j))
            out = y.copy() if out is None else out
            out[which == j] = y[which == j]
        return out

    # fine-tuning triplets and validation sets of every seed: one training aligned LM per prompt
    n, n_eval = int(config.num_triplets), int(config.num_eval_prompts)
    per_seed = []
    for seed in seeds:
        held_out = seed % len(aligned)
        train_ids = [k for k in range(len(aligned)) if k != held_out]
        data_seeds = split_seeds(seed)
        rng = np.random.default_rng([data_seeds.train, 3])
        prompts = task.sample_prompts(rng, n)
        ctx = _with_bos(prompts)
        which = rng.integers(0, len(train_ids), n)
        k_hu, k_lm, k_mix, k_eval = jax.random.split(jax.random.key(seed), 4)
        human = sample_full(policy.params, ctx, k_hu)
        lm = responses_of(train_ids, ctx, which, k_lm)
        mix = human.copy()
        mix_ctx = np.concatenate([ctx, human[:, :half]], axis=1)
        for j, k in enumerate(train_ids):
            rows = which == j
            mix[rows, half:] = sample_half(aligned[k], mix_ctx,
                                           jax.random.fold_in(k_mix, j))[rows]
        data = {name: task.sequences(prompts, y) for name, y in
                (("lm", lm), ("mix", mix), ("human", human))}
        data.update(replay=replay, replay_init=replay_init,
                    **_batch_schedule(config.finetune, n, len(replay), seed))
        # validation: aligned (training LMs) vs human responses to validation prompts
        v_prompts = task.eval_prompts(n_eval, data_seeds.validation)
        v_ctx = _with_bos(v_prompts)
        v_which = np.random.default_rng([data_seeds.validation, 4]).integers(
            0, len(train_ids), n_eval)
        k_vh, k_va = jax.random.split(jax.random.fold_in(jax.random.key(seed), 5))
        val = {"ids": np.concatenate([
            task.sequences(v_prompts, responses_of(train_ids, v_ctx, v_which, k_va)),
            task.sequences(v_prompts, sample_full(policy.params, v_ctx, k_vh))])}
        per_seed.append((held_out, train_ids, k_eval, data, val))

    data = {k: np.stack([d[3][k] for d in per_seed]) for k in per_seed[0][3]}
    labels = np.concatenate([np.ones(n_eval), np.zeros(n_eval)]).astype(np.float32)
    val = {"ids": np.stack([d[4]["ids"] for d in per_seed]),
           "labels": np.broadcast_to(labels, (len(seeds), 2 * n_eval)).copy()}
    fits = {}
    for lr in config.finetune.learning_rates:
        fits[_lr_name(lr)] = finetune(
            os.path.join(workdir, f"finetune_lr_{_lr_name(lr)}"), rm.model.apply, rm.params,
            data, config.finetune, use_mix=bool(config.use_mix), seeds=seeds,
            learning_rate=float(lr), val=val)

    area = jax.jit(auroc)
    out = {}
    for i, (seed, (held_out, train_ids, k_eval, _, _)) in enumerate(zip(seeds, per_seed)):
        # the learning rate (and, inside each fit, the step) of the best validation AUROC
        chosen, record = choose_on_validation(
            {name: float(fit.best_score[i]) for name, fit in fits.items()}, lambda x: x)
        fit = fits[chosen]
        tuned = jax.tree.map(lambda x, i=i: x[i], fit.best_params)
        # test: held-out prompts, every aligned LM and the human text
        eval_prompts = task.eval_prompts(n_eval, split_seeds(seed).test)
        ectx = _with_bos(eval_prompts)
        k_h, *k_a = jax.random.split(k_eval, 1 + len(aligned))
        ev_human = task.sequences(eval_prompts, sample_full(policy.params, ectx, k_h))
        ev_aligned = [task.sequences(eval_prompts, sample_full(p, ectx, kk))
                      for p, kk in zip(aligned, k_a)]

        def detect(params, seqs, ev_human=ev_human):
            return float(area(score(params, np.concatenate([seqs, ev_human])), labels))

        res = {"rm_gold_accuracy": rm.gold_accuracy,
               "test_human_gold": float(np.mean(task.gold_reward(ev_human[:, -r_len:]))),
               "held_out_index": float(held_out),
               "test_held_out_gold": float(np.mean(
                   task.gold_reward(ev_aligned[held_out][:, -r_len:]))),
               "test_auroc_offshelf_heldout": detect(rm.params, ev_aligned[held_out]),
               "test_auroc_heldout": detect(tuned, ev_aligned[held_out])}
        res["test_auroc_offshelf_train"] = float(np.mean([detect(rm.params, ev_aligned[k])
                                                          for k in train_ids]))
        res["test_auroc_train"] = float(np.mean([detect(tuned, ev_aligned[k])
                                                 for k in train_ids]))
        res["test_aligned_gold_mean"] = float(np.mean(
            [scores[a[:, -r_len:]].mean() for a in ev_aligned]))
        res["replay_drift"] = float(np.mean((score(tuned, replay) - replay_init) ** 2))
        res["val_auroc"] = float(fit.best_score[i])
        res["val_auroc_offshelf"] = float(area(score(rm.params, per_seed[i][4]["ids"]), labels))
        res["chosen_learning_rate"] = float(chosen)
        res["chosen_steps"] = float(fit.best_step[i])
        for name, f in fits.items():
            res[f"val_auroc_lr_{name}"] = float(f.best_score[i])
            res[f"chosen_steps_lr_{name}"] = float(f.best_step[i])
        res["finetune_final_loss"] = float(fit.final_loss[i])
        del record  # every candidate's score is in the metrics above
        out[seed] = res
    return out


def _lr_name(lr: float) -> str:
    return f"{float(lr):g}"


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
    names = ("lm", "mix", "human", "replay") if use_mix else ("lm", "human", "replay")

    def loss_fn(params, batch):
        # one forward pass over every sequence of the batch (one traced model, not four)
        ids = jnp.concatenate([batch[k] for k in names])
        out = apply(params, ids, jnp.ones(ids.shape[:2], bool))
        ends = np.cumsum([batch[k].shape[0] for k in names])[:-1]
        r = dict(zip(names, jnp.split(out, ends)))
        rr0 = batch["replay_init"]
        if use_mix:
            return remodetect_loss(r["lm"], r["mix"], r["human"], r["replay"], rr0,
                                   replay_coef=replay_coef)
        return (jnp.mean(bradley_terry_loss(r["lm"], r["human"]))
                + replay_coef * jnp.mean(replay_regularizer(r["replay"], rr0)))

    return loss_fn


def finetune(workdir: str, apply, init_params, data, cfg, *, use_mix: bool, seeds,
             learning_rate: float, val: dict | None = None):
    """Adam fine-tuning of the RM from `init_params` for every seed at once (`fit_small`).

    data: per-seed arrays with a leading [S] axis: lm, mix, human [S, N, T], replay [S, M', T],
    replay_init [S, M'], and the batch schedule idx [S, steps, B], ridx [S, steps, M]: update t
    uses triplets idx[t] and replay rows ridx[t]. With `val` ({"ids": [S, V, T], "labels":
    [S, V]}) the AUROC of the RM score on it is measured every `cfg.steps_per_log` updates and
    each seed keeps its params of the highest one (`best_params`, `best_step`, `best_score`).
    Returns the `SmallFit` (params [S, ...])."""
    def batch_fn(d, rng, step):
        del rng
        i, j = d["idx"][step], d["ridx"][step]
        return {"lm": d["lm"][i], "mix": d["mix"][i], "human": d["human"][i],
                "replay": d["replay"][j], "replay_init": d["replay_init"][j]}

    extra = {}
    if val is not None:
        def val_auroc(params, v):
            return {"val_auroc": auroc(apply(params, v["ids"], jnp.ones_like(v["ids"], bool)),
                                       v["labels"])}

        extra = dict(eval_fn=val_auroc, eval_data=jax.tree.map(jnp.asarray, val),
                     select=("val_auroc", "max"), steps_per_log=int(cfg.steps_per_log))
    return fit_small(workdir, loss_fn=make_finetune_loss(apply, float(cfg.replay_coef), use_mix),
                     init_params=init_params, tx=optax.adam(float(learning_rate)),
                     num_steps=int(cfg.steps), data=data, seeds=seeds, per_seed_data=True,
                     batch_fn=batch_fn, with_step=True, desc="finetune", **extra)


# --- claims and plots ------------------------------------------------------------------------

def claims(results) -> list[protocol.Claim]:
    out = []
    if "remodetect" not in results:
        return out
    out.append(protocol.threshold(
        "the off-the-shelf RM detects a held-out aligned LM: test AUROC >= 0.8", results,
        ("remodetect", "test_auroc_offshelf_heldout"), at_least=0.8,
        detail="the BT RM before any fine-tuning (the baseline detector)"))
    off = np.mean(list(protocol.per_seed(results, "remodetect",
                                         "test_auroc_offshelf_heldout").values()))
    out.append(protocol.threshold(
        "after ReMoDetect fine-tuning the test AUROC on a held-out aligned LM is >= 0.95",
        results, ("remodetect", "test_auroc_heldout"), at_least=0.95,
        detail=f"off-the-shelf {off:.3f}; learning rate and step chosen on validation "
               "(training aligned LMs vs human)"))
    if "no_mix" in results:
        out.append(protocol.compare(
            "removing y_MIX from training lowers the held-out test AUROC "
            "(remodetect - no_mix >= 0)", results, ("remodetect", "test_auroc_heldout"),
            ("no_mix", "test_auroc_heldout"), at_least=0.0,
            detail="baseline no_mix: same learning-rate grid, step budget and validation "
                   "criterion"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Held-out and in-distribution AUROC, off-the-shelf vs fine-tuned, per variant."""
    panels = (("test_auroc_offshelf_heldout", "RM, held-out LM"),
              ("test_auroc_heldout", "tuned, held-out LM"),
              ("test_auroc_train", "tuned, train LMs"))
    series = {v: ([r["metrics"][k]["mean"] for k, _ in panels],
                  [r["metrics"][k]["std"] for k, _ in panels]) for v, r in results.items()}
    if not series:
        return []
    return [plot_grouped_bars([label for _, label in panels], series,
                              os.path.join(workdir, "plots", "auroc.png"),
                              title="ReMoDetect on the bigram language",
                              ylabel="AUROC (aligned vs human)", ylim=(0.5, 1.0))]
