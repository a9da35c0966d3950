"""Regret vs partial-return preference models for learning a reward on random gridworlds.

Paper: Knox et al. 2022, "Models of human preference for learning reward functions" (arXiv
2206.02231). Humans' segment preferences are better explained by the regret of a segment (how much
worse its actions are than optimal, -sum_t A*_r(s_t, a_t)) than by its partial return (sum_t r(s_t,
a_t)), and a reward learned under the regret model yields better policies.

Setting: "delivery" gridworlds (alignax.tasks.mdp.gridworld: step cost, terminal goal, hazards,
coins; 4 linear reward features, gamma = 0.95), 10 random instances per seed: random layouts and,
as in the paper's randomly generated MDPs, random reward values (step cost U(0.5, 2), goal
U(1, 20), hazard cost U(1, 10), coin U(0, 2 step cost) so that coin loops never pay; with
`task.random_rewards=False` every instance uses the default gold weights). On each instance we
sample 300 pairs of length-3 segments (uniform random start state and actions) and label them
with the regret model of the gold reward (Bradley-Terry, temperature 1). A linear per-feature
reward w [4] is learned from the first n pairs, n in `data.sizes`, with
  - `partial_return`: `alignax.losses.reward.partial_return_loss` on the per-step rewards phi.w;
  - `regret`: `alignax.losses.reward.regret_preference_loss` on the per-step optimal advantages
    A*_w = Q*_w - V*_w from the exact (hard-max) differentiable value iteration of phi.w, so the
    gradient flows through the planner.
Each learned w is planned on (greedy policy of its Q*) and scored by the normalised gold return
(0 = uniform random policy, 100 = optimal). All 10 MDPs x |sizes| problems are trained at once
(`alignax.train.small.fit_small`: every seed's problems in one program).

The constructed tie case: pairs of segments from the same MDP whose summed features are identical
(so every partial-return model, whatever its weights, predicts exactly 0.5) but whose gold
regrets differ by at least 0.5. We report the largest deviation of the partial-return learner's
P from 0.5 on those pairs and how often the regret learner (n = 300) ranks them as gold does.

Splits (docs/protocol.md): the MDP instances (layouts and gold reward values) are the world and
stay seeded by the experiment seed; the preference data come from disjoint data seeds
(`alignax.tasks.splits.split_seeds`): the training pairs from the train seed, 300 validation
pairs per MDP from the validation seed, the tie-pair pool from the test seed. The normalised
gold return of the planned policy is exact (policy evaluation, no samples).

Selection on validation, the same for both learners: each learner is trained with every
learning rate of `train.learning_rates` for `train.steps` Adam steps; every `train.log_every`
steps the mean preference NLL of its own model on the validation pairs (over the 10 MDPs x the
dataset sizes) is computed, and each seed keeps its best logged step (`fit_small(select=...)`,
early stopping); then each seed keeps the learning rate with the lowest best validation NLL
(`choose_on_validation`). The chosen learning rate, step and validation NLL are per-seed
metrics (`chosen_learning_rate`, `chosen_step`, `val_nll`). (The old fixed 400 steps / lr 0.05
were set after seeing the test returns.)

Claims (5 seeds, 95% Student-t intervals over seeds):
  (1) comparative: averaged over the 10 MDPs and the dataset sizes (all <= 300), the regret
      learner's normalised gold return (`test_mean_return`) beats the partial-return learner's
      by >= 5 points (paired over seeds);
  (2) threshold: on the tie pairs the regret learner (n = 300) ranks >= 90% correctly
      (`test_tie_accuracy`; falsifiable: it needs the learned reward's optimal advantages);
  (3) sanity: the partial-return model predicts 0.5 on every tie pair (|P - 0.5| < 1e-6). This
      holds by construction (equal feature sums) and is shown, never counted.

    alignax run experiments/regret_preference.py            # full setting, 5 seeds
    alignax run experiments/regret_preference.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.experiment import is_smoke
from alignax.losses.reward import partial_return_loss, regret_preference_loss
from alignax.tasks import mdp as mdp_lib
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.small import fit_small

LEARNERS = ("regret", "partial_return")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.learner = "regret"
    c.variants = {name: {"learner": name} for name in LEARNERS}
    c.task = dict(height=5, width=5, num_hazards=3, num_coins=3, gamma=0.95,
                  num_mdps=2 if smoke else 10, segment_length=3, random_rewards=True,
                  label_temperature=1.0)
    c.data = dict(sizes=[10, 100] if smoke else [3, 10, 30, 100, 300],
                  num_val_pairs=50 if smoke else 300,
                  num_pool=300 if smoke else 2000, tie_min_gap=0.5, max_tie_pairs=200)
    c.train = dict(steps=40 if smoke else 400, log_every=20 if smoke else 25,
                   learning_rates=[0.05] if smoke else [0.02, 0.05, 0.15],
                   weight_decay=1e-3, init_scale=0.1, vi_iters=40 if smoke else 150)
    return c


def _instances(task, seed: int):
    """`num_mdps` random gridworlds stacked into one pytree ([M, ...] leaves) + gold weights."""
    mdps, weights = [], []
    rng = np.random.default_rng([seed, 3])
    for m in range(task.num_mdps):
        gold = {}
        if task.random_rewards:  # a random instance of the reward too; coin loops stay negative
            step = rng.uniform(0.5, 2.0)
            gold = dict(step_cost=step, goal_reward=rng.uniform(1.0, 20.0),
                        hazard_cost=rng.uniform(1.0, 10.0), coin_reward=rng.uniform(0.0, 2 * step))
        mdp, w = mdp_lib.gridworld(task.height, task.width, seed=1000 * seed + m,
                                   num_hazards=task.num_hazards, num_coins=task.num_coins,
                                   gamma=task.gamma, **gold)
        mdps.append(mdp)
        weights.append(w)
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *mdps)
    return mdps, stacked, np.stack(weights)


def _segment_features(mdp, seg):
    """Per-step features [N, L, F] (zero on invalid steps) and their discount-free sums [N, F]."""
    phi = np.asarray(mdp.features)[seg.states[:, :-1], seg.actions] * seg.valid[..., None]
    return phi, phi.sum(axis=1)


def _make_pairs(mdps, weights, config, data_seed: int, num_pairs: int) -> dict:
    """Per MDP, `num_pairs` pairs of random segments labelled by the gold regret model:
    chosen/rejected states, actions and masks, [M, N, ...] (drawn from `data_seed`)."""
    length = config.task.segment_length
    rng = np.random.default_rng([data_seed, 11])
    out = {k: [] for k in ("c_s", "c_a", "c_m", "r_s", "r_a", "r_m")}
    for mdp, w in zip(mdps, weights):
        gold = mdp.reward(jnp.asarray(w))
        s1 = mdp_lib.sample_segments(mdp, rng, num_pairs, length)
        s2 = mdp_lib.sample_segments(mdp, rng, num_pairs, length)
        reg = [np.asarray(mdp_lib.segment_regret(mdp, gold, *s)) for s in (s1, s2)]
        label = mdp_lib.simulate_segment_preferences(-reg[0], -reg[1], rng=rng,
                                                     temperature=config.task.label_temperature)
        pick = label[:, None].astype(bool)
        for key, a, b in (("s", s1.states, s2.states), ("a", s1.actions, s2.actions),
                          ("m", s1.valid, s2.valid)):
            out["c_" + key].append(np.where(pick, a, b))
            out["r_" + key].append(np.where(pick, b, a))
    return {k: np.stack(v) for k, v in out.items()}


def _make_ties(mdps, weights, config, data_seed: int):
    """Per MDP, tie pairs: equal summed features (partial return ties for every w) and gold
    regrets at least `tie_min_gap` apart, from a pool of random segments drawn from
    `data_seed`. Returns ([M, K, ...] arrays padded to `max_tie_pairs` with `t_mask`, [M]
    counts)."""
    data, length = config.data, config.task.segment_length
    rng = np.random.default_rng([data_seed, 12])
    out = {k: [] for k in ("t1_s", "t1_a", "t1_m", "t2_s", "t2_a", "t2_m", "t_mask")}
    num_ties = []
    for mdp, w in zip(mdps, weights):
        gold = mdp.reward(jnp.asarray(w))
        pool = mdp_lib.sample_segments(mdp, rng, data.num_pool, length)
        _, sums = _segment_features(mdp, pool)
        preg = np.asarray(mdp_lib.segment_regret(mdp, gold, *pool))
        same = np.all(sums[:, None] == sums[None], axis=-1)
        gap = preg[None, :] - preg[:, None]  # > 0: i has lower regret than j (i is better)
        i_idx, j_idx = np.nonzero(same & (gap >= data.tie_min_gap))
        take = rng.permutation(len(i_idx))[: data.max_tie_pairs]
        i_idx, j_idx = i_idx[take], j_idx[take]
        k = data.max_tie_pairs
        pad = lambda x: np.concatenate(  # noqa: E731
            [x, np.zeros((k - len(x),) + x.shape[1:], x.dtype)])
        num_ties.append(len(i_idx))
        for key, field in (("s", pool.states), ("a", pool.actions), ("m", pool.valid)):
            out["t1_" + key].append(pad(field[i_idx]))  # the better (lower-regret) segment
            out["t2_" + key].append(pad(field[j_idx]))
        out["t_mask"].append(np.arange(k) < len(i_idx))
    return {k: np.stack(v) for k, v in out.items()}, np.array(num_ties)


def _step_scores(mdp, w, states, actions, learner: str, vi_iters: int):
    """Per-step scores [N, L]: rewards phi.w (partial return) or gamma^t A*_w (regret)."""
    reward = mdp.reward(w)
    if learner == "partial_return":
        table = reward
    else:
        v, q = mdp_lib.value_iteration(mdp, reward, num_iters=vi_iters)
        table = q - v[:, None]
    x = table[states[:, :-1], actions]
    if learner == "regret":
        x = x * mdp.gamma ** jnp.arange(actions.shape[1], dtype=x.dtype)
    return x


def fit_weights(config, workdir: str, mdps, data: dict, val: dict, seeds: list[int],
                sizes: list[int], learning_rate: float):
    """Every (seed, MDP, dataset size) problem's linear reward w [F] in one `fit_small` program.

    Per seed the parameters are w [M, Z, F] (M MDPs x Z dataset sizes) and the objective is the
    sum of the problems' own objectives (mean preference NLL over the first n pairs + weight
    decay), so each problem's gradient is its own and Adam, elementwise, updates each problem
    exactly as a separate fit. `mdps`, `data` and `val` (the validation pairs) hold
    [S, M, ...] arrays. Every `log_every` steps the learner's own preference NLL on the
    validation pairs (mean over the M x Z problems) is computed and each seed keeps its best
    step (early stopping on validation).

    Returns the SmallFit (best_params [S, M, Z, F], best_step, best_score = validation NLL).
    """
    learner, tc = config.learner, config.train
    pref_loss = regret_preference_loss if learner == "regret" else partial_return_loss
    vi_iters, weight_decay = int(tc.vi_iters), float(tc.weight_decay)
    n_max = max(sizes)
    pair_mask = (np.arange(n_max)[None] < np.array(sizes)[:, None]).astype(np.float32)  # [Z, N]

    def objective(w, mdp, d, mask):
        c = _step_scores(mdp, w, d["c_s"], d["c_a"], learner, vi_iters)
        r = _step_scores(mdp, w, d["r_s"], d["r_a"], learner, vi_iters)
        losses = pref_loss(c, r, d["c_m"], d["r_m"])
        nll = jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        return nll + weight_decay * jnp.sum(w**2)

    # over dataset sizes (masks) inside, over MDPs outside
    per_problem = jax.vmap(jax.vmap(objective, in_axes=(0, None, None, 0)),
                           in_axes=(0, 0, 0, None))

    def loss_fn(w, d):
        losses = per_problem(w, d["mdp"], d["pairs"], jnp.asarray(pair_mask))  # [M, Z]
        return losses.sum(), {"mean_problem_loss": losses.mean()}

    def val_nll(w, mdp, d):  # one problem's mean NLL on all validation pairs
        c = _step_scores(mdp, w, d["c_s"], d["c_a"], learner, vi_iters)
        r = _step_scores(mdp, w, d["r_s"], d["r_a"], learner, vi_iters)
        return jnp.mean(pref_loss(c, r, d["c_m"], d["r_m"]))

    per_problem_val = jax.vmap(jax.vmap(val_nll, in_axes=(0, None, None)), in_axes=(0, 0, 0))

    def eval_fn(w, d):
        return {"val_nll": per_problem_val(w, d["mdp"], d["pairs"]).mean()}

    num_mdps, num_features = data["c_s"].shape[1], mdps.features.shape[-1]
    shape = (num_mdps, len(sizes), num_features)
    fit = fit_small(
        workdir, loss_fn=loss_fn, has_aux=True,
        init_params=lambda key: tc.init_scale * jax.random.normal(key, shape),
        tx=optax.adamw(learning_rate, weight_decay=0.0), num_steps=int(tc.steps),
        data={"mdp": mdps, "pairs": data}, seeds=seeds, per_seed_data=True,
        steps_per_log=int(tc.log_every), eval_fn=eval_fn,
        eval_data={"mdp": mdps, "pairs": val}, select=("val_nll", "min"))
    return fit


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one learner: all seeds' problems trained in one program, then evaluated."""
    if config.learner not in LEARNERS:
        raise ValueError(f"learner must be one of {LEARNERS}, got {config.learner!r}")
    seeds = [int(s) for s in config.seeds]
    sizes = [int(n) for n in config.data.sizes]
    per_seed = []
    for seed in seeds:
        mdps, stacked, gold_w = _instances(config.task, seed)  # the world: experiment seed
        split = split_seeds(seed)
        train = _make_pairs(mdps, gold_w, config, split.train, max(sizes))
        val = _make_pairs(mdps, gold_w, config, split.validation, config.data.num_val_pairs)
        ties, num_ties = _make_ties(mdps, gold_w, config, split.test)
        per_seed.append((stacked, gold_w, train, val, ties, num_ties))
    stack = lambda *xs: jnp.asarray(np.stack(xs))  # noqa: E731
    mdps = jax.tree.map(stack, *[p[0] for p in per_seed])  # [S, M, ...]
    gold_w = stack(*[p[1] for p in per_seed])  # [S, M, F]
    train, val, ties = ({k: stack(*[p[j][k] for p in per_seed]) for k in per_seed[0][j]}
                        for j in (2, 3, 4))
    # Both learners: the same initial weights (same seed keys), learning-rate grid and
    # early-stopping rule, all chosen on the validation pairs.
    fits = {f"lr={lr:g}": fit_weights(config, os.path.join(workdir, f"reward_lr{lr:g}"), mdps,
                                      train, val, seeds, sizes, float(lr))
            for lr in config.train.learning_rates}
    chosen, records = [], []
    for i in range(len(seeds)):
        name, record = choose_on_validation(fits, lambda f, i=i: f.best_score[i],
                                            maximize=False)
        chosen.append(name)
        records.append(record)
    w = jnp.stack([fits[name].best_params[i] for i, name in enumerate(chosen)])

    def evaluate(mdp, gold, w_row):
        def one(wi):
            _, q = mdp_lib.value_iteration(mdp, mdp.reward(wi))
            return mdp_lib.normalized_return(mdp, mdp.reward(gold), mdp_lib.greedy_policy(q))
        return jax.vmap(one)(w_row)

    norm = np.asarray(jax.jit(jax.vmap(jax.vmap(evaluate)))(mdps, gold_w, w)) * 100.0

    # Tie pairs, scored with the weights learned from the largest dataset.
    w_big = w[:, :, int(np.argmax(sizes))]
    pref_loss = regret_preference_loss if config.learner == "regret" else partial_return_loss

    def tie_probs(mdp, wi, d):
        a = _step_scores(mdp, wi, d["t1_s"], d["t1_a"], config.learner, config.train.vi_iters)
        b = _step_scores(mdp, wi, d["t2_s"], d["t2_a"], config.learner, config.train.vi_iters)
        return jnp.exp(-pref_loss(a, b, d["t1_m"], d["t2_m"]))  # P(better one is preferred)

    tie_data = {k: ties[k] for k in ("t1_s", "t1_a", "t1_m", "t2_s", "t2_a", "t2_m")}
    probs = np.asarray(jax.jit(jax.vmap(jax.vmap(tie_probs)))(mdps, w_big, tie_data))
    out = {}
    for i, seed in enumerate(seeds):
        p, tmask = probs[i], per_seed[i][4]["t_mask"]
        fit = fits[chosen[i]]
        res = {f"test_return_n{n}": float(norm[i, :, j].mean()) for j, n in enumerate(sizes)}
        res["test_mean_return"] = float(norm[i].mean())
        res["val_nll"] = float(fit.best_score[i])
        res["chosen_step"] = float(fit.best_step[i])
        res["chosen_learning_rate"] = float(chosen[i][len("lr="):])
        for name, score in records[i]["scores"].items():
            res[f"val_nll_{name.replace('=', '')}"] = float(score)
        res["test_num_tie_pairs"] = float(per_seed[i][5].sum())
        if tmask.any():
            res["test_tie_max_dev_from_half"] = float(np.abs(p[tmask] - 0.5).max())
            res["test_tie_accuracy"] = float((p[tmask] > 0.5).mean())
        else:
            res["test_tie_max_dev_from_half"] = float("nan")
            res["test_tie_accuracy"] = float("nan")
        out[seed] = res
    return out


def claims(results) -> list[protocol.Claim]:
    dev = protocol.per_seed(results, "partial_return", "test_tie_max_dev_from_half")
    ties = protocol.per_seed(results, "regret", "test_num_tie_pairs")
    max_dev = max(dev.values())
    return [
        protocol.compare(
            "Regret learner beats partial-return learner by >= 5 points of normalised gold "
            "return (mean over 10 random MDPs and dataset sizes <= 300)", results,
            ("regret", "test_mean_return"), ("partial_return", "test_mean_return"),
            at_least=5.0,
            detail="normalised gold return of the greedy policy of the learned reward (0 = "
                   "uniform random, 100 = optimal), exact policy evaluation; learning rate and "
                   "stopping step chosen on validation pairs for each learner alike"),
        protocol.threshold(
            "On segment pairs tied in partial return but not in regret, the regret learner "
            "(n = 300) ranks >= 90% of them as the gold regret does", results,
            ("regret", "test_tie_accuracy"), at_least=0.9,
            detail=f"tie pairs from the test seed's segment pool, "
                   f"{min(ties.values()):.0f}-{max(ties.values()):.0f} per seed"),
        protocol.sanity(
            "the partial-return model predicts 0.5 on every tie pair (|P - 0.5| < 1e-6)",
            max_dev < 1e-6 and min(ties.values()) > 0,
            {"partial_return_max_dev_from_half": max_dev},
            detail="by construction: tied pairs have equal feature sums, so every linear "
                   "partial-return model scores them equally"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Normalised gold return vs number of preferences for both learners (mean +- std)."""
    from alignax.train.plots import plot_curves

    curves = {}
    for variant, res in results.items():
        keys = sorted((int(k[len("test_return_n"):]), k) for k in res["metrics"]
                      if k.startswith("test_return_n"))
        if keys:
            curves[variant] = (np.array([n for n, _ in keys], np.float64),
                               np.array([res["metrics"][k]["mean"] for _, k in keys]),
                               np.array([res["metrics"][k]["std"] for _, k in keys]))
    if not curves:
        return []
    path = os.path.join(workdir, "plots", "return_vs_num_preferences.png")
    plot_curves(curves, path, title="Regret vs partial-return preference models",
                xlabel="number of preferences", ylabel="normalised gold return (%)")
    return [path]
