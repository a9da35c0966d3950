"""VAS: value-augmented sampling from a frozen base vs best-of-16, and a two-value front.

Paper: Han et al. 2024, "Value Augmented Sampling for Language Model Alignment and
Personalization" (arXiv 2405.06639).

Mechanism (`alignax.algorithms.value_sampling`): a value model Q(s, v) of the frozen base's
continuation, trained only on samples of the base by TD(lambda) with the reward at the end
(`value_loss`; the Q-head reading: a causal LM whose [V] output at a context s is Q(s, v) =
V(s . v), initialised from the base's decoder with a zero LM head, so it starts at Q = 0);
decoding draws every token from pi(v | s) ∝ pi_base(v | s) exp(sum_i beta_i Q_i(s, v)) over
the base's top-k tokens (`vas_sample` = the jitted KV-cache sampler with "value" guides,
`alignax.sampling.sampler.sample_guided`; one value forward per step values all k candidates).
Personalisation: the base is never updated; rewards compose at deployment by choosing which
value models to add and with which beta_i (the front below is exactly that: one base, two value
models, the weights swept at test time).

Setting: the bigram language of `alignax.tasks` (vocabulary 32, prompts of 4, responses of 12
tokens). The base: the testbed's SFT policy (d_model 32, 1 layer; `alignax.algorithms.cached.
make_sft_policy`, cached, shared by the seeds). Gold objectives linear in token counts: A(y) =
sum_t a[y_t] (the testbed's token scores), B(y) = sum_t b[y_t] with b correlated `gold.mix` =
-0.5 with a (a conflicting objective). Per seed: `num_samples` base samples on training prompts
scored by A and by B; through `fit_small` (all seeds and both objectives in one vmapped program):
the value models of A and B (TD(lambda), gamma `td.gamma`, lambda `td.lam`) and, for best-of-n,
a scalar reward model (the base's decoder + a score head, squared-error regression on the same
samples' A scores). Both fits: the same samples, steps, batch, learning rate, and the step of
least validation error (Monte-Carlo error of every Q_j against the sequence's A / B for the
values, squared error for the RM, on `num_val_samples` base samples of validation prompts).

Methods (objective A, test prompts): `vas`: one sample per prompt, top-k = `top_k` (8), beta_A
from the positive levels of `betas` and `kl_betas` (beta_B = 0) chosen on validation gold A;
`vas_matched`: the same choice restricted to the levels whose validation KL(pi || base) (the
sampler's one-sample estimate, sum_t log pi - log pi_base) is within best-of-n's KL bound
log n - (n - 1) / n (1.83 nats at n = 16); `bon`: best-of-`bon_n` (16) base samples ranked by
the RM (the fair scorer: trained on the same base samples and labels as the value model; ranking
by the gold would be privileged). Reported beside them: the base (plain samples), the base
restricted to its top-k (VAS's beta = 0), best-of-n ranked by the A value model's last-token Q
and by the gold (the oracle ceiling), the KLs and the decoding costs. No PPO / DPO baseline is
trained here (the claims are about VAS against search; genarm.py compares guided decoding with
DPO on the same testbed).

Splits (`alignax.tasks.splits.split_seeds`): seed s draws its training samples' prompts from
data seed 3s, its validation samples and validation prompts (beta choice, fit step) from
3s + 1 and its test prompts from 3s + 2. Decoding uses common random numbers across the grid.

Claims (5 seeds, paired 95% t intervals over seeds; stated before the run):
- comparative: VAS (1 sample, k = 8) has test gold A >= best-of-16 by the RM: the per-seed
  difference's interval lies >= 0 (no non-inferiority margin; the notes' pass criterion);
- comparative: the same at best-of-16's KL budget (`vas_matched`), interval >= 0: the stricter
  test (an unconstrained beta may buy gold with far more KL than best-of-16 can spend);
- threshold (front, A): with both value models active, at every fixed beta_B the test gold A
  rises with beta_A: per seed the mean over the beta_B levels of Spearman(beta_A, gold A) over
  the beta_A levels of `betas` is >= 0.8 (1 = strictly increasing everywhere);
- threshold (front, B): the same with the roles of A and B swapped.
  (That some front of (gold A, gold B) points exists would hold by construction; the claims
  test the monotone control of each objective by its own weight. The grid's points are
  reported as `front_<bA>_<bB>_gold_{a,b}` and drawn in plots/front.png.)
- sanity: both value models' last-token Q explain the validation samples' gold (R^2 > 0).

Reading the full run (5 seeds): the value models explain about 77% of the validation gold's
variance (last-token Q; the RM 80%). VAS at the validation-chosen beta_A = 8 reaches test gold A
20.1 against best-of-16's 6.9 (the gold-ranked oracle best-of-16 7.3, the base 1.0), but at a
KL of about 21 nats; the front is monotone in each weight on every seed (Spearman 1 at every
level). At best-of-16's KL budget VAS does not compete: the top-8 truncation alone (beta 0)
costs 4.2 nats and gains only 0.5 gold, so no beta level fits the 1.84-nat budget and the
smallest (0.125, 4.2 nats) reaches 2.9 < 6.9: that claim FAILs. Nothing was re-tuned after it.

    alignax run experiments/vas.py            # full setting, 5 seeds
    alignax run experiments/vas.py:smoke      # seconds, for the tests

`:real`: a user's base checkpoint (`model.path`) and reward checkpoint (`rm.path`, a
sequence-classification model sharing the tokenizer), prompts from `data.path`. The value
model is initialised from `value.path` ("" = the base checkpoint; a smaller checkpoint with the
same tokenizer works too) with a zero LM head, and trained by TD(lambda) through `fit_small`
on `decode.samples_per_prompt` base samples of each training prompt scored by the RM. Reports
the value loss and Monte-Carlo error on validation samples before and after training, and on
the test prompts base vs VAS samples (the same key): mean RM reward, length, the one-sample
KL(pi || pi_base). No gold on user data, so no claim is evaluated.

    alignax run experiments/vas.py:real --workdir runs/vas_real \\
        --config.model.path=/ckpt/base --config.rm.path=/ckpt/rm \\
        --config.data.path=/data/prompts --config.decode.beta=1.0
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
from alignax.algorithms import pretrained, real
from alignax.algorithms.cached import make_sft_policy
from alignax.algorithms.value_sampling import (response_q_values, value_loss, value_model_from,
                                               vas_sample)
from alignax.models.transformer import make_reward_model
from alignax.ops import spearman
from alignax.sampling.sampler import sample
from alignax.tasks.language import BigramLanguage
from alignax.tasks.policies import sft_policy_config
from alignax.tasks.splits import split_seeds
from alignax.train.small import fit_small

SPEARMAN_AT_LEAST = 0.8


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.variants = {"toy": {}}
    c.cache_dir = ""  # "" = <workdir>/cache: the base, shared by the seeds
    task = dict(vocab_size=32, prompt_len=4, response_len=12, concentration=0.5,
                label_temperature=0.05, seed=0)
    c.task = task
    c.base = sft_policy_config(
        task=task, model=dict(d_model=32, n_layers=1, n_heads=2, d_ff=64),
        num_sequences=4096 if not smoke else 256,
        train=dict(steps=600 if not smoke else 10, batch_size=64, checkpoint_every=10_000,
                   log_every=50, eval_every=0, progress=False))
    c.gold = dict(mix=-0.5, seed_b=101)
    c.num_samples = 8192 if not smoke else 64
    c.num_val_samples = 512 if not smoke else 16
    c.num_val_prompts = 128 if not smoke else 8
    c.num_test_prompts = 256 if not smoke else 8
    c.fit = dict(steps=600 if not smoke else 4, batch_size=64 if not smoke else 8,
                 learning_rate=1e-3, log_every=50 if not smoke else 2)
    c.td = dict(gamma=1.0, lam=0.95)
    c.top_k = 8
    # the beta levels of each value model: VAS's beta_A grid (levels > 0, beta_B = 0) and the
    # front's grid (every pair)
    c.betas = [0.0, 1.0, 2.0, 4.0, 8.0] if not smoke else [0.0, 2.0]
    # extra beta_A levels (beta_B = 0) for VAS at best-of-n's KL budget
    c.kl_betas = [0.125, 0.25, 0.5] if not smoke else [0.5]
    c.bon_n = 16 if not smoke else 2
    return c


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): TD(lambda) value on the base's samples scored by a reward
    checkpoint, then VAS vs base samples on held-out prompts."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real.add_real_fields(c, max_length=512)
    c.rm = dict(path="")
    c.value = dict(path="", head="zero")  # "" = model.path
    c.td = dict(gamma=1.0, lam=0.95)
    c.fit = dict(steps=100, batch_size=8, learning_rate=1e-5, log_every=10)
    c.decode = dict(beta=1.0, top_k=8, max_prompt_length=256, max_new_tokens=128,
                    samples_per_prompt=4, stop_tokens=(-1,), temperature=1.0)  # -1: the eos
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """The grids and sizes of the toy; for :real the required paths and the decoding knobs."""
    td = config.td
    if not 0.0 <= float(td.lam) <= 1.0:
        raise ValueError(f"td.lam must be in [0, 1], got {td.lam}")
    if not 0.0 <= float(td.gamma) <= 1.0:
        raise ValueError(f"td.gamma must be in [0, 1], got {td.gamma}")
    if real.is_real(config):
        real.require(config, "model.path", "rm.path", "data.path",
                     what={"rm.path": "a reward (sequence-classification) checkpoint folder"})
        d = config.decode
        if float(d.beta) < 0:
            raise ValueError(f"decode.beta must be >= 0, got {d.beta}")
        if int(d.top_k) < 0:
            raise ValueError(f"decode.top_k must be >= 0, got {d.top_k}")
        if int(d.samples_per_prompt) < 1:
            raise ValueError(f"decode.samples_per_prompt must be >= 1, got "
                             f"{d.samples_per_prompt}")
        if config.value.head not in ("zero", "copy"):
            raise ValueError(f"value.head must be 'zero' or 'copy', got {config.value.head!r}")
        return
    betas = [float(b) for b in config.betas]
    if betas != sorted(set(betas)) or not betas or betas[0] != 0.0 or len(betas) < 2:
        raise ValueError(f"betas must be increasing, start at 0 and have a level > 0, got "
                         f"{betas}")
    kl_betas = [float(b) for b in config.kl_betas]
    if any(b <= 0 or b in betas for b in kl_betas):
        raise ValueError(f"kl_betas must be > 0 and not in betas, got {kl_betas}")
    if int(config.bon_n) < 2:
        raise ValueError(f"bon_n must be >= 2, got {config.bon_n}")
    if int(config.top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {config.top_k}")


# ---------------------------------------------------------------------------------------------
# The toy world


def _scores(config):
    """Token scores [V] of objectives A and B (B correlated `gold.mix` with A)."""
    task = BigramLanguage(**config.task.to_dict())
    a, b = task.correlated_scores(float(config.gold.mix), int(config.gold.seed_b))
    return task, a, b




def _draw(batch_size):
    def draw(d, rng):
        idx = jax.random.randint(rng, (batch_size,), 0, d["ids"].shape[0])
        return {k: v[idx] for k, v in d.items()}

    return draw


def _r2(pred, target):
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    return float(1.0 - np.mean((pred - target) ** 2) / max(np.var(target), 1e-12))


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    if real.is_real(config):
        return {int(config.seeds[0]): _run_real(config, workdir)}
    validate(config)
    seeds = [int(s) for s in config.seeds]
    ns = len(seeds)
    cache = config.cache_dir or os.path.join(os.path.dirname(workdir), "cache")
    base = make_sft_policy(config.base.to_dict(), cache_dir=cache)
    lm, base_params = base.model, base.params
    task, score_a, score_b = _scores(config)
    r_len = task.response_len
    p_len = 1 + task.prompt_len
    splits = [split_seeds(s) for s in seeds]
    n_tr, n_vs = int(config.num_samples), int(config.num_val_samples)
    n_val, n_test = int(config.num_val_prompts), int(config.num_test_prompts)

    # --- base samples (one per prompt) on training and validation prompts -------------------
    fit_prompts = np.stack([np.concatenate([task.eval_prompt_ids(n_tr, sp.train),
                                            task.eval_prompt_ids(n_vs, sp.validation)])
                            for sp in splits])  # [S, n_tr + n_vs, P]
    keys = jnp.stack([jax.random.key(1000 + s) for s in seeds])

    def draw_base(key, ids, n):
        return sample(lm, base_params, ids, ids >= 0, key, max_new_tokens=r_len,
                      num_samples=n).tokens

    base_tokens = np.asarray(jax.jit(jax.vmap(lambda k, x: draw_base(k, x, 1)))(
        jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys), jnp.asarray(fit_prompts)))
    fit_ids = np.concatenate([fit_prompts, base_tokens], -1).astype(np.int32)  # [S, n, P + R]
    golds = {"a": score_a[base_tokens].sum(-1), "b": score_b[base_tokens].sum(-1)}  # [S, n]

    # --- value models of A and B: rows (seed, objective), TD(lambda) from the zero head -----
    vm, v_init = value_model_from(lm, base_params)
    gamma, lam = float(config.td.gamma), float(config.td.lam)
    rows = [(i, o) for i in range(ns) for o in ("a", "b")]
    f = config.fit

    def q_of(params, ids):
        return response_q_values(vm.apply, params, ids, ids >= 0, p_len)

    def v_loss(params, batch):
        q = q_of(params, batch["ids"])
        loss, m = value_loss(q, batch["reward"], jnp.ones(q.shape, bool), gamma=gamma, lam=lam)
        return loss.mean(), {"mc_error": m["mc_error"].mean()}

    def v_val(params, v):
        q = q_of(params, v["ids"])
        return {"val_mc_error": jnp.mean((q - v["reward"][:, None]) ** 2)}

    def fit(name, loss_fn, init, row_labels, eval_fn, metric):
        """`fit_small` of one model for every row (seed index, labels [n_tr + n_vs]) at once:
        training on the first n_tr samples, step selection on the n_vs validation ones."""
        def part(lo, hi):
            return {"ids": jnp.asarray(np.stack([fit_ids[i, lo:hi] for i, _ in row_labels])),
                    "reward": jnp.asarray(np.stack([y[lo:hi] for _, y in row_labels]),
                                          jnp.float32)}

        val = part(n_tr, n_tr + n_vs)
        return fit_small(os.path.join(workdir, name), loss_fn=loss_fn, init_params=init,
                         tx=optax.adam(float(f.learning_rate)), num_steps=int(f.steps),
                         data=part(0, n_tr), seeds=list(range(len(row_labels))),
                         seed_keys=jnp.stack([jax.random.key(seeds[i]) for i, _ in row_labels]),
                         per_seed_data=True, batch_fn=_draw(int(f.batch_size)), has_aux=True,
                         steps_per_log=int(f.log_every), eval_fn=eval_fn, eval_data=val,
                         select=(metric, "min"), plots=False), val

    value_fit, value_val = fit("value", v_loss, v_init, [(i, golds[o][i]) for i, o in rows],
                               v_val, "val_mc_error")
    value_params = value_fit.best_params
    v_a = jax.tree.map(lambda x: x[0::2], value_params)
    v_b = jax.tree.map(lambda x: x[1::2], value_params)
    last_q = np.asarray(jax.jit(jax.vmap(lambda p, x: q_of(p, x)[:, -1]))(
        value_params, value_val["ids"])).reshape(ns, 2, n_vs)
    val_gold = {o: golds[o][:, n_tr:] for o in ("a", "b")}

    # --- the best-of-n scorer: a scalar RM (base decoder + head) regressed on the same A ----
    rm = make_reward_model(lm.config)

    def rm_init(rng):
        return {**rm.init(rng), "decoder": base_params["decoder"]}

    def rm_loss(params, batch):
        r = rm.apply(params, batch["ids"], batch["ids"] >= 0)
        return 0.5 * jnp.mean((r - batch["reward"]) ** 2), {}

    def rm_val(params, v):
        return {"val_mse": jnp.mean((rm.apply(params, v["ids"], v["ids"] >= 0)
                                     - v["reward"]) ** 2)}

    rm_fit, rm_val_data = fit("rm", rm_loss, rm_init, [(i, golds["a"][i]) for i in range(ns)],
                              rm_val, "val_mse")
    rm_params = rm_fit.best_params
    rm_val_pred = np.asarray(jax.jit(jax.vmap(lambda p, x: rm.apply(p, x, x >= 0)))(
        rm_params, rm_val_data["ids"]))

    # --- VAS on validation + test prompts: rows = the (beta_A, beta_B) grid ----------------
    prompts = np.stack([np.concatenate([task.eval_prompt_ids(n_val, sp.validation),
                                        task.eval_prompt_ids(n_test, sp.test)])
                        for sp in splits])  # [S, M, P]
    levels = [float(b) for b in config.betas]
    grid = [(ba, bb) for ba in levels for bb in levels]  # the front: rows [:L * L]
    grid += [(float(b), 0.0) for b in config.kl_betas]
    top_k = int(config.top_k)

    def vas_one(pa, pb, w, key, ids):
        out = vas_sample(lm, base_params, (vm, vm), (pa, pb), w, ids, ids >= 0, key,
                         max_new_tokens=r_len, top_k=top_k)
        return out.tokens, (out.logps - out.base_logps).sum(-1)

    weights = jnp.broadcast_to(jnp.asarray(grid, jnp.float32), (ns, len(grid), 2))
    tokens, kl = jax.jit(jax.vmap(jax.vmap(vas_one, in_axes=(None, None, 0, None, None))))(
        v_a, v_b, weights, jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys),
        jnp.asarray(prompts))
    tokens, kl = np.asarray(tokens), np.asarray(kl)  # [S, G, M, R], [S, G, M]
    gold_a, gold_b = score_a[tokens].sum(-1), score_b[tokens].sum(-1)  # [S, G, M]

    # --- best-of-n of the base on the test prompts, ranked by the RM (and by the value) ----
    n_bon = int(config.bon_n)
    test_prompts = jnp.asarray(prompts[:, n_val:])
    bon = jax.jit(jax.vmap(lambda k, x: draw_base(k, x, n_bon)))(
        jax.vmap(lambda k: jax.random.fold_in(k, 3))(keys), test_prompts)  # [S, T*n, R]
    full = jnp.concatenate([jnp.repeat(test_prompts, n_bon, axis=1), bon], -1)
    bon_rm = np.asarray(jax.jit(jax.vmap(lambda p, x: rm.apply(p, x, x >= 0)))(rm_params, full))
    bon_q = np.asarray(jax.jit(jax.vmap(lambda p, x: q_of(p, x)[:, -1]))(v_a, full))
    bon = np.asarray(bon).reshape(ns, n_test, n_bon, r_len)
    bon_gold = score_a[bon].sum(-1)  # [S, T, n]
    bon_rm, bon_q = bon_rm.reshape(ns, n_test, n_bon), bon_q.reshape(ns, n_test, n_bon)

    def best(scores, g):
        return float(np.take_along_axis(g, scores.argmax(-1)[:, None], -1).mean())

    # --- selection on validation, test numbers ------------------------------------------------
    bon_kl = math.log(n_bon) - (n_bon - 1) / n_bon  # KL(best-of-n || base), its known bound
    p_base = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(base_params))
    p_value = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v_init))
    out = {}
    for i, s in enumerate(seeds):
        ga_val, ga = gold_a[i][:, :n_val].mean(-1), gold_a[i][:, n_val:].mean(-1)  # [G]
        gb = gold_b[i][:, n_val:].mean(-1)
        m = {"base_gold": float(bon_gold[i][:, 0].mean()),
             "topk_base_gold": float(ga[grid.index((0.0, 0.0))]),
             "topk_base_kl": float(kl[i][grid.index((0.0, 0.0)), n_val:].mean())}
        # the beta_A-only rows (beta_B = 0, beta_A > 0), increasing beta_A
        solo = [grid.index((b, 0.0)) for b in sorted({b for b, c in grid if c == 0.0} - {0.0})]
        j = solo[int(np.argmax(ga_val[solo]))]
        m["vas_gold"], m["vas_beta"] = float(ga[j]), grid[j][0]
        m["vas_gold_b"] = float(gb[j])
        m["vas_kl"] = float(kl[i][j, n_val:].mean())
        m[f"bon{n_bon}_gold"] = best(bon_rm[i], bon_gold[i])
        m[f"bon{n_bon}_value_gold"] = best(bon_q[i], bon_gold[i])
        m[f"bon{n_bon}_oracle_gold"] = float(bon_gold[i].max(-1).mean())
        for r, (ba, bb) in enumerate(grid[:len(levels) ** 2]):
            name = f"front_{ba:g}_{bb:g}".replace(".", "p")
            m[f"{name}_gold_a"], m[f"{name}_gold_b"] = float(ga[r]), float(gb[r])
        kl_val = kl[i][:, :n_val].mean(-1)
        within = [r for r in solo if kl_val[r] <= bon_kl] or solo[:1]
        j = within[int(np.argmax(ga_val[within]))]
        m["vas_matched_gold"], m["vas_matched_beta"] = float(ga[j]), grid[j][0]
        m["vas_matched_kl"] = float(kl[i][j, n_val:].mean())
        m["vas_matched_found"] = float(kl_val[j] <= bon_kl)
        m[f"bon{n_bon}_kl_bound"] = bon_kl
        n_front = len(levels) ** 2
        table_a = ga[:n_front].reshape(len(levels), len(levels))  # [beta_A, beta_B]
        table_b = gb[:n_front].reshape(len(levels), len(levels))
        lv = jnp.asarray(levels)
        m["front_spearman_a"] = float(np.mean([spearman(lv, jnp.asarray(table_a[:, c]))
                                               for c in range(len(levels))]))
        m["front_spearman_b"] = float(np.mean([spearman(lv, jnp.asarray(table_b[r, :]))
                                               for r in range(len(levels))]))
        for k, o in enumerate(("a", "b")):
            m[f"value_{o}_val_r2"] = _r2(last_q[i, k], val_gold[o][i])
            m[f"value_{o}_val_mc_error"] = float(np.asarray(value_fit.best_score)[2 * i + k])
        m["rm_val_r2"] = _r2(rm_val_pred[i], val_gold["a"][i])
        m["cost_vas"] = 1.0 + 2 * p_value / p_base
        m["cost_bon"] = float(n_bon)
        out[s] = m
    return out


# ---------------------------------------------------------------------------------------------
# :real


def _in_chunks(fn, arrays: dict, size: int):
    """`fn(lo, **rows)` over consecutive row chunks [lo, lo + size), every chunk padded to
    `size` rows by repeating its last row (one compiled shape for every split), the padding
    dropped and the results concatenated on the host."""
    n = next(iter(arrays.values())).shape[0]
    size = n if size <= 0 else size
    parts = []
    for lo in range(0, n, size):
        rows = {k: v[lo:lo + size] for k, v in arrays.items()}
        m = next(iter(rows.values())).shape[0]
        rows = {k: np.concatenate([v, np.repeat(v[-1:], size - m, 0)]) for k, v in rows.items()}
        parts.append(jax.tree.map(lambda x, m=m: x[:m * (x.shape[0] // size)],
                                  jax.device_get(fn(lo, **rows))))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def _run_real(config, workdir: str) -> dict[str, float]:
    """`:real` (module docstring): the value model trained by TD(lambda) on the base's samples
    scored by the reward checkpoint; VAS vs base samples on the test prompts."""
    seed = int(config.seeds[0])
    tok = real.tokenizer(config)
    d = config.decode
    prompts = real.prompt_data(config, tok, int(d.max_prompt_length))
    base, base_params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    rm, rm_params = pretrained.model_and_params(real.model_config(config, config.rm.path),
                                                "reward", seed=seed)
    if config.value.path:
        src, src_params = pretrained.model_and_params(
            real.model_config(config, config.value.path), "lm", seed=seed)
    else:
        src, src_params = base, base_params
    for key, model in (("rm.path", rm), ("value.path", src)):
        if model.config.vocab_size != base.config.vocab_size:
            raise ValueError(f"{key}: vocab_size {model.config.vocab_size} differs from the "
                             f"base's {base.config.vocab_size} (it must share the tokenizer)")
    vm, v_init = value_model_from(src, src_params, head=str(config.value.head))
    chunk = int(config.data.eval_batch_size)
    kw = dict(max_new_tokens=int(d.max_new_tokens), temperature=float(d.temperature),
              stop_tokens=real.stop_tokens(tok, tuple(d.stop_tokens)), pad_id=int(tok.pad_id))
    p_len = prompts["train"]["prompt_ids"].shape[1]
    key = jax.random.key(seed)

    @functools.partial(jax.jit, static_argnames=("top_k",))
    def rollouts(prompt_ids, prompt_mask, rng, value_params, beta, top_k):
        """Base (beta 0, top_k 0: exactly the base's sampler) or VAS samples, their RM reward
        and one-sample KL(pi || pi_base) estimate."""
        out = vas_sample(base, base_params, (vm,), (value_params,), jnp.reshape(beta, (1,)),
                         prompt_ids, prompt_mask, rng, top_k=top_k,
                         num_samples=int(d.samples_per_prompt), **kw)
        ids = jnp.concatenate([out.prompt_ids, out.tokens], 1)
        mask = jnp.concatenate([out.prompt_mask, out.mask], 1)
        return {"ids": ids, "mask": mask,
                "reward": rm.apply(rm_params, ids, mask).astype(jnp.float32),
                "length": out.mask.sum(-1).astype(jnp.float32),
                "kl": jnp.where(out.mask, out.logps - out.base_logps, 0.0).sum(-1)}

    def draw(split, value_params, beta, rng, top_k=0):
        p = prompts[split]
        return _in_chunks(lambda lo, prompt_ids, prompt_mask: rollouts(
            prompt_ids, prompt_mask, jax.random.fold_in(rng, lo), value_params,
            jnp.float32(beta), top_k),
            {"prompt_ids": p["prompt_ids"], "prompt_mask": p["prompt_mask"]}, chunk)

    # the value's training data: samples of the base itself (beta 0, no top-k)
    train = draw("train", v_init, 0.0, jax.random.fold_in(key, 1))
    val = draw("validation", v_init, 0.0, jax.random.fold_in(key, 2))
    gamma, lam = float(config.td.gamma), float(config.td.lam)

    def losses(params, batch):
        q = response_q_values(vm.apply, params, batch["ids"], batch["mask"], p_len)
        loss, m = value_loss(q, batch["reward"], batch["mask"][:, p_len:], gamma=gamma,
                             lam=lam)
        return loss.mean(), m["mc_error"].mean()

    def loss_fn(params, batch):
        loss, mc = losses(params, batch)
        return loss, {"mc_error": mc}

    def val_metrics(params, v):
        loss, mc = losses(params, v)
        return {"val_value_loss": loss, "val_mc_error": mc}

    fields = ("ids", "mask", "reward")
    f = config.fit
    n = train["ids"].shape[0]
    bs = int(f.batch_size)

    def batch_fn(data, rng):
        idx = jax.random.randint(rng, (bs,), 0, n)
        return {k: v[idx] for k, v in data.items()}

    fit = fit_small(os.path.join(workdir, "value"), loss_fn=loss_fn, init_params=v_init,
                    tx=optax.adam(float(f.learning_rate)), num_steps=int(f.steps),
                    data={k: jnp.asarray(train[k]) for k in fields}, seeds=[seed],
                    batch_fn=batch_fn, has_aux=True, steps_per_log=int(f.log_every),
                    eval_fn=val_metrics, eval_data={k: jnp.asarray(val[k]) for k in fields},
                    select=("val_mc_error", "min"), plots=False)
    value_params = fit.seed_params(0) if fit.best_params is None else jax.tree.map(
        lambda x: x[0], fit.best_params)
    val_fn = jax.jit(val_metrics)
    before = val_fn(v_init, {k: jnp.asarray(val[k]) for k in fields})
    after = val_fn(value_params, {k: jnp.asarray(val[k]) for k in fields})
    out = {"value_val_loss_init": float(before["val_value_loss"]),
           "value_val_mc_error_init": float(before["val_mc_error"]),
           "value_val_loss": float(after["val_value_loss"]),
           "value_val_mc_error": float(after["val_mc_error"]),
           "value_best_step": float(np.asarray(fit.best_step)[0]),
           "train_samples": float(n), "train_reward": float(np.mean(train["reward"]))}
    test_key = jax.random.fold_in(key, 3)  # the same key: base vs VAS differ by the value only
    for name, params, beta, top_k in (("base", v_init, 0.0, 0),
                                      ("vas", value_params, float(d.beta), int(d.top_k))):
        s = draw("test", params, beta, test_key, top_k)
        out.update({f"{name}_reward": float(np.mean(s["reward"])),
                    f"{name}_length": float(np.mean(s["length"])),
                    f"{name}_kl_to_base": float(np.mean(s["kl"]))})
    return out


# ---------------------------------------------------------------------------------------------
# Claims


def claims(results) -> list[protocol.Claim]:
    if "toy" not in results:  # :real: metrics only
        return []
    seeds = results["toy"]["per_seed"]

    def mean(key):
        return float(np.mean([m[key] for m in seeds.values()]))

    n_bon = int(mean("cost_bon"))
    out = [protocol.sanity(
        "both value models' last-token Q explain the validation samples' gold (R^2 > 0)",
        min(min(m["value_a_val_r2"], m["value_b_val_r2"]) for m in seeds.values()) > 0.0,
        {k: mean(k) for k in ("value_a_val_r2", "value_b_val_r2", "rm_val_r2")},
        detail="trained to regress these rewards; this checks the training")]
    out.append(protocol.compare(
        f"VAS (1 sample, top-k 8) reaches test gold A >= best-of-{n_bon} of the base ranked by "
        "an RM trained on the same samples", results, ("toy", "vas_gold"),
        ("toy", f"bon{n_bon}_gold"), at_least=0.0,
        detail=f"beta_A chosen on validation gold (mean {mean('vas_beta'):.2f}); base "
               f"{mean('base_gold'):.3f}, base top-k {mean('topk_base_gold'):.3f}, VAS "
               f"{mean('vas_gold'):.3f} (KL {mean('vas_kl'):.2f} nats), best-of-{n_bon} by "
               f"RM {mean(f'bon{n_bon}_gold'):.3f}, by the value's last Q "
               f"{mean(f'bon{n_bon}_value_gold'):.3f}, by the gold "
               f"{mean(f'bon{n_bon}_oracle_gold'):.3f}; decoding cost per token VAS "
               f"{mean('cost_vas'):.1f} vs {n_bon} base forwards"))
    out.append(protocol.compare(
        f"VAS at best-of-{n_bon}'s KL budget reaches test gold A >= best-of-{n_bon} (RM-ranked)",
        results, ("toy", "vas_matched_gold"), ("toy", f"bon{n_bon}_gold"), at_least=0.0,
        detail=f"beta_A: the best validation gold among the beta_A-only levels whose "
               f"validation KL(pi || base) <= log n - (n - 1) / n = "
               f"{mean(f'bon{n_bon}_kl_bound'):.2f} nats (best-of-n's KL bound); mean beta "
               f"{mean('vas_matched_beta'):.3f}, test KL {mean('vas_matched_kl'):.2f}, found "
               f"within the budget on {mean('vas_matched_found'):.0%} of the seeds (the "
               f"top-k truncation alone, beta 0, costs {mean('topk_base_kl'):.2f} nats); VAS "
               f"{mean('vas_matched_gold'):.3f} vs best-of-{n_bon} "
               f"{mean(f'bon{n_bon}_gold'):.3f}"))
    out.append(protocol.threshold(
        f"front: at every beta_B, test gold A rises with beta_A (mean Spearman >= "
        f"{SPEARMAN_AT_LEAST})", results, ("toy", "front_spearman_a"),
        at_least=SPEARMAN_AT_LEAST,
        detail="per seed: mean over the beta_B levels of Spearman(beta_A, test gold A) over "
               "the beta_A levels; both value models active, the base frozen"))
    out.append(protocol.threshold(
        f"front: at every beta_A, test gold B rises with beta_B (mean Spearman >= "
        f"{SPEARMAN_AT_LEAST})", results, ("toy", "front_spearman_b"),
        at_least=SPEARMAN_AT_LEAST,
        detail="the same grid with the roles swapped"))
    return out


def plots(results, workdir: str) -> list[str]:
    """The two-value front: test gold A against gold B over the beta grid (mean over seeds),
    one line per beta_B level (beta_A rising along it)."""
    if "toy" not in results:
        return []
    from alignax.train.plots import plot_curves

    seeds = list(results["toy"]["per_seed"].values())
    pairs = sorted({tuple(float(x.replace("p", ".")) for x in k.split("_")[1:3])
                    for k in seeds[0] if k.startswith("front_") and k.endswith("_gold_a")})

    def mean(key):
        return float(np.mean([m[key] for m in seeds]))

    def name(ba, bb):
        return f"front_{ba:g}_{bb:g}".replace(".", "p")

    lines = {}
    for bb in sorted({b for _, b in pairs}):
        row = [ba for ba, b in pairs if b == bb]
        lines[f"beta_B={bb:g}"] = (np.array([mean(f"{name(ba, bb)}_gold_b") for ba in row]),
                                   np.array([mean(f"{name(ba, bb)}_gold_a") for ba in row]))
    return [plot_curves(lines, os.path.join(workdir, "plots", "front.png"),
                        title="VAS front: beta_A rises along each line (test, mean of seeds)",
                        xlabel="gold B", ylabel="gold A")]
