"""BARFI: learning how to blend a designer's auxiliary reward with the primary one (bilevel).

Paper: Gupta, Chandak, Jordan, Thomas, da Silva, "Behavior Alignment via Reward Function
Optimization" (NeurIPS 2023, arXiv 2310.19007).

Mechanism (`alignax.algorithms.bilevel`): the agent is trained on the behaviour-alignment reward
    r_phi(s, a) = r_p(s, a) + phi_1(s, a) r_aux(s, a)     with a learned discount
    gamma_phi = sigmoid(phi_2),
inner problem theta(phi) = argmax_theta J_phi(theta) (the return of r_phi under gamma_phi),
outer problem max_phi J_p(theta(phi)) (the primary return under the task's discount gamma_p).
The form of r_phi and the sigmoid discount follow the paper (Sec. 4) and its released code,
which also adds a learned state-dependent bias term; it is left out here (the notes' form).
The paper's implicit gradient, grad_phi J_p = -(d2J_phi/dphi dtheta)^T (d2J_phi/dtheta2)^{-1}
grad_theta J_p with a Neumann inverse-HVP, is `bilevel.implicit_solution` (option
`outer.hypergradient=neumann|cg`); the default here is the notes' exact unrolled hypergradient
through the K inner steps (`bilevel.unroll`), exact for what is run: K policy-gradient steps
from theta_t end far from an inner optimum, where the implicit formula assumes one. On three
development worlds (seeds 100-102, not the claimed ones) `neumann` (20 terms, alpha 0.5) did as
well as `unrolled` (final ratios >= 0.99 with both aux rewards), while `cg` diverged on 4 of the
6 problems: away from the optimum the Hessian of -J_phi in the softmax logits is indefinite,
which CG does not tolerate and a short Neumann series (a truncated unroll) does.

Setting (per seed, a 6 x 6 gridworld, `world_of`): four deterministic moves (a move into the wall
stays put), a terminal goal, one start cell at Manhattan distance >= 6 from the goal, and a
distractor cell nearer to the start than to the goal. Primary reward r_p = +1 on entering the
goal, gamma_p = 0.95; the score of a policy is its primary return as a fraction of the optimal
one, J_p(pi) / J_p(pi*) (exact). Two auxiliary rewards, run side by side in every variant:
  - shaping (aux A, helpful): r_aux(s, a) = 0.1 (d(s) - d(s')), d the distance to the goal;
  - distractor (aux B, misaligned): r_aux(s, a) = 0.05 when s is next to the distractor, which
    makes the naive sum loiter (0.05 per step forever beats a discounted +1 far away).
Policy: tabular softmax, logits [36, 4] from zero (uniform). One outer iteration = K = 20 exact
policy-gradient steps theta <- theta + alpha grad_theta J(theta) (alpha = 1, exact tabular policy
evaluation by a linear solve, `bilevel.tabular_return`), the policy carried on from iteration to
iteration, then (BARFI only) one Adam step on phi along the hypergradient of J_p(theta_K). This
runs in `fit_small`: phi are the trained params, the policy is the loss state, so every variant
gets the same T = 150 outer iterations of K inner steps (equal budget) and all seeds are vmapped.

Variants (the same inner steps; only the reward differs): `primary` (r_p alone, gamma_p),
`naive` (r_p + r_aux, gamma_p), `barfi` (phi_1 from 0 and gamma_phi from gamma_p, learned; the
paper's code starts phi_1 near 0 too). Starting phi_1 at 1 (BARFI = naive at first) is harder:
on the development layout the policy was already trapped by the distractor after the first
iteration at alpha = 1 and BARFI stayed there (ratio 0.02), while at alpha = 0.5 it escaped.

Splits: each seed's world (goal, start, distractor) is drawn from its test data seed
(`split_seeds(s).test`). Online RL has no held-out data: the agent is scored in the world it
learns in, as in the paper. Nothing is chosen on validation (no early stopping, no search): the
hyperparameters (alpha, K, T, the outer Adam step 0.5) were set by hand on a development layout
(goal (0, 5), start (5, 0), distractor (4, 1)) before any seed's world was drawn, and are the same
for every variant, so no validation world is used.

Metrics per seed (test world): `test_ratio_<aux>` (the final policy's J_p / J_p*),
`test_iters90_<aux>` (the first outer iteration after which the ratio is >= 0.9; T + 1 if never),
`gamma_<aux>` (the final discount), `weight_near_distractor` / `weight_elsewhere` (mean phi_1 over
the states next to the distractor / the others), and `naive_optimum_ratio_distractor` (the ratio
of the optimal policy of the naive sum under aux B, by value iteration).

Claims (the notes' pass criteria; 8 seeds, 95% t intervals):
  (1, threshold) with the distractor, BARFI's final primary return is >= 95% of the optimum;
  (2, threshold) with the distractor, the naive sum's is <= 50%;
  (3, comparative) with the distractor, BARFI - naive >= 0.45 (paired);
  (4, comparative) with shaping, BARFI reaches 90% of the optimum in fewer outer iterations than
      r_p alone (iters90(barfi) - iters90(primary) <= -1, paired; same inner steps per
      iteration).
  Sanity: the naive sum's optimal policy under aux B scores < 50% on every seed (the distractor
  is placed so that it does: the premise of the test, by construction).

Reading the full run (8 seeds): BARFI ends at 0.996 of the optimum with the distractor (phi_1
next to the distractor driven to about -5: it learns to penalise what the heuristic pays for)
and reaches 90% with shaping after 5.1 iterations vs 7.5 for r_p alone (phi_1 grows from 0 to
about 0.37 on the shaping reward), so (1) and (4) PASS. The naive sum is bimodal: exact policy
gradient from the uniform policy is path dependent, and on 4 of the 8 worlds it reaches the goal
before the loiter basin captures it (ratio ~1), on the other 4 it loiters (ratio ~0): mean 0.50,
so (2) and (3) are INCONCLUSIVE (the intervals straddle the thresholds). Not re-tuned.

    alignax run experiments/barfi.py            # full setting, 8 seeds
    alignax run experiments/barfi.py:smoke      # seconds, for the tests

`:real` runs the outer loop on a Hugging Face checkpoint and a prompt-only dataset with a
reference answer column: GRPO (`policy_gradient.train`) on r_w = r_p + sum_k w_k r_aux_k with
r_p the exact match of the final answer (as in grpo_arithmetic's `:real`) and rule auxiliaries
(`reward.auxiliary`: format, brevity, length); the weights w take one antithetic zeroth-order
(SPSA) step per round on the validation primary reward, because gradients through LM training
(implicit or unrolled) are not affordable and the weights are few (`run_real` states the
approximation). The last `data.eval_fraction` rows are test, as many before them validation;
the run reports the primary reward before and after on both and the learned weights; the toy
claims are not evaluated on it.

    alignax run experiments/barfi.py:real --workdir runs/barfi_real \
        --config.model.path=/ckpt/Qwen2.5-0.5B-Instruct --config.data.path=/data/gsm8k \
        --config.reward.answer_marker='####' --config.reward.auxiliary="('format','brevity')" \
        --config.model.dtype=bfloat16 --config.lora.rank=16
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
from alignax.algorithms import real as real_lib
from alignax.tasks import mdp as mdp_lib
from alignax.tasks.splits import split_seeds
from alignax.train.small import fit_small

METHODS = ("primary", "naive", "barfi")
AUX = ("shaping", "distractor")  # aux A and aux B
HYPERGRADIENTS = ("unrolled",) + bilevel.IMPLICIT_METHODS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real_lib.config_mode(arg)
    if mode == "real":
        return real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else list(range(8))
    c.method = "barfi"
    c.variants = {m: {"method": m} for m in METHODS}
    c.world = dict(size=6, gamma=0.95, min_distance=6, shaping=0.1, distractor_bonus=0.05)
    c.inner = dict(steps=3 if smoke else 20, learning_rate=1.0)
    c.outer = dict(iterations=4 if smoke else 150, learning_rate=0.5, init_weight=0.0,
                   hypergradient="unrolled", remat=False, neumann_terms=20, neumann_alpha=0.5,
                   cg_iters=20, cg_damping=1e-2)
    c.train = dict(steps_per_log=2 if smoke else 10, target=0.9)
    return c


def validate(config) -> None:
    if real_lib.is_real(config):
        return validate_real(config)
    if config.method not in METHODS:
        raise ValueError(f"config.method must be one of {METHODS}, got {config.method!r}")
    if config.outer.hypergradient not in HYPERGRADIENTS:
        raise ValueError(f"config.outer.hypergradient must be one of {HYPERGRADIENTS}, "
                         f"got {config.outer.hypergradient!r}")
    if not 0.0 < config.world.gamma < 1.0:
        raise ValueError(f"config.world.gamma must be in (0, 1), got {config.world.gamma}")
    if int(config.world.min_distance) > 2 * (int(config.world.size) - 1):
        raise ValueError(f"config.world.min_distance must be <= {2 * (config.world.size - 1)}")


# ----------------------------------------------------------------------------------------------
# The world.


def _manhattan(a: int, b: int, width: int) -> int:
    return abs(a // width - b // width) + abs(a % width - b % width)


def world_of(config, seed: int) -> dict:
    """The seed's gridworld (from its test data seed): numpy arrays of one problem.

    Returns {"transitions": [S, A, S], "terminal": [S], "primary": [S, A], "auxiliary":
    [2, S, A] (shaping, distractor), "start": [S], "optimum": [] (J_p of the optimal policy),
    "near": [S] (next to the distractor), "cells": [3] (goal, start, distractor)}.
    """
    w = config.world
    size = int(w.size)
    n = size * size
    rng = np.random.default_rng([split_seeds(seed).test, 2310_19007])
    goal = int(rng.integers(n))
    far = [s for s in range(n) if _manhattan(s, goal, size) >= int(w.min_distance)]
    start = int(rng.choice(far))
    lure = [s for s in range(n) if s not in (goal, start)
            and _manhattan(s, start, size) < _manhattan(s, goal, size)]
    distractor = int(rng.choice(lure))
    transitions = np.zeros((n, 4, n), np.float32)
    primary = np.zeros((n, 4), np.float32)
    aux = np.zeros((2, n, 4), np.float32)
    terminal = np.zeros(n, bool)
    terminal[goal] = True
    near = np.array([_manhattan(s, distractor, size) == 1 for s in range(n)])
    for s in range(n):
        row, col = divmod(s, size)
        for a, (dr, dc) in enumerate(mdp_lib.GRID_MOVES):
            if terminal[s]:
                transitions[s, a, s] = 1.0
                continue
            r2, c2 = row + dr, col + dc
            nxt = r2 * size + c2 if 0 <= r2 < size and 0 <= c2 < size else s
            transitions[s, a, nxt] = 1.0
            primary[s, a] = float(nxt == goal)
            aux[0, s, a] = w.shaping * (_manhattan(s, goal, size) - _manhattan(nxt, goal, size))
            aux[1, s, a] = w.distractor_bonus * float(near[s])
    start_dist = np.zeros(n, np.float32)
    start_dist[start] = 1.0
    mdp = mdp_lib.TabularMDP(transitions, np.zeros((n, 4, 1), np.float32), terminal, start_dist,
                             float(w.gamma))
    iters = 20 * n
    v_star, _ = mdp_lib.value_iteration(mdp, primary, num_iters=iters)
    # the naive sum's own optimum under the distractor, scored on the primary reward
    _, q_naive = mdp_lib.value_iteration(mdp, primary + aux[1], num_iters=iters)
    v_naive = mdp_lib.policy_evaluation(mdp, primary, mdp_lib.greedy_policy(q_naive),
                                        num_iters=iters)
    optimum = float(start_dist @ np.asarray(v_star))
    return {"transitions": transitions, "terminal": terminal, "primary": primary,
            "auxiliary": aux, "start": start_dist, "optimum": np.float32(optimum),
            "near": near, "cells": np.array([goal, start, distractor]),
            "naive_optimum_ratio": np.float32(float(start_dist @ np.asarray(v_naive)) / optimum)}


# ----------------------------------------------------------------------------------------------
# Training: phi are the params, the policy is the loss state.


def init_phi(config, num_states: int) -> dict:
    """phi for both aux rewards: weight [2, S, A] (phi_1), discount_logit [2] (phi_2)."""
    weight = {"primary": 0.0, "naive": 1.0, "barfi": float(config.outer.init_weight)}
    g = float(config.world.gamma)
    return {"weight": jnp.full((len(AUX), num_states, 4), weight[config.method], jnp.float32),
            "discount_logit": jnp.full((len(AUX),), np.log(g / (1 - g)), jnp.float32)}


def make_loss(config):
    """fit_small's stateful loss: K inner policy-gradient steps on r_phi for each aux reward, then
    -sum_aux J_p(theta_K) / J_p* (differentiated w.r.t. phi by the configured hypergradient)."""
    k = int(config.inner.steps)
    alpha = float(config.inner.learning_rate)
    gamma_p = float(config.world.gamma)
    target = float(config.train.target)
    o = config.outer

    def inner_loss(t, p, aux, world):  # -J_phi(theta)
        reward = bilevel.alignment_reward(world["primary"], aux, p["weight"])
        return -bilevel.tabular_return(t, world["transitions"], world["terminal"], reward,
                                       bilevel.alignment_discount(p["discount_logit"]),
                                       world["start"])

    def solve(theta, p, aux, world):  # K exact policy-gradient steps from theta
        step = bilevel.gradient_step(lambda t, q: inner_loss(t, q, aux, world), alpha)
        return bilevel.unroll(step, theta, p, k, remat=bool(o.remat))

    if o.hypergradient == "unrolled":
        inner_solution = solve
    else:
        kwargs = (dict(num_terms=int(o.neumann_terms), alpha=float(o.neumann_alpha))
                  if o.hypergradient == "neumann"
                  else dict(maxiter=int(o.cg_iters), damping=float(o.cg_damping)))
        inner_solution = bilevel.implicit_solution(solve, inner_loss, method=o.hypergradient,
                                                   **kwargs)

    def one(phi, theta, aux, world):
        theta_k = inner_solution(jax.lax.stop_gradient(theta), phi, aux, world)
        j_p = bilevel.tabular_return(theta_k, world["transitions"], world["terminal"],
                                     world["primary"], gamma_p, world["start"])
        return j_p / world["optimum"], theta_k

    def loss_fn(phi, world, state):
        # phi moves only where world["learn"] = 1 (barfi); the baselines' phi get a zero
        # gradient, which leaves them fixed under Adam: one program for every variant
        phi = jax.tree.map(lambda x: world["learn"] * x
                           + (1.0 - world["learn"]) * jax.lax.stop_gradient(x), phi)
        ratios, theta = jax.vmap(one, in_axes=(0, 0, 0, None))(
            phi, state["theta"], world["auxiliary"], world)
        it = state["iteration"] + 1
        hit = jnp.where((state["iters_to_target"] < 0) & (ratios >= target), it,
                        state["iters_to_target"])
        metrics = {f"ratio_{a}": ratios[i] for i, a in enumerate(AUX)}
        metrics.update({f"gamma_{a}": bilevel.alignment_discount(phi["discount_logit"][i])
                        for i, a in enumerate(AUX)})
        new = {"theta": theta, "iteration": it, "iters_to_target": hit}
        return -jnp.sum(ratios), metrics, new

    return loss_fn


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    validate(config)
    if real_lib.is_real(config):
        return run_real(config, workdir)
    seeds = [int(s) for s in config.seeds]
    worlds = [world_of(config, s) for s in seeds]
    keys = ("transitions", "terminal", "primary", "auxiliary", "start", "optimum")
    data = {k: jnp.asarray(np.stack([w[k] for w in worlds])) for k in keys}
    data["learn"] = jnp.full((len(seeds),), float(config.method == "barfi"), jnp.float32)
    n = worlds[0]["primary"].shape[0]
    tx = optax.adam(float(config.outer.learning_rate))
    state0 = {"theta": jnp.zeros((len(AUX), n, 4), jnp.float32),
              "iteration": jnp.zeros((), jnp.int32),
              "iters_to_target": jnp.full((len(AUX),), -1, jnp.int32)}
    steps = int(config.outer.iterations)
    fit = fit_small(os.path.join(workdir, "bilevel"), loss_fn=make_loss(config),
                    init_params=init_phi(config, n), tx=tx, num_steps=steps, data=data,
                    seeds=seeds, per_seed_data=True, loss_state=state0,
                    steps_per_log=int(config.train.steps_per_log), checkpoint_every=5)
    last = fit.history[-1]  # the last update's metrics: the ratios of the final policies
    out = {}
    for i, (seed, world) in enumerate(zip(seeds, worlds)):
        phi = jax.tree.map(lambda x, i=i: np.asarray(x[i]), fit.params)
        hits = np.asarray(fit.loss_state["iters_to_target"][i])
        res = {}
        for j, aux in enumerate(AUX):
            res[f"test_ratio_{aux}"] = float(last[f"seed_{seed}/ratio_{aux}"])
            res[f"test_iters90_{aux}"] = float(hits[j] if hits[j] > 0 else steps + 1)
            res[f"gamma_{aux}"] = float(bilevel.alignment_discount(phi["discount_logit"][j]))
        w_b = phi["weight"][1]
        res["weight_near_distractor"] = float(w_b[world["near"]].mean())
        res["weight_elsewhere"] = float(w_b[~world["near"] & ~world["terminal"]].mean())
        res["weight_shaping_mean"] = float(phi["weight"][0][~world["terminal"]].mean())
        res["naive_optimum_ratio_distractor"] = float(world["naive_optimum_ratio"])
        out[seed] = res
    return out


def claims(results) -> list[protocol.Claim]:
    if set(results) == {"default"}:  # :real reports metrics; the toy claims are not evaluated
        return []
    mean = {v: {m: protocol.seed_mean(results, v, m) for m in
                ("test_ratio_distractor", "test_ratio_shaping", "test_iters90_shaping")}
            for v in results}
    detail = "; ".join(
        f"{v}: distractor ratio {mean[v]['test_ratio_distractor']:.3f}, shaping ratio "
        f"{mean[v]['test_ratio_shaping']:.3f}, iterations to 90% with shaping "
        f"{mean[v]['test_iters90_shaping']:.1f}" for v in results)
    naive_opt = protocol.per_seed(results, "naive", "naive_optimum_ratio_distractor")
    return [
        protocol.threshold(
            "with the misaligned distractor reward, BARFI's final primary return is >= 95% of "
            "the optimum", results, ("barfi", "test_ratio_distractor"), at_least=0.95,
            detail=detail),
        protocol.threshold(
            "with the misaligned distractor reward, the naive sum r_p + r_aux ends <= 50% of the "
            "optimum", results, ("naive", "test_ratio_distractor"), at_most=0.5, detail=detail),
        protocol.compare(
            "with the distractor reward, BARFI's primary return ratio exceeds the naive sum's "
            "by >= 0.45", results, ("barfi", "test_ratio_distractor"),
            ("naive", "test_ratio_distractor"), at_least=0.45, detail=detail),
        protocol.compare(
            "with the shaping reward, BARFI reaches 90% of the optimum in fewer outer iterations "
            "than r_p alone (difference <= -1; 20 inner steps per iteration for both)", results,
            ("barfi", "test_iters90_shaping"), ("primary", "test_iters90_shaping"),
            at_most=-1.0, detail=detail),
        protocol.sanity(
            "the naive sum's optimal policy under the distractor reward scores < 50% of the "
            "primary optimum on every seed", all(v < 0.5 for v in naive_opt.values()),
            {"max_ratio": max(naive_opt.values())},
            "by construction of the distractor's placement"),
    ]


def plots(results, workdir: str) -> list[str]:
    """The primary return ratio along the outer iterations, per variant and aux reward (mean
    over seeds)."""
    from alignax.train.plots import plot_curves
    from alignax.train.writers import read_metrics

    import json

    if set(results) == {"default"}:  # :real: its metrics only
        return []
    config = get_config()  # the loop logs every steps_per_log outer iterations
    saved = os.path.join(workdir, "config.json")
    if os.path.exists(saved):
        with open(saved) as f:
            config = ml_collections.ConfigDict(json.load(f))
    spl, total = int(config.train.steps_per_log), int(config.outer.iterations)
    curves = {}
    for variant in results:
        path = os.path.join(workdir, variant, "bilevel", "metrics.jsonl")
        if not os.path.exists(path):
            continue
        rows = read_metrics(path)
        for aux in AUX:
            curves[f"{variant}: {aux}"] = ([min(row["step"] * spl, total) for row in rows],
                                           [row[f"ratio_{aux}"] for row in rows])
    return [plot_curves(curves, os.path.join(workdir, "plots", "primary_return.png"),
                        title="primary return / optimum (mean over seeds)",
                        xlabel="outer iteration", ylabel="J_p / J_p*")]



# ----------------------------------------------------------------------------------------------
# :real: GRPO on a weighted sum of rule rewards, the weights learned on the validation primary
# reward by a zeroth-order outer step.

AUX_REWARDS = ("format", "brevity", "length")


def real_config() -> ml_collections.ConfigDict:
    """`:real` (see `run_real`): GRPO from `model.path` on the prompts of `data.path` with
    r_w = r_p + sum_k w_k r_aux_k, the weights w learned by the outer loop."""
    from alignax.algorithms import policy_gradient

    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real_lib.add_real_fields(c, max_length=512, answer_field="answer")
    c.reward = dict(answer_marker="", auxiliary=("format", "brevity"), init_weights=(1.0, 1.0))
    c.outer = dict(rounds=4, perturbation=0.5, learning_rate=1.0, eval_samples=4,
                   eval_temperature=1.0)
    c.grpo = policy_gradient.default_config(
        iterations=25, prompts_per_iteration=16, num_samples=8, max_new_tokens=512,
        temperature=1.0, advantage="grpo", kl_coef=0.02, epochs=1, minibatches=1,
        checkpoint_every=25, log_every=1, eval_every=0, optimizer=real_lib.optimizer(1e-6))
    c.grpo.stop_tokens = (-1,)  # -1: the tokenizer's eos
    return c


def validate_real(config) -> None:
    from alignax.algorithms import policy_gradient

    real_lib.require(config, "model.path", "data.path")
    aux = tuple(config.reward.auxiliary)
    unknown = [a for a in aux if a not in AUX_REWARDS]
    if unknown:
        raise ValueError(f"config.reward.auxiliary: unknown {unknown}; choose from {AUX_REWARDS}")
    if len(tuple(config.reward.init_weights)) != len(aux):
        raise ValueError(f"config.reward.init_weights needs {len(aux)} weights (one per "
                         f"config.reward.auxiliary), got {tuple(config.reward.init_weights)}")
    if int(config.outer.rounds) < 1:
        raise ValueError(f"config.outer.rounds must be >= 1, got {config.outer.rounds}")
    if not float(config.outer.perturbation) > 0:
        raise ValueError(f"config.outer.perturbation must be > 0, got {config.outer.perturbation}")
    if int(config.outer.eval_samples) < 1:
        raise ValueError(f"config.outer.eval_samples must be >= 1, got {config.outer.eval_samples}")
    policy_gradient.validate(real_lib.online_config(config, "grpo"))


def rule_rewards(texts, num_tokens, answers, *, marker: str, auxiliary, max_new_tokens: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The primary reward [N] and the auxiliary rewards [K, N] of N completions.

    primary: 1 when the completion's final answer (`real.final_answer(text, marker)`) equals
    the row's answer after stripping whitespace, else 0. Auxiliary (names in AUX_REWARDS):
      format:  1 when the completion gives an answer in the expected form (the marker occurs,
               or, with marker "", the completion is not empty);
      brevity: 1 - tokens / max_new_tokens (shorter is more);
      length:  tokens / max_new_tokens (longer is more).
    """
    num_tokens = np.asarray(num_tokens, np.float64)
    finals = [real_lib.final_answer(t, marker) for t in texts]
    primary = np.array([float(f is not None and f == str(a).strip())
                        for f, a in zip(finals, answers)], np.float32)
    table = {"format": np.array([float(f is not None and f != "") for f in finals]),
             "brevity": 1.0 - num_tokens / max_new_tokens,
             "length": num_tokens / max_new_tokens}
    aux = np.stack([table[a] for a in auxiliary]) if len(auxiliary) else np.zeros((0, len(texts)))
    return primary, aux.astype(np.float32)


def zeroth_order_step(weights, direction, value_plus: float, value_minus: float, *,
                      perturbation: float, learning_rate: float) -> np.ndarray:
    """One antithetic finite-difference (SPSA) ascent step on the weights [K]:

        g = (V(w + c delta) - V(w - c delta)) / (2 c) * delta,    w <- w + eta g,

    delta [K] a Rademacher direction, V the validation primary reward after inner training with
    those weights. E[g] is the gradient of a smoothed V (Spall 1992, "Multivariate stochastic
    approximation using a simultaneous perturbation gradient approximation")."""
    weights, direction = np.asarray(weights, np.float64), np.asarray(direction, np.float64)
    g = (float(value_plus) - float(value_minus)) / (2.0 * perturbation) * direction
    return weights + learning_rate * g


def run_real(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """`:real`: BARFI's outer loop over the weights of rule rewards for GRPO on a checkpoint.

    Inner problem: GRPO (`policy_gradient.train`) on r_w = r_p + sum_k w_k r_aux_k (primary:
    exact match of the final answer with `data.answer_field`; auxiliary: `reward.auxiliary`,
    see `rule_rewards`). Outer objective: the primary reward on the validation prompts (mean
    over `outer.eval_samples` sampled completions per prompt, at `outer.eval_temperature`).

    The outer step is an approximation, stated plainly: implicit or unrolled gradients through
    LM training are not affordable, and the weights are few, so each round takes one
    zeroth-order step (`zeroth_order_step`): from the current policy, two GRPO runs of
    `grpo.iterations` iterations with the weights w + c delta and w - c delta (the same seed,
    prompts and sampling keys: common random numbers), their validation primary rewards give
    the antithetic finite difference along delta, and w moves along it. The policy continues
    from the branch with the higher validation primary reward (ties: the + branch), so no
    inner training is thrown away. Budget: rounds x 2 x grpo.iterations GRPO iterations. Each
    branch is its own resumable run (`round_<r>/plus|minus`); the per-round weights, directions
    and validation values are in `<workdir>/outer.json`.

    Returns {seed: metrics}: val/test primary reward before and after, the final and starting
    weights (`weight_<name>`, `weight_<name>_start`), rounds.
    """
    import json

    from alignax.algorithms import online, policy_gradient, pretrained

    seed = int(config.seeds[0])
    tok = real_lib.tokenizer(config)
    field, marker = config.data.answer_field, str(config.reward.answer_marker)
    aux_names = tuple(config.reward.auxiliary)
    max_new = int(config.grpo.max_new_tokens)
    data = real_lib.prompt_data(config, tok, int(config.data.max_length), fields=(field,))
    model, ref_params = pretrained.model_and_params(real_lib.model_config(config), "lm",
                                                    seed=seed)
    stops = real_lib.stop_tokens(tok, config.grpo.stop_tokens)

    def scored(rollout, answers):
        texts = real_lib.decode_responses(tok, rollout.responses, rollout.response_mask)
        rows = np.asarray(rollout.prompt_index)
        lengths = np.asarray(rollout.response_mask).sum(-1)
        return rule_rewards(texts, lengths, [answers[i] for i in rows], marker=marker,
                            auxiliary=aux_names, max_new_tokens=max_new)

    def reward_fn_of(weights):
        w = np.asarray(weights, np.float32)

        def reward_fn(rollout):
            primary, aux = scored(rollout, data["train"][field])
            return primary + w @ aux if len(w) else primary

        return reward_fn

    k_eval = int(config.outer.eval_samples)
    sampler = jax.jit(online.make_rollout(
        model, num_samples=k_eval, temperature=float(config.outer.eval_temperature),
        max_new_tokens=max_new, stop_tokens=stops, pad_id=tok.pad_id))
    ids, mask, n_val = real_lib.held_out_prompts(data)
    held_answers = list(data["validation"][field]) + list(data["test"][field])

    def evaluate(params):  # the primary reward on validation and test, same key every time
        rollout = sampler(params, ids, mask.astype(bool), jax.random.key(seed + 7))
        primary, _ = scored(rollout, held_answers)
        rows = np.asarray(rollout.prompt_index)
        per_prompt = np.bincount(rows, primary, len(held_answers)) / np.bincount(
            rows, minlength=len(held_answers))
        return real_lib.split_means(per_prompt, n_val, "primary")

    before = evaluate(ref_params)
    weights = np.asarray(config.reward.init_weights, np.float64)
    start = weights.copy()
    params = ref_params
    cfg = real_lib.online_config(config, "grpo", stops)
    train = data["train"]
    c, lr = float(config.outer.perturbation), float(config.outer.learning_rate)
    records = []
    for r in range(int(config.outer.rounds)):
        delta = np.random.default_rng([seed, r, 2310]).choice([-1.0, 1.0], len(weights))
        branches = {}
        for name, sign in (("plus", 1.0), ("minus", -1.0)):
            w = weights + sign * c * delta
            out = policy_gradient.train(
                cfg, os.path.join(workdir, f"round_{r}", name), model=model, init_params=params,
                ref_params=ref_params, prompt_ids=train["prompt_ids"],
                prompt_mask=train["prompt_mask"], reward_fn=reward_fn_of(w),
                seed=seed * 1009 + r)
            branches[name] = (out["params"], evaluate(out["params"])["val_primary"], w)
        v_plus, v_minus = branches["plus"][1], branches["minus"][1]
        records.append({"round": r, "weights": weights.tolist(), "direction": delta.tolist(),
                        "val_primary_plus": v_plus, "val_primary_minus": v_minus})
        weights = zeroth_order_step(weights, delta, v_plus, v_minus, perturbation=c,
                                    learning_rate=lr)
        params = branches["plus" if v_plus >= v_minus else "minus"][0]
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "outer.json"), "w") as f:
            json.dump({"auxiliary": list(aux_names), "rounds": records,
                       "final_weights": weights.tolist()}, f, indent=1)
    after = evaluate(params)
    res = {**{f"{k}_before": v for k, v in before.items()},
           **{f"{k}_after": v for k, v in after.items()}, "rounds": float(len(records))}
    for name, w0, w in zip(aux_names, start, weights):
        res[f"weight_{name}"] = float(w)
        res[f"weight_{name}_start"] = float(w0)
    return {seed: res}
