"""DR-IRL: category-specific IRL reward models and GRPO-S difficulty scaling vs plain GRPO.

Paper: "Inverse Reinforcement Learning with Dynamic Reward Scaling for LLM Alignment" (DR-IRL,
2025; the ## 26 notes).

Setting (a tiny LM with exact expectations, `alignax.models.sequence_table`): responses are all
V^L = 4^4 = 256 token sequences. A prompt belongs to one of C = 7 harm categories with
imbalanced frequencies (`world.freqs`, 36% ... 2.5%: common hazards over-represented, a long
tail); its embedding e(x) (the CLIP stand-in) is its category's unit direction mu_c plus
Gaussian noise, normalised. The gold safety reward (in points, 0-100) of category c is
100 sigma(score), score(x, y) = sum_t U_c[t, y_t] + sum_t (e(x) - mu_c) . B[t, :, y_t] +
sum_t P[t, y_t, y_{t+1}]: category-specific token utilities, a prompt-specific part that grows
with how atypical the prompt is, and token interactions. The policy is a prefix-tree policy
log-linear in [e(x), 1], starting at a random reference pi_ref (the "SFT model", unrelated to
the gold). Each training prompt has `demos_per_prompt` safe demonstrations drawn from
softmax(score / demo_temp) (the Chain-of-Draft demonstrations' stand-in); the gold is never
seen in training.

Method (`alignax.algorithms.irl.irl_grpo_loss`, one `fit_small` program per learning rate):
params {"policy", "rm"} trained together; each update draws 16 prompts uniformly from the
imbalanced training pool and G = 8 responses each from the current policy. The reward models are
category-specific (`route_by_category`), bilinear in token-by-position features and e(x)
(`bilinear_reward`), learned by IRL, -log sigma(r_c(x, y_demo) - r_c(x, y_i))
(`irl_reward_loss`), from a demonstration set with the same number of prompts per category (the
paper's balanced safety dataset; `rm_per_category`), 16 of its prompts per update with G fresh
samples of the current policy as negatives (drawn in the same sampling call as the RL rollouts).
The policy's rewards come from the stop-gradient RM. Co-training in one loss rather than
`fit_rounds`: the negatives must be the current policy's samples (adversarial IRL; an RM frozen
for a round scores a policy that has moved on), and one program updates, checkpoints and resumes
both models together at every step. (A first version trained the RMs on the RL batch's own,
imbalanced rollouts: the rare categories' RMs were then starved, their reward gaps small, and
GRPO-S down-weighted exactly the rare prompts: rare-category difference -3.3 points.)

Methods, trained side by side in one vmapped program (one variant, `grpo_vs_grpo_s`; metrics
`grpo_*` and `grpo_s_*`), identical but for the advantage and sharing each seed's data and PRNG
key (the same init, prompt draws and sampling noise: a paired comparison):
  - GRPO: group-normalised advantages (r - mean) / std;
  - GRPO-S: the same scaled per prompt by the difficulty (`alignax.algorithms.grpo_s`)
    s(x) = 1 + alpha h(x) / mean_train(h) + beta gap+(x) / mean_batch(gap+), normalised to
    mean 1 over the update's prompts, with data-level hardness h(x) = 1 - cos(e(x), e_c) (e_c:
    the mean embedding of the category's training prompts) and model-level responsiveness
    gap(x) = r_c(x, y_demo) - mean_i r_c(x, y_i) under the current RM, gap+ its positive part
    (relative to the update's prompts: the co-trained reward's scale drifts; a first run with
    a saturating tanh(gap+) gave a flat gap term at the gaps of 2-5 these RMs produce);
    alpha = beta = 1 fixed a priori (GRPO is alpha = beta = 0). Scaling the rewards before
    GRPO's per-group std normalisation would cancel exactly (s is one number per group), so
    the scale multiplies the normalised advantage (with a mean-only baseline the two are the
    same; tests/algorithms/test_grpo_s.py).

Splits (`split_seeds`): the world (categories, gold, reference) is seeded by the experiment seed
s; training prompts (with the imbalanced frequencies) and their demonstrations come from data
seed 3s, validation prompts from 3s + 1 and test prompts from 3s + 2; validation and test hold
the same number of prompts per category, so every category's gold is measured.

Selection on validation (the same for both methods, per seed and method): the learning rate
from `learning_rates` (one run each) and the checkpoint every `eval_every` updates
(`fit_small(select=("val_gold", "max"))`), by the frequency-weighted validation gold
(`choose_on_validation`, recorded as <method>_chosen_lr, <method>_chosen_step). Test metrics
of the chosen params, named `grpo_test_*` and `grpo_s_test_*`: exact E_pi[gold] per category;
`test_gold` (frequency-weighted, the deployment mix), `test_gold_rare` (mean over the 3 rarest
categories), `test_gold_hard` (the quarter of test prompts with the highest hardness),
`test_gold_balanced`.

Claims (5 seeds, paired 95% t intervals; the notes' pass criterion "GRPO-S gains >= 5 gold points
on rare/hard categories with no loss in overall gold at equal steps" as intervals):
  - comparative: GRPO-S - GRPO test gold on the 3 rarest categories >= 5 points;
  - comparative: GRPO-S - GRPO test gold on the hardest quarter of prompts >= 5 points;
  - comparative: GRPO-S - GRPO overall (frequency-weighted) test gold >= -1 point (no loss,
    restated as non-inferiority with a 1-point margin, a fifth of the claimed gain);
  - threshold (the IRL mechanism): the co-trained RMs' held-out accuracy at ranking the test
    prompts' gold-best response above a uniformly random response is >= 0.75 (GRPO-S run);
  - sanity: GRPO raises the overall test gold over pi_ref.

What the toy shows: the co-trained IRL reward models work (held-out ranking accuracy ~0.85) and
GRPO on them lifts the gold from ~48 to ~90 points, but the rare categories stay ~15 points
behind the common ones under both methods, and GRPO-S's per-prompt reweighting (at most ~1.7x
within an update here) moves them by about a point, not five: a rare prompt is in the batch
about once in three updates, and a modest weight on it changes little against the much larger
share of common prompts (Adam normalises the shared parameters' steps by the whole gradient).
The paper's exact s(x) is not given; a stronger scale would be a different method, and
alpha, beta were not tuned on the claims' metrics.

    alignax run experiments/dr_irl.py            # full setting, 5 seeds
    alignax run experiments/dr_irl.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import grpo_s, irl
from alignax.algorithms.small_pg import rl_batch, sequence_table_policy
from alignax.experiment import is_smoke
from alignax.models import sequence_table as st
from alignax.protocol import seed_mean
from alignax.tasks.sequence_prefs import token_features
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, stack_seeds

METHODS = ("grpo", "grpo_s")
SPLITS = ("val", "test")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    # one variant: GRPO and GRPO-S train side by side in one vmapped program (metrics
    # `grpo_*` and `grpo_s_*`), sharing each seed's data and PRNG key
    c.variants = {"grpo_vs_grpo_s": {}}
    c.space = dict(vocab_size=4, length=3 if smoke else 4)
    c.world = dict(freqs=(0.36, 0.24, 0.16, 0.10, 0.07, 0.045, 0.025), dim=8, spread=0.8,
                   unary_scale=1.0, prompt_scale=2.0, pair_scale=0.5, ref_scale=0.5,
                   demo_temp=0.3, num_rare=3)
    c.data = dict(train_prompts=64 if smoke else 256, val_per_category=4 if smoke else 16,
                  test_per_category=4 if smoke else 32, demos_per_prompt=4,
                  rm_per_category=4 if smoke else 24)
    c.train = dict(steps=20 if smoke else 400, prompts_per_update=16, group_size=8,
                   learning_rates=(0.05,) if smoke else (0.03, 0.1), eval_every=10 if smoke
                   else 20, kl_coef=0.02, rm_l2=1e-3)
    c.grpo_s = dict(alpha=1.0, beta=1.0)
    return c


# ---------------------------------------------------------------------------------------------
# The toy world


def space_of(config) -> st.SequenceSpace:
    return st.SequenceSpace(int(config.space.vocab_size), int(config.space.length))


def world_draws(config, seed: int) -> dict:
    """The world of experiment seed `seed`: category directions, gold parameters, reference."""
    w, space = config.world, space_of(config)
    rng = np.random.default_rng([seed, 2601])
    c, d, v, length = len(w.freqs), int(w.dim), space.vocab_size, space.length
    mu = rng.standard_normal((c, d))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    m, f = space.num_nodes, d + 1
    return {"mu": mu,
            "unary": w.unary_scale * rng.standard_normal((c, length, v)),
            "prompt": w.prompt_scale * rng.standard_normal((length, d, v)) / np.sqrt(d),
            "pair": w.pair_scale * rng.standard_normal((max(length - 1, 0), v, v)),
            "ref": {"bias": (w.ref_scale * rng.standard_normal((m, v))).astype(np.float32),
                    "weight": (w.ref_scale * rng.standard_normal((m, f, v))
                               / np.sqrt(f)).astype(np.float32)}}


def draw_prompts(config, world: dict, category: np.ndarray, rng) -> np.ndarray:
    """[n, D] unit embeddings: the category's direction plus N(0, spread^2 / D) noise."""
    d = world["mu"].shape[1]
    e = world["mu"][category] + config.world.spread * rng.standard_normal((len(category), d)) \
        / np.sqrt(d)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def gold_score(config, world: dict, e: np.ndarray, category: np.ndarray) -> np.ndarray:
    """[n, N] the gold safety logit of every response for prompts e [n, D] of `category`."""
    seq = space_of(config).sequences  # [N, L]
    pos = np.arange(seq.shape[1])
    u = world["unary"][category] + np.einsum("nd,tdv->ntv", e - world["mu"][category],
                                             world["prompt"])  # [n, L, V]
    s = u[:, pos[None, :], seq].sum(-1)
    if seq.shape[1] > 1:
        s = s + world["pair"][pos[None, :-1], seq[:, :-1], seq[:, 1:]].sum(-1)
    return s


def make_data(config, seed: int) -> dict:
    """Experiment seed `seed`: the imbalanced training pool with demonstrations (data seed 3s),
    balanced validation (3s + 1) and test (3s + 2) prompts with their gold tables."""
    w, dc = config.world, config.data
    world = world_draws(config, seed)
    splits = split_seeds(seed)
    freqs = np.asarray(w.freqs, np.float64)
    freqs = freqs / freqs.sum()
    num_c = len(freqs)
    rng = np.random.default_rng([splits.train, 2602])
    cat = rng.choice(num_c, size=int(dc.train_prompts), p=freqs)
    cat[:num_c] = np.arange(num_c)  # every category has at least one training prompt
    e = draw_prompts(config, world, cat, rng)
    demos = demonstrations(config, world, e, cat, rng)
    train_e, train_cat = e, cat
    out = {"train_features": features(e), "train_category": cat.astype(np.int32),
           "train_embedding": e.astype(np.float32), "train_demos": demos,
           "ref_bias": world["ref"]["bias"], "ref_weight": world["ref"]["weight"],
           "freqs": freqs.astype(np.float32)}
    # the RMs' demonstration set: the same number of prompts of every category (DR-IRL's
    # balanced safety dataset), also from the training data seed
    cat = np.repeat(np.arange(num_c), int(dc.rm_per_category))
    e = draw_prompts(config, world, cat, rng)
    out.update({"rm_features": features(e), "rm_category": cat.astype(np.int32),
                "rm_embedding": e.astype(np.float32),
                "rm_demos": demonstrations(config, world, e, cat, rng),
                "rm_hardness": np.zeros(len(cat), np.float32)})
    held_out = {}
    for name, per, s in (("val", dc.val_per_category, splits.validation),
                         ("test", dc.test_per_category, splits.test)):
        rng = np.random.default_rng([s, 2602])
        cat = np.repeat(np.arange(num_c), int(per))
        held_out[name] = e = draw_prompts(config, world, cat, rng)
        out.update({f"{name}_features": features(e), f"{name}_category": cat.astype(np.int32),
                    f"{name}_embedding": e.astype(np.float32),
                    f"{name}_gold": (100.0 / (1.0 + np.exp(-gold_score(config, world, e, cat)))
                                     ).astype(np.float32),
                    })
    # data-level hardness 1 - cos(e(x), e_c) against the training prompts' category centroids
    # (one compiled call for every split)
    names = ("train", "val", "test")
    hard = np.asarray(_hardness(np.concatenate([train_e, held_out["val"], held_out["test"]]),
                                np.concatenate([out[f"{n}_category"] for n in names]),
                                train_e, train_cat, num_c))
    ends = np.cumsum([len(out[f"{n}_category"]) for n in names])[:-1]
    h_train, h_val, h_test = np.split(hard, ends)
    out["train_hardness"] = (h_train / h_train.mean()).astype(np.float32)
    for name, h in (("val", h_val), ("test", h_test)):
        out[f"{name}_hard"] = (h >= np.quantile(h, 0.75)).astype(np.float32)
    return out


@functools.partial(jax.jit, static_argnums=(4,))
def _hardness(e, cat, train_e, train_cat, num_c):
    return grpo_s.prompt_hardness(e, cat, grpo_s.category_centroids(train_e, train_cat, num_c))


def demonstrations(config, world: dict, e: np.ndarray, cat: np.ndarray, rng) -> np.ndarray:
    """[n, demos_per_prompt] safe demonstrations: draws from softmax(gold score / demo_temp)."""
    logits = gold_score(config, world, e, cat) / config.world.demo_temp
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return np.stack([rng.choice(probs.shape[1], size=int(config.data.demos_per_prompt), p=p)
                     for p in probs]).astype(np.int32)


def features(e: np.ndarray) -> np.ndarray:
    """The policy's prompt features [e(x), 1]."""
    return np.concatenate([e, np.ones((len(e), 1))], 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Training and evaluation


def reward_model_of(config):
    """`(rm_params, prompts, responses) -> [M, K]`: the prompt's category's bilinear RM on
    token-by-position features of the responses and the prompt embedding."""
    phi = jnp.asarray(token_features(space_of(config)))

    def reward_model(rm, prompts, responses):
        return irl.bilinear_reward(irl.route_by_category(rm, prompts["category"]),
                                   prompts["embedding"], phi[responses])

    return reward_model


def gold_metrics(config, space, policy, e: dict, name: str) -> dict:
    """Exact E_pi[gold] on a split: per category, frequency-weighted, rare, hard, balanced."""
    p = jnp.exp(st.sequence_log_probs(space, policy, e[f"{name}_features"]))
    gold = jnp.sum(p * e[f"{name}_gold"], -1)  # [n]
    num_c = len(config.world.freqs)
    onehot = jax.nn.one_hot(e[f"{name}_category"], num_c)
    per_cat = (onehot.T @ gold) / jnp.maximum(onehot.sum(0), 1.0)  # [C]
    rare = jnp.argsort(e["freqs"])[: int(config.world.num_rare)]
    hard = e[f"{name}_hard"]
    out = {f"{name}_gold": jnp.sum(e["freqs"] * per_cat),
           f"{name}_gold_balanced": jnp.mean(per_cat),
           f"{name}_gold_rare": jnp.mean(per_cat[rare]),
           f"{name}_gold_hard": jnp.sum(hard * gold) / jnp.sum(hard)}
    out.update({f"{name}_gold_c{k}": per_cat[k] for k in range(num_c)})
    return out


def rm_accuracy(config, rm, e: dict, name: str) -> jax.Array:
    """The RM's probability of ranking each prompt's gold-best response above a uniformly random
    other response (exact over all responses; ties count half)."""
    reward_model = reward_model_of(config)
    n = e[f"{name}_gold"].shape[-1]
    prompts = {"category": e[f"{name}_category"], "embedding": e[f"{name}_embedding"]}
    r = reward_model(rm, prompts, jnp.broadcast_to(jnp.arange(n), (prompts["category"].shape[0],
                                                                   n)))
    best = jnp.argmax(e[f"{name}_gold"], -1)
    r_best = jnp.take_along_axis(r, best[:, None], -1)
    wins = jnp.sum((r_best > r) + 0.5 * (r_best == r), -1) - 0.5  # minus the self-tie
    return jnp.mean(wins / (n - 1))


EVAL_KEYS = tuple(f"{s}_{k}" for s in SPLITS
                  for k in ("features", "category", "embedding", "gold", "hard")) + ("freqs",)


def train(config, workdir: str, data: dict, lr: float):
    """GRPO and GRPO-S with their co-trained category IRL reward models, every (seed, method)
    replica in one vmapped program (replica 2i is seed i's GRPO: alpha = beta = 0; 2i + 1 its
    GRPO-S); both methods of a seed share its data and its PRNG key (init, prompts, samples)."""
    tc, space = config.train, space_of(config)
    num_c, dim = len(config.world.freqs), int(config.world.dim)
    seeds = [int(s) for s in config.seeds]
    rep = lambda x: jnp.repeat(jnp.asarray(x), len(METHODS), axis=0)  # noqa: E731

    def scale_fn(prompts, gap, d):
        return grpo_s.difficulty_scale(prompts["hardness"], gap, alpha=d["alpha"],
                                       beta=d["beta"])

    loss = irl.irl_grpo_loss(sequence_table_policy(space), reward_model_of(config),
                             num_prompts=int(tc.prompts_per_update),
                             group_size=int(tc.group_size), scale_fn=scale_fn,
                             kl_coef=float(tc.kl_coef), rm_l2=float(tc.rm_l2))
    ref = {"bias": rep(data["ref_bias"]), "weight": rep(data["ref_weight"])}
    pool = lambda name: {k: rep(data[f"{name}_{k}"])  # noqa: E731
                         for k in ("features", "category", "embedding", "demos", "hardness")}
    is_s = np.tile(np.asarray([m == "grpo_s" for m in METHODS], np.float32), len(seeds))
    train_data = {"prompts": pool("train"), "rm_prompts": pool("rm"), "ref_params": ref,
                  "alpha": jnp.asarray(is_s * float(config.grpo_s.alpha)),
                  "beta": jnp.asarray(is_s * float(config.grpo_s.beta))}
    rm0 = irl.init_bilinear(num_c, dim, space.length * space.vocab_size)
    init = {"policy": ref,
            "rm": jax.tree.map(lambda a: jnp.broadcast_to(a, (len(is_s),) + a.shape), rm0)}

    def eval_fn(params, e):
        return gold_metrics(config, space, params["policy"], e, "val")

    ids = [1000 * s + j for s in seeds for j in range(len(METHODS))]
    return fit_small(workdir, loss_fn=loss, init_params=init, per_seed_init=True,
                     tx=optax.adam(lr), num_steps=int(tc.steps), data=train_data, seeds=ids,
                     seed_keys=jnp.stack([jax.random.key(i // 1000) for i in ids]),
                     per_seed_data=True, batch_fn=rl_batch, has_aux=True,
                     steps_per_log=int(tc.eval_every), eval_fn=eval_fn,
                     eval_data={k: rep(data[k]) for k in EVAL_KEYS},
                     select=("val_gold", "max"), plots=False)


def test_metrics_fn(config):
    """`(params, e) -> {metric: [R]}`: test gold metrics and the RM's test accuracy of stacked
    params [R, ...] (one compiled program for the reference and every learning rate)."""
    space = space_of(config)

    @jax.jit
    @jax.vmap
    def metrics(p, ei):
        out = gold_metrics(config, space, p["policy"], ei, "test")
        out["test_rm_accuracy"] = rm_accuracy(config, p["rm"], ei, "test")
        return out

    return lambda params, e: {k: np.asarray(v) for k, v in metrics(params, e).items()}


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Both methods for every seed (one program per learning rate); per seed and method the
    learning rate and checkpoint chosen on validation, then that method's test metrics, named
    `<method>_<metric>`."""
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    data = stack_seeds(per_seed, list(per_seed[0]))
    nm = len(METHODS)
    ev = {k: jnp.repeat(data[k], nm, axis=0) for k in EVAL_KEYS}
    space = space_of(config)
    num_c = len(config.world.freqs)
    ref = {"policy": {"bias": jnp.repeat(data["ref_bias"], nm, axis=0),
                      "weight": jnp.repeat(data["ref_weight"], nm, axis=0)},
           "rm": jax.tree.map(lambda a: jnp.broadcast_to(a, (nm * len(seeds),) + a.shape),
                              irl.init_bilinear(num_c, int(config.world.dim),
                                                space.length * space.vocab_size))}
    test_metrics = test_metrics_fn(config)
    ref_test = test_metrics(ref, ev)
    fits = {}
    for lr in [float(x) for x in config.train.learning_rates]:
        fits[lr] = train(config, os.path.join(workdir, f"lr_{lr:g}"), data, lr)
    tests = {lr: test_metrics(f.best_params, ev) for lr, f in fits.items()}
    out = {}
    for i, s in enumerate(seeds):
        res = {"test_ref_gold": float(ref_test["test_gold"][nm * i]),
               "test_ref_gold_rare": float(ref_test["test_gold_rare"][nm * i]),
               "test_ref_gold_hard": float(ref_test["test_gold_hard"][nm * i])}
        for j, method in enumerate(METHODS):
            r = nm * i + j
            name, record = choose_on_validation(
                {f"lr={lr:g}": float(f.best_score[r]) for lr, f in fits.items()}, float)
            lr = float(name.split("=")[1])
            fit = fits[lr]
            last = fit.history[-1]
            res.update({f"{method}_{k}": float(v[r]) for k, v in tests[lr].items()})
            res.update({f"{method}_val_gold": float(fit.best_score[r]),
                        f"{method}_chosen_lr": lr,
                        f"{method}_chosen_step": float(fit.best_step[r]),
                        f"{method}_num_candidates": float(len(record["scores"])),
                        f"{method}_irl_accuracy_final":
                            float(last[f"seed_{1000 * s + j}/irl_accuracy"]),
                        f"{method}_scale_max_final":
                            float(last[f"seed_{1000 * s + j}/scale_max"])})
        out[s] = res
    return out


VARIANT = "grpo_vs_grpo_s"


def claims(results) -> list[protocol.Claim]:
    v = VARIANT
    names = ("test_gold", "test_gold_rare", "test_gold_hard", "test_gold_balanced")
    num_c = sum(1 for k in results[v]["metrics"] if k.startswith("grpo_test_gold_c"))

    def mean(metric):
        return seed_mean(results, v, metric)

    summary = "; ".join(f"{m}: " + ", ".join(f"{n[5:]} {mean(f'{m}_{n}'):.1f}" for n in names)
                        for m in METHODS)
    ref = ", ".join(f"{n[9:]} {mean(n):.1f}"
                    for n in ("test_ref_gold", "test_ref_gold_rare", "test_ref_gold_hard"))
    cats = "; ".join(f"{m} per category (most to least frequent) " + ", ".join(
        f"{mean(f'{m}_test_gold_c{k}'):.1f}" for k in range(num_c)) for m in METHODS)
    steps = ", ".join(f"{m} chosen step {mean(f'{m}_chosen_step'):.0f}" for m in METHODS)
    detail = f"test gold points: {summary}; pi_ref {ref}; {cats}; {steps}"
    grpo_gold = protocol.per_seed(results, v, "grpo_test_gold")
    ref_gold = protocol.per_seed(results, v, "test_ref_gold")
    gain = {s: grpo_gold[s] - ref_gold[s] for s in grpo_gold}
    return [
        protocol.compare(
            "GRPO-S gains >= 5 gold points over GRPO on the 3 rarest categories (equal steps)",
            results, (v, "grpo_s_test_gold_rare"), (v, "grpo_test_gold_rare"), at_least=5.0,
            detail=detail),
        protocol.compare(
            "GRPO-S gains >= 5 gold points over GRPO on the hardest quarter of prompts "
            "(1 - cos to the category centroid)", results, (v, "grpo_s_test_gold_hard"),
            (v, "grpo_test_gold_hard"), at_least=5.0, detail=detail),
        protocol.compare(
            "GRPO-S loses no overall (frequency-weighted) gold vs GRPO: difference >= -1 point",
            results, (v, "grpo_s_test_gold"), (v, "grpo_test_gold"), at_least=-1.0,
            detail=detail),
        protocol.threshold(
            "the co-trained category IRL reward models rank each test prompt's gold-best "
            "response above a random response with probability >= 0.75", results,
            (v, "grpo_s_test_rm_accuracy"), at_least=0.75,
            detail=f"GRPO-S run {mean('grpo_s_test_rm_accuracy'):.3f}, GRPO run "
                   f"{mean('grpo_test_rm_accuracy'):.3f} (chance 0.5)"),
        protocol.sanity("GRPO on the IRL reward raises the overall test gold over pi_ref",
                        all(g > 0 for g in gain.values()),
                        {"mean_gain": float(np.mean(list(gain.values())))},
                        "an RL step on a reward learned from good demonstrations"),
    ]


def plots(results, workdir: str) -> list[str]:
    res = results[VARIANT]
    num_c = sum(1 for k in res["metrics"] if k.startswith("grpo_test_gold_c"))
    curves = {}
    for m in METHODS:
        ys = np.array([[res["per_seed"][s][f"{m}_test_gold_c{k}"] for k in range(num_c)]
                       for s in res["per_seed"]])
        curves[m] = (list(range(num_c)), ys.mean(0), ys.std(0))
    out = os.path.join(workdir, "plots", "dr_irl_gold_by_category.png")
    plot_curves(curves, out, title="test gold by category (0 = most frequent)",
                xlabel="category (by decreasing frequency)", ylabel="E_pi[gold] (points)")
    return [out]
