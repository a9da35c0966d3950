"""GenARM: guided decoding with an autoregressive reward model vs ARGS, best-of-n and DPO.

Paper: Xu et al. 2024, "GenARM: Reward Guided Generation with Autoregressive Reward Model for
Test-time Alignment" (arXiv 2410.08193).

Mechanism: the reward of a response is the log-prob of a trainable LM, r(x, y) = sum_t
log pi_r(y_t | x, y_<t) (the ARM), trained on preference pairs with L = -log sigma(beta_r (r(x,
y_w) - r(x, y_l))) (`alignax.losses.autoregressive_rm_loss`; here through the same objective,
CPO with alpha = 0, `tests/losses/test_arm.py`). Decoding samples every token from pi~ ∝
pi_base prod_i pi_r_i^(alpha_i / beta) inside the jitted KV-cache sampler
(`alignax.sampling.guided.sample_guided`: every model its own cache, one scan; weights traced).

Setting (the notes' toy): the bigram language of `alignax.tasks` (vocabulary 32, prompts of 4,
responses of 12 tokens). Gold objective A = mean token score + `gold.bonus` if no token scores
below `gold.bad` (a sequence-level bonus no single token reveals); objective B = the mean of a
second token score, correlated `gold.mix` with A's (a conflicting objective). The "world"
shared by all seeds: a small base (SFT, d_model 32, 1 layer) and a larger base (SFT, d_model
64, 2 layers), cached (`alignax.algorithms.cached.make_sft_policy`). Per seed: `num_pairs` pairs
of chain responses labelled by BT draws of each gold (`alignax.tasks.policies.
gold_preference_pairs`, temperature `label_temperature`), and through `fit_small` (every seed,
and every grid value, one vmapped program per model): the ARMs of A and B (initialised from
the small base), a trajectory RM (scalar head on the small base's backbone, BT on A's pairs),
and DPO from each base (A's pairs, references precomputed). All fits use the same steps,
batch, learning rate, and keep the step of best validation pair accuracy.

Methods (objective A, one sample per prompt): `base`; `genarm`: the ARM of A guides the small
base (strength 1/beta from `genarm_strengths`); `dpo`: the DPO policy of the small base (beta
from `dpo_betas`); `args`: ARGS-style decoding (`alignax.sampling.guided.args_sample`, top-k
candidates rescored with weight w from `args_weights` by the trajectory RM on partial
sequences); `bon`: best-of-n by the trajectory RM from the base, at n = `bon_n` and at the
matched n below; weak-to-strong: the same small ARM guiding the large base vs DPO on the large
base; front: both ARMs mixed, weights (s a, s (1 - a)) over `front_alphas`.

Compute accounting (forward token-positions per generated token, weighted by parameter count;
reported as `cost_*`): base sampling 1; GenARM 1 + p_arm / p_base (here 2: the ARM is the small
base's size); best-of-n n (+ one RM pass per sequence, about (P + N) p_rm / (N p_base) = 1.4 n
more here, not counted in its favour); ARGS about (1 + k (1 + p_rm / p_base)) (P + N) / 2
without a KV cache (far more: it is the expensive baseline, as in the paper). "Matched" best-of-n
uses n = ceil(GenARM's cost) = 2 samples, the first two of the n = 16 draw. Training compute
is equal across ARM, RM and DPO (same steps, batch, pairs).

Splits (`alignax.tasks.splits.split_seeds`): seed s trains on pairs from data seed 3s,
validates (pairs for step selection, prompts for the decoding knobs) on 3s + 1 and is tested
on prompts from 3s + 2. Selection on validation, for every method the same way: the fit step by
validation pair accuracy, then the method's one knob (GenARM strength, DPO beta, ARGS weight;
three values each) by validation gold A; best-of-n has no knob. Claims use test prompts only.

Claims (5 seeds, paired 95% t intervals over seeds; gains are over the same base's test gold):
- comparative: GenARM recovers >= 95% of DPO's gain: per seed (genarm - base) - 0.95 (dpo -
  base) >= 0 (the notes' ">= 95% of DPO's gold", on gains, since gold can be negative);
- comparative: GenARM's test gold is above ARGS-style guidance's;
- comparative: GenARM's test gold is above best-of-n at matched decoding compute (n = 2);
  best-of-16 (8x GenARM's cost) is reported beside it;
- comparative (weak-to-strong): the small ARM guiding the large base recovers >= 50% of the
  large base's DPO gain: (genarm_large - base_large) - 0.5 (dpo_large - base_large) >= 0;
- comparative (front, two claims): at the validation-chosen strength, the A-ARM end of the
  mixture (a = 1) has the higher test gold A and the B-ARM end (a = 0) the higher test gold B:
  the weights trade one objective for the other at test time (the front's points are reported
  as `front_a<alpha>_{gold_a,gold_b}` and drawn in plots/front.png; that some front exists
  would hold by construction and is not claimed);
- sanity: both ARMs rank held-out validation pairs above chance (trained to).

    alignax run experiments/genarm.py            # full setting, 5 seeds
    alignax run experiments/genarm.py:smoke      # seconds, for the tests

`:real`: a base checkpoint (`model.path`) and an ARM (`arm.path`, same tokenizer; "" = the
base checkpoint fine-tuned with the ARM loss on the pairs of `data.path` through the direct
recipe, `arm_train`, loss "cpo" with alpha 0 = GenARM's loss). Reports the ARM's held-out pair
accuracy (validation and test rows of `data.path`) and, on the test prompts, guided vs
unguided samples (the same key): length, the base's log-prob, the ARM reward and the one-sample
KL(pi~ || pi_base) estimate. No gold on user data, so no claim is evaluated.

    alignax run experiments/genarm.py:real --workdir runs/genarm_real \
        --config.model.path=/ckpt/base --config.data.path=/data/pairs \
        --config.decode.beta=1.0 --config.decode.max_new_tokens=128
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import direct, pretrained, real
from alignax.algorithms.cached import make_sft_policy
from alignax.algorithms.small_lm import response_logps
from alignax.losses import autoregressive_rm_loss, bradley_terry_loss
from alignax.losses.direct import dpo_loss
from alignax.models.transformer import make_reward_model
from alignax.sampling.guided import args_sample, arm_rewards, sample_guided
from alignax.sampling.sampler import sample
from alignax.tasks.language import BigramLanguage
from alignax.tasks.policies import gold_preference_pairs, sft_policy_config
from alignax.tasks.splits import split_seeds
from alignax.train.small import fit_small, pair_accuracy_selection


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.variants = {"toy": {}}
    c.cache_dir = ""  # "" = <workdir>/cache: the two bases, shared by the seeds
    task = dict(vocab_size=32, prompt_len=4, response_len=12, concentration=0.5,
                label_temperature=0.05, seed=0)
    c.task = task
    sft_train = dict(steps=600 if not smoke else 10, batch_size=64, checkpoint_every=10_000,
                     log_every=50, eval_every=0, progress=False)
    small = dict(d_model=32, n_layers=1, n_heads=2, d_ff=64)
    c.small = sft_policy_config(task=task, model=small, num_sequences=4096 if not smoke else 256,
                                train=sft_train)
    # the smoke run's "large" base is the small one (one program fewer to compile)
    c.large = sft_policy_config(task=task, num_sequences=4096 if not smoke else 256,
                                model=small if smoke else dict(d_model=64, n_layers=2,
                                                               n_heads=4, d_ff=176),
                                train=sft_train)
    c.gold = dict(bonus=0.3, bad=-1.0, mix=-0.5, seed_b=101)
    c.label_temperature = 0.1
    c.num_pairs = 2048 if not smoke else 32
    # smoke: as many validation pairs as training pairs (one compiled reference log-prob
    # program serves both)
    c.num_val_pairs = 256 if not smoke else 32
    c.num_val_prompts = 128 if not smoke else 8
    c.num_test_prompts = 256 if not smoke else 8
    c.fit = dict(steps=300 if not smoke else 4, batch_size=64 if not smoke else 8,
                 learning_rate=1e-3, log_every=30 if not smoke else 2)
    c.beta_r = 1.0
    c.genarm_strengths = [0.5, 1.0, 2.0] if not smoke else [1.0]
    c.dpo_betas = [0.03, 0.1, 0.3] if not smoke else [0.1]
    c.args_weights = [1.0, 3.0, 10.0] if not smoke else [1.0]
    c.args_top_k = 8 if not smoke else 4
    c.bon_n = 16 if not smoke else 2
    c.front_alphas = [0.0, 0.25, 0.5, 0.75, 1.0] if not smoke else [0.0, 1.0]
    return c


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): a base checkpoint, an ARM (loaded or trained on the pairs),
    guided vs unguided samples on held-out prompts."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real.add_real_fields(c, max_length=512)
    c.arm = dict(path="")  # "" = model.path fine-tuned with the ARM loss on data.path
    # the direct recipe's keys but model / mesh / lora (the real fields): GenARM's ARM loss
    # is CPO with alpha 0 (beta = beta_r)
    c.arm_train = dict(loss="cpo", loss_kwargs=dict(beta=1.0, alpha=0.0),
                       optimizer=real.optimizer(1e-6),
                       train=dict(steps=200, batch_size=16, checkpoint_every=100, log_every=10,
                                  eval_every=0, progress=False))
    c.decode = dict(beta=1.0, max_prompt_length=256, max_new_tokens=128,
                    stop_tokens=(-1,), temperature=1.0)  # -1: the eos
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """The grids and sizes of the toy; for :real the required paths and the ARM recipe."""
    if real.is_real(config):
        real.require(config, "model.path", "data.path")
        if float(config.decode.beta) <= 0:
            raise ValueError(f"decode.beta must be > 0, got {config.decode.beta}")
        if not config.arm.path:
            direct.validate(_arm_recipe_config(config))
        return
    for key in ("genarm_strengths", "dpo_betas", "args_weights", "front_alphas"):
        if not list(config[key]):
            raise ValueError(f"{key} must be a non-empty list")
    if len(set(map(len, (config.genarm_strengths, config.dpo_betas, config.args_weights)))) > 1:
        raise ValueError("genarm_strengths, dpo_betas and args_weights must have equal lengths "
                         "(equal tuning)")
    if 0.0 not in list(config.front_alphas) or 1.0 not in list(config.front_alphas):
        raise ValueError("front_alphas must contain 0.0 and 1.0 (the two endpoints)")
    if int(config.bon_n) < 2:
        raise ValueError(f"bon_n must be >= 2, got {config.bon_n}")


# ---------------------------------------------------------------------------------------------
# The toy world


def _scores(config):
    """Token scores [V] of objectives A and B (B correlated `gold.mix` with A)."""
    task = BigramLanguage(**config.task.to_dict())
    a, b = task.correlated_scores(float(config.gold.mix), int(config.gold.seed_b))
    return task, a, b


def _gold(scores, bonus, bad):
    """`(responses [N, R], prompts) -> [N]`: mean token score + bonus if no token < bad."""
    def gold(responses, prompts=None):
        s = scores[np.asarray(responses)]
        return (s.mean(-1) + bonus * (s.min(-1) > bad)).astype(np.float32)

    return gold


def _pairs(task, gold, n, seed, temperature):
    recs = gold_preference_pairs(task, gold, n, seed=seed, temperature=temperature)
    return {"chosen": np.stack([r["chosen_ids"] for r in recs]),
            "rejected": np.stack([r["rejected_ids"] for r in recs])}




def _rows(tree, n):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), tree)


def _fit(workdir, name, config, loss_fn, init, data, keys, *, eval_fn=None, eval_data=None,
         batch_fn=None, select=None, steps_per_log=None):
    """`fit_small` of one model for every row (seed, or seed x grid value) at once."""
    f = config.fit
    return fit_small(os.path.join(workdir, name), loss_fn=loss_fn, init_params=init,
                     tx=optax.adam(float(f.learning_rate)),
                     num_steps=int(f.steps), data=data, seeds=list(range(len(keys))),
                     seed_keys=jnp.stack(keys), per_seed_data=True, batch_fn=batch_fn,
                     has_aux=True, steps_per_log=int(f.log_every), eval_fn=eval_fn,
                     eval_data=eval_data, select=select, plots=False)


def _draw(batch_size):
    def draw(d, rng):
        idx = jax.random.randint(rng, (batch_size,), 0, d["chosen"].shape[0])
        return {k: (v[idx] if v.ndim and v.shape[0] == d["chosen"].shape[0] else v)
                for k, v in d.items()}

    return draw


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    if real.is_real(config):
        return {int(config.seeds[0]): _run_real(config, workdir)}
    validate(config)
    seeds = [int(s) for s in config.seeds]
    ns = len(seeds)
    cache = config.cache_dir or os.path.join(os.path.dirname(workdir), "cache")
    small = make_sft_policy(config.small.to_dict(), cache_dir=cache)
    large = (small if config.large.to_dict() == config.small.to_dict()
             else make_sft_policy(config.large.to_dict(), cache_dir=cache))
    task, score_a, score_b = _scores(config)
    bonus, bad = float(config.gold.bonus), float(config.gold.bad)
    gold_a, gold_b = _gold(score_a, bonus, bad), _gold(score_b, bonus, bad)
    r_len, temp = task.response_len, float(config.label_temperature)
    splits = [split_seeds(s) for s in seeds]
    pairs = {o: [_pairs(task, g, int(config.num_pairs), sp.train, temp) for sp in splits]
             for o, g in (("a", gold_a), ("b", gold_b))}
    val_pairs = {o: [_pairs(task, g, int(config.num_val_pairs), sp.validation, temp)
                     for sp in splits] for o, g in (("a", gold_a), ("b", gold_b))}
    n_val = int(config.num_val_prompts)
    n_test = int(config.num_test_prompts)
    prompts = np.stack([np.concatenate([task.eval_prompt_ids(n_val, sp.validation),
                                        task.eval_prompt_ids(n_test, sp.test)])
                        for sp in splits])  # [S, M, P]
    bs = int(config.fit.batch_size)
    lm = small.model

    def stack(xs):
        return {k: jnp.asarray(np.stack([x[k] for x in xs])) for k in xs[0]}

    def seq_logps(apply, params, ids):
        return response_logps(apply, params, ids, r_len).sum(-1)

    # --- ARMs of A and B: rows (seed, objective), the ARM loss, from the small base ---------
    def arm_loss(params, batch):
        b = batch["chosen"].shape[0]
        lp = response_logps(lm.apply, params, jnp.concatenate([batch["chosen"],
                                                              batch["rejected"]]), r_len)
        ones = jnp.ones(lp[:b].shape, bool)
        losses = autoregressive_rm_loss(lp[:b], lp[b:], ones, ones, beta_r=float(config.beta_r))
        return losses.mean(), {"accuracy": (lp[:b].sum(-1) > lp[b:].sum(-1)).mean()}

    arm_rows = [(i, o) for i in range(ns) for o in ("a", "b")]
    arm_fit = _fit(workdir, "arm", config, arm_loss, small.params,
                   stack([pairs[o][i] for i, o in arm_rows]),
                   [jax.random.key(seeds[i]) for i, _ in arm_rows], batch_fn=_draw(bs),
                   **pair_accuracy_selection(lambda p, x: seq_logps(lm.apply, p, x),
                                             stack([val_pairs[o][i] for i, o in arm_rows]),
                                             steps_per_log=int(config.fit.log_every)))
    arm_params = arm_fit.best_params
    arm_val_acc = np.asarray(arm_fit.best_score).reshape(ns, 2)
    arm_a, arm_b = _split_rows(arm_params)

    # --- trajectory RM: scalar head on the small base's backbone, BT on A's pairs ------------
    rm = make_reward_model(lm.config)

    def rm_init(rng):
        return {**rm.init(rng), "decoder": small.params["decoder"]}

    def rm_loss(params, batch):
        b = batch["chosen"].shape[0]
        ids = jnp.concatenate([batch["chosen"], batch["rejected"]])
        r = rm.apply(params, ids, jnp.ones(ids.shape, bool))
        return bradley_terry_loss(r[:b], r[b:]).mean(), {"accuracy": (r[:b] > r[b:]).mean()}

    def rm_score(p, x):
        return rm.apply(p, x, x >= 0)  # all valid (not a constant: XLA would fold it slowly)

    rm_fit = _fit(workdir, "rm", config, rm_loss, rm_init, stack(pairs["a"]),
                  [jax.random.key(s) for s in seeds], batch_fn=_draw(bs),
                  **pair_accuracy_selection(rm_score, stack(val_pairs["a"]),
                                            steps_per_log=int(config.fit.log_every)))
    rm_params = rm_fit.best_params

    # --- DPO from each base on A's pairs: rows (seed, beta) --------------------------------
    betas = [float(b) for b in config.dpo_betas]

    def dpo(base, name):
        model = base.model
        ref = jax.jit(lambda x: seq_logps(model.apply, base.params, x))

        def with_ref(p):
            return {**p, "ref_chosen": ref(jnp.asarray(p["chosen"])),
                    "ref_rejected": ref(jnp.asarray(p["rejected"]))}

        train = [with_ref(p) for p in pairs["a"]]
        val = [with_ref(p) for p in val_pairs["a"]]
        rows = [(i, b) for i in range(ns) for b in betas]
        data = stack([{**train[i], "beta": np.float32(b)} for i, b in rows])

        def loss(params, batch):
            b = batch["chosen"].shape[0]
            lp = seq_logps(model.apply, params, jnp.concatenate([batch["chosen"],
                                                                batch["rejected"]]))
            losses, m = dpo_loss(lp[:b], lp[b:], batch["ref_chosen"], batch["ref_rejected"],
                                 beta=batch["beta"])
            return losses.mean(), {"accuracy": (m["chosen_rewards"] > m["rejected_rewards"]
                                                ).mean()}

        def val_acc(params, v):
            margin = ((seq_logps(model.apply, params, v["chosen"]) - v["ref_chosen"])
                      - (seq_logps(model.apply, params, v["rejected"]) - v["ref_rejected"]))
            return {"val_accuracy": jnp.mean((margin > 0).astype(jnp.float32))}

        fit = _fit(workdir, name, config, loss, base.params, data,
                   [jax.random.key(seeds[i]) for i, _ in rows], batch_fn=_draw(bs),
                   eval_fn=val_acc, eval_data=stack([val[i] for i, _ in rows]),
                   select=("val_accuracy", "max"))
        return _reshape_rows(fit.best_params, ns, len(betas))

    dpo_small = dpo(small, "dpo_small")
    dpo_large = dpo_small if large is small else dpo(large, "dpo_large")

    # --- decoding: one vmapped program per base (base/DPO/GenARM/front rows) ----------------
    keys = jnp.stack([jax.random.key(1000 + s) for s in seeds])  # common random numbers

    programs = {}

    def decode_program(base_model):
        if base_model in programs:
            return programs[base_model]

        def one(base_params, pa, pb, weights, key, ids):
            return sample_guided(base_model, base_params, (lm, lm), (pa, pb), weights, 1.0, ids,
                                 jnp.ones(ids.shape, bool), key, max_new_tokens=r_len).tokens
        programs[base_model] = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, None, None, 0, None,
                                                                      None))))
        return programs[base_model]

    strengths = [float(s) for s in config.genarm_strengths]
    alphas = [float(a) for a in config.front_alphas]

    def decode(base, dpo_params, mixes):
        """Rows per seed: base, DPO per beta, then GenARM per (strength, alpha) in `mixes`."""
        n_rows = 1 + len(betas) + len(mixes)
        base_rows = _decode_rows(base.params, dpo_params, len(mixes))
        w = [(0.0, 0.0)] * (1 + len(betas)) + [(s * a, s * (1 - a)) for s, a in mixes]
        weights = np.broadcast_to(np.asarray(w, np.float32), (ns, n_rows, 2))
        tokens = decode_program(base.model)(base_rows, arm_a, arm_b, weights, keys,
                                            jnp.asarray(prompts))
        return np.asarray(tokens)  # [S, rows, M, R]

    mixes_small = [(s, a) for s in strengths for a in alphas]
    tok_small = decode(small, dpo_small, mixes_small)
    # (the same row count as the small base's: one program when the smoke run's bases agree)
    tok_large = decode(large, dpo_large, mixes_small)

    # --- best-of-n and ARGS on the small base ---------------------------------------------
    n_bon = int(config.bon_n)
    bon_tokens = jax.jit(jax.vmap(lambda key, ids: sample(
        lm, small.params, ids, jnp.ones(ids.shape, bool), key, max_new_tokens=r_len,
        num_samples=n_bon).tokens))(keys, jnp.asarray(prompts))  # [S, M*n, R]
    full = jnp.concatenate([jnp.repeat(jnp.asarray(prompts), n_bon, axis=1), bon_tokens], -1)
    bon_scores = np.asarray(jax.jit(jax.vmap(rm_score))(rm_params, full)).reshape(
        ns, -1, n_bon)
    bon_tokens = np.asarray(bon_tokens).reshape(ns, -1, n_bon, r_len)
    weights_args = [float(w) for w in config.args_weights]

    def args_one(rp, w, key, ids):
        return args_sample(lm, small.params, rm, rp, w, ids, jnp.ones(ids.shape, bool), key,
                           max_new_tokens=r_len, top_k=int(config.args_top_k)).ids[:, -r_len:]

    tok_args = np.asarray(jax.jit(jax.vmap(jax.vmap(args_one, in_axes=(None, 0, None, None))))(
        rm_params, np.broadcast_to(np.asarray(weights_args, np.float32),
                                   (ns, len(weights_args))), keys,
        jnp.asarray(prompts)))  # [S, W, M, R]

    # --- gold, selection on validation, test numbers -----------------------------------------
    def golds(tokens, gold):
        g = gold(tokens.reshape(-1, r_len)).reshape(tokens.shape[:-1])
        return g[..., :n_val].mean(-1), g[..., n_val:].mean(-1)  # val, test

    def pick(val, test):
        j = int(np.argmax(val))
        return float(test[j]), j

    n_dpo = len(betas)
    p_base = _param_count(small.params)
    p_arm = _row_param_count(arm_a)
    cost = 1.0 + p_arm / p_base
    n_match = max(1, math.ceil(cost))
    out = {}
    for i, s in enumerate(seeds):
        va, ta = golds(tok_small[i], gold_a)
        vb, tb = golds(tok_small[i], gold_b)
        m = {"base_gold": float(ta[0]), "base_gold_b": float(tb[0])}
        m["dpo_gold"], j = pick(va[1:1 + n_dpo], ta[1:1 + n_dpo])
        m["dpo_beta"] = betas[j]
        genarm = [1 + n_dpo + mixes_small.index((st, 1.0)) for st in strengths]
        m["genarm_gold"], j = pick(va[genarm], ta[genarm])
        m["genarm_strength"] = strengths[j]
        for a in alphas:
            r = 1 + n_dpo + mixes_small.index((strengths[j], a))
            name = f"front_a{a:g}".replace(".", "p")
            m[f"{name}_gold_a"], m[f"{name}_gold_b"] = float(ta[r]), float(tb[r])
        vl, tl = golds(tok_large[i], gold_a)
        m["large_base_gold"] = float(tl[0])
        m["large_dpo_gold"], j = pick(vl[1:1 + n_dpo], tl[1:1 + n_dpo])
        m["large_genarm_gold"], j = pick(vl[genarm], tl[genarm])
        m["large_genarm_strength"] = strengths[j]
        vg, tg = golds(tok_args[i], gold_a)
        m["args_gold"], j = pick(vg, tg)
        m["args_weight"] = weights_args[j]
        for n in sorted({n_match, n_bon}):
            best = np.argmax(bon_scores[i][:, :n], axis=-1)
            chosen = np.take_along_axis(bon_tokens[i][:, :n], best[:, None, None], 1)[:, 0]
            m[f"bon{n}_gold"] = float(gold_a(chosen[n_val:]).mean())
        m["bon_matched_gold"] = m[f"bon{n_match}_gold"]
        m["arm_a_val_pair_accuracy"] = float(arm_val_acc[i, 0])
        m["arm_b_val_pair_accuracy"] = float(arm_val_acc[i, 1])
        m["rm_val_pair_accuracy"] = float(np.asarray(rm_fit.best_score)[i])
        m.update({"cost_genarm": cost, "cost_bon_matched_n": float(n_match),
                  "cost_bon": float(n_bon),
                  "cost_args": float((1 + int(config.args_top_k) * (
                      1 + _row_param_count(rm_params) / p_base))
                      * task.seq_len / 2)})
        m["genarm_gain"] = m["genarm_gold"] - m["base_gold"]
        m["dpo_gain"] = m["dpo_gold"] - m["base_gold"]
        m["large_genarm_gain"] = m["large_genarm_gold"] - m["large_base_gold"]
        m["large_dpo_gain"] = m["large_dpo_gold"] - m["large_base_gold"]
        out[s] = m
    return out


def _param_count(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def _row_param_count(params) -> int:
    """The parameter count of one row of a stacked [R, ...] params tree."""
    return int(sum(np.prod(x.shape[1:]) for x in jax.tree.leaves(params)))


# the row bookkeeping of stacked params trees, one program each (eagerly, every leaf shape
# would compile its own slice / reshape / concatenate)
@jax.jit
def _split_rows(tree):
    """Rows 0, 2, 4, ... and rows 1, 3, 5, ... of a stacked [2S, ...] tree."""
    return (jax.tree.map(lambda x: x[0::2], tree), jax.tree.map(lambda x: x[1::2], tree))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _reshape_rows(tree, n: int, m: int):
    """[n m, ...] leaves -> [n, m, ...]."""
    return jax.tree.map(lambda x: x.reshape((n, m) + x.shape[1:]), tree)


@functools.partial(jax.jit, static_argnums=(2,))
def _decode_rows(base, dpo, num_mixes: int):
    """The decoding rows of every seed: the base, the DPO policies [S, B, ...], then the base
    again for each of `num_mixes` GenARM mixes -> [S, 1 + B + num_mixes, ...]."""
    def leaf(b, d):
        ns = d.shape[0]
        return jnp.concatenate([jnp.broadcast_to(b, (ns, 1) + b.shape), d,
                                jnp.broadcast_to(b, (ns, num_mixes) + b.shape)], 1)
    return jax.tree.map(leaf, base, dpo)


# ---------------------------------------------------------------------------------------------
# :real


def _arm_recipe_config(config) -> dict:
    return {**config.arm_train.to_dict(), **real.levers(config)}


def _run_real(config, workdir: str) -> dict[str, float]:
    """`:real` (module docstring): the ARM's held-out pair accuracy and guided vs unguided
    samples of the base on the test prompts."""
    seed = int(config.seeds[0])
    tok = real.tokenizer(config)
    pairs = real.pair_data(config, tok)
    prompts = real.prompt_data(config, tok, int(config.decode.max_prompt_length))["test"]
    base, base_params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    if config.arm.path:
        arm, arm_params = pretrained.model_and_params(
            real.model_config(config, config.arm.path), "lm", seed=seed)
    else:  # the base checkpoint fine-tuned with the ARM loss (CPO, alpha 0) on the pairs
        fit = direct.train(_arm_recipe_config(config), os.path.join(workdir, "arm"),
                           train_source=pairs["train"], seed=seed)
        arm, arm_params = fit["model"], fit["params"]
    if arm.config.vocab_size != base.config.vocab_size:
        raise ValueError(f"arm.path: vocab_size {arm.config.vocab_size} differs from the "
                         f"base's {base.config.vocab_size} (the ARM must share the tokenizer)")
    out = {}
    token_logps = arm.config.logits_chunk > 0
    for split in ("validation", "test"):
        rows = {k: jnp.asarray(v) for k, v in pairs[split].items()}
        c, r = real.map_in_chunks(
            lambda x: direct.pair_logps(arm.apply, arm_params, x, token_logps=token_logps),
            rows, int(config.data.eval_batch_size))
        out[f"arm_{split}_pair_accuracy"] = float(jnp.mean((c > r).astype(jnp.float32)))
    d = config.decode
    kw = dict(max_new_tokens=int(d.max_new_tokens), temperature=float(d.temperature),
              stop_tokens=real.stop_tokens(tok, tuple(d.stop_tokens)), pad_id=int(tok.pad_id))
    ids, mask = jnp.asarray(prompts["prompt_ids"]), jnp.asarray(prompts["prompt_mask"])
    for name, w in (("unguided", 0.0), ("guided", 1.0)):  # weight 0 = the base sampler exactly
        s = sample_guided(base, base_params, (arm,), (arm_params,), jnp.array([w]),
                          float(d.beta), ids, mask, jax.random.key(seed), **kw)
        length = s.mask.sum(-1)
        out.update({f"{name}_length": float(length.mean()),
                    f"{name}_base_logp": float(jnp.where(s.mask, s.base_logps, 0).sum(-1).mean()),
                    f"{name}_logp": float(jnp.where(s.mask, s.logps, 0).sum(-1).mean()),
                    f"{name}_arm_reward": float(arm_rewards(s)[0].mean()),
                    f"{name}_kl_to_base": float(jnp.where(s.mask, s.logps - s.base_logps, 0)
                                                .sum(-1).mean())})
    return out


# ---------------------------------------------------------------------------------------------
# Claims

DPO_FRACTION = 0.95
W2S_FRACTION = 0.5


def claims(results) -> list[protocol.Claim]:
    if "toy" not in results:  # :real: metrics only
        return []
    seeds = results["toy"]["per_seed"]

    def mean(key):
        return float(np.mean([m[key] for m in seeds.values()]))

    out = [protocol.sanity(
        "both ARMs rank held-out validation pairs above chance",
        min(min(m["arm_a_val_pair_accuracy"], m["arm_b_val_pair_accuracy"])
            for m in seeds.values()) > 0.5,
        {"arm_a_val_pair_accuracy": mean("arm_a_val_pair_accuracy"),
         "arm_b_val_pair_accuracy": mean("arm_b_val_pair_accuracy"),
         "rm_val_pair_accuracy": mean("rm_val_pair_accuracy")},
        detail="the ARMs are trained on these labels' distribution; this checks the training")]
    out.append(protocol.decide(
        f"GenARM recovers >= {DPO_FRACTION:.0%} of DPO's test gold gain over the base",
        {s: m["genarm_gain"] - DPO_FRACTION * m["dpo_gain"] for s, m in seeds.items()},
        kind=protocol.COMPARATIVE, at_least=0.0,
        measured={k: mean(k) for k in ("base_gold", "genarm_gold", "dpo_gold", "genarm_gain",
                                       "dpo_gain", "genarm_strength", "dpo_beta")},
        detail=f"per seed (genarm - base) - {DPO_FRACTION} (dpo - base) on test gold A; "
               "GenARM's strength and DPO's beta chosen on validation gold (3 values each)"))
    out.append(protocol.compare(
        "GenARM's test gold is above ARGS-style guidance (trajectory RM on partial sequences)",
        results, ("toy", "genarm_gold"), ("toy", "args_gold"), at_least=0.0,
        detail=f"ARGS weight chosen on validation gold; mean ARGS gold {mean('args_gold'):.3f}, "
               f"decoding cost {mean('cost_args'):.0f} vs GenARM's {mean('cost_genarm'):.1f} "
               "base-forward equivalents per token"))
    n_match, n_bon = int(mean("cost_bon_matched_n")), int(mean("cost_bon"))
    out.append(protocol.compare(
        f"GenARM's test gold is above best-of-{n_match} by the trajectory RM (matched "
        "decoding compute)", results, ("toy", "genarm_gold"), ("toy", "bon_matched_gold"),
        at_least=0.0,
        detail=f"best-of-{n_bon} (about {n_bon / mean('cost_genarm'):.0f}x GenARM's decoding "
               f"cost) reaches {mean(f'bon{n_bon}_gold'):.3f} vs GenARM "
               f"{mean('genarm_gold'):.3f}"))
    out.append(protocol.decide(
        f"weak-to-strong: the small ARM guiding the larger base recovers >= "
        f"{W2S_FRACTION:.0%} of the larger base's DPO gain",
        {s: m["large_genarm_gain"] - W2S_FRACTION * m["large_dpo_gain"]
         for s, m in seeds.items()},
        kind=protocol.COMPARATIVE, at_least=0.0,
        measured={k: mean(k) for k in ("large_base_gold", "large_genarm_gold",
                                       "large_dpo_gold", "large_genarm_gain",
                                       "large_dpo_gain")},
        detail=f"per seed (genarm_large - base_large) - {W2S_FRACTION} (dpo_large - "
               "base_large), test gold A; knobs chosen on validation"))
    front = {k: mean(k) for k in sorted(next(iter(seeds.values())))
             if k.startswith("front_")}
    out.append(protocol.compare(
        "front: mixing toward the A-ARM (alpha 1 vs 0) raises test gold A", results,
        ("toy", "front_a1_gold_a"), ("toy", "front_a0_gold_a"), at_least=0.0,
        detail=f"weights (s alpha, s (1 - alpha)), s chosen on validation; front {front}"))
    out.append(protocol.compare(
        "front: mixing toward the B-ARM (alpha 0 vs 1) raises test gold B", results,
        ("toy", "front_a0_gold_b"), ("toy", "front_a1_gold_b"), at_least=0.0,
        detail="the same runs; together with the claim above the weights trade A for B"))
    return out


def plots(results, workdir: str) -> list[str]:
    """The 2-objective front of the ARM mixture: test gold A against gold B over alpha (mean
    over seeds), beside the base and DPO points."""
    if "toy" not in results:
        return []
    from alignax.train.plots import plot_curves

    seeds = results["toy"]["per_seed"].values()
    names = sorted({k[:-len("_gold_a")] for m in seeds for k in m
                    if k.startswith("front_") and k.endswith("_gold_a")},
                   key=lambda n: float(n[len("front_a"):].replace("p", ".")))

    def mean(key):
        return float(np.mean([m[key] for m in seeds]))

    lines = {"GenARM alpha sweep": (np.array([mean(f"{n}_gold_b") for n in names]),
                                    np.array([mean(f"{n}_gold_a") for n in names])),
             "base": (np.array([mean("base_gold_b")]), np.array([mean("base_gold")]))}
    return [plot_curves(lines, os.path.join(workdir, "plots", "front.png"),
                        title="GenARM: two ARMs mixed at test time (test gold, mean over seeds)",
                        xlabel="gold B", ylabel="gold A")]
