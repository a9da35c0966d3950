"""RAFT: reward-ranked fine-tuning (iterated best-of-K + SFT) vs RLOO and best-of-n.

Paper: Dong et al. 2023, "RAFT: Reward rAnked FineTuning for Generative Foundation Model
Alignment" (arXiv 2304.06767).

Setting (a tiny LM with exact expectations, `alignax.models.sequence_table`): responses are all
4^5 = 1024 token sequences, a prompt is a feature vector z ~ N(0, I_4) and the policy is a
prefix-tree policy log-linear in z, starting at the reference pi_ref of the world
(`alignax.tasks.sequence_prefs.PreferenceWorld`, seeded by the experiment seed: a gold reward with
token utilities and adjacent-token interactions, a random reference). The reward the methods
optimise is the gold itself (the notes' toy: "a tiny LM with a gold reward"; no proxy, so the
comparison is about the optimisers, not over-optimisation). Every method gets the same budget of
generated samples, `rounds` x `samples_per_round` = 8 x 512 = 4096 (with 8 x 2048 every method,
best-of-16 included, drove the policy to the same near-deterministic best responses, KL 6-7
nats: a saturated comparison, seen on seeds 0-1 before this setting was fixed).

Variants:
  - `raft_k4`, `raft_k8`, `raft_k16` (the method): `rounds` rounds (`alignax.train.small.
    fit_rounds`); a round draws samples_per_round / K training prompts (uniformly, with
    replacement) and K responses for each from the current policy, keeps the best of each
    prompt by the reward (`alignax.algorithms.rejection.best_rows`, the LM recipe's selection)
    and fine-tunes on the kept responses (`small_direct.sft_loss`, `sft_steps` Adam updates of
    64 examples, a fresh optimizer state each round, as the recipe does);
  - `rloo` (the policy-gradient baseline; PPO's stand-in in this toy): REINFORCE with a
    per-prompt leave-one-out baseline over k = 4 samples and the KL to pi_ref in the reward
    (`small_direct.rloo_loss`), 32 prompts per update (128 samples), as many updates as the
    budget allows (32); its KL coefficient is chosen on validation from `kl_coefs` (the grid
    trains vmapped);
  - `bon_4`, `bon_16` (best-of-n sampling from pi_ref, no training): exact gold and KL of the
    best-of-n distribution (`small_direct.best_of_n_probs`), reported and in the details.

Splits: experiment seed s draws its training prompts from data seed 3s, validation prompts from
3s + 1 and test prompts from 3s + 2 (`split_seeds`); sampling keys derive from s and the round.

Selection on validation (the same for every trained variant): the learning rate from
`learning_rates` and the checkpoint (every round for RAFT; every `samples_per_round` samples for
RLOO; and RLOO's KL coefficient) with the highest exact gold reward on the validation prompts
(`choose_on_validation`, recorded as chosen_*): RAFT-K chooses among 3 x 8 candidates, RLOO
among 3 x 4 x 8 (its KL coefficient too): the baseline gets the larger search. Test metrics of
the chosen checkpoint: exact E_pi[gold] (`test_gold`) and KL(pi || pi_ref) (`test_kl`) on the
test prompts; `samples_used` is the number of generated samples up to that checkpoint.

Claims (5 seeds, paired 95% Student t intervals; the notes' pass criterion as intervals):
  - comparative: RAFT-16's test gold is >= RLOO's (difference >= 0) at the same sample budget;
  - comparative: RAFT-16's test KL is no higher than RLOO's (difference <= 0);
  - comparative: the gold is monotone in K: RAFT-8 - RAFT-4 >= 0 and RAFT-16 - RAFT-8 >= 0.
  - sanity: best-of-16 sampling raises the gold over the reference (by construction).

What the toy can and cannot show: RAFT has no KL term; SFT on the best of K samples sharpens the
policy round after round towards each prompt's best response (KL(pi || pi_ref) tends to
-log pi_ref of that response), while RLOO's KL penalty, chosen on validation, bounds its drift.
The paper's "better perplexity / diversity than PPO" comes from LLM runs that stop after a few
iterations; here every method spends the same sample budget and is stopped on validation gold.

    alignax run experiments/raft.py            # full setting, 5 seeds
    alignax run experiments/raft.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.protocol import seed_mean
from alignax.algorithms import small_direct
from alignax.algorithms.rejection import best_rows
from alignax.algorithms.small_pg import rl_batch
from alignax.experiment import is_smoke
from alignax.models import sequence_table as st
from alignax.tasks.sequence_prefs import PreferenceWorld
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_rounds, fit_small, stack_seeds

METHODS = ("raft", "rloo", "bon")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "raft"
    c.k = 16  # RAFT's K, or best-of-n's n
    c.variants = {"raft_k4": {"method": "raft", "k": 4}, "raft_k8": {"method": "raft", "k": 8},
                  "raft_k16": {"method": "raft", "k": 16}, "rloo": {"method": "rloo", "k": 4},
                  "bon_4": {"method": "bon", "k": 4}, "bon_16": {"method": "bon", "k": 16}}
    c.space = dict(vocab_size=4, length=3 if smoke else 5)
    c.world = dict(dim=4, unary_scale=1.0, pair_scale=0.5, ref_scale=1.0)
    c.data = dict(train_prompts=16 if smoke else 64, val_prompts=16 if smoke else 64,
                  test_prompts=16 if smoke else 128)
    c.rounds = 2 if smoke else 8
    c.samples_per_round = 256 if smoke else 512
    c.learning_rates = (0.05,) if smoke else (0.02, 0.05, 0.1)
    c.raft = dict(sft_steps=5 if smoke else 20, batch_size=64)
    c.rloo = dict(prompts_per_update=16 if smoke else 32, kl_coefs=(0.0, 0.1) if smoke
                  else (0.0, 0.03, 0.1, 0.3))
    return c


def make_world(config, seed: int) -> PreferenceWorld:
    return PreferenceWorld(st.SequenceSpace(int(config.space.vocab_size),
                                            int(config.space.length)), seed=seed,
                           **config.world.to_dict())


_log_probs = jax.jit(st.sequence_log_probs, static_argnums=0)


def make_data(config, seed: int) -> dict:
    """The world of seed `seed`: reference params and, per split (`split_seeds`), the prompts,
    the gold table and the reference's log-probs of every response."""
    world = make_world(config, seed)
    splits = split_seeds(seed)
    ref = world.reference_params()
    out = {"ref_bias": ref["bias"], "ref_weight": ref["weight"]}
    for name, n, s in (("train", config.data.train_prompts, splits.train),
                       ("val", config.data.val_prompts, splits.validation),
                       ("test", config.data.test_prompts, splits.test)):
        z = world.prompts(int(n), s)
        out[f"{name}_z"] = z
        out[f"{name}_gold"] = world.gold(z)
        out[f"{name}_ref"] = np.asarray(_log_probs(world.space, ref, z))
    return out


def eval_fn_of(space):
    def metrics(params, e, name):
        lp = st.sequence_log_probs(space, params, e[f"{name}_z"])
        p = jnp.exp(lp)
        return {f"{name}_gold": jnp.mean(jnp.sum(p * e[f"{name}_gold"], -1)),
                f"{name}_kl": jnp.mean(jnp.sum(p * (lp - e[f"{name}_ref"]), -1))}

    def eval_fn(params, e):
        return {**metrics(params, e, "val"), **metrics(params, e, "test")}

    return eval_fn


EVAL_KEYS = ("val_z", "val_gold", "val_ref", "test_z", "test_gold", "test_ref")


def ref_params_of(data) -> dict:
    return {"bias": jnp.asarray(data["ref_bias"]), "weight": jnp.asarray(data["ref_weight"])}


def train_raft(config, workdir, data, lr: float):
    """RAFT-K for every seed at once; returns [(samples, {metric: [S]})] per round."""
    seeds = [int(s) for s in config.seeds]
    space = make_world(config, seeds[0]).space
    k, per_round = int(config.k), int(config.samples_per_round)
    num_prompts = per_round // k
    rc = config.raft

    @jax.jit
    def draw(params, z_all, gold, keys):
        def one(p, z, g, key):
            kp, ks = jax.random.split(key)
            rows = jax.random.randint(kp, (num_prompts,), 0, z.shape[0])
            ys = st.sample(space, p, ks, k, z[rows])  # [P, K]
            return rows, ys, jnp.take_along_axis(g[rows], ys, axis=-1)
        return jax.vmap(one)(params, z_all, gold, keys)

    def make_round(r, fits):
        params = ref_params_of(data) if r == 0 else fits[-1].params
        keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 1000 + r) for s in seeds])
        rows, ys, rewards = (np.asarray(x) for x in draw(params, data["train_z"],
                                                         data["train_gold"], keys))
        best = [best_rows(rewards[i].reshape(-1), k) for i in range(len(seeds))]
        prompt = np.stack([rows[i][b // k] for i, b in enumerate(best)]).astype(np.int32)
        response = np.stack([ys[i].reshape(-1)[b] for i, b in enumerate(best)]).astype(np.int32)
        return {"data": {"z": data["train_z"], "prompt": prompt, "response": response}}

    fit = fit_rounds(workdir, num_rounds=int(config.rounds), make_round=make_round,
                     init_params=ref_params_of(data), per_seed_init=True,
                     loss_fn=small_direct.sft_loss(space, num_examples=int(rc.batch_size)),
                     tx=optax.adam(lr), num_steps=int(rc.sft_steps), seeds=seeds,
                     per_seed_data=True, batch_fn=rl_batch, has_aux=True,
                     steps_per_log=int(rc.sft_steps), eval_fn=eval_fn_of(space),
                     eval_data={k_: data[k_] for k_ in EVAL_KEYS}, plots=False)
    points = []
    for r, f in enumerate(fit.fits):
        row = f.history[-1]
        points.append(((r + 1) * per_round, {m: np.array([row[f"seed_{s}/eval/{m}"]
                                                          for s in seeds])
                                             for m in ("val_gold", "val_kl", "test_gold",
                                                       "test_kl")}))
    return points


def train_rloo(config, workdir, data, lr: float):
    """RLOO for every (seed, KL coefficient) at once; returns {coef: [(samples, {metric:
    [S]})]}."""
    seeds = [int(s) for s in config.seeds]
    space = make_world(config, seeds[0]).space
    coefs = [float(c) for c in config.rloo.kl_coefs]
    nc, k, prompts = len(coefs), int(config.k), int(config.rloo.prompts_per_update)
    per_update = k * prompts
    steps = int(config.rounds) * int(config.samples_per_round) // per_update
    log_every = max(1, int(config.samples_per_round) // per_update)
    ids = [1000 * s + j for s in seeds for j in range(nc)]
    rep = lambda x: np.repeat(np.asarray(x), nc, axis=0)  # noqa: E731
    train = {"z": rep(data["train_z"]), "ref_logp": rep(data["train_ref"]),
             "score": rep(data["train_gold"]),
             "kl_coef": np.tile(np.asarray(coefs, np.float32), len(seeds))}
    init = jax.tree.map(rep, ref_params_of(data))
    fit = fit_small(workdir, loss_fn=small_direct.rloo_loss(space, num_prompts=prompts, k=k),
                    init_params=init, per_seed_init=True, tx=optax.adam(lr), num_steps=steps,
                    data=train, seeds=ids, per_seed_data=True,
                    seed_keys=jnp.stack([jax.random.key(i // 1000) for i in ids]),
                    batch_fn=rl_batch, has_aux=True, steps_per_log=log_every,
                    eval_fn=eval_fn_of(space),
                    eval_data={k_: rep(data[k_]) for k_ in EVAL_KEYS}, plots=False)
    out = {}
    for j, c in enumerate(coefs):
        out[c] = [((t + 1) * log_every * per_update,
                   {m: np.array([row[f"seed_{1000 * s + j}/eval/{m}"] for s in seeds])
                    for m in ("val_gold", "val_kl", "test_gold", "test_kl")})
                  for t, row in enumerate(fit.history)]
    return out


def best_of_n(config, data) -> dict:
    """Exact gold and KL of best-of-n sampling from pi_ref (by the gold) on val and test."""
    n = int(config.k)
    out = {}
    for name in ("val", "test"):
        probs = np.asarray(small_direct.best_of_n_probs(data[f"{name}_gold"],
                                                        data[f"{name}_ref"], n))  # [S, P, N]
        logq = np.log(np.maximum(probs, 1e-30))
        out[f"{name}_gold"] = (probs * data[f"{name}_gold"]).sum(-1).mean(-1)
        out[f"{name}_kl"] = np.where(probs > 0, probs * (logq - data[f"{name}_ref"]),
                                     0.0).sum(-1).mean(-1)
    return out


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    data = stack_seeds(per_seed, list(per_seed[0]))
    ref_gold = {n: (np.exp(data[f"{n}_ref"]) * data[f"{n}_gold"]).sum(-1).mean(-1)
                for n in ("val", "test")}
    method = config.method
    out = {s: {"test_ref_gold": float(ref_gold["test"][i])} for i, s in enumerate(seeds)}
    if method == "bon":
        bon = best_of_n(config, data)
        for i, s in enumerate(seeds):
            out[s].update({m: float(v[i]) for m, v in bon.items()})
            out[s]["test_gold_gain"] = out[s]["test_gold"] - out[s]["test_ref_gold"]
        return out
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    candidates = {}  # name -> (samples, {metric: [S]})
    for lr in [float(x) for x in config.learning_rates]:
        path = os.path.join(workdir, f"lr_{lr:g}")
        if method == "raft":
            for samples, m in train_raft(config, path, data, lr):
                candidates[f"lr={lr:g},samples={samples}"] = (samples, m)
        else:
            for coef, points in train_rloo(config, path, data, lr).items():
                for samples, m in points:
                    candidates[f"lr={lr:g},kl_coef={coef:g},samples={samples}"] = (samples, m)
    for i, s in enumerate(seeds):
        name, record = choose_on_validation(
            {n: float(m["val_gold"][i]) for n, (_, m) in candidates.items()}, float)
        samples, m = candidates[name]
        res = out[s]
        res.update({"val_gold": float(m["val_gold"][i]), "val_kl": float(m["val_kl"][i]),
                    "test_gold": float(m["test_gold"][i]), "test_kl": float(m["test_kl"][i]),
                    "samples_used": float(samples),
                    "chosen_lr": float(name.split(",")[0].split("=")[1])})
        if method == "rloo":
            res["chosen_kl_coef"] = float(name.split(",")[1].split("=")[1])
        res["test_gold_gain"] = res["test_gold"] - res["test_ref_gold"]
        # the end of the budget at the chosen learning rate (and coefficient), for reference
        last = max((n for n in candidates if n.rsplit(",", 1)[0] == name.rsplit(",", 1)[0]),
                   key=lambda n: candidates[n][0])
        res["test_gold_final"] = float(candidates[last][1]["test_gold"][i])
        res["test_kl_final"] = float(candidates[last][1]["test_kl"][i])
        res["num_candidates"] = float(len(record["scores"]))
    return out


def claims(results) -> list[protocol.Claim]:
    gold = ", ".join(f"{v} {seed_mean(results, v, 'test_gold'):.3f} (KL "
                     f"{seed_mean(results, v, 'test_kl'):.2f})" for v in results)
    ref = seed_mean(results, "raft_k16", "test_ref_gold")
    detail = f"test gold (KL): {gold}; pi_ref {ref:.3f}"
    out = [
        protocol.compare(
            "RAFT-16's test gold reward is >= RLOO's (the PPO stand-in) at the same number of "
            "generated samples", results, ("raft_k16", "test_gold"), ("rloo", "test_gold"),
            at_least=0.0, detail=detail),
        protocol.compare(
            "RAFT-16's KL(pi || pi_ref) is no higher than RLOO's at the same number of "
            "generated samples", results, ("raft_k16", "test_kl"), ("rloo", "test_kl"),
            at_most=0.0, detail=detail),
        protocol.compare("RAFT's test gold is monotone in K: K = 8 >= K = 4", results,
                         ("raft_k8", "test_gold"), ("raft_k4", "test_gold"), at_least=0.0,
                         detail=detail),
        protocol.compare("RAFT's test gold is monotone in K: K = 16 >= K = 8", results,
                         ("raft_k16", "test_gold"), ("raft_k8", "test_gold"), at_least=0.0,
                         detail=detail),
    ]
    if "bon_16" in results:
        gain = protocol.per_seed(results, "bon_16", "test_gold_gain")
        out.append(protocol.sanity(
            "best-of-16 sampling from pi_ref raises the test gold over pi_ref",
            all(g > 0 for g in gain.values()), {"mean_gain": float(np.mean(list(gain.values())))},
            "the maximum of 16 draws is at least one draw: true by construction"))
    return out


def plots(results, workdir: str) -> list[str]:
    curves = {v: ([seed_mean(results, v, "test_kl")],
                  np.asarray([seed_mean(results, v, "test_gold")])) for v in results}
    out = os.path.join(workdir, "plots", "raft_gold_vs_kl.png")
    plot_curves(curves, out, title="test gold vs KL at the validation-chosen checkpoints",
                xlabel="KL(pi || pi_ref)", ylabel="E_pi[gold] on test prompts")
    return [out]
