"""Directional Preference Alignment: preference-conditioned rejection-sampling fine-tuning of a toy
LM over two objectives (helpfulness, verbosity) scored by a learned multi-objective reward model.

Paper: Wang et al. 2024, "Arithmetic Control of LLMs for Diverse User Preferences: Directional
Preference Alignment with Multi-Objective Rewards" (arXiv 2402.18571). A multi-objective
regression reward model r(x, y) in R^2 is trained on rated data; a user preference is a unit
direction v = (cos theta, sin theta) in the (helpfulness, verbosity) plane, the reward is
v^T r(x, y), the policy reads v from its prompt, and iterated rejection-sampling fine-tuning (RSF)
keeps the best of N samples under each (prompt, v).

Setting: a toy language of 12 content tokens, a stop token and 8 direction tokens (bins of theta
covering [0, pi/2]: from pure helpfulness to pure verbosity). A prompt is
[bos, direction token, two random content tokens]; a response is content tokens then the stop.
Gold verbosity = number of content tokens. Gold helpfulness = the sum of the gold scores of the
DISTINCT content tokens of the response minus a redundancy penalty for every repeated token. (A
plain count of good tokens, as in the notes' sketch, makes the longest all-good response best on
both axes: the front collapses to one point and no direction changes the optimum. Scores counted
once per distinct token give a strictly concave front: each direction has its own optimal length,
from 4 tokens at theta near 0 to the maximum near pi/2.)

The multi-objective reward model (`alignax.rewards.multi_objective`): a 2-layer transformer with
two regression heads (`alignax.models.heads.make_multi_objective_reward_model`; its "objectives"
output, the gate is unused) trained per seed on `rm.examples` rated responses: random prompts,
random responses of random length (half with tokens drawn with replacement, half without, so
that short repeat-free responses are rated too), each rated with simulated noisy ratings = gold
(helpfulness, verbosity) + Gaussian noise of sd `rm.rating_noise` = (2.0, 1.0). Standardised
regression heads, minibatch AdamW, early stopping on the validation ratings
(`fit_small(select=("val_mse", "min"))`, the same for every variant). RSF scores samples with this
model only; the gold attributes are used for evaluation (and by the `dpa_gold` variant). Its
held-out quality is recorded (`test_rm_r2_help`, `test_rm_r2_len`, RMSEs) on test responses.

Per seed: SFT a 2-layer LM on random responses of random length (the reference policy; direction
tokens uninformative), then 3 rounds of RSF: for each of 64 prompts per direction bin, 16
samples, keep argmax v^T r_RM (`alignax.rewards.directional.select_by_direction`), SFT on the kept
samples (each round fine-tunes the last round's policy with a fresh AdamW state; the reference
SFT, the RM and every round train all seeds of a variant in one `alignax.train.small.fit_small`
program under `shared/base`, `shared/rm` and `<variant>/round<r>`).

Splits (docs/protocol.md): for experiment seed s, the RM's training responses and ratings, the
SFT data and the RSF prompts come from data seed `split_seeds(s).train` (3s), the RM's
validation ratings and the validation prompts from `split_seeds(s).validation` (3s + 1), and the
RM's test responses and the test prompts from `split_seeds(s).test` (3s + 2). Model
initialisation, minibatches and sampling keys use s.

Selection on validation, equal for every variant: after each RSF round r in 1..3 the policy is
evaluated on validation prompts (64 per direction x 16 samples, gold attributes), and the round
with the best mean gold directional reward mean_j v_j^T p_j over the variant's directions is
chosen per seed (`choose_on_validation`; recorded as `chosen_round`); the test metrics are those
of the chosen round's policy on fresh test prompts. The RM's stopping step is chosen on its
validation ratings. Hypervolume reference point, a rule fixed before measurement (issue 18; it
was the true front's nadir, picked after seeing results): per seed, the per-objective minimum
over the validation points of the two compared fronts (DPA and the scalar front) at their chosen
rounds. The RSF and SFT hyper-parameters are the earlier ones and not tuned.

Variants (they share each seed's reference SFT and RM: trained once, under `<run>/shared/`):
  - `dpa`: direction-conditioned RSF scored by the learned RM;
  - (`dpa` with `reward="gold"`: scored by the gold attributes, the pre-issue-18 mechanism; not
    in the default variants, for time; its numbers go into claim 1's detail when it is run as
    a variant named `dpa_gold`);
  - `scalar_front`: 8 separate scalar-reward RSF runs per seed, run j with the fixed direction of
    bin j and no direction token (a constant null token), at equal compute with DPA: each run
    gets DPA's per-direction budget (64 prompts x 16 samples per round) and 1/8 of its SFT updates
    per round (ceil(100 / 8) = 13), so the 8 runs together sample and train as much as one DPA
    run; scored by the same learned RM;
  - `scalar`: ONE scalar-reward RSF run (theta = pi/4, null token, DPA's whole budget), the
    single-point baseline of the notes.

Claims (test prompts, chosen rounds, 5 seeds, 95% t intervals):
  1. threshold: the direction controls verbosity: per seed Spearman(theta, mean length) over the
     8 bins, mean >= 0.9 (`dpa`);
  2. threshold: helpfulness moves as prescribed: per seed Spearman(theta, mean helpfulness)
     <= -0.9 (`dpa`);
  3. comparative: DPA's front is at least as good as the front of 8 scalar-reward RSF runs at
     equal compute: hypervolume(DPA) - hypervolume(scalar front) >= 0, paired over seeds;
  4. sanity (holds by construction, not counted): the 8-point DPA front's hypervolume >= that of
     the one-point scalar RSF baseline.

    alignax run experiments/dpa.py            # full setting, 5 seeds
    alignax run experiments/dpa.py:smoke      # seconds, for the tests

`:real` runs DPA's mechanism, direction-conditioned rejection-sampling fine-tuning, through the
library's RAFT recipe (`alignax.algorithms.rejection`: per prompt the best of `rsf.num_samples`
samples under the prompt's reward, SFT on the kept ones, `rsf.rounds` iterations) on a Hugging
Face checkpoint (`model.path`) and the prompts of `data.path` (any TRL format; the last
`data.eval_fraction` of the rows are test prompts, the fraction before them validation). Every
prompt is paired with each of the `task.num_bins` direction bins theta_j in [angle_low,
angle_high]; the direction is given to the policy as a system message
(`direction_prompt.format(help=cos theta, verbosity=sin theta)`, the paper's "user preference"
prompt; for string prompts it is prepended to the text), and a sample y is scored v_j^T r(x,
y) with the two objectives r = (helpfulness, verbosity): helpfulness is the score of the reward
checkpoint at `rm.path` (required; the paper's multi-objective RM has a helpfulness head),
verbosity the number of response tokens divided by `rsf.max_new_tokens` (the toy's gold
verbosity is the response length too; the toy's learned 2-head RM on simulated ratings has no
counterpart in a user's data, so the length is measured, not learned), each multiplied by
`rm.scales`. Every `eval_every` rounds the policy answers every (held-out prompt, direction)
once (fixed key) and the run reports per-direction means and the claims' statistics on them:
Spearman(theta, mean length) and Spearman(theta, mean helpfulness) over the bins, on
validation and test, at the round chosen by the validation mean directional reward (the toy's
rule). No claim is evaluated (a single run; the toy's claims need the seeds and the fronts of
the baselines).

    alignax run experiments/dpa.py:real --workdir runs/dpa_real --config.model.path=/ckpt/sft \
        --config.rm.path=/ckpt/rm --config.data.path=/data/prompts \
        --config.model.dtype=bfloat16 --config.model.logits_chunk=8192
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import common, online, pretrained, real, rejection, sft
from alignax.models.heads import make_multi_objective_reward_model
from alignax.models.transformer import TransformerConfig
from alignax.ops import spearman
from alignax.rewards import aggregate
from alignax.rewards import multi_objective as mo
from alignax.rewards.directional import (bin_centers, direction_tokens, select_by_direction,
                                         unit_directions)
from alignax.sampling.sampler import sample
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.small import fit_small

PAD, BOS, EOS, NULL = 0, 1, 2, 3
FIRST_DIR = 4
METHODS = ("dpa", "scalar", "scalar_front")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "dpa"  # "dpa" | "scalar" (one fixed direction) | "scalar_front" (8 runs)
    c.reward = "model"  # "model": the learned multi-objective RM; "gold": the gold attributes
    c.task = dict(
        num_bins=8 if not smoke else 4, angle_low=0.0, angle_high=math.pi / 2, max_content=12,
        # gold scores of the 12 content tokens, best first; a repeated token costs `repeat_cost`
        scores=(1.5, 1.0, 0.5, 0.2, -0.2, -0.4, -0.7, -1.0, -1.5, -2.5, -3.0, -3.5),
        repeat_cost=4.0, scalar_angle=math.pi / 4,
    )
    c.model = dict(d_model=64, n_layers=2 if not smoke else 1, n_heads=4, d_ff=128, max_len=32)
    c.rm = dict(examples=4096 if not smoke else 128, val_examples=512 if not smoke else 64,
                test_examples=1024 if not smoke else 64, steps=600 if not smoke else 10,
                steps_per_log=50 if not smoke else 5, batch_size=128 if not smoke else 16,
                learning_rate=3e-3, rating_noise=(2.0, 1.0))
    c.base = dict(examples=4096 if not smoke else 256, steps=200 if not smoke else 10,
                  learning_rate=3e-3)
    c.rsf = dict(rounds=3 if not smoke else 1, prompts_per_bin=64 if not smoke else 4,
                 num_samples=16 if not smoke else 4, steps=100 if not smoke else 5,
                 batch_size=128 if not smoke else 16, learning_rate=1e-3, temperature=1.0)
    # (RSF scored by the gold attributes, the pre-issue-18 mechanism, is the variant
    # dict(method="dpa", reward="gold"); left out of the full run for time)
    c.variants = dict(dpa=dict(method="dpa"), scalar_front=dict(method="scalar_front"),
                      scalar=dict(method="scalar"))
    if smoke:
        c.variants = dict(dpa=dict(method="dpa"), scalar_front=dict(method="scalar_front"))
    return c


# ----------------------------------------------------------------------------- :real

DIRECTION_PROMPT = ("Answer so as to maximise helpfulness x {help:.2f} + verbosity x "
                    "{verbosity:.2f}.")


def _real_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    c.task = dict(num_bins=8, angle_low=0.0, angle_high=math.pi / 2)
    c.direction_prompt = DIRECTION_PROMPT
    real.add_real_fields(c, max_length=512)  # data.max_length: the prompt length P
    c.rm = dict(path="", scales=(1.0, 1.0))  # helpfulness checkpoint; (help, verbosity) scales
    c.rsf = rejection.default_config(
        iterations=3, prompts_per_iteration=64, num_samples=16, max_new_tokens=256, epochs=1,
        minibatches=1, checkpoint_every=1, eval_every=1,
        optimizer=real.optimizer(1e-6))
    c.rsf.stop_tokens = (-1,)  # -1: the tokenizer's eos
    return c


def _real_rsf_cfg(config, stops=None) -> dict:
    return real.online_config(config, "rsf", stops, lora=False)


def validate(config: ml_collections.ConfigDict) -> None:
    if real.is_real(config):
        real.require(config, "model.path", "data.path", "rm.path",
                     what={"rm.path": "a reward checkpoint folder (helpfulness)"})
        if real.lora_config(config):
            raise ValueError("lora: the RAFT recipe trains the full model (lora.rank=0)")
        if len(config.rm.scales) != 2:
            raise ValueError(f"rm.scales={config.rm.scales} must be (helpfulness, verbosity)")
        rejection.validate(_real_rsf_cfg(config))


def directed_prompts(config, records, tok, max_length: int):
    """Each record x with each direction bin j: (ids [N J, P], mask [N J, P] bool, the bin of
    each row [N J]); the direction is a system message (conversational prompts) or a line
    before the prompt text."""
    from alignax.data import PromptRecord
    from alignax.data.tokenize import tokenize_prompt

    nb = int(config.task.num_bins)
    centers = np.asarray(bin_centers(nb, config.task.angle_low, config.task.angle_high))
    rows, bins = [], []
    for record in records:
        for j, theta in enumerate(centers):
            text = config.direction_prompt.format(help=math.cos(theta),
                                                  verbosity=math.sin(theta))
            messages = record.extras.get("messages", {}).get("prompt")
            if messages is not None:
                extras = {**record.extras, "messages": {"prompt": [
                    {"role": "system", "content": text}, *messages]}}
                directed = PromptRecord(record.prompt, extras)
            else:
                directed = PromptRecord(f"{text}\n{record.prompt}", dict(record.extras))
            rows.append(tokenize_prompt(directed, tok, max_length=max_length))
            bins.append(j)
    arrays = real.stack(rows)
    return arrays["prompt_ids"], arrays["prompt_mask"].astype(bool), np.asarray(bins)


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    """`:real` (module docstring): RAFT with the prompt's direction from `model.path`."""
    tok = real.tokenizer(config)
    data = real.prompt_data(config, tok, int(config.data.max_length))
    p = int(config.data.max_length)
    model, params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    rm, rm_params = pretrained.model_and_params(real.model_config(config, config.rm.path),
                                                "reward", seed=seed)
    score = jax.jit(rm.apply)
    nb = int(config.task.num_bins)
    centers = np.asarray(bin_centers(nb, config.task.angle_low, config.task.angle_high))
    dirs = np.asarray(unit_directions(jnp.asarray(centers)))
    stops = real.stop_tokens(tok, config.rsf.stop_tokens)
    scales = np.asarray(config.rm.scales, np.float32)
    max_new = int(config.rsf.max_new_tokens)

    def objectives(rollout):  # [N, 2]: (helpfulness, verbosity), scaled
        help_ = np.asarray(score(rm_params, rollout.ids, rollout.mask))
        length = np.asarray(rollout.response_mask).sum(-1) / max_new
        return np.stack([help_, length], -1) * scales

    train_ids, train_mask, train_bins = directed_prompts(config, data["train"]["records"], tok,
                                                         p)

    def reward_fn(rollout):
        r = objectives(rollout)
        return (r * dirs[train_bins[np.asarray(rollout.prompt_index)]]).sum(-1)

    held = {s: directed_prompts(config, data[s]["records"], tok, p)
            for s in ("validation", "test")}
    ids = np.concatenate([held[s][0] for s in held])
    mask = np.concatenate([held[s][1] for s in held])
    bins = np.concatenate([held[s][2] for s in held])
    split = np.concatenate([np.full(len(held[s][2]), i) for i, s in enumerate(held)])
    answer = jax.jit(online.make_rollout(model, num_samples=1, max_new_tokens=max_new,
                                         stop_tokens=stops, pad_id=tok.pad_id))

    def evaluate(policy_params):
        r = objectives(answer(policy_params, ids, mask, jax.random.key(2)))
        out = {}
        for i, name in enumerate(("val", "test")):
            part = split == i
            means = np.stack([r[part & (bins == j)].mean(0) for j in range(nb)])  # [J, 2]
            out[f"{name}_directional_reward"] = float((means * dirs).sum(-1).mean())
            out[f"{name}_spearman_theta_length"] = float(spearman(centers, means[:, 1]))
            out[f"{name}_spearman_theta_help"] = float(spearman(centers, means[:, 0]))
            out[f"{name}_length"] = float(means[:, 1].mean())
            out[f"{name}_help"] = float(means[:, 0].mean())
        return out

    before = evaluate(params)
    out = rejection.train(_real_rsf_cfg(config, stops), os.path.join(workdir, "rsf"),
                          model=model, init_params=params, prompt_ids=train_ids,
                          prompt_mask=train_mask, reward_fn=reward_fn, eval_fn=evaluate,
                          seed=seed)
    result = real.choose_iteration(out["history"], "eval/val_directional_reward", workdir)
    result.update({f"test_ref_{k[len('test_'):]}": v for k, v in before.items()
                   if k.startswith("test_")})
    return result


# ----------------------------------------------------------------------------- the toy task


def content_ids(task) -> np.ndarray:
    first = FIRST_DIR + int(task.num_bins)
    return np.arange(first, first + len(task.scores))


def vocab_size(task) -> int:
    return FIRST_DIR + int(task.num_bins) + len(task.scores)


def objectives(task, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(helpfulness, verbosity) of responses: tokens, mask [M, N] -> [M, 2] float32.

    Verbosity = content tokens before the stop; helpfulness = sum of the gold scores of the
    distinct content tokens - repeat_cost * (number of repeated occurrences).
    """
    ids = content_ids(task)
    scores = np.asarray(task.scores, np.float32)
    live = np.asarray(mask, bool) & (np.asarray(tokens) >= ids[0])
    counts = ((np.asarray(tokens)[:, :, None] == ids[None, None, :]) & live[:, :, None]).sum(1)
    helpful = (counts > 0) @ scores - task.repeat_cost * np.maximum(counts - 1, 0).sum(1)
    return np.stack([helpful, live.sum(1)], axis=1).astype(np.float32)


def oracle_points(task, angles: np.ndarray) -> np.ndarray:
    """(helpfulness, verbosity) of the best response for each direction (exhaustive over the
    number of distinct tokens, best-scored first, and repeats): [M] -> [M, 2]."""
    s = np.sort(np.asarray(task.scores, np.float64))[::-1]
    budget = int(task.max_content) + 1  # the last slot may hold a content token instead of stop
    out = []
    for th in angles:
        v = np.array([math.cos(th), math.sin(th)])
        best, point = -np.inf, None
        for d in range(min(len(s), budget) + 1):
            for rep in range(0 if d == 0 else budget - d + 1):
                p = np.array([s[:d].sum() - task.repeat_cost * rep, d + rep])
                if v @ p > best + 1e-12:
                    best, point = v @ p, p
        out.append(point)
    return np.asarray(out, np.float32)


def make_prompts(task, bins: np.ndarray, rng: np.random.Generator, *, null: bool) -> np.ndarray:
    """[bos, direction token (or null), two random content tokens]: bins [M] -> [M, 4]."""
    ids = content_ids(task)
    cond = np.full(len(bins), NULL) if null else FIRST_DIR + bins
    q = rng.choice(ids, size=(len(bins), 2))
    return np.concatenate([np.full((len(bins), 1), BOS), cond[:, None], q], 1).astype(np.int32)


def base_examples(task, n: int, rng: np.random.Generator):
    """Random responses of random length (0..max_content) after random prompts; the direction
    token carries no information. Returns input_ids, mask, loss_mask [n, 4 + max_content + 1]."""
    prompts = make_prompts(task, rng.integers(0, task.num_bins, n), rng, null=False)
    prompts[rng.random(n) < 1.0 / (task.num_bins + 1), 1] = NULL
    n_new = int(task.max_content) + 1
    lengths = rng.integers(0, task.max_content + 1, n)
    toks = rng.choice(content_ids(task), size=(n, n_new))
    pos = np.arange(n_new)[None, :]
    toks = np.where(pos < lengths[:, None], toks, np.where(pos == lengths[:, None], EOS, PAD))
    resp_mask = pos <= lengths[:, None]
    ids = np.concatenate([prompts, toks], 1).astype(np.int32)
    mask = np.concatenate([np.ones_like(prompts, bool), resp_mask], 1)
    loss_mask = np.concatenate([np.zeros_like(prompts, bool), resp_mask], 1)
    return ids, mask, loss_mask


# ----------------------------------------------------------------------------- training


def make_model(config):
    """The toy LM of `config.model` over the task's vocabulary."""
    return common.make_model({**config.model.to_dict(), "vocab_size": vocab_size(config.task)},
                             "lm")


def fit_sft(workdir: str, model, params, data: dict, seeds, keys, *, steps: int,
            learning_rate: float, batch_size: int):
    """`steps` AdamW steps of the SFT loss on random minibatches of each seed's rows, every seed
    in one `fit_small` program with a fresh optimizer.

    params: the stacked [S, ...] start of every seed; data: [S, C, T] input_ids, mask, loss_mask;
    keys [S]: minibatch draws (update i of seed s uses fold_in(keys[s], i)). Returns the SmallFit
    (final_loss: the loss before the last update).
    """
    sft_loss = sft.make_sft_loss(model.apply)

    def batch_fn(d, rng):
        idx = jax.random.randint(rng, (batch_size,), 0, d["input_ids"].shape[0])
        return jax.tree.map(lambda x: x[idx], d)

    return fit_small(workdir, loss_fn=lambda p, batch: sft_loss(p, batch, None), has_aux=True,
                     init_params=params, per_seed_init=True,
                     tx=optax.adamw(float(learning_rate), weight_decay=0.0),
                     num_steps=int(steps), data=jax.tree.map(jnp.asarray, data), seeds=seeds,
                     seed_keys=jnp.stack(keys), per_seed_data=True, batch_fn=batch_fn)


def rm_examples(task, n: int, rng: np.random.Generator, noise) -> dict:
    """Rated responses for the reward model: random prompts and responses of random length, the
    second half's tokens drawn without replacement (repeat-free responses get rated too), with
    simulated ratings = gold (helpfulness, verbosity) + N(0, noise^2) per objective.

    Returns input_ids, mask [n, T], ratings (noisy) and gold [n, 2]."""
    ids, mask, loss_mask = base_examples(task, n, rng)
    p = ids.shape[1] - (int(task.max_content) + 1)
    content = content_ids(task)
    for i in range(n // 2, n):
        perm = rng.permutation(content)
        live = loss_mask[i, p:] & (ids[i, p:] >= content[0])
        ids[i, p:][live] = perm[:int(live.sum())]
    gold = objectives(task, ids[:, p:], loss_mask[:, p:])
    ratings = gold + np.asarray(noise, np.float32) * rng.standard_normal(gold.shape)
    return {"input_ids": ids, "mask": mask, "ratings": ratings.astype(np.float32),
            "gold": gold}


def make_rm(config):
    """The multi-objective RM: the policy's transformer shape with two regression heads."""
    cfg = TransformerConfig.from_mapping({**config.model.to_dict(),
                                          "vocab_size": vocab_size(config.task)})
    return make_multi_objective_reward_model(cfg, num_objectives=2, gate_hidden=16)


def fit_rm(config, workdir: str, seeds) -> dict:
    """Every seed's RM in one `fit_small` program: minibatch AdamW on the standardised regression
    loss of the training ratings, early stopping on the validation ratings' MSE. Returns the
    model, the best params [S, ...], the rating scale (center, scale per seed) and metrics."""
    rc, task = config.rm, config.task
    rm = make_rm(config)
    train, val, test = [], [], []
    for s in seeds:
        sp = split_seeds(s)
        train.append(rm_examples(task, rc.examples, np.random.default_rng([sp.train, 7]),
                                 rc.rating_noise))
        val.append(rm_examples(task, rc.val_examples, np.random.default_rng([sp.validation, 7]),
                               rc.rating_noise))
        test.append(rm_examples(task, rc.test_examples, np.random.default_rng([sp.test, 7]),
                                rc.rating_noise))
    scales = [mo.rating_scale(t["ratings"]) for t in train]
    center = np.stack([c for c, _ in scales])
    scale = np.stack([s for _, s in scales])

    def stack(rows, keys):
        return {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in keys}

    data = stack(train, ("input_ids", "mask", "ratings"))
    data["center"], data["scale"] = jnp.asarray(center), jnp.asarray(scale)
    val_data = stack(val, ("input_ids", "mask", "ratings"))
    val_data["center"], val_data["scale"] = data["center"], data["scale"]

    def loss_fn(params, batch):
        return mo.make_regression_loss(rm.apply, batch["center"], batch["scale"])(params, batch)

    def batch_fn(d, rng):
        idx = jax.random.randint(rng, (int(rc.batch_size),), 0, d["input_ids"].shape[0])
        return {**{k: d[k][idx] for k in ("input_ids", "mask", "ratings")},
                "center": d["center"], "scale": d["scale"]}

    def eval_fn(params, d):
        loss, _ = loss_fn(params, d)
        return {"val_mse": loss}

    keys = [jax.random.fold_in(jax.random.key(s), 7) for s in seeds]
    fit = fit_small(workdir, loss_fn=loss_fn, has_aux=True, init_params=rm.init,
                    tx=optax.adamw(float(rc.learning_rate), weight_decay=0.0),
                    num_steps=int(rc.steps), data=data, seeds=seeds, seed_keys=jnp.stack(keys),
                    per_seed_data=True, batch_fn=batch_fn, eval_fn=eval_fn, eval_data=val_data,
                    select=("val_mse", "min"), steps_per_log=int(rc.steps_per_log))
    metrics = {}
    for i, s in enumerate(seeds):
        params = jax.tree.map(lambda x: x[i], fit.best_params)
        pred = mo.predict(rm.apply, params, test[i]["input_ids"], test[i]["mask"], center[i],
                          scale[i])
        rep = mo.regression_report(pred, test[i]["gold"], ["help", "len"])
        metrics[s] = {**{f"test_rm_{k}": v for k, v in rep.items()},
                      "rm_chosen_step": float(fit.best_step[i]),
                      "val_rm_mse": float(fit.best_score[i])}
    return {"model": rm, "params": fit.best_params, "center": center, "scale": scale,
            "metrics": metrics}


def _sample(model, params, prompts, rng, num_samples: int, task, temperature: float):
    return sample(model, params, jnp.asarray(prompts), jnp.ones(prompts.shape, bool), rng,
                  max_new_tokens=int(task.max_content) + 1, num_samples=num_samples,
                  temperature=temperature, stop_tokens=(EOS,), pad_id=PAD)


def evaluate(model, params, task, bins: np.ndarray, *, null: bool, num_samples: int,
             rng: jax.Array, data_seed: int, salt: int = 0) -> np.ndarray:
    """Mean gold (helpfulness, verbosity) from `num_samples` samples of fresh prompts of `bins`
    [B] drawn from `data_seed` (the split's): per direction bin ([num_bins, 2]) for a
    direction-conditioned policy, or over all prompts ([1, 2]) for a null-token one."""
    prompts = make_prompts(task, bins, np.random.default_rng([data_seed, 99, salt]), null=null)
    out = _sample(model, params, prompts, rng, num_samples, task, 1.0)
    r = objectives(task, np.asarray(out.tokens), np.asarray(out.mask))
    group = np.repeat(bins, num_samples) if not null else np.zeros(len(r), int)
    return np.stack([r[group == g].mean(0) for g in np.unique(group)])


_SHARED: dict = {}


def _shared(key, fit):
    """The stages every variant shares (the RM and the reference SFT of each seed: the same
    data, seeds and config in every variant) are trained once per process, under
    `<run>/shared/`, and reused; `key` holds everything they depend on. A resumed process
    restores them from their checkpoints there."""
    if key not in _SHARED:
        _SHARED[key] = fit()
    return _SHARED[key]


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant. A run is one policy: one per seed (`dpa`, `scalar`) or one
    per (seed, direction) (`scalar_front`); the reference SFT, the RM and each RSF round train
    all runs in one `fit_small` program; sampling, selection and evaluation per run."""
    if real.is_real(config):
        return {int(s): _run_real(config, os.path.join(workdir, f"seed_{s}"), int(s))
                for s in config.seeds}
    seeds = [int(s) for s in config.seeds]
    task, method = config.task, config.method
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if config.reward not in ("model", "gold"):
        raise ValueError(f"reward must be 'model' or 'gold', got {config.reward!r}")
    nb, n = int(task.num_bins), int(config.rsf.num_samples)
    per_bin = int(config.rsf.prompts_per_bin)
    centers = np.asarray(bin_centers(nb, task.angle_low, task.angle_high))
    dirs = np.asarray(unit_directions(jnp.asarray(centers)))
    model = make_model(config)
    names = ("input_ids", "mask", "loss_mask")
    results = {s: {} for s in seeds}

    # runs: (seed index, the direction bin of a scalar-front run or None)
    if method == "scalar_front":
        runs = [(i, j) for i in range(len(seeds)) for j in range(nb)]
        rsf_steps = math.ceil(int(config.rsf.steps) / nb)
    else:
        runs = [(i, None) for i in range(len(seeds))]
        rsf_steps = int(config.rsf.steps)
    run_ids = list(range(len(runs))) if method == "scalar_front" else seeds

    def run_bins(j):  # the prompts' bins of one RSF round / evaluation of a run
        return np.full(per_bin, j) if j is not None else np.repeat(np.arange(nb), per_bin)

    def run_dirs(j, bins):  # the direction of every prompt of a run
        if method == "dpa":
            return dirs[bins]
        angle = centers[j] if j is not None else float(task.scalar_angle)
        return np.tile(np.asarray(unit_directions(jnp.array([angle]))), (len(bins), 1))

    if method == "dpa":
        bins = run_bins(None)
        if not np.array_equal(np.asarray(direction_tokens(
                jnp.asarray(centers[bins]), first_token_id=FIRST_DIR, num_bins=nb,
                low=task.angle_low, high=task.angle_high)), FIRST_DIR + bins):
            raise RuntimeError("the prompts' direction tokens do not match their angle bins")

    # 1. the multi-objective RM (per seed)
    shared = os.path.join(os.path.dirname(os.path.abspath(workdir)), "shared")
    if config.reward == "model":
        rm = _shared(("rm", shared, config.rm.to_json(), config.task.to_json(),
                      config.model.to_json(), tuple(seeds)),
                     lambda: fit_rm(config, os.path.join(shared, "rm"), seeds))
        for s in seeds:
            results[s].update(rm["metrics"][s])
        rm_score = jax.jit(rm["model"].apply)

    # 2. reference policy: SFT on random responses (per seed), copied to every run of the seed
    keys = [jax.random.split(jax.random.key(s), 3) for s in seeds]

    def fit_base():
        examples = [base_examples(task, config.base.examples,
                                  np.random.default_rng([split_seeds(s).train, 1]))
                    for s in seeds]
        init = jax.tree.map(lambda *x: jnp.stack(x), *[model.init(k[1]) for k in keys])
        return fit_sft(os.path.join(shared, "base"), model, init,
                       {k: np.stack([e[j] for e in examples]) for j, k in enumerate(names)},
                       seeds, [k[2] for k in keys], steps=config.base.steps,
                       learning_rate=config.base.learning_rate,
                       batch_size=config.rsf.batch_size)

    base = _shared(("base", shared, config.base.to_json(), config.task.to_json(),
                    config.model.to_json(), config.rsf.batch_size, tuple(seeds)), fit_base)
    for i, s in enumerate(seeds):
        results[s]["base_nll_last"] = float(base.final_loss[i])
    seed_index = np.array([i for i, _ in runs])
    params = jax.tree.map(lambda x: x[seed_index], base.params)
    run_keys = [jax.random.fold_in(keys[i][0], 0 if j is None else j + 1) for i, j in runs]
    rngs = [np.random.default_rng([split_seeds(seeds[i]).train, 2, nb if j is None else j])
            for i, j in runs]
    null = method != "dpa"

    def seed_points(history, split):  # {seed: [rounds+1, directions, 2]}
        out = {}
        for i, s in enumerate(seeds):
            rows = [r for r, (si, _) in enumerate(runs) if si == i]
            out[s] = np.concatenate([history[split][r] for r in rows], axis=1)
        return out

    # 3. RSF rounds, with validation and test evaluations of every round's policy
    history = {"val": [[] for _ in runs], "test": [[] for _ in runs]}
    for rnd in range(int(config.rsf.rounds) + 1):
        kept, fit_keys = [], []
        for r, (i, j) in enumerate(runs):
            run_keys[r], k_val, k_test, k_samp, k_fit = jax.random.split(run_keys[r], 5)
            p = jax.tree.map(lambda x: x[r], params)
            bins = run_bins(j)
            sp = split_seeds(seeds[i])
            for split, key, ds in (("val", k_val, sp.validation), ("test", k_test, sp.test)):
                history[split][r].append(evaluate(model, p, task, bins, null=null,
                                                  num_samples=n, rng=key, data_seed=ds,
                                                  salt=0 if j is None else j + 1))
            if rnd == int(config.rsf.rounds):
                continue
            prompts = make_prompts(task, bins, rngs[r], null=null)
            out = _sample(model, p, prompts, k_samp, n, task, config.rsf.temperature)
            ids = np.concatenate([np.asarray(out.prompt_ids), np.asarray(out.tokens)], 1)
            resp = np.asarray(out.mask)
            mask = np.concatenate([np.ones((len(ids), prompts.shape[1]), bool), resp], 1)
            if config.reward == "model":
                rew = np.asarray(mo.predict(
                    rm_score, jax.tree.map(lambda x: x[i], rm["params"]), ids, mask,
                    rm["center"][i], rm["scale"][i]))
            else:
                rew = objectives(task, np.asarray(out.tokens), resp)
            idx, best = select_by_direction(jnp.asarray(rew.reshape(len(bins), n, 2)),
                                            jnp.asarray(run_dirs(j, bins)))
            rows = np.arange(len(bins)) * n + np.asarray(idx)
            loss_mask = np.concatenate([np.zeros((len(rows), prompts.shape[1]), bool),
                                        resp[rows]], 1)
            kept.append((ids[rows].astype(np.int32), mask[rows], loss_mask))
            fit_keys.append(k_fit)
            if j is None:
                results[seeds[i]][f"round{rnd + 1}_kept_rm_reward"] = float(np.mean(best))
        if rnd == int(config.rsf.rounds):
            break
        fit = fit_sft(os.path.join(workdir, f"round{rnd + 1}"), model, params,
                      {k: np.stack([e[q] for e in kept]) for q, k in enumerate(names)}, run_ids,
                      fit_keys, steps=rsf_steps, learning_rate=config.rsf.learning_rate,
                      batch_size=config.rsf.batch_size)
        params = fit.params

    # 4. per seed: the round chosen on validation, its test points and metrics
    val_pts, test_pts = seed_points(history, "val"), seed_points(history, "test")
    for s in seeds:
        o = results[s]
        v = dirs if method != "scalar" else np.asarray(
            unit_directions(jnp.array([float(task.scalar_angle)])))
        score = lambda rnd: float(np.mean(np.sum(val_pts[s][rnd] * v, 1)))  # noqa: E731
        chosen, _ = choose_on_validation(
            {f"round{r}": r for r in range(1, int(config.rsf.rounds) + 1)}, score)
        c = int(chosen[5:])
        o["chosen_round"] = float(c)
        o["val_directional_reward"] = score(c)
        o["test_directional_reward"] = float(np.mean(np.sum(test_pts[s][c] * v, 1)))
        for split, pts in (("val", val_pts[s][c]), ("test", test_pts[s][c])):
            for j, (h, length) in enumerate(pts):
                o[f"{split}_help_{j}"], o[f"{split}_len_{j}"] = float(h), float(length)
        for r in range(len(test_pts[s])):  # every round's test points, for the plot
            for j, (h, length) in enumerate(test_pts[s][r]):
                o[f"round{r}_help_{j}"], o[f"round{r}_len_{j}"] = float(h), float(length)
        o["base_help"] = float(test_pts[s][0][:, 0].mean())
        o["base_len"] = float(test_pts[s][0][:, 1].mean())
        if method != "scalar":
            o["test_spearman_theta_length"] = float(spearman(centers, test_pts[s][c][:, 1]))
            o["test_spearman_theta_help"] = float(spearman(centers, test_pts[s][c][:, 0]))
    return results


# ----------------------------------------------------------------------------- claims and plots


def _points(results, variant, split, seed) -> np.ndarray:
    m = results[variant]["per_seed"][seed]
    k = sum(1 for name in m if name.startswith(f"{split}_help_"))
    return np.array([[m[f"{split}_help_{j}"], m[f"{split}_len_{j}"]] for j in range(k)])


def reference_points(results, variants=("dpa", "scalar_front")) -> dict:
    """The rule fixed before measurement: per seed, the per-objective minimum over the validation
    points of the compared fronts (at their chosen rounds)."""
    seeds = set.intersection(*[set(results[v]["per_seed"]) for v in variants])
    return {s: np.min(np.concatenate([_points(results, v, "val", s) for v in variants]), 0)
            for s in sorted(seeds, key=int)}


def hypervolumes(results, variant, refs) -> dict:
    """{seed: hypervolume of the variant's test points above the seed's reference point}."""
    return {s: aggregate.hypervolume(_points(results, variant, "test", s), ref)
            for s, ref in refs.items() if s in results[variant]["per_seed"]}


def _fmt(values: dict) -> str:
    return "{" + ", ".join(f"{s}: {v:.3f}" for s, v in values.items()) + "}"


def claims(results) -> list[protocol.Claim]:
    if "default" in results:  # :real: one run on a user's checkpoints, metrics only
        return []
    rho_len = protocol.per_seed(results, "dpa", "test_spearman_theta_length")
    rho_help = protocol.per_seed(results, "dpa", "test_spearman_theta_help")
    rm = {k: results["dpa"]["metrics"][f"test_rm_{k}"]["mean"]
          for k in ("r2_help", "r2_len", "rmse_help", "rmse_len")}
    rm_text = ("learned RM on test responses: R^2 help {r2_help:.3f}, len {r2_len:.3f}; RMSE help "
               "{rmse_help:.2f}, len {rmse_len:.2f}").format(**rm)
    gold_text = ""
    if "dpa_gold" in results:
        g_len = protocol.per_seed(results, "dpa_gold", "test_spearman_theta_length")
        g_help = protocol.per_seed(results, "dpa_gold", "test_spearman_theta_help")
        gold_text = (f"; dpa_gold (RSF on the gold attributes): length {_fmt(g_len)}, "
                     f"helpfulness {_fmt(g_help)}")
    if "scalar_front" in results:
        f_len = protocol.per_seed(results, "scalar_front", "test_spearman_theta_length")
        gold_text += f"; scalar_front (8 runs, no direction token): length {_fmt(f_len)}"
    out = [
        protocol.decide(
            "DPA: Spearman(theta, mean response length) >= 0.9 across the 8 directions", rho_len,
            kind=protocol.THRESHOLD, at_least=0.9,
            detail=f"per seed {_fmt(rho_len)}; {rm_text}{gold_text}"),
        protocol.decide(
            "DPA: helpfulness falls as the direction moves weight to verbosity, "
            "Spearman(theta, mean helpfulness) <= -0.9", rho_help, kind=protocol.THRESHOLD,
            at_most=-0.9, detail=f"per seed {_fmt(rho_help)}; {rm_text}"),
    ]
    if "scalar_front" not in results:
        return out
    refs = reference_points(results)
    hv = {v: hypervolumes(results, v, refs) for v in results if v != "scalar"}
    diffs = {s: hv["dpa"][s] - hv["scalar_front"][s] for s in refs}
    ref_text = _fmt({s: float(r[0]) for s, r in refs.items()}) + " (help), " + _fmt(
        {s: float(r[1]) for s, r in refs.items()}) + " (len)"
    extra = "".join(f"; {v} {_fmt(h)}" for v, h in hv.items() if v not in ("dpa", "scalar_front"))
    out.append(protocol.decide(
        "DPA's front is at least as good as 8 scalar-reward RSF runs at equal compute: "
        "hypervolume(DPA) - hypervolume(scalar front) >= 0", diffs, kind=protocol.COMPARATIVE,
        at_least=0.0,
        measured={"hv_dpa": float(np.mean(list(hv["dpa"].values()))),
                  "hv_scalar_front": float(np.mean(list(hv["scalar_front"].values()))),
                  "difference": float(np.mean(list(diffs.values())))},
        detail=f"test hypervolumes per seed: dpa {_fmt(hv['dpa'])}, scalar_front "
               f"{_fmt(hv['scalar_front'])}{extra}; reference point per seed (per-objective "
               f"minimum over both fronts' validation points): {ref_text}; scalar front = 8 "
               f"runs, each with DPA's per-direction samples and 1/8 of its SFT updates"))
    if "scalar" in results:
        hv_s = {s: aggregate.hypervolume(_points(results, "scalar", "test", s), ref)
                for s, ref in refs.items()}
        wins = [hv["dpa"][s] >= hv_s[s] for s in refs]
        out.append(protocol.sanity(
            "The 8-point DPA front's hypervolume >= the one-point scalar RSF baseline's",
            all(wins), {"hv_dpa": float(np.mean(list(hv["dpa"].values()))),
                        "hv_scalar": float(np.mean(list(hv_s.values()))),
                        "seeds_won": float(sum(wins))},
            detail=f"by construction (8 points cover more than 1); per seed scalar "
                   f"{_fmt(hv_s)}"))
    return out


def plots(results, workdir: str) -> list[str]:
    """(helpfulness, verbosity) of the 8 directions per RSF round (test prompts), with the
    scalar front and the scalar RSF point at the last round."""
    from alignax.train.plots import plot_curves

    if "dpa" not in results:
        return []

    def mean_points(variant, r):
        res = results[variant]["metrics"]
        k = sum(1 for name in res if name.startswith(f"round{r}_help_"))
        return np.array([[res[f"round{r}_help_{j}"]["mean"], res[f"round{r}_len_{j}"]["mean"]]
                         for j in range(k)])

    names = results["dpa"]["metrics"]
    rounds = sorted({int(k[5:].split("_")[0]) for k in names if k.startswith("round")
                     and "_help_" in k})
    curves = {}
    for r in rounds:
        pts = mean_points("dpa", r)
        curves[f"DPA round {r}" + (" (SFT)" if r == 0 else "")] = (pts[:, 0], pts[:, 1])
    task = get_config().task
    num_bins = len(mean_points("dpa", 0))
    oracle = oracle_points(task, np.asarray(bin_centers(num_bins, task.angle_low,
                                                        task.angle_high)))
    curves["optimal response per direction"] = (oracle[:, 0], oracle[:, 1])
    for v, label in (("scalar_front", "scalar front (8 runs)"), ("scalar", "scalar RSF")):
        if v in results:
            pts = mean_points(v, rounds[-1])
            curves[f"{label} round {rounds[-1]}"] = (pts[:, 0], pts[:, 1])
    path = os.path.join(workdir, "plots", "dpa_front.png")
    return [plot_curves(curves, path,
                        title="Directional preference alignment: front over 8 directions",
                        xlabel="helpfulness (distinct gold-token score)",
                        ylabel="verbosity (response length)")]
