"""Representation geometry of LMs: RankMe and alpha-ReQ over pretraining, DPO and GRPO.

Paper: Li et al. 2025, "Tracing the Representation Geometry of Language Models from
Pretraining to Post-training" (arXiv 2509.23024).

The paper tracks two spectral measures of an LM's final-layer representations H [N, d]
(`alignax.eval.geometry`): RankMe = exp(-sum_k p_k log p_k), p_k = sigma_k / sum_j sigma_j +
eps (the effective rank), and alpha-ReQ, the decay exponent of the covariance eigenvalues
(log lambda_i = c - alpha log i). Over pretraining it finds three phases: an initial "warmup"
collapse of RankMe, an "entropy-seeking" phase where the rank grows, then a "compression-seeking"
phase where it falls again (alpha-ReQ mirrors it). After pretraining, SFT / DPO push towards
entropy-seeking, RL with verifiable rewards (GRPO) towards compression.

Setting (the notes' toy): a tiny transformer (`alignax.models.transformer`, d = 32, 2 layers,
4 heads, tied embeddings) pretrained by next-token prediction on a synthetic corpus with
Zipfian token frequencies and |V| = 512 >> d (`alignax.tasks.zipf.ZipfMarkovCorpus`: a Markov
chain mixing a global Zipf law with a few favourite successors per token), AdamW with linear
warmup and cosine decay, every seed in one vmapped program (`fit_small`). Every `log_every`
updates RankMe and alpha-ReQ of the final-layer hidden states (the final-norm output the LM
head reads, `return_hidden=True`) are computed on a fixed held-out batch of corpus text (all
token positions, N = rows x length); the initial params are measured too. From the final
pretrained checkpoint of each seed, two post-training variants run for the same number of
updates with the same optimizer:
  - `dpo`: DPO (`alignax.algorithms.small_lm.sequence_dpo_loss`, beta fixed) on gold
    preferences: for each training prompt the start model samples `dpo_samples` responses, the
    best and worst under the verifiable reward are the chosen / rejected pair (pairs whose
    rewards tie get weight 0); the reference is the start checkpoint;
  - `grpo`: on-policy GRPO (`small_lm.grpo_loss`: fresh samples every update, group-normalised
    advantages, k3 KL to the start checkpoint) on the verifiable reward;
  the verifiable reward (`mode_following_reward`) is the fraction of response tokens that are
  the chain's most likely next token after the token before them (a checkable "correct
  answer" per step). Prompts are corpus prefixes of `prompt_len` tokens, responses
  `response_len` tokens. The `pretrain` variant trains the shared pretraining run (cached by its
  config with `cached_run`; the post-training variants restore it) and reports the start
  checkpoint's metrics.

Splits (`split_seeds`): experiment seed s fixes the corpus (the world) and the model init; the
pretraining text and the post-training training prompts come from data seed 3s, the
validation prompts and a validation text batch from 3s + 1, the test prompts and the held-out
text batch on which every RankMe / alpha-ReQ claim is measured from 3s + 2.

Selection: pretraining has none (a fixed schedule; the paper traces the whole run, and the
final checkpoint is the start of post-training). Post-training: DPO and GRPO get the same
updates, learning rate, `log_every` grid and `select=("val_reward", "max")` (early stopping on
the mean verifiable reward of one sampled response per validation prompt); the selected step
is recorded (`chosen_step`, `val_reward`) and the test metrics are those of the selected
params, next to the final params' (`*_final`). Output entropy (`test_entropy`) is the policy's
mean next-token entropy (nats) at the response positions along its own samples on the test
prompts; the start checkpoint is measured on the same test prompts with the same keys.

Claims (5 seeds, 95% t intervals, restating the notes' pass criterion; measured on the held-out
test text). Pretraining curve, per seed, with R_0 the initial RankMe, m the step of the
smallest RankMe over the logged curve, R_peak the largest RankMe after m and R_late the
smallest after the peak:
  (1, threshold) the minimum is early: m / steps <= 0.10;
  (2, threshold) it is interior, a real collapse: 1 - R_m / R_0 >= 0.10 (the notes give no
      size; 10%, the size they ask of the later fall, is fixed before running);
  (3, threshold) entropy-seeking: R_peak / R_m - 1 >= 0.20;
  (4, threshold) compression-seeking: 1 - R_late / R_peak >= 0.10.
Post-training (comparative, paired over seeds against the start checkpoint):
  (5) GRPO lowers RankMe: test_rankme(grpo) - test_rankme(start) <= 0;
  (6) GRPO lowers output entropy: test_entropy(grpo) - test_entropy(start) <= 0;
  (7) DPO does not lower RankMe: test_rankme(dpo) - test_rankme(start) >= 0;
  (8) DPO does not lower output entropy: test_entropy(dpo) - test_entropy(start) >= 0.
Sanity (shown, not counted): both post-training methods raise the verifiable test reward over
the start checkpoint (the optimisation works). alpha-ReQ is reported along every curve and
after post-training (no claim: the notes' pass criterion is on RankMe).

What the toy shows (full run, 5 seeds; RESULTS.md has the numbers): the warmup collapse (RankMe
~27 -> ~3.5 at 4% of the steps, while the model learns the Zipf unigram) and the
entropy-seeking rise (to ~27 of d = 32) reproduce, with alpha-ReQ mirroring RankMe; the
compression-seeking fall does not: RankMe plateaus near its peak to the end. The paper ties
compression to learning long-context dependencies after short-context (n-gram) statistics; this
corpus is a first-order Markov chain, so once the bigram table is fitted nothing is left to
learn (the held-out NLL flattens at its minimum and creeps up as the 4000 training sequences are
revisited). GRPO lowers RankMe and output entropy as the paper says, but so does DPO: here
DPO's "gold preferences" are pairs ranked by the same narrow verifiable reward, so it
optimises the same mode-following target as GRPO and sharpens the policy too (the paper's DPO
data are broad preference sets). Both are reported as NOT REPRODUCED at toy scale; a corpus
with long-range structure and a longer run (beyond this module's 10-minute budget) are the
next things to try for the compression phase, and DPO on preferences over a broader gold
reward for the DPO contrast.

    alignax run experiments/representation_geometry.py          # full setting, 5 seeds
    alignax run experiments/representation_geometry.py:smoke    # seconds, for the tests
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.protocol import seed_mean
from alignax.algorithms import small_lm
from alignax.algorithms.cached import cached_run
from alignax.eval import geometry
from alignax.experiment import is_smoke
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.sampling.naive import sample_continuations
from alignax.tasks.splits import split_seeds
from alignax.tasks.zipf import ZipfMarkovCorpus, mode_following_reward
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small
from alignax.train.writers import read_metrics

METHODS = ("pretrain", "dpo", "grpo")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.plots = not smoke  # fit_small's per-stage PNGs (seconds of the smoke run)
    c.method = "pretrain"
    c.variants = {m: {"method": m} for m in METHODS}
    c.cache_dir = ""  # "" -> <workdir>/cache (the shared pretraining run)
    c.corpus = dict(vocab_size=64 if smoke else 512, exponent=1.1, mix=0.7, successors=4)
    c.model = dict(d_model=16 if smoke else 32, n_layers=1 if smoke else 2,
                   n_heads=2 if smoke else 4, d_ff=32 if smoke else 128)
    c.data = dict(seq_len=8 if smoke else 16, num_sequences=256 if smoke else 4000,
                  eval_sequences=16 if smoke else 64, prompt_len=4 if smoke else 8,
                  response_len=2 if smoke else 4, train_prompts=32 if smoke else 512,
                  val_prompts=32 if smoke else 256, test_prompts=32 if smoke else 512)
    c.pretrain = dict(steps=40 if smoke else 2000, batch_size=16 if smoke else 32,
                      learning_rate=3e-3, warmup_fraction=0.05, final_lr_fraction=0.1,
                      weight_decay=0.01, log_every=10 if smoke else 20)
    c.post = dict(steps=10 if smoke else 300, learning_rate=1e-3,
                  log_every=5 if smoke else 25)
    c.dpo = dict(beta=0.1, batch_size=8 if smoke else 32, samples=4)
    c.grpo = dict(prompts_per_step=4 if smoke else 16, samples=4 if smoke else 8,
                  kl_coef=0.04, temperature=1.0)
    return c


# ---------------------------------------------------------------------------------------------
# Data


def corpus_of(config, seed: int) -> ZipfMarkovCorpus:
    return ZipfMarkovCorpus(seed=seed, **config.corpus.to_dict())


def make_data(config, seed: int) -> dict:
    """Experiment seed `seed`: the world (corpus) is seeded by `seed`; pretraining text and
    training prompts from data seed 3s, validation prompts / text from 3s + 1, test prompts and
    the held-out text batch from 3s + 2."""
    d = config.data
    corpus = corpus_of(config, seed)
    seeds = split_seeds(seed)
    train, val, test = (np.random.default_rng([s, 2025]) for s in seeds)
    p = int(d.prompt_len)
    return {
        "text": corpus.sample(train, int(d.num_sequences), int(d.seq_len)),
        "train_prompts": corpus.sample(train, int(d.train_prompts), p),
        "val_text": corpus.sample(val, int(d.eval_sequences), int(d.seq_len)),
        "val_prompts": corpus.sample(val, int(d.val_prompts), p),
        "test_text": corpus.sample(test, int(d.eval_sequences), int(d.seq_len)),
        "test_prompts": corpus.sample(test, int(d.test_prompts), p),
        "top": corpus.top_successor(),
    }


def make_model(config):
    m, d = config.model, config.data
    return make_lm(TransformerConfig(
        vocab_size=int(config.corpus.vocab_size), d_model=int(m.d_model),
        n_layers=int(m.n_layers), n_heads=int(m.n_heads), d_ff=int(m.d_ff),
        max_len=max(int(d.seq_len), int(d.prompt_len) + int(d.response_len))))


def _reward(prompts, responses, top):
    return mode_following_reward(top, prompts, responses)


def text_geometry(lm, params, text) -> dict:
    """RankMe and alpha-ReQ of the final-layer hidden states of `text` [B, T] (all positions)."""
    _, hidden = lm.apply(params, text, jnp.ones(text.shape, bool), return_hidden=True)
    return geometry.geometry_metrics(hidden)


# ---------------------------------------------------------------------------------------------
# Pretraining


def pretrain(config, workdir: str, data: dict):
    """Next-token pretraining of every seed at once; RankMe / alpha-ReQ / NLL of the held-out
    test text every `log_every` updates. Returns the SmallFit."""
    pt = config.pretrain
    lm = make_model(config)
    steps, batch_size = int(pt.steps), int(pt.batch_size)
    lr = float(pt.learning_rate)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, lr, max(1, int(pt.warmup_fraction * steps)), steps, lr * float(pt.final_lr_fraction))
    nll = small_lm.next_token_loss(lm.apply)

    def batch_fn(d, rng):
        return d["text"][jax.random.randint(rng, (batch_size,), 0, d["text"].shape[0])]

    def eval_fn(params, e):
        out = text_geometry(lm, params, e["test_text"])
        out["test_nll"] = nll(params, e["test_text"])[0]
        return out

    return fit_small(workdir, plots=bool(config.plots), loss_fn=nll, init_params=lm.init,
                     tx=optax.adamw(schedule, weight_decay=float(pt.weight_decay)),
                     num_steps=steps, data={"text": data["text"]}, seeds=list(config.seeds),
                     per_seed_data=True, batch_fn=batch_fn, has_aux=True,
                     steps_per_log=int(pt.log_every), eval_fn=eval_fn,
                     eval_data={"test_text": data["test_text"]})


def pretrained(config, workdir: str, data: dict):
    """The shared pretraining run, trained once per config (`cached_run`) and restored by the
    post-training variants."""
    cache = config.cache_dir or os.path.join(os.path.dirname(workdir), "cache")
    key = {"seeds": list(config.seeds), "corpus": config.corpus.to_dict(),
           "model": config.model.to_dict(), "data": config.data.to_dict(),
           "pretrain": config.pretrain.to_dict()}
    return cached_run("repgeom_pretrain", key, lambda _, path: pretrain(config, path, data),
                      cache_dir=cache)


def curve_metrics(steps: np.ndarray, rankme: np.ndarray, total: int) -> dict[str, float]:
    """The phase statistics of one RankMe curve (steps[0] = 0 is the initial params)."""
    m = int(np.argmin(rankme))
    peak = m + int(np.argmax(rankme[m:]))
    late = peak + int(np.argmin(rankme[peak:]))
    return {"test_min_step_fraction": float(steps[m] / total),
            "test_collapse": float(1.0 - rankme[m] / rankme[0]),
            "test_rise": float(rankme[peak] / rankme[m] - 1.0),
            "test_fall": float(1.0 - rankme[late] / rankme[peak]),
            "test_fall_to_end": float(1.0 - rankme[-1] / rankme[peak]),
            "test_rankme_init": float(rankme[0]), "test_rankme_min": float(rankme[m]),
            "test_rankme_peak": float(rankme[peak]), "test_rankme_end": float(rankme[-1]),
            "test_peak_step_fraction": float(steps[peak] / total)}


# ---------------------------------------------------------------------------------------------
# Evaluation of a checkpoint and post-training


def make_evaluate(config, lm):
    """`evaluate(params, eval_data, key) -> metrics` of one seed on one split's prompts / text."""
    k = int(config.data.response_len)

    def evaluate(params, e, key):
        out = small_lm.sampled_response_metrics(lm.apply, params, e["prompts"], key, _reward,
                                                response_len=k, reward_data=e["top"])
        geo = text_geometry(lm, params, e["text"])
        return {**out, **geo}

    return evaluate


def split_eval(data: dict, split: str) -> dict:
    return {"prompts": data[f"{split}_prompts"], "text": data[f"{split}_text"],
            "top": data["top"]}


# the jitted evaluation per (model, corpus, data, seeds): the variants of one run share it, so
# it is traced and compiled once per process instead of once per variant
_EVALUATE_PROGRAMS: dict[str, object] = {}


def make_evaluate_seeds(config, lm):
    """`evaluate_seeds(params [S, ...], data, split) -> {metric: [S]}`: every seed's metrics on
    `split`, with fixed sampling keys (the same for every variant); one compiled program, shared
    by every variant with the same model, corpus, data and seeds (`lm` must be
    `make_model(config)`)."""
    keys = jnp.stack([jax.random.key(1000 + s) for s in config.seeds])
    name = json.dumps({"model": config.model.to_dict(), "corpus": config.corpus.to_dict(),
                       "data": config.data.to_dict(), "seeds": [int(s) for s in config.seeds]},
                      sort_keys=True)
    if name not in _EVALUATE_PROGRAMS:
        _EVALUATE_PROGRAMS[name] = jax.jit(jax.vmap(make_evaluate(config, lm)))
    fn = _EVALUATE_PROGRAMS[name]

    def evaluate_seeds(params, data: dict, split: str) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in fn(params, split_eval(data, split), keys).items()}

    return evaluate_seeds


def dpo_pairs(config, lm, start, data: dict) -> dict:
    """Gold preference pairs per seed: `dpo.samples` responses of the start model per training
    prompt, the best and worst under the verifiable reward (weight 0 when they tie), with the
    start (reference) model's response log-probs."""
    n, k = int(config.dpo.samples), int(config.data.response_len)

    def one(params, prompts, top, key):
        rep = jnp.repeat(prompts, n, axis=0)
        resp, _ = sample_continuations(lm.apply, params, rep, key, num_new_tokens=k)
        r = _reward(rep, resp, top).reshape(-1, n)
        resp = resp.reshape(prompts.shape[0], n, k)
        best, worst = jnp.argmax(r, 1), jnp.argmin(r, 1)
        pick = lambda i: jnp.take_along_axis(resp, i[:, None, None], 1)[:, 0]  # noqa: E731
        chosen = jnp.concatenate([prompts, pick(best)], 1)
        rejected = jnp.concatenate([prompts, pick(worst)], 1)
        lp = lambda x: small_lm.response_logps(lm.apply, params, x, k).sum(-1)  # noqa: E731
        weight = (jnp.max(r, 1) > jnp.min(r, 1)).astype(jnp.float32)
        return {"chosen": chosen, "rejected": rejected, "ref_chosen": lp(chosen),
                "ref_rejected": lp(rejected), "weight": weight}

    keys = jnp.stack([jax.random.key(2000 + s) for s in config.seeds])
    return jax.jit(jax.vmap(one))(start, data["train_prompts"], data["top"], keys)


def post_train(config, workdir: str, lm, start, data: dict):
    """DPO or GRPO from the start checkpoint [S, ...], early-stopped on the validation reward."""
    method, post = config.method, config.post
    k = int(config.data.response_len)
    evaluate = make_evaluate(config, lm)
    eval_key = jax.random.key(3000)

    def eval_fn(params, e):
        out = evaluate(params, e, eval_key)
        return {"val_reward": out["reward"], "val_entropy": out["entropy"],
                "val_rankme": out["rankme"], "val_alpha_req": out["alpha_req"]}

    if method == "dpo":
        pairs = dpo_pairs(config, lm, start, data)
        bs = int(config.dpo.batch_size)
        loss_fn = small_lm.sequence_dpo_loss(lm.apply, response_len=k,
                                             beta=float(config.dpo.beta))

        def batch_fn(d, rng):
            idx = jax.random.randint(rng, (bs,), 0, d["chosen"].shape[0])
            return jax.tree.map(lambda x: x[idx], d)

        train_data = pairs
    else:
        g = config.grpo
        m = int(g.prompts_per_step)
        loss_fn = small_lm.grpo_loss(lm.apply, _reward, response_len=k,
                                     num_samples=int(g.samples),
                                     temperature=float(g.temperature),
                                     kl_coef=float(g.kl_coef))

        def batch_fn(d, rng):
            pick, sample = jax.random.split(rng)
            idx = jax.random.randint(pick, (m,), 0, d["prompts"].shape[0])
            return {"rng": sample, "prompts": d["prompts"][idx], "reward_data": d["top"],
                    "ref_params": d["ref_params"]}

        train_data = {"prompts": data["train_prompts"], "top": data["top"], "ref_params": start}
        pairs = None
    fit = fit_small(workdir, plots=bool(config.plots), loss_fn=loss_fn, init_params=start,
                    per_seed_init=True,
                    tx=optax.adam(float(post.learning_rate)), num_steps=int(post.steps),
                    data=train_data, seeds=list(config.seeds), per_seed_data=True,
                    batch_fn=batch_fn, has_aux=True, steps_per_log=int(post.log_every),
                    eval_fn=eval_fn, eval_data=split_eval(data, "val"),
                    select=("val_reward", "max"))
    return fit, pairs


# ---------------------------------------------------------------------------------------------
# The run


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    # the [S, ...] arrays of `stack_seeds`, put on the device by jax.device_put (jnp.asarray of
    # a host array compiles a staging program per shape and dtype)
    per_seed = [make_data(config, s) for s in seeds]
    data = {k: jax.device_put(np.stack([np.asarray(d[k]) for d in per_seed]))
            for k in per_seed[0]}
    lm = make_model(config)
    pre = pretrained(config, workdir, data)
    evaluate_seeds = make_evaluate_seeds(config, lm)
    out = {s: {} for s in seeds}
    if method == "pretrain":
        init = jax.vmap(lm.init)(jnp.stack([jax.random.key(s) for s in seeds]))
        r0 = jax.jit(jax.vmap(lambda p, t: text_geometry(lm, p, t)))(init, data["test_text"])
        steps = np.array([0] + [row["step"] for row in pre.history], np.float64)
        steps = steps * int(config.pretrain.log_every)
        steps[-1] = int(config.pretrain.steps)
        for i, s in enumerate(seeds):
            rankme = np.array([float(np.asarray(r0["rankme"])[i])]
                              + [row[f"seed_{s}/eval/rankme"] for row in pre.history])
            alpha = np.array([float(np.asarray(r0["alpha_req"])[i])]
                             + [row[f"seed_{s}/eval/alpha_req"] for row in pre.history])
            out[s].update(curve_metrics(steps, rankme, int(config.pretrain.steps)))
            out[s]["test_alpha_req_init"] = float(alpha[0])
            out[s]["test_alpha_req_max"] = float(alpha.max())
            out[s]["test_alpha_req_end"] = float(alpha[-1])
            test_nll = np.array([row[f"seed_{s}/eval/test_nll"] for row in pre.history])
            out[s]["test_nll_end"] = float(test_nll[-1])
            out[s]["test_nll_min"] = float(test_nll.min())
            out[s]["test_nll_min_step_fraction"] = float(steps[1 + int(np.argmin(test_nll))]
                                                         / int(config.pretrain.steps))
            out[s]["rankme_alpha_spearman"] = float(_spearman(rankme, alpha))
        final = pre.params
    else:
        fit, pairs = post_train(config, workdir, lm, pre.params, data)
        final = fit.best_params
        last = evaluate_seeds(fit.params, data, "test")
        for i, s in enumerate(seeds):
            out[s].update({"chosen_step": float(fit.best_step[i]),
                           "val_reward": float(fit.best_score[i]),
                           **{f"test_{k}_final": float(v[i]) for k, v in last.items()}})
            if pairs is not None:
                out[s]["dpo_pairs_used"] = float(np.asarray(pairs["weight"])[i].sum())
    test = evaluate_seeds(final, data, "test")
    for i, s in enumerate(seeds):
        out[s].update({f"test_{k}": float(v[i]) for k, v in test.items()})
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


# ---------------------------------------------------------------------------------------------
# Claims and plots


def claims(results) -> list[protocol.Claim]:
    pre = "pretrain"
    m = lambda v, k: seed_mean(results, v, k)  # noqa: E731
    curve = (f"mean RankMe: init {m(pre, 'test_rankme_init'):.2f}, minimum "
             f"{m(pre, 'test_rankme_min'):.2f} at {m(pre, 'test_min_step_fraction'):.3f} of "
             f"the steps, peak {m(pre, 'test_rankme_peak'):.2f} at "
             f"{m(pre, 'test_peak_step_fraction'):.3f}, end {m(pre, 'test_rankme_end'):.2f} "
             f"(fall to the end {m(pre, 'test_fall_to_end'):.3f}); alpha-ReQ init "
             f"{m(pre, 'test_alpha_req_init'):.2f}, max {m(pre, 'test_alpha_req_max'):.2f}, "
             f"end {m(pre, 'test_alpha_req_end'):.2f}; Spearman(RankMe, alpha-ReQ) along the "
             f"curve {m(pre, 'rankme_alpha_spearman'):.2f}; held-out NLL at the end "
             f"{m(pre, 'test_nll_end'):.3f}, its minimum {m(pre, 'test_nll_min'):.3f} at "
             f"{m(pre, 'test_nll_min_step_fraction'):.2f} of the steps. Toy note: the corpus "
             f"is a first-order Markov chain (no structure beyond bigrams; the paper ties "
             f"compression-seeking to long-context dependencies)")
    post = {v: {k: m(v, f"test_{k}") for k in ("rankme", "entropy", "reward", "alpha_req")}
            for v in METHODS}
    detail = "; ".join(f"{v}: RankMe {d['rankme']:.2f}, entropy {d['entropy']:.3f}, reward "
                       f"{d['reward']:.3f}, alpha-ReQ {d['alpha_req']:.3f}"
                       for v, d in post.items())
    detail += (f" (start = pretrain; selected steps dpo {m('dpo', 'chosen_step'):.0f}, grpo "
               f"{m('grpo', 'chosen_step'):.0f}; at the last step dpo RankMe "
               f"{m('dpo', 'test_rankme_final'):.2f}, grpo {m('grpo', 'test_rankme_final'):.2f}). "
               f"Toy note: DPO's gold pairs are ranked by the same verifiable reward GRPO "
               f"optimises (the paper's DPO data are broad preference sets)")
    reward_up = {v: m(v, "test_reward") - m(pre, "test_reward") for v in ("dpo", "grpo")}
    return [
        protocol.threshold("pretraining RankMe has its minimum early (within the first 10% "
                           "of the steps)", results, (pre, "test_min_step_fraction"),
                           at_most=0.10, detail=curve),
        protocol.threshold("the early minimum is interior: RankMe collapses >= 10% below its "
                           "initial value", results, (pre, "test_collapse"), at_least=0.10,
                           detail=curve),
        protocol.threshold("entropy-seeking: RankMe then rises >= 20% above the minimum",
                           results, (pre, "test_rise"), at_least=0.20, detail=curve),
        protocol.threshold("compression-seeking: RankMe later falls >= 10% from its peak",
                           results, (pre, "test_fall"), at_least=0.10, detail=curve),
        protocol.compare("GRPO lowers RankMe relative to the start checkpoint", results,
                         ("grpo", "test_rankme"), (pre, "test_rankme"), at_most=0.0,
                         detail=detail),
        protocol.compare("GRPO lowers the output entropy relative to the start checkpoint",
                         results, ("grpo", "test_entropy"), (pre, "test_entropy"),
                         at_most=0.0, detail=detail),
        protocol.compare("DPO does not lower RankMe relative to the start checkpoint", results,
                         ("dpo", "test_rankme"), (pre, "test_rankme"), at_least=0.0,
                         detail=detail),
        protocol.compare("DPO does not lower the output entropy relative to the start "
                         "checkpoint", results, ("dpo", "test_entropy"),
                         (pre, "test_entropy"), at_least=0.0, detail=detail),
        protocol.sanity("DPO and GRPO raise the verifiable test reward over the start "
                        "checkpoint (the optimisation works)",
                        bool(min(reward_up.values()) > 0),
                        {f"{v}_reward_gain": g for v, g in reward_up.items()},
                        "means over seeds"),
    ]


def _config_value(workdir: str, path: tuple[str, ...]) -> int:
    """An int field of the run's config.json (1 when it cannot be read)."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            value = json.load(f)
        for key in path:
            value = value[key]
        return int(value)
    except (OSError, ValueError, KeyError, TypeError):
        return 1


def plots(results, workdir: str) -> list[str]:
    """RankMe and alpha-ReQ along pretraining; validation reward and RankMe along DPO / GRPO."""
    out = []
    seeds = list(results.get("pretrain", {}).get("per_seed", {}))
    cache = os.path.join(workdir, "cache")
    runs = [os.path.join(cache, d) for d in sorted(os.listdir(cache))
            if d.startswith("repgeom_pretrain-")] if os.path.isdir(cache) else []
    every = _config_value(workdir, ("pretrain", "log_every"))
    if seeds and runs and os.path.exists(os.path.join(runs[-1], "metrics.jsonl")):
        rows = read_metrics(os.path.join(runs[-1], "metrics.jsonl"))
        x = [row["step"] * every for row in rows]
        for name in ("rankme", "alpha_req"):
            ys = np.array([[row[f"seed_{s}/eval/{name}"] for row in rows] for s in seeds])
            path = os.path.join(workdir, "plots", f"pretrain_{name}.png")
            plot_curves({name: (x, ys.mean(0), ys.std(0))}, path,
                        title=f"{name} of the final-layer states during pretraining",
                        xlabel="update" if every > 1 else "log step", ylabel=name)
            out.append(path)
    every = _config_value(workdir, ("post", "log_every"))
    for name in ("val_reward", "val_rankme", "val_entropy"):
        curves = {}
        for variant in ("dpo", "grpo"):
            path = os.path.join(workdir, variant, "metrics.jsonl")
            if variant not in results or not os.path.exists(path):
                continue
            rows = read_metrics(path)
            ys = np.array([[row[f"seed_{s}/eval/{name}"] for row in rows]
                           for s in results[variant]["per_seed"]])
            curves[variant] = ([row["step"] * every for row in rows], ys.mean(0), ys.std(0))
        if curves:
            path = os.path.join(workdir, "plots", f"post_{name}.png")
            plot_curves(curves, path, title=f"{name} during post-training",
                        xlabel="update" if every > 1 else "log step", ylabel=name)
            out.append(path)
    return out
