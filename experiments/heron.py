"""HERON: reward learning from a hierarchy of reward factors instead of hand-tuned weights.

Paper: Bukharin et al. 2023, "Deep Reinforcement Learning from Hierarchical Weak Preference
Feedback" (arXiv 2309.02632). When a reward is a weighted sum of factors, the weights are hard to
tune; HERON asks only for the factors' order of importance, labels pairs of trajectories with the
hierarchical comparator (the first factor whose difference exceeds its margin decides;
`alignax.tasks.hierarchical.hierarchical_preference`), fits a Bradley-Terry reward model to those
labels and optimises a policy on the (normalised) learned reward.

Setting: an 8x8 gridworld with slippery moves (with probability `slip` a uniformly random move is
taken), start in the top-left corner, terminal goal in the bottom-right corner and two lava walls
(row 3 open only at the right end, row 5 open only at the left end). Crossing the walls reaches the
goal in 14 steps; the lava-free detour takes 28. Factors in order: reach the goal > fewer lava
contacts (steps that end on lava) > fewer steps. The gold order is lexicographic; the hand-made
"gold-shaped" reward is +100 for the goal, -5 per lava contact, -0.1 per step, and its optimal
policy is the reference.
  - `heron`: a trajectory buffer from 20 behaviour policies (greedy on random factor weightings,
    epsilon-noised), random pairs labelled by the comparator with margins (0, 0, `step_margin`),
    undecided pairs dropped; a linear reward on transitions, r(s, a, s') = w . (1, [s' = goal],
    [s' is lava]) (planned on through its expectation over s'), fitted by
    `alignax.losses.reward.bradley_terry_loss` on trajectory returns (full-batch Adam,
    `alignax.train.small.fit_small`),
    divided by its standard deviation over the buffer, then planned on.
  - `linear_random`: 10 random weightings (Dirichlet(1, 1, 1) magnitudes of goal, lava and step);
    the reported numbers are the medians over the 10 policies.
  - `gold_reward`: the gold-shaped reward.
The policy step is exact planning instead of PPO: value iteration (gamma = 0.999, hard max) on the
reward, greedy policy. Every policy is scored on 2000 rollouts of at most 60 steps from the start:
success rate, lava contacts, steps, and the realised gold-shaped return.

Claims checked: HERON's success rate >= 95%; its lava contacts within 0.1 of the gold-reward
policy's; its gold-shaped return within 5% of the gold-reward policy's; and above the median
return of the 10 randomly weighted linear rewards.

    alignax run experiments/heron.py            # full setting, 3 seeds
    alignax run experiments/heron.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.experiment import Claim, is_smoke, metric
from alignax.losses.reward import bradley_terry_loss
from alignax.tasks import mdp as mdp_lib
from alignax.tasks.hierarchical import hierarchical_preference
from alignax.train.plots import plot_variant_bars
from alignax.train.small import fit_small

METHODS = ("heron", "linear_random", "gold_reward")
SIZE = 8
GOLD = dict(goal=100.0, lava=5.0, step=0.1)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    c.method = "heron"
    c.variants = {m: {"method": m} for m in METHODS}
    c.env = dict(slip=0.1, gamma=0.999, vi_iters=150 if smoke else 600, horizon=60)
    c.data = dict(num_behaviour=20, episodes_per_policy=10 if smoke else 100,
                  max_epsilon=0.5, num_pairs=500 if smoke else 20000, step_margin=2.0)
    c.train = dict(steps=100 if smoke else 3000, learning_rate=0.2, weight_decay=1e-4)
    c.eval = dict(episodes=300 if smoke else 2000, num_weightings=10)
    return c


def make_env(slip: float, gamma: float):
    """The two-wall lava grid: (TabularMDP with features [S, 4, 3] = step, goal, lava), lava [S]."""
    n = SIZE * SIZE
    lava = np.zeros(n, bool)
    lava[[3 * SIZE + c for c in range(SIZE - 1)]] = True
    lava[[5 * SIZE + c for c in range(1, SIZE)]] = True
    goal = n - 1
    terminal = np.zeros(n, bool)
    terminal[goal] = True
    moves = np.zeros((n, 4), np.int64)
    for s in range(n):
        r, c = divmod(s, SIZE)
        for a, (dr, dc) in enumerate(mdp_lib.GRID_MOVES):
            r2, c2 = r + dr, c + dc
            moves[s, a] = r2 * SIZE + c2 if 0 <= r2 < SIZE and 0 <= c2 < SIZE else s
    p = np.zeros((n, 4, n), np.float32)
    for s in range(n):
        for a in range(4):
            if terminal[s]:
                p[s, a, s] = 1.0
                continue
            p[s, a, moves[s, a]] += 1.0 - slip
            for b in range(4):
                p[s, a, moves[s, b]] += slip / 4
    features = np.stack([np.ones((n, 4)), p[..., goal], p @ lava.astype(np.float32)], -1)
    features = np.where(terminal[:, None, None], 0.0, features).astype(np.float32)
    start = np.zeros(n, np.float32)
    start[0] = 1.0
    return mdp_lib.TabularMDP(p, features, terminal, start, gamma), lava


def factor_weights(goal, lava, step):
    """Linear weights on the (step, goal, lava) features."""
    return jnp.stack([-jnp.asarray(step), jnp.asarray(goal), -jnp.asarray(lava)], -1)


def _plan(mdp, weights, vi_iters):
    """Greedy policy [S, A] of hard value iteration on phi.w (vmapped over leading axes of w)."""
    def one(w):
        _, q = mdp_lib.value_iteration(mdp, mdp.reward(w), num_iters=vi_iters)
        return mdp_lib.greedy_policy(q)
    return jax.jit(jax.vmap(one))(jnp.atleast_2d(weights))


def _trajectory_factors(seg, lava, goal):
    """(reached goal, lava contacts, steps), each [N]."""
    entered = lava[seg.states[:, 1:]] & seg.valid
    return (seg.states[:, -1] == goal).astype(np.float32), entered.sum(-1).astype(
        np.float32), seg.valid.sum(-1).astype(np.float32)


def _evaluate(mdp, lava, policy, episodes, horizon, rng):
    seg = mdp_lib.sample_segments(mdp, rng, episodes, horizon, policy=np.asarray(policy),
                                  from_start=True)
    reached, contacts, steps = _trajectory_factors(seg, lava, mdp.num_states - 1)
    ret = GOLD["goal"] * reached - GOLD["lava"] * contacts - GOLD["step"] * steps
    return {"success": float(reached.mean()), "lava": float(contacts.mean()),
            "steps": float(steps.mean()), "return": float(ret.mean())}


def _random_weightings(rng, k):
    mags = rng.dirichlet(np.ones(3), size=k)  # columns: goal, lava, step
    return factor_weights(mags[:, 0], mags[:, 1], mags[:, 2])


def _heron_reward(mdp, lava, config, rng, seed: int, workdir: str):
    """Buffer -> hierarchical labels -> BT-fitted linear reward (normalised). Returns w [3].

    The reward is fitted by full-batch Adam (`fit_small`, init from `jax.random.key(seed)`)
    into `workdir`.
    """
    dc = config.data
    behaviour = _plan(mdp, _random_weightings(rng, dc.num_behaviour), config.env.vi_iters)
    segs = []
    for pi in np.asarray(behaviour):
        eps = rng.uniform(0.0, dc.max_epsilon)
        noisy = (1 - eps) * pi + eps / mdp.num_actions
        segs.append(mdp_lib.sample_segments(mdp, rng, dc.episodes_per_policy, config.env.horizon,
                                            policy=noisy, from_start=True))
    states = np.concatenate([s.states for s in segs])
    actions = np.concatenate([s.actions for s in segs])
    valid = np.concatenate([s.valid for s in segs])
    reached, contacts, steps = _trajectory_factors(
        mdp_lib.Segments(states, actions, valid), lava, mdp.num_states - 1)
    factors = np.stack([reached, -contacts, -steps], -1)  # higher is better
    i = rng.integers(0, len(states), dc.num_pairs)
    j = rng.integers(0, len(states), dc.num_pairs)
    labels, levels = hierarchical_preference(factors[i], factors[j],
                                             np.array([0.0, 0.0, dc.step_margin]))
    labels, levels = np.asarray(labels), np.asarray(levels)
    keep = levels < factors.shape[1]
    chosen = np.where(labels[keep] > 0.5, i[keep], j[keep])
    rejected = np.where(labels[keep] > 0.5, j[keep], i[keep])
    # The reward model scores transitions, r(s, a, s') = w . (1, [s' = goal], [s' is lava]), so a
    # trajectory's return is w . (steps, reached, contacts); the planner uses its expectation
    # over s', w . phi(s, a).
    traj_phi = jnp.asarray(np.stack([steps, reached, contacts], -1))
    phi = np.asarray(mdp.features)[states[:, :-1], actions] * valid[..., None]
    c_idx, r_idx = jnp.asarray(chosen), jnp.asarray(rejected)
    tc = config.train

    def loss_fn(w, d):
        ret = d["traj_phi"] @ w
        nll = jnp.mean(bradley_terry_loss(ret[d["chosen"]], ret[d["rejected"]]))
        return nll + tc.weight_decay * jnp.sum(w**2)

    fit = fit_small(workdir, loss_fn=loss_fn,
                    init_params=lambda key: 0.1 * jax.random.normal(key, (3,)),
                    tx=optax.adam(tc.learning_rate), num_steps=int(tc.steps),
                    data={"traj_phi": traj_phi, "chosen": c_idx, "rejected": r_idx},
                    seeds=[seed])
    w = fit.seed_params(0)
    # Normalise the learned reward by its standard deviation over the buffer's steps.
    step_r = phi[valid] @ np.asarray(w)
    w = w / max(float(step_r.std()), 1e-6)
    accuracy = float(np.mean((traj_phi @ w)[c_idx] > (traj_phi @ w)[r_idx]))
    info = {"rm_final_loss": float(fit.final_loss[0]), "rm_train_accuracy": accuracy,
            "frac_decided": float(keep.mean()),
            "frac_level_goal": float(np.mean(levels == 0)),
            "frac_level_lava": float(np.mean(levels == 1)),
            "frac_level_steps": float(np.mean(levels == 2))}
    return w, info


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    if config.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {config.method!r}")
    seed = int(config.seed)
    rng = np.random.default_rng([seed, 58])
    mdp, lava = make_env(config.env.slip, config.env.gamma)
    ev = config.eval
    evaluate = lambda pi: _evaluate(mdp, lava, pi, ev.episodes, config.env.horizon,  # noqa: E731
                                    np.random.default_rng([seed, 99]))
    if config.method == "gold_reward":
        w = factor_weights(GOLD["goal"], GOLD["lava"], GOLD["step"])
        return evaluate(_plan(mdp, w, config.env.vi_iters)[0])
    if config.method == "linear_random":
        policies = _plan(mdp, _random_weightings(rng, ev.num_weightings), config.env.vi_iters)
        per = [evaluate(pi) for pi in np.asarray(policies)]
        out = {k: float(np.median([p[k] for p in per])) for k in per[0]}
        out.update({f"{k}_mean": float(np.mean([p[k] for p in per])) for k in per[0]})
        out["return_min"] = float(np.min([p["return"] for p in per]))
        return out
    w, info = _heron_reward(mdp, lava, config, rng, seed, os.path.join(workdir, "reward_model"))
    out = evaluate(_plan(mdp, w, config.env.vi_iters)[0])
    out.update(info)
    w = np.asarray(w)
    out.update({"w_step": float(w[0]), "w_goal": float(w[1]), "w_lava": float(w[2])})
    return out


def claims(results) -> list[Claim]:
    m = lambda v, k: metric(results, v, k)  # noqa: E731
    s = lambda v, k: results[v]["metrics"][k]["std"]  # noqa: E731
    succ, lava_h, lava_g = m("heron", "success"), m("heron", "lava"), m("gold_reward", "lava")
    ret_h, ret_g, ret_l = m("heron", "return"), m("gold_reward", "return"), m(
        "linear_random", "return")
    ratio = ret_h / ret_g
    return [
        Claim(
            name="HERON policy reaches the goal in >= 95% of episodes",
            passed=succ >= 0.95, measured={"heron_success": succ},
            detail=f"success {succ:.3f} +- {s('heron', 'success'):.3f}",
        ),
        Claim(
            name="HERON's lava contacts are about optimal (within 0.1 of the gold-reward policy)",
            passed=lava_h <= lava_g + 0.1,
            measured={"heron_lava": lava_h, "gold_reward_lava": lava_g},
            detail=f"heron {lava_h:.3f} +- {s('heron', 'lava'):.3f}, gold reward "
                   f"{lava_g:.3f} +- {s('gold_reward', 'lava'):.3f}",
        ),
        Claim(
            name="HERON's gold-shaped return is within 5% of the gold-reward policy's",
            passed=ratio >= 0.95,
            measured={"heron_return": ret_h, "gold_reward_return": ret_g, "ratio": ratio},
            detail=f"heron {ret_h:.2f} +- {s('heron', 'return'):.2f}, gold reward {ret_g:.2f} "
                   f"+- {s('gold_reward', 'return'):.2f} (ratio {ratio:.3f}, threshold 0.95)",
        ),
        Claim(
            name="HERON beats the median of 10 randomly weighted linear rewards in return",
            passed=ret_h > ret_l,
            measured={"heron_return": ret_h, "linear_random_median_return": ret_l},
            detail=f"heron {ret_h:.2f}, median linear weighting {ret_l:.2f} +- "
                   f"{s('linear_random', 'return'):.2f}",
        ),
    ]


def plots(results, workdir: str) -> list[str]:
    """Bar charts: success rate, lava contacts and gold-shaped return per method."""
    if not any(v in results for v in METHODS):
        return []
    return [plot_variant_bars(
        results, [("success", "success rate"), ("lava", "lava contacts"),
                  ("return", "gold-shaped return")],
        os.path.join(workdir, "plots", "heron_bars.png"),
        title="HERON vs random linear weightings vs the gold-shaped reward", variants=METHODS)]
