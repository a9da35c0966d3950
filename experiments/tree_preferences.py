"""Reward Generalization in RLHF: A Topological Perspective -- tree-structured preference data.

Paper: Qiu et al. 2024 (arXiv 2402.10184). With the same number of preference labels,
comparing responses that share prefixes (leaves of a response tree, branching factor b, depth d)
rather than independent responses ("chain" pairs) lowers the reward model's uncertainty and
improves its generalisation; best-of-N and RLHF with the tree-data RM beat the chain-data RM.

Setting: the bigram language testbed (alignax.tasks). The cached tiny SFT policy (1 layer,
d_model 32) samples every response (12 tokens). The gold reward is, by default, not additive over
tokens (`gold_kind="interaction"`): `alignax.tasks.path_gold.SegmentInteractionReward` cuts the
response into 3 segments of 4 tokens (the segments of the depth-3 tree) and scores the bilinear
interaction of each segment's mean token embedding with the previous segment's, so a
continuation's credit depends on its context and a shared prefix does not cancel out of a
comparison. Its world (embeddings, interaction matrix) is drawn from the experiment seed; its
scale makes its spread over the language's responses equal to the additive gold's, so the label
temperature (0.1) has the same meaning as before. The previous version of this experiment used
the additive gold (mean token score), under which the paper's mechanism cannot show (a shared
prefix cancels); it is kept as the variant `b2_d3_additive`.

Chain data: per prompt two independent responses, one label. Tree data: per prompt a response
tree (b = 2, d = 3, segments of 4 tokens, 8 leaves; `alignax.sampling.tree.sample_tree`) and
`pairs_per_tree` leaf pairs drawn without replacement from the strategy's pairs
(`alignax.sampling.tree.tree_pairs`): "all" leaf pairs (the method) or only "siblings" (an
extra). Every data set has the same label budget (`num_pairs` BT labels from the gold reward).
One reward model per data set (the SFT decoder plus a fresh scalar head, Bradley-Terry, trained
jointly with vmap, same steps and seed).

Splits (docs/protocol.md): experiment seed s draws the training prompts, trees, chains and
labels from data seed `split_seeds(s).train` (3s), 512 validation pairs (independent responses,
BT labels like the training labels) from `.validation` (3s + 1), and the test pairs (1024
independent pairs from the policy) and the best-of-N prompts from `.test` (3s + 2). The heads'
initialisation and the minibatch order use the experiment seed.

Selection on validation, the same for every data set: each RM trains for 300 steps and keeps the
logged step (every 25) with the best validation pair accuracy (`fit_small(select=
("val_accuracy", "max"))`); `chosen_steps_<data>` and `val_accuracy_<data>` are recorded. The
learning rate, label temperature and tree shape are the first version's (not tuned).

Test metrics (`test_*`): agreement with the gold ordering on the test pairs
(`test_<data>_accuracy`), Spearman correlation with the gold reward over their responses, and
best-of-N (N = 16) gold on the test prompts (the same candidates, picked by each RM). A
diagnostic fits the ideal learner of the gold on the same pairs: a linear BT model on the gold's
own features (bag of tokens for the additive gold, bag of consecutive-segment token pairs for
the interaction gold; full-batch gradient descent, fixed l2 and steps; `test_*_linear_accuracy`).
Variants: the b = 2, d = 3 tree (the claims) and the same with the additive gold (the previous
setting). The previous version's other variants (a b = 4, d = 2 tree, a 4x label budget) are
not in the full setting any more (time: 5 seeds of four variants did not fit the shared machine).

Claims (5 seeds; a seed re-draws all data and the gold's world; 95% t intervals over seeds):
(1) comparative: the tree-data RM gains >= 3 points of test gold-preference accuracy over the
chain-data RM (b2_d3, interaction gold); (2) threshold: best-of-N with the tree RM beats
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
from alignax import protocol
from alignax.experiment import is_smoke
from alignax.losses.reward import bradley_terry_loss
from alignax.models.transformer import make_reward_model
from alignax.ops import spearman
from alignax.sampling.sampler import sample
from alignax.sampling.tree import sample_tree, tree_pairs
from alignax.tasks.gold import token_score_reward
from alignax.tasks.language import BOS_ID, NUM_SPECIAL
from alignax.tasks.path_gold import SegmentInteractionReward
from alignax.tasks.simulators import bradley_terry
from alignax.tasks.policies import sft_policy_config
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small, minibatch_fn, pair_accuracy_selection

DATASETS = ("chain", "tree", "tree_siblings")

# the metrics and the gold as one compiled program per shape each (called eagerly, jax compiles
# every primitive separately); the same numbers as the library functions (sums of 0, 1/2 and 1
# are exact; the gold's mean of 12 token scores sums in the same order). `spearman` stays eager:
# jitted, its fused rank sums round differently on long vectors.
_preference_accuracy = jax.jit(preference_accuracy)
_win_rate = jax.jit(win_rate)
_token_score_reward = jax.jit(token_score_reward)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    # the method's tree (b = 2, d = 3); a wider, shallower tree; a 4x larger label budget; the
    # additive gold of the previous version
    # (the previous version's {"b4_d2": {"branching": 4, "depth": 2}, "b2_d3_budget2048":
    # {"num_pairs": 2048}} are left out of the full setting: 5 seeds of four variants did not fit
    # the shared machine's time)
    c.variants = {"b2_d3": {}}
    if not smoke:
        c.variants.update({"b2_d3_additive": {"gold_kind": "additive"}})
    # the gold: "interaction" (SegmentInteractionReward) or "additive" (mean token score)
    c.gold_kind = "interaction"
    c.gold_segments, c.gold_dim = 3, 4
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
    if smoke:  # a depth-2 tree: the tree sampler unrolls one sampler per level (compile time);
        # 4 leaves still have sibling and non-sibling pairs (2 of 6 are siblings)
        c.depth, c.pairs_per_tree = 2, 2
    c.num_pairs = 512 if not smoke else 16  # the label budget of every data set
    c.label_temperature = 0.1
    c.train = dict(steps=300 if not smoke else 4, batch_size=32, learning_rate=1e-3,
                   steps_per_log=25 if not smoke else 4)
    c.num_val_pairs = 512 if not smoke else 16
    # the ideal linear learner's full-batch descent (steps_per_log: updates per logged row)
    c.linear = dict(steps=2000 if not smoke else 8, steps_per_log=40 if not smoke else 8)
    c.num_eval_pairs = 1024 if not smoke else 16
    # smoke: N = 2 candidates for 16 prompts, the shapes of the chain pairs' sampling (16
    # prompts, 2 samples each), so best-of-N reuses that compiled sampler (N is a value only)
    c.num_bon_prompts = 256 if not smoke else 16
    c.bon_n = 16 if not smoke else 2
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


# the whole tree (d sampling levels and the glue between them) as one program
_sample_tree = jax.jit(sample_tree, static_argnames=("model", "branching", "depth",
                                                     "segment_len"))


def tree_data(policy, prompts, key, rng, *, branching, depth, pairs_per_tree, strategy):
    """`pairs_per_tree` leaf pairs of one response tree per prompt: sequences a, b [M, T]."""
    r = policy.task.response_len
    if r % depth:
        raise ValueError(f"response_len {r} is not a multiple of the tree depth {depth}")
    ids = _prompt_ids(prompts)
    tree = _sample_tree(policy.model, policy.params, jnp.asarray(ids),
                        jnp.ones(ids.shape, bool), key, branching=branching, depth=depth,
                        segment_len=r // depth)
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
              batch_size, learning_rate, val=None, steps_per_log=None):
    """Bradley-Terry training of one RM per row (a seed's data set), all rows in one program.

    init_params: RM params stacked [R, ...] (row r starts from row r); chosen/rejected
    [R, M, T]; seeds [R]: row r draws its batch indices from `jax.random.key(seeds[r])`, so the
    data sets of one seed see the same indices and differ only in their data; labels [R]:
    distinct ints naming the rows in the metrics; val: None, or {"chosen", "rejected"}
    [R, V, T] validation pairs of each row: every row is then early-stopped on its validation
    pair accuracy, logged every `steps_per_log` steps. Returns the `SmallFit` (params [R, ...];
    with `val`, best_params / best_step / best_score)."""
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
    mask = jnp.ones((2 * batch_size, chosen.shape[-1]), bool)

    def loss_fn(params, batch):
        rewards = rm.apply(params, jnp.concatenate([batch["chosen"], batch["rejected"]]), mask)
        return bradley_terry_loss(rewards[:batch_size], rewards[batch_size:]).mean()

    select = {}
    if val is not None:
        vmask = jnp.ones(val["chosen"].shape[1:], bool)
        select = pair_accuracy_selection(lambda params, x: rm.apply(params, x, vmask), val,
                                         steps_per_log=steps_per_log)
    return fit_small(workdir, loss_fn=loss_fn, init_params=init_params, per_seed_init=True,
                     tx=tx, num_steps=steps,
                     data={"chosen": jnp.asarray(chosen), "rejected": jnp.asarray(rejected)},
                     seeds=labels, seed_keys=jnp.stack([jax.random.key(int(s)) for s in seeds]),
                     per_seed_data=True, batch_fn=minibatch_fn(batch_size), desc="reward models",
                     **select)


def _token_counts(seqs, vocab_size: int, prompt_len: int) -> np.ndarray:
    """Bag-of-tokens features of the responses: counts(y) / R, [..., V] for seqs [..., T]."""
    resp = np.asarray(seqs)[..., prompt_len:]
    flat = resp.reshape(-1, resp.shape[-1])
    out = np.zeros((len(flat), vocab_size))
    np.add.at(out, (np.arange(len(flat))[:, None], flat), 1.0)
    return out.reshape(*resp.shape[:-1], vocab_size) / resp.shape[-1]


def linear_bt_accuracy(workdir: str, chosen, rejected, eval_a, eval_b, gold_margin, *,
                       vocab_size, prompt_len, labels, steps=2000, learning_rate=5.0, l2=1e-3,
                       features=None, steps_per_log=None):
    """Held-out gold accuracy of a linear BT model per row, r(y) = w . phi(y), fit by
    full-batch gradient descent from w = 0 on the mean BT loss plus l2/2 |w|^2 (all rows in one
    `fit_small` program): the ideal learner of a gold that is linear in phi, a diagnostic of
    the data alone (no transformer optimisation in the way).

    chosen/rejected [R, M, T] (the training pairs of each row), eval_a/eval_b [R, N, T],
    gold_margin [R, N] (gold(a) - gold(b)); labels [R] name the rows; features: sequences
    [..., T] -> phi [..., F] (default: the bag of response tokens, counts(y) / R, F = V);
    steps_per_log: updates per logged row (None: fit_small's default). Returns [R]
    accuracies."""
    if features is None:
        def features(seqs):
            return _token_counts(seqs, vocab_size, prompt_len)
    x = np.stack([features(c) - features(r) for c, r in zip(chosen, rejected)]).astype(
        np.float32)  # row by row: the pair features are V^2 wide

    def loss_fn(w, x):  # the chosen one is better under the label
        return jnp.mean(jax.nn.softplus(-(x @ w))) + 0.5 * l2 * jnp.sum(w * w)

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=jnp.zeros(x.shape[-1], jnp.float32),
                    tx=optax.sgd(learning_rate), num_steps=steps,
                    data=jnp.asarray(x, jnp.float32), seeds=labels, per_seed_data=True,
                    steps_per_log=steps_per_log, desc="linear BT")
    w = np.asarray(fit.params, np.float64)
    margins = np.stack([(features(a) - features(b)) @ wr
                        for a, b, wr in zip(eval_a, eval_b, w)])
    return np.array([float(_preference_accuracy(m, g)) for m, g in zip(margins, gold_margin)])


def make_gold(config, task, seed: int):
    """(gold: sequences [N, T] -> [N] rewards of their responses, phi: the features of the
    gold's ideal linear learner [..., T] -> [..., F], its learning rate) for
    `config.gold_kind`; the interaction gold's world is drawn from the experiment seed and
    scaled so that its std over 4096 responses of the language equals the additive gold's."""
    scores = task.token_scores()
    p = 1 + task.prompt_len

    def additive(seqs):
        return np.asarray(_token_score_reward(np.asarray(seqs)[..., p:], scores))

    if config.gold_kind == "additive":
        return additive, (lambda seqs: _token_counts(seqs, task.vocab_size, p)), 5.0
    if config.gold_kind != "interaction":
        raise ValueError(f"gold_kind must be 'interaction' or 'additive', got "
                         f"{config.gold_kind!r}")
    kw = dict(vocab_size=task.vocab_size, response_len=task.response_len,
              num_segments=int(config.gold_segments), dim=int(config.gold_dim), seed=seed,
              num_special=NUM_SPECIAL)
    rng = np.random.default_rng([seed, 182])
    world = task.sample_responses(rng, task.sample_prompts(rng, 4096))
    raw = SegmentInteractionReward(**kw)(world)
    ref = np.asarray(_token_score_reward(world, scores))
    inter = SegmentInteractionReward(**kw, scale=float(ref.std() / raw.std()))
    # the pair features have ~V times more, ~V times smaller entries than the bag of tokens
    return ((lambda seqs: inter(np.asarray(seqs)[..., p:])),
            (lambda seqs: inter.features(np.asarray(seqs)[..., p:])), 2.0 * task.vocab_size)


def _seed_data(config, policy, gold, seed: int):
    """One seed's labelled training pairs of every data set, chosen/rejected [K, M, T], and its
    data statistics; everything from the training data seed."""
    task = policy.task
    data_seed = split_seeds(seed).train
    rng = np.random.default_rng([data_seed, 33])
    keys = jax.random.split(jax.random.key(data_seed), 3)
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


def _independent_pairs(config, policy, gold, data_seed: int, n: int, labelled: bool):
    """n independent pairs of policy responses to prompts of `data_seed`: (a, b) [n, T], and
    with `labelled` the BT-labelled (chosen, rejected) instead."""
    rng = np.random.default_rng([data_seed, 34])
    a, b = chain_data(policy, policy.task.sample_prompts(rng, n),
                      jax.random.fold_in(jax.random.key(data_seed), 0))
    if labelled:
        return _label(a, b, gold(a), gold(b), rng, float(config.label_temperature))
    return a, b


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed's data sets; the RMs of all seeds and data sets in one program
    (<workdir>/reward_models, early-stopped on validation), the linear diagnostic likewise
    (<workdir>/linear_bt); then the test evaluation and best-of-N per seed. Rows are (seed s,
    data set k), named 100 s + k in the fits' metrics."""
    seeds = [int(s) for s in config.seeds]
    cache = config.cache_dir or os.path.join(os.path.dirname(workdir), "cache")
    policy = make_sft_policy(config.policy.to_dict(), cache_dir=cache)
    task = policy.task
    kd = len(DATASETS)
    golds = {seed: make_gold(config, task, seed) for seed in seeds}

    per_seed = [_seed_data(config, policy, golds[seed][0], seed) for seed in seeds]
    chosen = np.concatenate([c for c, _, _ in per_seed])      # [S K, M, T]
    rejected = np.concatenate([r for _, r, _ in per_seed])
    rows = [100 * seed + k for seed in seeds for k in range(kd)]
    # validation pairs (BT labels, like the training labels) and test pairs (gold ordering)
    vals = [_independent_pairs(config, policy, golds[seed][0], split_seeds(seed).validation,
                               int(config.num_val_pairs), labelled=True) for seed in seeds]
    evals = [_independent_pairs(config, policy, golds[seed][0], split_seeds(seed).test,
                                int(config.num_eval_pairs), labelled=False) for seed in seeds]

    rm = make_reward_model(policy.model.config)
    heads = [rm.init(jax.random.key(seed))["score"] for seed in seeds for _ in range(kd)]
    init = {"decoder": jax.tree.map(lambda x: np.stack([x] * len(rows)),
                                    policy.params["decoder"]),
            "score": jax.tree.map(lambda *x: np.stack(x), *heads)}
    tr = config.train
    fit = train_rms(os.path.join(workdir, "reward_models"), rm, init, chosen, rejected,
                    [seed for seed in seeds for _ in range(kd)], rows, steps=int(tr.steps),
                    batch_size=int(tr.batch_size), learning_rate=float(tr.learning_rate),
                    val={"chosen": np.stack([vc for vc, _ in vals for _ in range(kd)]),
                         "rejected": np.stack([vr for _, vr in vals for _ in range(kd)])},
                    steps_per_log=int(tr.steps_per_log))
    # the ideal learner's features do not depend on the gold's world: one program for all rows
    phi, lr = golds[seeds[0]][1], golds[seeds[0]][2]
    linear = linear_bt_accuracy(
        os.path.join(workdir, "linear_bt"), chosen, rejected,
        np.stack([ea for ea, _ in evals for _ in range(kd)]),
        np.stack([eb for _, eb in evals for _ in range(kd)]),
        np.stack([golds[seed][0](ea) - golds[seed][0](eb)
                  for seed, (ea, eb) in zip(seeds, evals) for _ in range(kd)]),
        vocab_size=task.vocab_size, prompt_len=1 + task.prompt_len, labels=rows, features=phi,
        learning_rate=lr, steps=int(config.linear.steps),
        steps_per_log=int(config.linear.steps_per_log)).reshape(len(seeds), kd)
    score_fn = jax.jit(jax.vmap(rm.apply, in_axes=(0, None, None)))

    out = {}
    for i, seed in enumerate(seeds):
        gold = golds[seed][0]
        params = jax.tree.map(lambda x: x[i * kd:(i + 1) * kd], fit.best_params)

        def score(x, params=params):
            return np.asarray(score_fn(params, x, np.ones(x.shape, bool)))

        result = dict(per_seed[i][2])
        for k, name in enumerate(DATASETS):
            result[f"chosen_steps_{name}"] = float(fit.best_step[i * kd + k])
            result[f"val_accuracy_{name}"] = float(fit.best_score[i * kd + k])
        ea, eb = evals[i]
        # test pairs: agreement with the gold ordering (both sides scored in one call)
        all_resp = np.concatenate([ea, eb])
        rm_all = score(all_resp)  # [K, 2N]
        margins = rm_all[:, :len(ea)] - rm_all[:, len(ea):]  # [K, N]
        gold_margin = gold(ea) - gold(eb)
        for k, name in enumerate(DATASETS):
            result[f"test_{name}_accuracy"] = float(_preference_accuracy(margins[k],
                                                                         gold_margin))
            result[f"test_{name}_spearman"] = float(spearman(rm_all[k], gold(all_resp)))
            result[f"test_{name}_linear_accuracy"] = float(linear[i, k])

        # best-of-N on test prompts: the same N candidates, picked by each RM
        n = int(config.bon_n)
        test_seed = split_seeds(seed).test
        bon_prompts = task.sample_prompts(np.random.default_rng([test_seed, 36]),
                                          int(config.num_bon_prompts))
        ids = _prompt_ids(bon_prompts)
        out_s = sample(policy.model, policy.params, jnp.asarray(ids), jnp.ones(ids.shape, bool),
                       jax.random.fold_in(jax.random.key(test_seed), 1),
                       max_new_tokens=task.response_len, num_samples=n)
        cand = np.concatenate([np.asarray(out_s.prompt_ids), np.asarray(out_s.tokens)], axis=1)
        cand_gold = gold(cand).reshape(-1, n)
        cand_rm = score(cand).reshape(kd, -1, n)
        picks = np.arange(cand_gold.shape[0])
        picked = {name: cand_gold[picks, np.argmax(cand_rm[k], axis=1)]
                  for k, name in enumerate(DATASETS)}
        for name in DATASETS:
            result[f"test_{name}_bon_gold"] = float(picked[name].mean())
        result["test_oracle_bon_gold"] = float(cand_gold.max(axis=1).mean())
        result["test_policy_gold"] = float(cand_gold.mean())
        for name in DATASETS[1:]:
            result[f"test_{name}_win_rate_vs_chain"] = float(_win_rate(picked[name],
                                                                       picked["chain"]))
            decided = picked[name] != picked["chain"]
            result[f"test_{name}_win_rate_decided"] = (
                float(np.mean(picked[name][decided] > picked["chain"][decided]))
                if decided.any() else 0.5)
        result["test_accuracy_gain"] = (result["test_tree_accuracy"]
                                        - result["test_chain_accuracy"])
        result["test_spearman_gain"] = (result["test_tree_spearman"]
                                        - result["test_chain_spearman"])
        out[seed] = result
    return out


def claims(results) -> list[protocol.Claim]:
    v = "b2_d3" if "b2_d3" in results else next(iter(results))

    def mean(variant, key):
        return float(np.mean(list(protocol.per_seed(results, variant, key).values())))

    others = "; ".join(
        f"{o}: accuracy gain {mean(o, 'test_accuracy_gain'):+.4f}, win rate "
        f"{mean(o, 'test_tree_win_rate_vs_chain'):.3f}" for o in results if o != v)
    acc = (f"test means: tree {mean(v, 'test_tree_accuracy'):.4f}, chain "
           f"{mean(v, 'test_chain_accuracy'):.4f}, siblings-only tree "
           f"{mean(v, 'test_tree_siblings_accuracy'):.4f}; Spearman gain "
           f"{mean(v, 'test_spearman_gain'):+.4f}; ideal linear learner on the same pairs: "
           f"chain {mean(v, 'test_chain_linear_accuracy'):.4f}, tree "
           f"{mean(v, 'test_tree_linear_accuracy'):.4f}; other variants: {others}")
    bon = (f"test means: best-of-N gold tree {mean(v, 'test_tree_bon_gold'):.4f}, chain "
           f"{mean(v, 'test_chain_bon_gold'):.4f}, oracle {mean(v, 'test_oracle_bon_gold'):.4f}, "
           f"policy {mean(v, 'test_policy_gold'):.4f}; win rate among decided prompts "
           f"{mean(v, 'test_tree_win_rate_decided'):.3f}; other variants: {others}")
    return [
        protocol.compare(
            f"[{v}] the tree-data RM gains >= 3 points of test gold-preference accuracy over "
            "the chain-data RM at an equal label budget", results,
            (v, "test_tree_accuracy"), (v, "test_chain_accuracy"), at_least=0.03, detail=acc),
        protocol.threshold(
            f"[{v}] best-of-N with the tree RM beats the chain RM on gold at a >= 55% win rate "
            "(ties 1/2)", results, (v, "test_tree_win_rate_vs_chain"), at_least=0.55,
            detail=bon),
    ]


def plots(results, workdir: str) -> list[str]:
    """Held-out accuracy, Spearman and best-of-N gold per data set and variant (mean +- std)."""
    names = list(results)
    paths = []
    for key, label in (("accuracy", "held-out gold-pref accuracy"),
                       ("spearman", "Spearman with gold"), ("bon_gold", "best-of-N gold")):
        stats = {d: ([results[v]["metrics"][f"test_{d}_{key}"]["mean"] for v in names],
                     [results[v]["metrics"][f"test_{d}_{key}"]["std"] for v in names])
                 for d in DATASETS}
        paths.append(plot_grouped_bars(
            names, stats, os.path.join(workdir, "plots", f"tree_vs_chain_{key}.png"),
            title=f"Equal label budget, chain vs tree pairs: {label}", ylabel=label))
    return paths
