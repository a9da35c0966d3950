"""BLEUBERI: BLEU against references as the GRPO reward vs a learned reward model vs SFT.

Paper: Chang et al. 2025, "BLEUBERI: BLEU is a surprisingly effective reward for instruction
following" (arXiv 2505.11080).

Setting (a tiny LM with exact expectations, `alignax.models.sequence_table`): responses are all
4^5 = 1024 token sequences, a prompt ("instruction") is a feature vector z ~ N(0, I_4) and the
policy is a prefix-tree policy log-linear in z. The world (`alignax.tasks.sequence_prefs.
PreferenceWorld`, seeded by the experiment seed) holds the hidden gold quality function (prompt-
dependent token utilities plus adjacent-token interactions) and the base policy pi_ref (random
logits, unrelated to the gold). References are K = 4 samples per prompt from a high-gold
teacher, pi_T(y|x) ∝ exp(gold(x, y) / tau), tau = 0.5 (its test gold, `test_teacher_gold`, is
about 5 where pi_ref's is about 0): the "strong LLM" that wrote the references.

Methods (every one starts from pi_ref, trains `steps` = 500 Adam updates on the training prompts;
a 300-update development run left every method's validation gold still rising, so the budget was
raised for all of them alike):
  - `bleu_grpo` (the method): GRPO (`alignax.algorithms.small_pg.group_pg_loss`, M = 16
    prompts x G = 8 responses per update, (r - mean) / std advantages, the exact KL to pi_ref
    as the penalty) with r = BLEU-4 of the response against the prompt's references, computed
    on device by the pure-jax `alignax.rewards.bleu` (clipped multi-reference n-gram
    precisions, brevity penalty, +1 smoothing);
  - `bleu_hard`: the same, on the half of the training prompts with the lowest BLEU of
    pi_ref's samples (the paper's "hard instruction" data selection); reported only;
  - `rm_grpo`: the same GRPO with a learned reward model as the reward: a 2-layer MLP on
    (z, one-hot tokens) trained by Bradley-Terry on 2048 gold-labelled pairs of pi_ref samples
    of the training prompts (BT draws from the gold), early-stopped on 512 validation pairs;
  - `sft`: supervised fine-tuning on the references (negative log-likelihood of 64 references
    per update), with the same KL penalty to pi_ref.

Splits (`split_seeds`): training prompts (and their references and RM pairs) from data seed 3s,
validation prompts (references, RM validation pairs) from 3s + 1, test prompts (references for
the agreement metric, held-out pairs) from 3s + 2.

Selection on validation (the same for every method): the KL coefficient from `kl_coefs`
(vmapped in one program) and the checkpoint (every `eval_every` updates, `fit_small(select=
("val_gold", "max"))`) with the highest exact E_pi[gold] on the validation prompts, recorded as
`chosen_kl_coef`, `chosen_step`, `val_gold`. Test metrics of the chosen params: exact E_pi[gold]
on the test prompts (`test_gold`), its gain over pi_ref (`test_gold_gain`), KL(pi || pi_ref).

Agreement (rm_grpo variant): on 2048 held-out test pairs of pi_ref samples (distinct responses),
the fraction whose order by BLEU against the test prompt's references (ties 1/2), resp. by the
RM, equals the gold order: `test_bleu_agreement`, `test_rm_agreement`.

Claims (5 seeds, paired 95% t intervals; the notes' pass criterion as intervals):
  - comparative: BLEU-GRPO's test gold gain over pi_ref is >= 90% of RM-GRPO's
    (per seed gain_bleu - 0.9 gain_rm >= 0; the gold is unnormalised, so the ratio is on gains);
  - comparative: BLEU-GRPO's test gold >= SFT's;
  - comparative: BLEU's agreement with the gold order on held-out pairs is within 5 points of
    the RM's (difference >= -0.05);
  - sanity: the teacher's references have a higher gold than pi_ref (by construction).

What the toy can and cannot show: the gold here is noise-free and the RM is trained on pairs
from the same distribution as the held-out agreement pairs (pi_ref samples), while BLEU compares
a response with only K = 4 teacher samples, most of whose n-grams a random pi_ref response
misses; in the paper both are judged against noisy human votes, whose ceiling hides much of the
RM's advantage. SFT imitates the teacher directly, and the log-linear policy can represent the
teacher's mostly prompt-linear preferences, whereas the paper's SFT on 50k references of a
different model did not transfer as well. A 300-update development run gave BLEU-GRPO a gain
of about 80% of RM-GRPO's and below SFT, and a BLEU agreement well below the RM's.

    alignax run experiments/bleuberi.py            # full setting, 5 seeds
    alignax run experiments/bleuberi.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms.small_pg import group_pg_loss, rl_batch, sequence_table_policy
from alignax.experiment import is_smoke
from alignax.losses.reward import bradley_terry_loss
from alignax.models import sequence_table as st
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.protocol import seed_mean
from alignax.rewards import bleu
from alignax.tasks.sequence_prefs import PreferenceWorld
from alignax.tasks.simulators import bradley_terry
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_curves, seed_mean_curve
from alignax.train.small import fit_small, stack_seeds

METHODS = ("bleu_grpo", "bleu_hard", "rm_grpo", "sft")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "bleu_grpo"
    # :smoke runs the method only (each variant compiles its own programs: seconds each)
    c.variants = {m: {"method": m} for m in (("bleu_grpo",) if smoke else METHODS)}
    c.space = dict(vocab_size=4, length=4 if smoke else 5)
    c.world = dict(dim=4, unary_scale=1.0, pair_scale=0.5, ref_scale=1.0)
    c.teacher_temperature = 0.5
    c.data = dict(train_prompts=16 if smoke else 128, val_prompts=16 if smoke else 128,
                  test_prompts=16 if smoke else 128, references=4, rm_pairs=256 if smoke
                  else 2048, rm_val_pairs=64 if smoke else 512, test_pairs=256 if smoke
                  else 2048, hard_samples=8 if smoke else 32)
    c.bleu = dict(max_n=4, smoothing=1.0)
    c.train = dict(steps=20 if smoke else 500, eval_every=10 if smoke else 25,
                   learning_rate=0.05, kl_coefs=(0.0, 0.05) if smoke else (0.0, 0.02, 0.1))
    c.grpo = dict(prompts_per_update=8 if smoke else 16, group_size=8)
    c.sft = dict(batch_size=64)
    c.rm = dict(hidden=(16,) if smoke else (64, 64), steps=30 if smoke else 600,
                batch_size=128, learning_rate=3e-3, eval_every=10 if smoke else 50)
    return c


def make_world(config, seed: int) -> PreferenceWorld:
    return PreferenceWorld(st.SequenceSpace(int(config.space.vocab_size),
                                            int(config.space.length)), seed=seed,
                           **config.world.to_dict())


_log_probs = jax.jit(st.sequence_log_probs, static_argnums=0)


def teacher_probs(gold: np.ndarray, temperature: float) -> np.ndarray:
    """[..., N] the reference writer pi_T(y|x) ∝ exp(gold(x, y) / temperature)."""
    logits = gold / temperature
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def draw(probs: np.ndarray, k: int, rng) -> np.ndarray:
    """[P, k] int32 i.i.d. draws from each row of probs [P, N]."""
    cdf = np.cumsum(probs, -1)
    u = rng.random((probs.shape[0], k)) * cdf[:, -1:]
    return np.minimum((u[:, :, None] > cdf[:, None, :]).sum(-1), probs.shape[1] - 1).astype(
        np.int32)


def rm_inputs(space, z, index) -> np.ndarray:
    """[..., D + L V] the RM's input: prompt features and one-hot tokens of responses `index`."""
    tokens = space.sequences[index]  # [..., L]
    onehot = np.eye(space.vocab_size, dtype=np.float32)[tokens].reshape(*index.shape, -1)
    zz = np.broadcast_to(z, (*index.shape, z.shape[-1]))
    return np.concatenate([zz, onehot], -1).astype(np.float32)


def make_data(config, seed: int) -> dict:
    """The world of seed `seed` and, per split (`split_seeds`): prompts, gold tables, pi_ref's
    log-probs, the teacher's references, and the RM's pairs (train, validation) and held-out
    agreement pairs (test)."""
    world = make_world(config, seed)
    space, splits, d = world.space, split_seeds(seed), config.data
    ref = world.reference_params()
    out = {"ref_bias": ref["bias"], "ref_weight": ref["weight"]}
    for name, n, s in (("train", d.train_prompts, splits.train),
                       ("val", d.val_prompts, splits.validation),
                       ("test", d.test_prompts, splits.test)):
        z = world.prompts(int(n), s)
        gold = world.gold(z)
        rng = np.random.default_rng([s, 1818])
        out[f"{name}_z"], out[f"{name}_gold"] = z, gold
        out[f"{name}_ref"] = np.asarray(_log_probs(space, ref, jnp.asarray(z)))
        teacher = teacher_probs(gold, float(config.teacher_temperature))
        out[f"{name}_teacher_gold"] = (teacher * gold).sum(-1).mean()
        refs = draw(teacher, int(d.references), rng)
        out[f"{name}_refs"] = space.sequences[refs]  # [P, K, L] tokens
        num_pairs = {"train": d.rm_pairs, "val": d.rm_val_pairs, "test": d.test_pairs}[name]
        per_prompt = -(-int(num_pairs) // int(n))
        pairs = draw(np.exp(out[f"{name}_ref"]), 2 * per_prompt, rng)  # [P, 2k]
        rows = np.repeat(np.arange(int(n)), per_prompt)[:num_pairs]
        a = pairs[:, :per_prompt].reshape(-1)[:num_pairs]
        b = pairs[:, per_prompt:].reshape(-1)[:num_pairs]
        ga, gb = gold[rows, a], gold[rows, b]
        if name == "test":  # held-out pairs for the agreement with the gold order
            out.update(pair_row=rows.astype(np.int32), pair_a=a, pair_b=b,
                       pair_a_better=(ga > gb), pair_distinct=(a != b))
        else:  # BT-labelled pairs for the reward model
            a_wins = bradley_terry(ga, gb, rng=rng).astype(bool)
            out[f"{name}_chosen"] = rm_inputs(space, z[rows], np.where(a_wins, a, b))
            out[f"{name}_rejected"] = rm_inputs(space, z[rows], np.where(a_wins, b, a))
    return out


# ---------------------------------------------------------------------------------------------
# The reward model (rm_grpo)


def train_rm(config, workdir, data):
    """A BT reward model per seed (fit_small, early-stopped on validation pairs); returns
    (RM table [S, P_train, N] on the training prompts, RM scores of the test pairs [S, 2, T],
    chosen step [S], validation accuracy [S])."""
    seeds = [int(s) for s in config.seeds]
    space = make_world(config, seeds[0]).space
    rc = config.rm
    model = make_mlp(MLPConfig(in_dim=space.length * space.vocab_size + int(config.world.dim),
                               hidden=tuple(rc.hidden)))
    bs = int(rc.batch_size)

    def batch_fn(d, rng):
        i = jax.random.randint(rng, (bs,), 0, d["chosen"].shape[0])
        return {"chosen": d["chosen"][i], "rejected": d["rejected"][i]}

    def loss_fn(p, b):
        return bradley_terry_loss(model.apply(p, b["chosen"]), model.apply(p, b["rejected"])
                                  ).mean()

    def eval_fn(p, v):
        return {"val_accuracy": jnp.mean(model.apply(p, v["val_chosen"])
                                         > model.apply(p, v["val_rejected"]))}

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=model.init,
                    tx=optax.adam(float(rc.learning_rate)), num_steps=int(rc.steps),
                    data={"chosen": data["train_chosen"], "rejected": data["train_rejected"]},
                    seeds=seeds, per_seed_data=True, batch_fn=batch_fn,
                    steps_per_log=int(rc.eval_every), eval_fn=eval_fn,
                    eval_data={"val_chosen": data["val_chosen"],
                               "val_rejected": data["val_rejected"]},
                    select=("val_accuracy", "max"), plots=False)
    all_y = np.arange(space.num_sequences)
    tables, pair_scores = [], []
    score = jax.jit(model.apply)
    for i in range(len(seeds)):
        p = jax.tree.map(lambda x: x[i], fit.best_params)
        z = np.asarray(data["train_z"][i])
        tables.append(np.stack([np.asarray(score(p, rm_inputs(space, zz, all_y))) for zz in z]))
        tz = np.asarray(data["test_z"][i])[np.asarray(data["pair_row"][i])]
        pair_scores.append(np.stack([
            np.asarray(score(p, rm_inputs(space, tz[:, None, :], np.asarray(
                data[k][i])[:, None])[:, 0])) for k in ("pair_a", "pair_b")]))
    return (np.stack(tables).astype(np.float32), np.stack(pair_scores),
            np.asarray(fit.best_step), np.asarray(fit.best_score))


def agreement(score_a, score_b, a_better, distinct) -> float:
    """Fraction of distinct pairs ordered as the gold orders them (score ties count 1/2)."""
    hit = np.where(score_a == score_b, 0.5, ((score_a > score_b) == a_better).astype(float))
    return float(hit[distinct].mean())


# ---------------------------------------------------------------------------------------------
# Policies: GRPO (BLEU or RM reward) and SFT, every (seed, KL coefficient) in one program


def policy_fns(space):
    """sequence_table_policy's functions on prompts {"z": [M, D], "row": [M]} (the row indexes
    the prompt's references and reward table)."""
    sample_fn, log_prob_fn, _ = sequence_table_policy(space)
    return (lambda p, k, x, n: sample_fn(p, k, x["z"], n),
            lambda p, x, y: log_prob_fn(p, x["z"], y))


def kl_term(space, params, data, z):
    """data["kl_coef"] * KL(pi(.|x) || pi_ref(.|x)) [M] (the coefficient is data, so a grid
    of coefficients trains vmapped)."""
    ref = jax.lax.stop_gradient({"bias": data["ref_bias"], "weight": data["ref_weight"]})
    return data["kl_coef"] * st.sequence_kl(space, params, ref, z)


def make_loss(config, space, method):
    bc, m = config.bleu, int(config.grpo.prompts_per_update)
    if method == "sft":
        bs = int(config.sft.batch_size)

        def sft(params, batch):
            d, key = batch["data"], batch["rng"]
            k1, k2 = jax.random.split(key)
            flat = d["refs"].reshape(-1)  # [P * K] sequence indices
            i = jax.random.randint(k1, (bs,), 0, flat.shape[0])
            rows = i // d["refs"].shape[1]
            lp = st.path_log_probs(space, params, flat[i], d["z"][rows])
            nll = -jnp.mean(lp)
            kl_rows = jax.random.randint(k2, (m,), 0, d["z"].shape[0])
            kl = jnp.mean(kl_term(space, params, d, d["z"][kl_rows]))
            return nll + kl, {"nll": nll, "kl": kl}

        return sft
    sample_fn, log_prob_fn = policy_fns(space)
    sequences = jnp.asarray(space.sequences)

    def prompt_fn(key, d):
        rows = d["pool"][jax.random.randint(key, (m,), 0, d["pool"].shape[0])]
        return {"z": d["z"][rows], "row": rows}

    def reward_fn(prompts, responses, d):
        if method == "rm_grpo":
            return jnp.take_along_axis(d["rm_table"][prompts["row"]], responses, -1)
        refs = sequences[d["refs"][prompts["row"]]]  # [M, K, L]
        return bleu(sequences[responses], refs[:, None], max_n=int(bc.max_n),
                    smoothing=float(bc.smoothing))

    return group_pg_loss(sample_fn, log_prob_fn, reward_fn,
                         group_size=int(config.grpo.group_size), advantage="grpo",
                         kl_coef=1.0, kl_fn=lambda p, x, y, d: kl_term(space, p, d, x["z"]),
                         prompt_fn=prompt_fn)


def gold_and_kl(space, params, z, gold, ref_logp):
    lp = st.sequence_log_probs(space, params, z)
    p = jnp.exp(lp)
    return jnp.mean(jnp.sum(p * gold, -1)), jnp.mean(jnp.sum(p * (lp - ref_logp), -1))


def train_policy(config, workdir, data, method, pool, rm_table=None):
    """Every (seed, KL coefficient) trained at once; returns (fit, ids, coefs)."""
    seeds = [int(s) for s in config.seeds]
    space = make_world(config, seeds[0]).space
    tr = config.train
    coefs = [float(c) for c in tr.kl_coefs]
    nc = len(coefs)
    rep = lambda x: np.repeat(np.asarray(x), nc, axis=0)  # noqa: E731
    refs_index = np.stack([space.index(r) for r in np.asarray(data["train_refs"])])
    train = {"z": rep(data["train_z"]), "refs": rep(refs_index), "pool": rep(pool),
             "ref_bias": rep(data["ref_bias"]), "ref_weight": rep(data["ref_weight"]),
             "kl_coef": np.tile(np.asarray(coefs, np.float32), len(seeds))}
    if rm_table is not None:
        train["rm_table"] = rep(rm_table)
    ids = [1000 * s + j for s in seeds for j in range(nc)]

    def eval_fn(params, e):
        g, kl = gold_and_kl(space, params, e["val_z"], e["val_gold"], e["val_ref"])
        return {"val_gold": g, "val_kl": kl}

    fit = fit_small(workdir, loss_fn=make_loss(config, space, method),
                    init_params={"bias": rep(data["ref_bias"]),
                                 "weight": rep(data["ref_weight"])},
                    per_seed_init=True, tx=optax.adam(float(tr.learning_rate)),
                    num_steps=int(tr.steps), data=train, seeds=ids, per_seed_data=True,
                    seed_keys=jnp.stack([jax.random.key(i // 1000) for i in ids]),
                    batch_fn=rl_batch, has_aux=True, steps_per_log=int(tr.eval_every),
                    eval_fn=eval_fn,
                    eval_data={k: rep(data[k]) for k in ("val_z", "val_gold", "val_ref")},
                    select=("val_gold", "max"), plots=False)
    return fit, ids, coefs


def hard_pool(config, data) -> np.ndarray:
    """[S, P/2] the training prompts with the lowest mean BLEU of `hard_samples` pi_ref samples
    (the paper's selection of hard instructions), for bleu_hard."""
    seeds = [int(s) for s in config.seeds]
    space = make_world(config, seeds[0]).space
    n = int(config.data.hard_samples)
    bc = config.bleu

    @jax.jit
    def mean_bleu(bias, weight, z, refs, key):
        y = st.sample(space, {"bias": bias, "weight": weight}, key, n, z)  # [P, n]
        seq = jnp.asarray(space.sequences)
        return bleu(seq[y], refs[:, None], max_n=int(bc.max_n),
                    smoothing=float(bc.smoothing)).mean(-1)

    out = []
    for i, s in enumerate(seeds):
        key = jax.random.key(split_seeds(s).train)
        b = np.asarray(mean_bleu(data["ref_bias"][i], data["ref_weight"][i], data["train_z"][i],
                                 data["train_refs"][i], key))
        out.append(np.sort(np.argsort(b, kind="stable")[:len(b) // 2]))
    return np.stack(out).astype(np.int32)


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    space = make_world(config, seeds[0]).space
    per_seed = [make_data(config, s) for s in seeds]
    data = stack_seeds(per_seed, [k for k in per_seed[0] if not k.endswith("teacher_gold")])
    n_train = int(config.data.train_prompts)
    out = {s: {"test_teacher_gold": float(per_seed[i]["test_teacher_gold"])}
           for i, s in enumerate(seeds)}
    rm_table = None
    if method == "rm_grpo":
        rm_table, pair_scores, rm_step, rm_val = train_rm(
            config, os.path.join(workdir, "reward_model"), data)
        bc = config.bleu
        seq = jnp.asarray(space.sequences)
        for i, s in enumerate(seeds):
            d = {k: np.asarray(data[k][i]) for k in ("pair_row", "pair_a", "pair_b",
                                                     "pair_a_better", "pair_distinct")}
            refs = jnp.asarray(data["test_refs"][i])[d["pair_row"]]
            b = [np.asarray(jax.jit(bleu, static_argnames=("max_n", "smoothing"))(
                seq[d[k]], refs, max_n=int(bc.max_n), smoothing=float(bc.smoothing)))
                for k in ("pair_a", "pair_b")]
            out[s].update(
                test_bleu_agreement=agreement(b[0], b[1], d["pair_a_better"],
                                              d["pair_distinct"]),
                test_rm_agreement=agreement(pair_scores[i, 0], pair_scores[i, 1],
                                            d["pair_a_better"], d["pair_distinct"]),
                rm_chosen_step=float(rm_step[i]), rm_val_accuracy=float(rm_val[i]))
    pool = np.tile(np.arange(n_train, dtype=np.int32), (len(seeds), 1))
    if method == "bleu_hard":
        pool = hard_pool(config, data)
    fit, ids, coefs = train_policy(config, os.path.join(workdir, "policy"), data, method, pool,
                                   rm_table)
    nc = len(coefs)
    evaluate = jax.jit(lambda p, z, g, r: gold_and_kl(space, p, z, g, r))
    for i, s in enumerate(seeds):
        rows = {coefs[j]: i * nc + j for j in range(nc)}
        name, record = choose_on_validation(
            {c: float(fit.best_score[r]) for c, r in rows.items()}, float)
        r = rows[name]
        params = jax.tree.map(lambda x: x[r], fit.best_params)
        final = jax.tree.map(lambda x: x[r], fit.params)
        test = [data[k][i] for k in ("test_z", "test_gold", "test_ref")]
        g, kl = (float(x) for x in evaluate(params, *test))
        g_final, _ = (float(x) for x in evaluate(final, *test))
        ref_gold = float((np.exp(data["test_ref"][i]) * data["test_gold"][i]).sum(-1).mean())
        out[s].update(test_gold=g, test_kl=kl, test_ref_gold=ref_gold,
                      test_gold_gain=g - ref_gold, test_gold_final=g_final,
                      val_gold=float(fit.best_score[r]), chosen_step=float(fit.best_step[r]),
                      chosen_kl_coef=float(name), chosen_kl_index=float(r - i * nc),
                      num_candidates=float(
                          len(record["scores"]) * len(fit.history)))
    return out


def claims(results) -> list[protocol.Claim]:
    gold = ", ".join(f"{v} {seed_mean(results, v, 'test_gold'):.3f} (gain "
                     f"{seed_mean(results, v, 'test_gold_gain'):.3f}, KL "
                     f"{seed_mean(results, v, 'test_kl'):.2f})" for v in results)
    teacher = seed_mean(results, "bleu_grpo", "test_teacher_gold")
    ref = seed_mean(results, "bleu_grpo", "test_ref_gold")
    detail = f"test gold: {gold}; pi_ref {ref:.3f}, teacher {teacher:.3f}"
    out = []
    # a claim whose variants did not run (:smoke runs the method only) is left out
    if {"bleu_grpo", "rm_grpo"} <= set(results):
        gain_b = protocol.per_seed(results, "bleu_grpo", "test_gold_gain")
        gain_rm = protocol.per_seed(results, "rm_grpo", "test_gold_gain")
        out.append(protocol.decide(
            "BLEU-GRPO's test gold gain over pi_ref is >= 90% of RM-GRPO's "
            "(gain_bleu - 0.9 gain_rm >= 0)",
            {s: gain_b[s] - 0.9 * gain_rm[s] for s in sorted(set(gain_b) & set(gain_rm))},
            kind="comparative", at_least=0.0, detail=detail))
    if {"bleu_grpo", "sft"} <= set(results):
        out.append(protocol.compare(
            "BLEU-GRPO's test gold is >= SFT's on the same references", results,
            ("bleu_grpo", "test_gold"), ("sft", "test_gold"), at_least=0.0, detail=detail))
    if "rm_grpo" in results:
        out.append(protocol.compare(
            "BLEU's agreement with the gold order on held-out pairs is within 5 points of the "
            "learned RM's", results, ("rm_grpo", "test_bleu_agreement"),
            ("rm_grpo", "test_rm_agreement"), at_least=-0.05,
            detail=f"BLEU {seed_mean(results, 'rm_grpo', 'test_bleu_agreement'):.3f}, RM "
                   f"{seed_mean(results, 'rm_grpo', 'test_rm_agreement'):.3f} (RM validation "
                   f"accuracy {seed_mean(results, 'rm_grpo', 'rm_val_accuracy'):.3f})"))
    out.append(protocol.sanity(
        "the teacher's references have a higher test gold than pi_ref", teacher > ref,
        {"teacher_gold": teacher, "ref_gold": ref}, "tau-tilted gold: true by construction"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Validation gold along training at each variant's chosen KL coefficient (seed mean)."""
    curves = {}
    for variant, res in results.items():
        rows = [1000 * int(s) + int(m["chosen_kl_index"]) for s, m in res["per_seed"].items()]
        curve = seed_mean_curve(os.path.join(workdir, variant, "policy", "metrics.jsonl"),
                                "eval/val_gold", rows)
        if curve is not None:
            curves[variant] = curve
    out = os.path.join(workdir, "plots", "bleuberi_val_gold.png")
    plot_curves(curves, out, title="BLEUBERI toy: validation gold at the chosen KL coefficient",
                xlabel="logged step", ylabel="E_pi[gold] on validation prompts")
    return [out]
