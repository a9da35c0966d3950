"""PARL: reward learning from preferences on current-policy data, with the data-distribution term.

Paper: Chakraborty, Bedi, Koppel, Wang, Manocha, Wang, Huang, "PARL: A Unified Framework for
Policy Alignment in Reinforcement Learning from Human Feedback" (ICLR 2024, arXiv 2308.02585).

Mechanism (`alignax.algorithms.parl`): policy alignment as a bilevel problem whose upper
objective is measured on the lower-level policy's own trajectories,
    max_nu F(nu) = E_{(tau0, tau1) ~ rho(.; theta*(nu))} [U(tau0, tau1; nu)],
    theta*(nu) = argmax_theta V(theta; r_nu),
U the Bradley-Terry log-likelihood of the gold oracle's label under r_nu. Its gradient
    grad_nu F = E[grad_nu U] + (grad_nu theta*)^T E[U grad_theta log rho(tau; theta*)],
    grad_nu theta* = -(d2V/dtheta2)^{-1} d2V/(dtheta dnu),
has a data-distribution term that alternating reward learning (fit the reward on the current
preferences, then improve the policy: PEBBLE-like) leaves out. A-PARL alternates K lower-level
policy-gradient steps with one upper step along the whole gradient.

Setting (per seed, `world_of`): an 8 x 8 grid, four deterministic moves (into the wall: stay),
a terminal goal (+10 on entering), 8 terminal pits (-10 on entering), -1 per move, gamma 0.95,
start uniform over the live cells; gold reward r*. The learner treats terminal cells as
absorbing states with a learned reward (segments run on through them, the inner problem keeps
earning r_nu there): with equal-length segments a constant shift of r_nu then changes neither
the labels' likelihood nor the optimal policy. (Without it, a tabular reward fit from segment
pairs pays loitering for "not falling into a pit" and the policy loiters forever: every
development run stalled below the uniform policy.) Reward model r_nu: a table [S, A], nu = 0 at
first. Policy: tabular softmax logits [S, A] from 0. One outer iteration (one update of
`fit_small`, all seeds vmapped):
  1. K = 10 exact policy-gradient steps (step 5) on V(theta; nu) = J(theta; r_nu) -
     lambda/2 ||theta||^2 (lambda = 1e-3; exact tabular evaluation, `bilevel.tabular_return`),
     the policy carried on from the previous iteration;
  2. Q = 2 pairs of H = 4-step segments from the start distribution under that policy, labelled
     by the gold oracle (the higher gold partial return wins; ties are labelled 1/2, "equally
     preferable", as in Christiano et al. 2017), appended to the buffer of all queries so far;
  3. one SGD step on nu (step size eta) along the ascent direction of
       mean_{buffer} U(pair; nu)                                  (both methods; E[grad_nu U])
     + [parl only] the data term, the score-function estimate (1/Q) sum_i (U_i - b_i)
       grad_theta log rho(pair_i; theta) on this iteration's on-policy pairs (leave-one-out
       baseline b_i), pushed through grad_nu theta* by the implicit function theorem
       (`parl.attach_implicit_gradient`, a 20-term Neumann series, alpha 1; CG with damping
       0.1 was the first choice, but a first full run halted on a NaN from it on one
       validation layout: away from the inner optimum the Hessian is indefinite, as BARFI's
       module notes).
Both methods get the same inner steps, the same Q queries per outer step, the same buffer and
the same step-size search: they differ only by the data term. The PEBBLE variant runs the same
program with the data term multiplied by 0 (a zero cotangent: exactly the direct gradient).
(Adam on nu was tried first on a development layout: its sign-like steps gave the many
rarely-constrained table entries spurious rewards of about +-1 and the policy loitered.)

Metric: the gold return of the policy after the inner steps of each iteration, normalised so the
uniform policy scores 0 and the optimal one 1 (`ratio`, exact). Queries to 90%: (t - 1) Q for
the first iteration t whose policy reaches ratio >= 0.9 (the queries that shaped it); a run that
never does within T = 40 iterations is capped at T Q = 80 (the whole budget, one step more than
any run that reaches it) and counted at the cap. Also reported: the final ratio, the mean ratio
over all T iterations, the final buffer log-likelihood.

Splits and selection: the claims are measured on test layouts (`split_seeds(s).test`, seeds
0-5). The outer step size eta (one per method) is chosen on validation layouts of development
seeds 100-104 (`split_seeds(100 + i).validation`) among `outer.learning_rates` = (0.3, 1, 3), by
the mean validation queries-to-90% (`protocol.choose_on_validation`, lowest; the candidates'
scores are in each seed's metrics as `val_queries90_lr=<eta>`, the choice as `lr_chosen`). All
candidates x layouts run in one vmapped program (SGD(1) on eta x loss is SGD(eta)). The world,
K, lambda, H, Q, T and the oracle were set by hand on development layouts 100-102 (validation
data seeds) before any test run; on 5 x 5 grids or with 6-step segments both methods reached
90% after one or two outer steps (nothing to compare), and with one far start cell neither did.

Claims (6 test seeds, paired, 95% t intervals):
  (1, comparative) the notes' criterion: A-PARL reaches 90% of the optimal gold return with
      >= 20% fewer preference queries than PEBBLE: per seed 1 - q90(parl) / q90(pebble) >= 0.2;
  (2, comparative) A-PARL's final gold ratio is no worse than PEBBLE's (>= -0.02);
  sanity: the optimal policy of the gold reward scores 1 (normalisation).
The notes say the effect may be small at toy scale; it is reported either way.

Reading the full run (6 test seeds, 19 s): both methods chose eta = 0.3 on validation (mean
validation queries to 90%: parl 22.4 / 80 / 64.4, pebble 25.2 / 80 / 64.4 for eta = 0.3 / 1 / 3).
On test the outcome is bimodal per layout: a policy that finds the goal early ends near 1, one
whose first learned rewards only say "avoid the pits" loiters (ratio about -0.45) and its
on-policy pairs are then mostly ties that teach nothing. Queries to 90%: parl 48.7 vs pebble
46.7 (per seed 32/14/80/80/6/80 vs 36/10/68/80/6/80); the paired saving 1 - q(parl)/q(pebble) is
-0.078, 95% interval [-0.27, 0.11]: claim (1) FAILS (no 20% saving; the data term does not help
here). Final ratio 0.27 vs 0.50 (layout 2: parl loitered, pebble reached it): claim (2) is
INCONCLUSIVE (difference -0.23, interval [-0.82, 0.36]). Not re-tuned on test.

    alignax run experiments/parl.py            # full setting, 6 test seeds (+ validation)
    alignax run experiments/parl.py:smoke      # seconds, for the tests

`:real` is the closest affordable analogue on a user's checkpoints, and it is the PEBBLE-like
alternation: each round (a) samples two responses for `rounds.queries` training prompts from
the current policy, labels each pair with the gold reward checkpoint at `gold.path` (the
oracle: the higher gold reward wins, ties 1/2), and refits a linear Bradley-Terry reward head on
frozen embeddings of the starting checkpoint (`alignax.eval.embeddings`) on all pairs queried so
far; then (b) runs `grpo.iterations` GRPO iterations (`policy_gradient.train`) on that learned
reward. The data-distribution term is toy-only: it needs the inverse Hessian of the GRPO
objective in the LM's weights and the score of whole sampled responses through it, which is
not affordable, so `parl.data_term=True` is refused with that reason. The run reports the gold
reward of the policy's samples on validation / test prompts before and after, the learned
head's pairwise accuracy on its buffer and the queries used; the toy claims are not evaluated.

    alignax run experiments/parl.py:real --workdir runs/parl_real \
        --config.model.path=/ckpt/Qwen2.5-0.5B-Instruct --config.gold.path=/ckpt/gold_rm \
        --config.data.path=/data/prompts --config.model.dtype=bfloat16 --config.lora.rank=16
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import bilevel
from alignax.algorithms import parl as parl_lib
from alignax.algorithms import real as real_lib
from alignax.tasks import mdp as mdp_lib
from alignax.tasks.splits import check_disjoint, split_seeds
from alignax.train.small import fit_small

METHODS = ("parl", "pebble")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real_lib.config_mode(arg)
    if mode == "real":
        return real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else list(range(6))
    c.method = "parl"
    c.variants = {m: {"method": m} for m in METHODS}
    c.world = dict(height=4 if smoke else 8, width=4 if smoke else 8, pits=2 if smoke else 8,
                   start_distance=0,
                   gamma=0.95,
                   step_cost=1.0, goal_reward=10.0, pit_cost=10.0)
    c.inner = dict(steps=2 if smoke else 10, learning_rate=5.0, l2=0.001)
    c.queries = dict(per_step=2, length=4, oracle_noise=0.0, ties="half", baseline="loo")
    c.outer = dict(iterations=3 if smoke else 40,
                   learning_rates=(1.0,) if smoke else (0.3, 1.0, 3.0),
                   validation_seeds=[100] if smoke else list(range(100, 105)),
                   hypergradient="neumann", neumann_terms=10 if smoke else 20,
                   neumann_alpha=1.0, cg_iters=20, cg_damping=0.1, init_reward=0.0)
    c.train = dict(target=0.9, steps_per_log=3 if smoke else 10)
    return c


def validate(config) -> None:
    if real_lib.is_real(config):
        return validate_real(config)
    if config.method not in METHODS:
        raise ValueError(f"config.method must be one of {METHODS}, got {config.method!r}")
    if config.queries.baseline not in parl_lib.BASELINES:
        raise ValueError(f"config.queries.baseline must be one of {parl_lib.BASELINES}, "
                         f"got {config.queries.baseline!r}")
    if config.queries.baseline == "loo" and int(config.queries.per_step) < 2:
        raise ValueError("config.queries.per_step must be >= 2 with the loo baseline")
    if config.outer.hypergradient not in bilevel.IMPLICIT_METHODS:
        raise ValueError(f"config.outer.hypergradient must be one of {bilevel.IMPLICIT_METHODS}, "
                         f"got {config.outer.hypergradient!r}")
    if not config.outer.learning_rates:
        raise ValueError("config.outer.learning_rates must name at least one step size")
    if int(config.outer.iterations) < 1:
        raise ValueError(f"config.outer.iterations must be >= 1, got {config.outer.iterations}")


# ----------------------------------------------------------------------------------------------
# The world.


def world_of(config, data_seed: int) -> dict:
    """One gridworld (numpy arrays, deterministic in `data_seed`): H x W cells, four
    deterministic moves (into the wall: stay), a terminal goal (+goal_reward on entering) and
    `pits` terminal pits (-pit_cost on entering), -step_cost per move; start uniform over the
    live cells. Returns transitions [S, A, S], terminal [S], start [S], gold r* [S, A], the
    exact returns of the optimal and the uniform policy, and the optimal policy's logits."""
    w = config.world
    height, width = int(w.height), int(w.width)
    n = height * width
    cells = np.random.default_rng([int(data_seed), 2308_02585]).permutation(n)
    goal, pits = int(cells[0]), set(int(c) for c in cells[1:1 + int(w.pits)])
    terminal = np.zeros(n, bool)
    terminal[[goal, *pits]] = True
    transitions = np.zeros((n, 4, n), np.float32)
    gold = np.zeros((n, 4), np.float32)
    for s in range(n):
        row, col = divmod(s, width)
        for a, (dr, dc) in enumerate(mdp_lib.GRID_MOVES):
            if terminal[s]:
                transitions[s, a, s] = 1.0
                continue
            r2, c2 = row + dr, col + dc
            nxt = r2 * width + c2 if 0 <= r2 < height and 0 <= c2 < width else s
            transitions[s, a, nxt] = 1.0
            gold[s, a] = (-float(w.step_cost) + float(w.goal_reward) * (nxt == goal)
                          - float(w.pit_cost) * (nxt in pits))
    if int(w.start_distance) > 0:  # one start cell at Manhattan distance >= start_distance
        far = [c for c in cells[1 + int(w.pits):]
               if abs(c // width - goal // width) + abs(c % width - goal % width)
               >= int(w.start_distance)]
        if not far:
            raise ValueError("config.world.start_distance: no live cell that far from the goal")
        start = np.zeros(n, np.float32)
        start[int(far[0])] = 1.0
    else:  # uniform over the live cells
        start = (~terminal).astype(np.float32) / (~terminal).sum()
    mdp = mdp_lib.TabularMDP(transitions, np.zeros((n, 4, 1), np.float32), terminal, start,
                             float(w.gamma))
    iters = 40 * n
    v_star, q_star = mdp_lib.value_iteration(mdp, gold, num_iters=iters)
    v_uni = mdp_lib.policy_evaluation(mdp, gold, mdp_lib.uniform_policy(mdp), num_iters=iters)
    return {"transitions": transitions, "terminal": terminal, "start": start, "gold": gold,
            "j_star": np.float32(start @ np.asarray(v_star)),
            "j_uniform": np.float32(start @ np.asarray(v_uni)),
            "optimal_logits": 50.0 * np.asarray(mdp_lib.greedy_policy(q_star), np.float32)}


def gold_ratio(logits, world) -> jax.Array:
    """(J(pi) - J(uniform)) / (J* - J(uniform)) of the gold reward, exact."""
    j = bilevel.tabular_return(logits, world["transitions"], world["terminal"], world["gold"],
                               world["gamma"], world["start"])
    return (j - world["j_uniform"]) / (world["j_star"] - world["j_uniform"])


# ----------------------------------------------------------------------------------------------
# Training: nu' (r_nu = eta nu') are the params; the policy, the query buffer and the hit
# iteration are the loss state.


def make_loss(config):
    k = int(config.inner.steps)
    alpha = float(config.inner.learning_rate)
    l2 = float(config.inner.l2)
    q, h = int(config.queries.per_step), int(config.queries.length)
    temp = float(config.queries.oracle_noise)
    baseline = str(config.queries.baseline)
    ties = str(config.queries.ties)
    target = float(config.train.target)
    o = config.outer
    solver = (dict(num_terms=int(o.neumann_terms), alpha=float(o.neumann_alpha))
              if o.hypergradient == "neumann"
              else dict(maxiter=int(o.cg_iters), damping=float(o.cg_damping)))

    # the learner sees terminal cells as absorbing states with a learned reward (the
    # absorbing-state convention): segments run on through them, so a constant shift of r_nu
    # changes neither the labels' likelihood nor the optimal policy
    def inner_loss(theta, reward, world):  # -V(theta; r_nu)
        absorbing = jnp.zeros_like(world["terminal"])
        return (-bilevel.tabular_return(theta, world["transitions"], absorbing, reward,
                                        world["gamma"], world["start"])
                + 0.5 * l2 * jnp.sum(theta ** 2))

    def loss_fn(nu, batch, state):
        world = batch
        reward = nu["reward"]
        theta0 = jax.lax.stop_gradient(state["theta"])
        step = bilevel.gradient_step(lambda t, r: inner_loss(t, r, world), alpha)
        theta = bilevel.unroll(step, theta0, jax.lax.stop_gradient(reward), k)
        ratio = gold_ratio(theta, world)
        it = state["iteration"] + 1
        hit = jnp.where((state["hit"] < 0) & (ratio >= target), it, state["hit"])
        # this iteration's Q on-policy pairs, labelled by the gold oracle
        k_traj, k_label = jax.random.split(world["key"])
        st, ac, va = parl_lib.sample_trajectories(k_traj, theta, world["transitions"],
                                                  jnp.zeros_like(world["terminal"]),
                                                  world["start"], 2 * q, h)
        pairs = tuple(x.reshape(q, 2, -1) for x in (st, ac, va))
        labels = parl_lib.oracle_labels(k_label, world["gold"], *pairs, temperature=temp,
                                        ties=ties)
        buf = state["buffer"]
        at = state["iteration"] * q
        buf = {"states": jax.lax.dynamic_update_slice_in_dim(buf["states"], pairs[0], at, 0),
               "actions": jax.lax.dynamic_update_slice_in_dim(buf["actions"], pairs[1], at, 0),
               "valid": jax.lax.dynamic_update_slice_in_dim(buf["valid"], pairs[2], at, 0),
               "labels": jax.lax.dynamic_update_slice_in_dim(buf["labels"], labels, at, 0)}
        filled = (jnp.arange(buf["labels"].shape[0]) < at + q).astype(reward.dtype)
        u_buffer = parl_lib.pair_log_likelihood(reward, buf["states"], buf["actions"],
                                                buf["valid"], buf["labels"])
        direct = jnp.sum(filled * u_buffer) / jnp.sum(filled)
        # the data term: the score-function estimate at theta*, through d theta* / d nu
        theta_star = parl_lib.attach_implicit_gradient(
            inner_loss, theta, reward, world, method=str(o.hypergradient), **solver)
        u_now = parl_lib.pair_log_likelihood(reward, *pairs, labels)
        surrogate = parl_lib.score_function_surrogate(
            parl_lib.trajectory_log_prob(theta_star, *pairs), u_now, baseline=baseline)
        objective = direct + world["data_term"] * surrogate
        metrics = {"ratio": ratio, "bt_log_likelihood": direct}
        new = {"theta": theta, "iteration": it, "hit": hit, "buffer": buf,
               "ratio_sum": state["ratio_sum"] + ratio}
        # SGD(1) on scale x loss is SGD with the per-row step size `scale`
        return -world["scale"] * objective, metrics, new

    return loss_fn


def _fit(config, workdir: str, worlds: list[dict], scales: list[float], run_seeds: list[int]):
    """One vmapped fit_small over the rows (world, step size); returns per-row metrics."""
    q, h = int(config.queries.per_step), int(config.queries.length)
    steps = int(config.outer.iterations)
    keys = ("transitions", "terminal", "start", "gold", "j_star", "j_uniform")
    data = {k: jnp.asarray(np.stack([w[k] for w in worlds])) for k in keys}
    rows = len(worlds)
    data["gamma"] = jnp.full((rows,), float(config.world.gamma), jnp.float32)
    data["scale"] = jnp.asarray(scales, jnp.float32)
    data["data_term"] = jnp.full((rows,), float(config.method == "parl"), jnp.float32)
    n = worlds[0]["gold"].shape[0]
    cap = steps * q
    state0 = {"theta": jnp.zeros((n, 4), jnp.float32), "iteration": jnp.zeros((), jnp.int32),
              "hit": jnp.full((), -1, jnp.int32), "ratio_sum": jnp.zeros((), jnp.float32),
              "buffer": {"states": jnp.zeros((cap, 2, h + 1), jnp.int32),
                         "actions": jnp.zeros((cap, 2, h), jnp.int32),
                         "valid": jnp.zeros((cap, 2, h), bool),
                         "labels": jnp.zeros((cap,), jnp.float32)}}

    def batch_fn(d, rng):
        return {**d, "key": rng}

    fit = fit_small(workdir, loss_fn=make_loss(config),
                    init_params={"reward": jnp.full((n, 4), float(config.outer.init_reward),
                                                    jnp.float32)},
                    tx=optax.sgd(1.0), num_steps=steps, data=data, seeds=run_seeds,
                    per_seed_data=True, batch_fn=batch_fn, loss_state=state0,
                    steps_per_log=int(config.train.steps_per_log), checkpoint_every=5)
    hits = np.asarray(fit.loss_state["hit"])
    out = []
    ratio_sum = np.asarray(fit.loss_state["ratio_sum"])
    for i, s in enumerate(run_seeds):
        q90 = float((hits[i] - 1) * q) if hits[i] > 0 else float(cap)
        out.append({"queries90": q90, "iterations90": float(hits[i]) if hits[i] > 0
                    else float(steps + 1),
                    "final_ratio": float(fit.history[-1][f"seed_{s}/ratio"]),
                    "mean_ratio": float(ratio_sum[i] / steps),
                    "final_bt_log_likelihood": float(
                        fit.history[-1][f"seed_{s}/bt_log_likelihood"])})
    return out


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    validate(config)
    if real_lib.is_real(config):
        return run_real(config, workdir)
    seeds = [int(s) for s in config.seeds]
    dev = [int(s) for s in config.outer.validation_seeds]
    check_disjoint(validation=[split_seeds(s).validation for s in dev],
                   test=[split_seeds(s).test for s in seeds])
    lrs = [float(x) for x in config.outer.learning_rates]
    record = None
    if len(lrs) > 1:  # the step size, chosen on the validation layouts
        val_worlds = [world_of(config, split_seeds(s).validation) for s in dev]
        rows = [(lr, s, w) for lr in lrs for s, w in zip(dev, val_worlds)]
        res = _fit(config, os.path.join(workdir, "validation"), [r[2] for r in rows],
                   [r[0] for r in rows], list(range(len(rows))))
        by_lr = {f"lr={lr}": float(np.mean([r["queries90"] for (lr2, _, _), r in zip(rows, res)
                                            if lr2 == lr])) for lr in lrs}
        name, record = protocol.choose_on_validation(
            {f"lr={lr}": lr for lr in lrs}, lambda lr: by_lr[f"lr={lr}"], maximize=False)
        lr = float(name.split("=")[1])
    else:
        lr = lrs[0]
    worlds = [world_of(config, split_seeds(s).test) for s in seeds]
    res = _fit(config, os.path.join(workdir, "test"), worlds, [lr] * len(seeds), seeds)
    out = {}
    for s, w, r in zip(seeds, worlds, res):
        m = {f"test_{k}": v for k, v in r.items()}
        m["lr_chosen"] = lr
        if record is not None:
            m.update({f"val_queries90_{k}": float(v) for k, v in record["scores"].items()})
        m["optimal_ratio"] = float(gold_ratio(jnp.asarray(w["optimal_logits"]),
                                              {**w, "gamma": float(config.world.gamma)}))
        out[s] = m
    return out


def claims(results) -> list[protocol.Claim]:
    if set(results) == {"default"}:
        return []
    q_parl = protocol.per_seed(results, "parl", "test_queries90")
    q_peb = protocol.per_seed(results, "pebble", "test_queries90")
    saving = {s: 1.0 - q_parl[s] / q_peb[s] for s in q_parl if s in q_peb}
    mean = {v: {m: protocol.seed_mean(results, v, m) for m in
                ("test_queries90", "test_final_ratio", "lr_chosen")} for v in results}
    detail = "; ".join(f"{v}: queries to 90% {mean[v]['test_queries90']:.1f}, final ratio "
                       f"{mean[v]['test_final_ratio']:.3f}, step size {mean[v]['lr_chosen']}"
                       for v in results) + (
        "; queries to 90% capped at the whole budget (outer iterations x queries per step) "
        "for runs that never reach it")
    optimal = [v for r in results.values() for v in r["per_seed"].values()]
    return [
        protocol.decide(
            "A-PARL reaches 90% of the optimal gold return with >= 20% fewer preference queries "
            "than PEBBLE-like alternation (1 - q90(parl) / q90(pebble) >= 0.2, paired)",
            saving, kind="comparative", at_least=0.2, detail=detail),
        protocol.compare(
            "A-PARL's final gold return ratio is no worse than PEBBLE-like alternation's "
            "(difference >= -0.02)", results, ("parl", "test_final_ratio"),
            ("pebble", "test_final_ratio"), at_least=-0.02, detail=detail),
        protocol.sanity(
            "the gold-optimal policy has normalised return 1 on every layout",
            all(abs(m["optimal_ratio"] - 1.0) < 1e-3 for m in optimal),
            {"min_ratio": min(m["optimal_ratio"] for m in optimal)},
            "the normalisation (exact evaluation of the value-iteration optimum), by "
            "construction"),
    ]



def plots(results, workdir: str) -> list[str]:
    """The gold return ratio along the outer iterations on the test layouts, per variant (mean
    over seeds; logged every `train.steps_per_log` iterations)."""
    import json

    from alignax.train.plots import plot_curves
    from alignax.train.writers import read_metrics

    if set(results) == {"default"}:  # :real: its metrics only
        return []
    config = get_config()
    saved = os.path.join(workdir, "config.json")
    if os.path.exists(saved):
        with open(saved) as f:
            config = ml_collections.ConfigDict(json.load(f))
    spl, total = int(config.train.steps_per_log), int(config.outer.iterations)
    curves = {}
    for variant in results:
        path = os.path.join(workdir, variant, "test", "metrics.jsonl")
        if os.path.exists(path):
            rows = read_metrics(path)
            curves[variant] = ([min(row["step"] * spl, total) for row in rows],
                               [row["ratio"] for row in rows])
    return [plot_curves(curves, os.path.join(workdir, "plots", "gold_ratio.png"),
                        title="gold return ratio on test layouts (mean over seeds)",
                        xlabel="outer iteration", ylabel="(J - J_uniform) / (J* - J_uniform)")]

# ----------------------------------------------------------------------------------------------
# :real: PEBBLE-like alternation of a BT reward head (gold-checkpoint labels on current-policy
# pairs) and GRPO on it.


def real_config() -> ml_collections.ConfigDict:
    """`:real` (see `run_real`): rounds of (a) BT reward-head fitting on current-policy pairs
    labelled by the gold checkpoint and (b) GRPO from `model.path` on the learned reward."""
    from alignax.algorithms import policy_gradient

    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real_lib.add_real_fields(c, max_length=512)
    c.gold = dict(path="")  # the oracle: a reward (sequence-classification) checkpoint
    c.parl = dict(data_term=False)
    c.rounds = dict(count=4, queries=32, head_steps=200, head_learning_rate=1e-2,
                    head_l2=1e-3, eval_samples=2, pool="last")
    c.grpo = policy_gradient.default_config(
        iterations=10, prompts_per_iteration=8, num_samples=4, max_new_tokens=256,
        temperature=1.0, advantage="grpo", kl_coef=0.02, epochs=1, minibatches=1,
        checkpoint_every=10, log_every=1, eval_every=0, optimizer=real_lib.optimizer(1e-6))
    c.grpo.stop_tokens = (-1,)  # -1: the tokenizer's eos
    return c


def validate_real(config) -> None:
    from alignax.algorithms import policy_gradient

    real_lib.require(config, "model.path", "data.path", "gold.path")
    if bool(config.parl.data_term):
        raise ValueError("config.parl.data_term: the data-distribution term is toy-only (it "
                         "needs an inverse Hessian of GRPO in the LM weights); :real is the "
                         "PEBBLE-like alternation")
    for key in ("count", "queries", "head_steps", "eval_samples"):
        if int(config.rounds[key]) < 1:
            raise ValueError(f"config.rounds.{key} must be >= 1, got {config.rounds[key]}")
    policy_gradient.validate(real_lib.online_config(config, "grpo"))


def bt_head_loss(weights, diff, labels, l2: float) -> jax.Array:
    """The reward head's loss on M pairs: -mean_m [y log sigmoid(w . (e0 - e1)) + (1 - y)
    log sigmoid(-w . (e0 - e1))] + l2 / 2 ||w||^2; diff [M, D] = e0 - e1, labels [M] in
    {0, 1/2, 1}. (`parl.pair_log_likelihood` with a linear reward on embeddings.)"""
    margin = diff @ weights
    ll = labels * jax.nn.log_sigmoid(margin) + (1.0 - labels) * jax.nn.log_sigmoid(-margin)
    return -jnp.mean(ll) + 0.5 * l2 * jnp.sum(weights ** 2)


def gold_pair_labels(gold_scores) -> np.ndarray:
    """Labels of pairs from gold scores [M, 2]: 1 when the first is higher, 0 when lower, 1/2
    on exact ties."""
    g = np.asarray(gold_scores, np.float64)
    return np.where(g[:, 0] > g[:, 1], 1.0, np.where(g[:, 0] < g[:, 1], 0.0, 0.5)
                    ).astype(np.float32)


def run_real(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """`:real`: the PEBBLE-like alternation on checkpoints (see the module docstring).

    Round r: `rounds.queries` training prompts (drawn with the seed and r) get two samples each
    from the current policy (`online.make_rollout`); the gold checkpoint scores both, the pair
    is labelled by `gold_pair_labels`, and the linear head w on frozen last-token embeddings of
    the starting checkpoint is refitted by `fit_small` (Adam, `rounds.head_steps` full-batch
    steps of `bt_head_loss`) on all pairs so far; then GRPO from the current policy with reward
    w . embedding(prompt + response). Each round's GRPO is its own resumable run
    (`round_<r>/grpo`). Returns {seed: metrics}: val/test gold reward before and after (mean over
    `rounds.eval_samples` samples per prompt), `queries`, `head_accuracy` (the head's pairwise
    accuracy on its non-tied buffer pairs), `rounds`.
    """
    from alignax.algorithms import online, policy_gradient, pretrained
    from alignax.eval.embeddings import sequence_embeddings

    seed = int(config.seeds[0])
    tok = real_lib.tokenizer(config)
    data = real_lib.prompt_data(config, tok, int(config.data.max_length))
    model, ref_params = pretrained.model_and_params(real_lib.model_config(config), "lm",
                                                    seed=seed)
    gold_model, gold_params = pretrained.model_and_params(
        real_lib.model_config(config, config.gold.path), "reward", seed=seed)
    stops = real_lib.stop_tokens(tok, config.grpo.stop_tokens)
    max_new = int(config.grpo.max_new_tokens)
    r = config.rounds
    pool = str(r.pool)

    def embed(ids, mask):
        return sequence_embeddings(model, ref_params, np.asarray(ids), np.asarray(mask),
                                   pool=pool)

    def gold(ids, mask):
        return np.asarray(gold_model.apply(gold_params, jnp.asarray(ids), jnp.asarray(mask)),
                          np.float64)

    pair_sampler = jax.jit(online.make_rollout(
        model, num_samples=2, temperature=float(config.grpo.temperature),
        max_new_tokens=max_new, stop_tokens=stops, pad_id=tok.pad_id))
    eval_sampler = jax.jit(online.make_rollout(
        model, num_samples=int(r.eval_samples), temperature=float(config.grpo.temperature),
        max_new_tokens=max_new, stop_tokens=stops, pad_id=tok.pad_id))
    ids, mask, n_val = real_lib.held_out_prompts(data)

    def evaluate(params):  # the gold reward on validation and test, same key every time
        rollout = eval_sampler(params, ids, mask.astype(bool), jax.random.key(seed + 7))
        rows = np.asarray(rollout.prompt_index)
        g = gold(rollout.ids, rollout.mask)
        per_prompt = np.bincount(rows, g, len(ids)) / np.bincount(rows, minlength=len(ids))
        return real_lib.split_means(per_prompt, n_val, "gold")

    before = evaluate(ref_params)
    train = data["train"]
    n_train = len(train["prompt_ids"])
    cfg = real_lib.online_config(config, "grpo", stops)
    params, diffs, labels = ref_params, [], []
    for rnd in range(int(r.count)):
        rows = np.random.default_rng([seed, rnd, 2308]).choice(
            n_train, min(int(r.queries), n_train), replace=False)
        rollout = pair_sampler(params, train["prompt_ids"][rows],
                               train["prompt_mask"][rows].astype(bool),
                               jax.random.key(seed * 1009 + rnd))
        order = np.argsort(np.asarray(rollout.prompt_index), kind="stable").reshape(-1, 2)
        emb = embed(rollout.ids, rollout.mask)[order]  # [M, 2, D]
        diffs.append(emb[:, 0] - emb[:, 1])
        labels.append(gold_pair_labels(gold(rollout.ids, rollout.mask)[order]))
        head_data = {"diff": jnp.asarray(np.concatenate(diffs)),
                     "labels": jnp.asarray(np.concatenate(labels))}
        l2 = float(r.head_l2)
        head = fit_small(os.path.join(workdir, f"round_{rnd}", "head"),
                         loss_fn=lambda w, b: bt_head_loss(w["w"], b["diff"], b["labels"], l2),
                         init_params={"w": jnp.zeros(emb.shape[-1], jnp.float32)},
                         tx=optax.adam(float(r.head_learning_rate)),
                         num_steps=int(r.head_steps), data=head_data, seeds=[seed],
                         plots=False)
        w = np.asarray(head.params["w"][0])

        def reward_fn(ro, w=w):
            return embed(ro.ids, ro.mask) @ w

        out = policy_gradient.train(
            cfg, os.path.join(workdir, f"round_{rnd}", "grpo"), model=model,
            init_params=params, ref_params=ref_params, prompt_ids=train["prompt_ids"],
            prompt_mask=train["prompt_mask"], reward_fn=reward_fn, seed=seed * 1009 + rnd)
        params = out["params"]
    all_diff, all_y = np.concatenate(diffs), np.concatenate(labels)
    decided = all_y != 0.5
    acc = (float(np.mean((all_diff[decided] @ w > 0) == (all_y[decided] == 1.0)))
           if decided.any() else float("nan"))
    after = evaluate(params)
    return {seed: {**{f"{k}_before": v for k, v in before.items()},
                   **{f"{k}_after": v for k, v in after.items()},
                   "queries": float(len(all_y)), "head_accuracy": acc,
                   "rounds": float(int(r.count))}}
