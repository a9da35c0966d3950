"""Reward Generalization in RLHF: A Topological Perspective -- tree-structured preference data.

Paper: Qiu et al. 2024 (arXiv 2402.10184). With the same number of preference labels,
comparing responses that share prefixes (leaves of a response tree, branching factor b, depth d)
rather than independent responses ("chain" pairs) lowers the reward model's uncertainty and
improves its generalisation; best-of-N and RLHF with the tree-data RM beat the chain-data RM.

Setting: the bigram language testbed (alignax.tasks) with its additive per-token gold reward
(mean token score). The cached tiny SFT policy (1 layer, d_model 32) samples every response.
Chain data: per prompt two independent responses, one label. Tree data: per prompt a response
tree (b = 2, d = 3, segments of 4 tokens, 8 leaves; `alignax.sampling.tree.sample_tree`) and
`pairs_per_tree` leaf pairs drawn without replacement from the strategy's pairs
(`alignax.sampling.tree.tree_pairs`): "all" leaf pairs (the method) or only "siblings" (an
extra). Every data set has the same label budget (`num_pairs` BT labels from the gold reward).
One reward model per data set (the SFT decoder plus a fresh scalar head, Bradley-Terry, trained
jointly with vmap, same steps and seed) is evaluated on held-out independent pairs from the
policy (agreement with the gold ordering), by Spearman correlation with the gold reward over
held-out responses, and by best-of-N (N = 16) on held-out prompts. A diagnostic fits the ideal
learner for this gold, a bag-of-tokens linear BT model, on the same pairs (`*_linear_accuracy`).
Variants: the b = 2, d = 3 tree (the claims), a b = 4, d = 2 tree, and a 4x label budget.

Claims checked (3 seeds; a seed re-draws all data): (1) the tree-data RM gains >= 3 points of
held-out gold-preference accuracy over the chain-data RM; (2) best-of-N with the tree RM beats
best-of-N with the chain RM on gold reward at a win rate >= 55% (ties count 1/2).

    alignax run experiments/tree_preferences.py              # full setting
    alignax run experiments/tree_preferences.py:smoke        # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax.algorithms.cached import make_sft_policy
from alignax.eval.metrics import preference_accuracy, win_rate
from alignax.experiment import Claim, is_smoke
from alignax.losses.reward import bradley_terry_loss
from alignax.models.transformer import make_reward_model
from alignax.ops import spearman
from alignax.sampling.sampler import sample
from alignax.sampling.tree import sample_tree, tree_pairs
from alignax.tasks.gold import token_score_reward
from alignax.tasks.language import BOS_ID
from alignax.tasks.simulators import bradley_terry
from alignax.tasks.policies import sft_policy_config
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small

DATASETS = ("chain", "tree", "tree_siblings")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2]
    # the method's tree (b = 2, d = 3); a wider, shallower tree; a 4x larger label budget
    c.variants = {"b2_d3": {}}
    if not smoke:
        c.variants.update({"b4_d2": {"branching": 4, "depth": 2},
                           "b2_d3_budget2048": {"num_pairs": 2048}})
    c.cache_dir = ""  # SFT policy cache; "" = <workdir>/cache, shared by variants and seeds
    task = dict(vocab_size=32, prompt_len=4, response_len=12, concentration=0.5,
                label_temperature=0.05, seed=0)
    c.policy = sft_policy_config(task=task, model=dict(d_model=32, n_layers=1, n_heads=2,
                                                       d_ff=64),
                                 num_sequences=2048 if not smoke else 128,
                                 train=dict(steps=300 if not smoke else 5, batch_size=64,
                                            checkpoint_every=10_000, log_every=100,
                                            eval_every=0, progress=False))
    c.branching, c.depth, c.pairs_per_tree = 2, 3, 4  # the response tree
    c.num_pairs = 512 if not smoke else 16  # the label budget of every data set
    c.label_temperature = 0.1
    c.train = dict(steps=300 if not smoke else 4, batch_size=32, learning_rate=1e-3)
    c.num_eval_pairs = 1024 if not smoke else 16
    c.num_bon_prompts = 256 if not smoke else 8
    c.bon_n = 16 if not smoke else 4
    return c


def _prompt_ids(prompts):
    return np.concatenate([np.full((len(prompts), 1), BOS_ID, np.int32), prompts], axis=1)


def _label(a, b, gold_a, gold_b, rng, temperature):
    """(chosen, rejected) [M, T] from BT draws on the gold rewards of sequences a, b [M, T]."""
    a_wins = np.asarray(bradley_terry(gold_a, gold_b, rng=rng, temperature=temperature)) > 0.5
    return np.where(a_wins[:, None], a, b), np.where(a_wins[:, None], b, a)


def chain_data(policy, prompts, key):
    """Two independent responses per prompt: sequences a, b [M, T]."""
    ids = _prompt_ids(prompts)
    out = sample(policy.model, policy.params, jnp.asarray(ids), jnp.ones(ids.shape, bool), key,
                 max_new_tokens=policy.task.response_len, num_samples=2)
    seqs = np.concatenate([np.asarray(out.prompt_ids), np.asarray(out.tokens)], axis=1)
    return seqs[0::2], seqs[1::2]


def tree_data(policy, prompts, key, rng, *, branching, depth, pairs_per_tree, strategy):
    """`pairs_per_tree` leaf pairs of one response tree per prompt: sequences a, b [M, T]."""
    r = policy.task.response_len
    if r % depth:
        raise ValueError(f"response_len {r} is not a multiple of the tree depth {depth}")
    ids = _prompt_ids(prompts)
    tree = sample_tree(policy.model, policy.params, jnp.asarray(ids), jnp.ones(ids.shape, bool),
                       key, branching=branching, depth=depth, segment_len=r // depth)
    candidates = tree_pairs(branching, depth, strategy)
    if pairs_per_tree > len(candidates):
        raise ValueError(f"{strategy!r} has {len(candidates)} pairs per tree < "
                         f"{pairs_per_tree}")
    tokens, prompt_ids = np.asarray(tree.tokens), np.asarray(tree.prompt_ids)
    a, b = [], []
    for i in range(len(prompts)):
        pick = candidates[rng.choice(len(candidates), pairs_per_tree, replace=False)]
        for x, y in pick:
            a.append(np.concatenate([prompt_ids[i], tokens[i, x]]))
            b.append(np.concatenate([prompt_ids[i], tokens[i, y]]))
    return np.stack(a), np.stack(b)


def train_rms(workdir: str, rm, init_params, chosen, rejected, seeds, labels, *, steps,
              batch_size, learning_rate):
    """Bradley-Terry training of one RM per row (a seed's data set), all rows in one program.

    init_params: RM params stacked [R, ...] (row r starts from row r); chosen/rejected
    [R, M, T]; seeds [R]: row r draws its batch indices from `jax.random.key(seeds[r])`, so the
    data sets of one seed see the same indices and differ only in their data; labels [R]:
    distinct ints naming the rows in the metrics. Returns the `SmallFit` (params [R, ...])."""
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
    mask = jnp.ones((2 * batch_size, chosen.shape[-1]), bool)

    def loss_fn(params, batch):
        rewards = rm.apply(params, jnp.concatenate([batch["chosen"], batch["rejected"]]), mask)
        return bradley_terry_loss(rewards[:batch_size], rewards[batch_size:]).mean()

    def batch_fn(data, rng):
        idx = jax.random.randint(rng, (batch_size,), 0, data["chosen"].shape[0])
        return {"chosen": data["chosen"][idx], "rejected": data["rejected"][idx]}

    return fit_small(workdir, loss_fn=loss_fn, init_params=init_params, per_seed_init=True,
                     tx=tx, num_steps=steps,
                     data={"chosen": jnp.asarray(chosen), "rejected": jnp.asarray(rejected)},
                     seeds=labels, seed_keys=jnp.stack([jax.random.key(int(s)) for s in seeds]),
                     per_seed_data=True, batch_fn=batch_fn, desc="reward models")


def _token_counts(seqs, vocab_size: int, prompt_len: int) -> np.ndarray:
    """Bag-of-tokens features of the responses: counts(y) / R, [..., V] for seqs [..., T]."""
    resp = np.asarray(seqs)[..., prompt_len:]
    flat = resp.reshape(-1, resp.shape[-1])
    out = np.zeros((len(flat), vocab_size))
    np.add.at(out, (np.arange(len(flat))[:, None], flat), 1.0)
    return out.reshape(*resp.shape[:-1], vocab_size) / resp.shape[-1]


def linear_bt_accuracy(workdir: str, chosen, rejected, eval_a, eval_b, gold_margin, *,
                       vocab_size, prompt_len, labels, steps=2000, learning_rate=5.0, l2=1e-3):
    """Held-out gold accuracy of a bag-of-tokens BT model per row, r(y) = w . counts(y) / R,
    fit by full-batch gradient descent from w = 0 on the mean BT loss plus l2/2 |w|^2 (all rows
    in one `fit_small` program): the ideal learner for the additive gold, a diagnostic of the
    data alone (no transformer optimisation in the way).

    chosen/rejected [R, M, T] (the training pairs of each row), eval_a/eval_b [R, N, T],
    gold_margin [R, N] (gold(a) - gold(b)); labels [R] name the rows. Returns [R] accuracies."""
    x = _token_counts(chosen, vocab_size, prompt_len) - _token_counts(rejected, vocab_size,
                                                                      prompt_len)

    def loss_fn(w, x):  # the chosen one is better under the label
        return jnp.mean(jax.nn.softplus(-(x @ w))) + 0.5 * l2 * jnp.sum(w * w)

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=jnp.zeros(vocab_size, jnp.float32),
                    tx=optax.sgd(learning_rate), num_steps=steps,
                    data=jnp.asarray(x, jnp.float32), seeds=labels, per_seed_data=True,
                    desc="linear BT")
    w = np.asarray(fit.params, np.float64)
    margins = np.einsum("rnv,rv->rn", _token_counts(eval_a, vocab_size, prompt_len)
                        - _token_counts(eval_b, vocab_size, prompt_len), w)
    return np.array([float(preference_accuracy(m, g)) for m, g in zip(margins, gold_margin)])


def _seed_data(config, policy, seed: int):
    """One seed's labelled pairs of every data set, chosen/rejected [K, M, T], and its data
    statistics."""
    task = policy.task
    scores = task.token_scores()
    p = 1 + task.prompt_len

    def gold(seqs):
        return np.asarray(token_score_reward(seqs[:, p:], scores))

    rng = np.random.default_rng([seed, 33])
    keys = jax.random.split(jax.random.key(seed), 4)
    budget, t = int(config.num_pairs), float(config.label_temperature)
    per_tree = int(config.pairs_per_tree)
    n_trees = -(-budget // per_tree)
    data = {"chain": chain_data(policy, task.sample_prompts(rng, budget), keys[0])}
    for name, strategy, key in (("tree", "all", keys[1]), ("tree_siblings", "siblings",
                                                          keys[2])):
        a, b = tree_data(policy, task.sample_prompts(rng, n_trees), key, rng,
                         branching=int(config.branching), depth=int(config.depth),
                         pairs_per_tree=per_tree, strategy=strategy)
        data[name] = (a[:budget], b[:budget])
    chosen, rejected = [], []
    result = {}
    for name in DATASETS:
        a, b = data[name]
        c, r = _label(a, b, gold(a), gold(b), rng, t)
        chosen.append(c)
        rejected.append(r)
        result[f"{name}_train_gold_gap"] = float(np.abs(gold(a) - gold(b)).mean())
        result[f"{name}_distinct_responses"] = float(len(np.unique(np.concatenate([a, b]),
                                                                   axis=0)))
    return np.stack(chosen), np.stack(rejected), result


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed's data sets; the RMs of all seeds and data sets in one program
    (<workdir>/reward_models), the linear diagnostic likewise (<workdir>/linear_bt); then the
    held-out evaluation and best-of-N per seed. Rows are (seed s, data set k), named
    100 s + k in the fits' metrics."""
    seeds = [int(s) for s in config.seeds]
    cache = config.cache_dir or os.path.join(os.path.dirname(workdir), "cache")
    policy = make_sft_policy(config.policy.to_dict(), cache_dir=cache)
    task = policy.task
    scores = task.token_scores()
    p = 1 + task.prompt_len
    kd = len(DATASETS)

    def gold(seqs):
        return np.asarray(token_score_reward(seqs[:, p:], scores))

    per_seed = [_seed_data(config, policy, seed) for seed in seeds]
    chosen = np.concatenate([c for c, _, _ in per_seed])      # [S K, M, T]
    rejected = np.concatenate([r for _, r, _ in per_seed])
    rows = [100 * seed + k for seed in seeds for k in range(kd)]

    # held-out independent pairs from the policy (per seed)
    evals = []
    for seed in seeds:
        ev_prompts = task.eval_prompts(int(config.num_eval_pairs), 80 + seed)
        evals.append(chain_data(policy, ev_prompts, jax.random.split(jax.random.key(seed),
                                                                      4)[3]))

    rm = make_reward_model(policy.model.config)
    heads = [rm.init(jax.random.key(seed))["score"] for seed in seeds for _ in range(kd)]
    init = {"decoder": jax.tree.map(lambda x: np.stack([x] * len(rows)),
                                    policy.params["decoder"]),
            "score": jax.tree.map(lambda *x: np.stack(x), *heads)}
    tr = config.train
    fit = train_rms(os.path.join(workdir, "reward_models"), rm, init, chosen, rejected,
                    [seed for seed in seeds for _ in range(kd)], rows, steps=int(tr.steps),
                    batch_size=int(tr.batch_size), learning_rate=float(tr.learning_rate))
    linear = linear_bt_accuracy(
        os.path.join(workdir, "linear_bt"), chosen, rejected,
        np.stack([ea for ea, _ in evals for _ in range(kd)]),
        np.stack([eb for _, eb in evals for _ in range(kd)]),
        np.stack([gold(ea) - gold(eb) for ea, eb in evals for _ in range(kd)]),
        vocab_size=task.vocab_size, prompt_len=p, labels=rows).reshape(len(seeds), kd)
    score_fn = jax.jit(jax.vmap(rm.apply, in_axes=(0, None, None)))

    out = {}
    for i, seed in enumerate(seeds):
        params = jax.tree.map(lambda x: x[i * kd:(i + 1) * kd], fit.params)

        def score(x, params=params):
            return np.asarray(score_fn(params, x, np.ones(x.shape, bool)))

        result = dict(per_seed[i][2])
        ea, eb = evals[i]
        # held-out independent pairs: agreement with the gold ordering
        margins = score(ea) - score(eb)  # [K, N]
        gold_margin = gold(ea) - gold(eb)
        all_resp = np.concatenate([ea, eb])
        rm_all = np.concatenate([score(ea), score(eb)], axis=1)
        for k, name in enumerate(DATASETS):
            result[f"{name}_accuracy"] = float(preference_accuracy(margins[k], gold_margin))
            result[f"{name}_spearman"] = float(spearman(rm_all[k], gold(all_resp)))
            result[f"{name}_linear_accuracy"] = float(linear[i, k])

        # best-of-N on held-out prompts: the same N candidates, picked by each RM
        n = int(config.bon_n)
        bon_prompts = task.eval_prompts(int(config.num_bon_prompts), 90 + seed)
        ids = _prompt_ids(bon_prompts)
        out_s = sample(policy.model, policy.params, jnp.asarray(ids), jnp.ones(ids.shape, bool),
                       jax.random.fold_in(jax.random.split(jax.random.key(seed), 4)[3], 1),
                       max_new_tokens=task.response_len, num_samples=n)
        cand = np.concatenate([np.asarray(out_s.prompt_ids), np.asarray(out_s.tokens)], axis=1)
        cand_gold = gold(cand).reshape(-1, n)
        cand_rm = score(cand).reshape(kd, -1, n)
        picks = np.arange(cand_gold.shape[0])
        picked = {name: cand_gold[picks, np.argmax(cand_rm[k], axis=1)]
                  for k, name in enumerate(DATASETS)}
        for name in DATASETS:
            result[f"{name}_bon_gold"] = float(picked[name].mean())
        result["oracle_bon_gold"] = float(cand_gold.max(axis=1).mean())
        result["policy_gold"] = float(cand_gold.mean())
        for name in DATASETS[1:]:
            result[f"{name}_win_rate_vs_chain"] = float(win_rate(picked[name], picked["chain"]))
            decided = picked[name] != picked["chain"]
            result[f"{name}_win_rate_decided"] = (
                float(np.mean(picked[name][decided] > picked["chain"][decided]))
                if decided.any() else 0.5)
        result["accuracy_gain"] = result["tree_accuracy"] - result["chain_accuracy"]
        result["spearman_gain"] = result["tree_spearman"] - result["chain_spearman"]
        out[seed] = result
    return out


def claims(results) -> list[Claim]:
    v = "b2_d3" if "b2_d3" in results else next(iter(results))
    per = results[v]["per_seed"].values()

    def mean(key):
        return float(np.mean([m[key] for m in per]))

    others = {f"{o}_{k}": float(np.mean([m[k] for m in r["per_seed"].values()]))
              for o, r in results.items() if o != v
              for k in ("accuracy_gain", "tree_win_rate_vs_chain")}

    gain = mean("accuracy_gain")
    wr = mean("tree_win_rate_vs_chain")
    return [
        Claim(name=f"[{v}] the tree-data RM gains >= 3 points of held-out gold-preference "
                   "accuracy over the chain-data RM at an equal label budget",
              passed=bool(gain >= 0.03),
              measured={"tree_accuracy": mean("tree_accuracy"),
                        "chain_accuracy": mean("chain_accuracy"), "accuracy_gain": gain,
                        "spearman_gain": mean("spearman_gain"),
                        "tree_siblings_accuracy": mean("tree_siblings_accuracy"),
                        "chain_linear_accuracy": mean("chain_linear_accuracy"),
                        "tree_linear_accuracy": mean("tree_linear_accuracy"), **others},
              detail=f"tree {mean('tree_accuracy'):.4f} vs chain {mean('chain_accuracy'):.4f} "
                     f"(gain {100 * gain:.2f} points); Spearman gain "
                     f"{mean('spearman_gain'):.4f}"),
        Claim(name=f"[{v}] best-of-N with the tree RM beats the chain RM on gold at a >= 55% "
                   "win rate",
              passed=bool(wr >= 0.55),
              measured={"win_rate": wr, "win_rate_decided": mean("tree_win_rate_decided"),
                        "tree_bon_gold": mean("tree_bon_gold"),
                        "chain_bon_gold": mean("chain_bon_gold"),
                        "oracle_bon_gold": mean("oracle_bon_gold")},
              detail=f"win rate {wr:.3f} (ties 1/2); gold {mean('tree_bon_gold'):.4f} vs "
                     f"{mean('chain_bon_gold'):.4f}"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Held-out accuracy, Spearman and best-of-N gold per data set and variant (mean +- std)."""
    names = list(results)
    paths = []
    for key, label in (("accuracy", "held-out gold-pref accuracy"),
                       ("spearman", "Spearman with gold"), ("bon_gold", "best-of-N gold")):
        stats = {d: ([results[v]["metrics"][f"{d}_{key}"]["mean"] for v in names],
                     [results[v]["metrics"][f"{d}_{key}"]["std"] for v in names])
                 for d in DATASETS}
        paths.append(plot_grouped_bars(
            names, stats, os.path.join(workdir, "plots", f"tree_vs_chain_{key}.png"),
            title=f"Equal label budget, chain vs tree pairs: {label}", ylabel=label))
    return paths
