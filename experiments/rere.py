"""ReRe: trie-constrained beam search + a rank-penalty reward for RL of generative recommenders.

Paper: Tan et al. 2025, "Reinforced Preference Optimization for Recommendation" (arXiv
2510.12211; code github.com/sober-clever/ReRe).

Mechanism (the library pieces): items are token sequences, and only the catalogue's sequences
are valid (`alignax.sampling.trie.build_trie`: the catalogue's prefix trie as dense arrays).
ReRe replaces GRPO's temperature samples by trie-constrained beam search
(`trie.beam_search`, inside jit): the G most likely distinct valid items of the policy, in rank
order, so a group never repeats an item and holds the hard negatives (the items the policy
ranks highest); and it adds to the rule reward 1[y_i = y*] a ranking reward that penalises a
negative by its beam rank k, -(1/log2(k + 1)) / sum_{j<=G} 1/log2(j + 1), in groups that
contain the target (`alignax.rewards.ranking.rere_rewards`; the notes' -1/log2(k + 1) is the
numerator: the normalisation and the hit-group condition are the authors' code). The update is
GRPO's (group-normalised advantages, the KL to the reference in the loss) on the model's own
full-vocabulary log-probs (`trie` module docstring: which log-prob, tested equal to the
decoders' `logps`). The baseline, vanilla GRPO, samples the G items with trie-constrained
temperature sampling (`trie.constrained_sample`, T = 1) and uses the rule reward alone.

Setting (the notes' toy): 256 items of 2 tokens, item (a, b) = first-codebook token a
(16) then second-codebook token 16 + b (16): a vocabulary of 32 tokens in which the trie allows
16 first tokens, then the 16 second ones. Users walk a Markov chain over the items
(`transition_matrix`): P(j | i) = softmax_j of 2 1[c(j) = c(i)] (3 clusters of first tokens,
c(i) = a mod 3) + z_j (popularity, N(0, 1)) + 2.5 1[j in S(i)] (4 successors of i drawn in its
cluster); a user is a walk of 5 items from a uniform start, and the target is the next item.
The task (catalogue and chain) is fixed by task.seed; the users come from the split seeds.

Policy: a log-linear prefix-tree LM over the tokens (`alignax.models.sequence_table`, 2 tokens
over V = 32: a softmax at the root and one per first token) conditioned on features of the last
item of the history (the chain's sufficient statistic): a constant and one-hots of its cluster,
first token and second token (`policy.features="tokens"`: 36 features, the item as its
semantic ID shows it). Its parameters are shared across items, so it cannot represent the
item-specific successors: a capacity-limited policy whose maximum-likelihood fit need not rank
best, as an LLM recommender sees items through their tokens. Why not the library transformer:
the time budget (five seeds of SFT, GRPO and ReRe, each early-stopped on validation, in
minutes on two CPU cores; the table policy's runs are vmapped over seeds in `fit_small`).
`policy.features="item"` (a one-hot of the item: a separate table per last item, which can
represent the chain) was tried first, on validation only (2 seeds, 300 RL updates): SFT 0.206,
GRPO 0.204, ReRe 0.207 validation NDCG@10 -- no room for RL over a well-specified SFT fit; it is
kept as an option, not run.

Training (all seeds of a run in one `fit_small` program): SFT maximises log pi(y* | x) of the
training users' next items (minibatches of 64, Adam, 600 steps); GRPO and ReRe start from each
seed's SFT policy (also their KL reference, exact sequence KL, coefficient 0.04, the paper's
beta) and run 600 updates of M = 32 training users x G = 16 items (equal samples per update),
Adam, through `alignax.algorithms.small_pg.group_pg_loss` (one update per batch: PPO's ratio
is 1, the GRPO gradient).

Splits and selection (docs/protocol.md): experiment seed s draws 2000 training, 1000 validation
and 2000 test users from the data seeds 3s, 3s + 1, 3s + 2 (`split_seeds`). Every policy (SFT,
GRPO, ReRe) is chosen on validation NDCG@10 by one procedure: a run per Adam learning rate of
its grid (SFT {0.01, 0.05}; GRPO and ReRe the same {0.005, 0.02}), each run kept at its logged
step (every 25 updates) with the best validation NDCG@10 (`fit_small(select=)`), and per seed
the rate whose kept step scores best (`choose_on_validation`); recorded in selection.json and as
`*_chosen_learning_rate` / `*_chosen_step`. The RL runs start from the chosen SFT policy. The
metrics are then measured once on test. Evaluation is ReRe's: a ranked list of 20 items from
trie-constrained beam search (20 beams, exact here: at least the 16 prefixes), HR@K and NDCG@K
for K = 5, 10, 20 (`alignax.rewards.ranking`).

Claims (5 seeds, 95% Student t intervals): (1, threshold on the per-seed ratio) ReRe's test
NDCG@10 / SFT's >= 1.10 (the notes' "ReRe NDCG@10 >= SFT + 10% relative"); (2, comparative)
ReRe's test NDCG@10 - vanilla GRPO's >= 0. Sanity (by construction): 0 invalid items from
both decoders (every decoded item's tokens walked down the trie, on the test contexts and in
every training rollout) and 0 duplicates among a context's beams. Also reported: the SFT
policy's probability mass on invalid token sequences (what unconstrained decoding would risk),
the fraction of training groups holding the target and of distinct items per group (GRPO's
samples repeat items; beams cannot), and the duplicate fraction of G constrained samples.

Reading the full run (5 seeds): the tuned SFT policy (lr 0.01 chosen for every seed) has test
NDCG@10 0.189; GRPO 0.189 and ReRe 0.190 -- ReRe / SFT = 1.004 [0.980, 1.027]: claim 1 FAILS;
ReRe - GRPO = +0.001 [-0.006, +0.008]: claim 2 is INCONCLUSIVE. The mechanism does what the
paper says it does to the groups (training groups holding the target: ReRe 0.68, GRPO 0.41;
distinct items per group 1.0 vs 0.66) but this does not become a better ranking here, and ReRe
trades HR@20 (0.448 vs SFT 0.472) for the top of the list. A first full run with the SFT and RL
learning rates fixed (0.05 and 0.02, not chosen on validation) gave ReRe / SFT = 1.062 [1.020,
1.104] and ReRe - GRPO = +0.005 [-0.002, +0.011]: its SFT baseline was noisy and under-tuned
(its validation NDCG@10 fell while its loss decreased), and choosing every stage's rate on
validation, which the protocol asks of the baseline as of the method, removed the gain.

    alignax run experiments/rere.py            # full setting, 5 seeds
    alignax run experiments/rere.py:smoke      # seconds, for the tests

`:real` runs ReRe on a Hugging Face checkpoint (the starting policy and the reference): the
catalogue is an HF dataset with one row per item (`data.catalog_path`, column
`data.title_field`, default "title"), an item is its title's tokens followed by the
tokenizer's eos (`tok.encode(title) + [eos]`, the completion a chat model ends its answer
with), and the trie is built from them; `data.path` holds prompt-only rows (TRL's format: a
user history as the prompt, string or chat messages) with the target item's title in
`data.target_field` (default "target"; every target must be a catalogue title). GRPO runs
through `policy_gradient.train` with the trie-constrained beam-search rollout
(`trie.beam_rollout_from_config`: G = `rl.num_samples` beams, rows in rank order; its
responses are the items, so the response length is the longest item's and `rl` has no
max_new_tokens) and ReRe's reward (hit + rank penalty, each rollout row's item read back by
`trie.lookup_items`). The last `data.eval_fraction` of the rows are test, the fraction before
them validation; HR@K / NDCG@K of `eval.beams`-beam constrained beam search on both are
measured before training ("*_ref_*") and every `rl.eval_every` iterations, and the iteration
with the best validation NDCG@`eval.k` is reported ("*_rere_*", selection.json). No claims are
evaluated on a user's data (the metrics are reported).

    alignax run experiments/rere.py:real --workdir runs/rere_real \
        --config.model.path=/ckpt/Qwen2.5-0.5B-Instruct --config.data.path=/data/histories \
        --config.data.catalog_path=/data/catalogue --config.model.dtype=bfloat16 \
        --config.lora.rank=16
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
from alignax.algorithms import policy_gradient, real
from alignax.algorithms.small_pg import group_pg_loss, rl_batch
from alignax.models import sequence_table as st
from alignax.rewards import ranking
from alignax.sampling import trie as tr
from alignax.tasks.splits import check_disjoint, choose_on_validation, split_seeds
from alignax.train.small import fit_small, minibatch_fn

METHODS = ("grpo", "rere")
_K = 10  # the claims' NDCG@K (the toy's eval.k)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    # the catalogue and the chain (fixed by task.seed; the users come from the split seeds)
    c.task = dict(seed=0, num_first=16, num_second=16, clusters=3, cluster_bonus=2.0,
                  popularity_scale=1.0, successors=4, successor_bonus=2.5)
    c.data = dict(num_train=64 if smoke else 2000, num_val=32 if smoke else 1000,
                  num_test=32 if smoke else 2000, history=5)
    c.policy = dict(features="tokens")
    # Adam learning rates: each run of a grid is trained, and each seed keeps the one with
    # the best validation NDCG@K (GRPO and ReRe get the same grid)
    c.sft = dict(steps=6 if smoke else 600, batch_size=64,
                 learning_rates=[0.05] if smoke else [0.01, 0.05],
                 steps_per_log=3 if smoke else 25)
    c.rl = dict(steps=4 if smoke else 600, prompts=8 if smoke else 32, group_size=16,
                learning_rates=[0.02] if smoke else [0.005, 0.02], kl_coef=0.04,
                temperature=1.0, steps_per_log=2 if smoke else 25)
    c.eval = dict(beams=20, k=10)
    return c


# ---------------------------------------------------------------------------------------------
# The toy world: 256 items of two tokens, users walking a 3-cluster Markov chain over them


def catalogue(task) -> np.ndarray:
    """[I, 2] item tokens: item i = (a, b), a = i // B, b = i % B, as tokens a (first codebook,
    0..A-1) and A + b (second codebook): a vocabulary of V = A + B tokens of which the trie
    allows A at the first step and the B second-codebook tokens after any first one."""
    a, b = int(task.num_first), int(task.num_second)
    first, second = np.divmod(np.arange(a * b), b)
    return np.stack([first, a + second], 1).astype(np.int32)


def vocab_size(task) -> int:
    return int(task.num_first) + int(task.num_second)


def transition_matrix(task) -> np.ndarray:
    """[I, I] P(next = j | last = i) of the chain: softmax_j of
    cluster_bonus 1[c(j) = c(i)] + popularity_scale z_j + successor_bonus 1[j in S(i)],
    with c(i) = (i // B) mod clusters (the first token's cluster), z_j ~ N(0, 1) item
    popularity and S(i) `successors` items of i's cluster drawn at random (task.seed)."""
    rng = np.random.default_rng([int(task.seed), 64])
    n = int(task.num_first) * int(task.num_second)
    cluster = (np.arange(n) // int(task.num_second)) % int(task.clusters)
    score = (float(task.cluster_bonus) * (cluster[:, None] == cluster[None, :])
             + float(task.popularity_scale) * rng.standard_normal(n)[None, :])
    for i in range(n):
        same = np.flatnonzero(cluster == cluster[i])
        score[i, rng.choice(same, int(task.successors), replace=False)] += float(
            task.successor_bonus)
    p = np.exp(score - score.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def draw_users(task, chain: np.ndarray, n: int, history: int, seed: int) -> dict:
    """n users, each a walk of `history` items from a uniform start, and the next item:
    {"history": [n, H] items, "target": [n]} (numpy)."""
    rng = np.random.default_rng([int(seed), 640])
    num = chain.shape[0]
    cdf = np.cumsum(chain, 1)
    walk = np.zeros((n, history + 1), np.int64)
    walk[:, 0] = rng.integers(0, num, n)
    for t in range(1, history + 1):
        u = rng.random(n)
        walk[:, t] = np.minimum((u[:, None] > cdf[walk[:, t - 1]]).sum(1), num - 1)
    return {"history": walk[:, :history], "target": walk[:, history]}


def make_split(config, seed: int, chain: np.ndarray) -> dict:
    """Disjoint train / validation / test users from the seed's data seeds."""
    s = split_seeds(seed)
    check_disjoint(train=[s.train], validation=[s.validation], test=[s.test])
    h = int(config.data.history)
    return {name: draw_users(config.task, chain, int(config.data[f"num_{name}"]), h, data_seed)
            for name, data_seed in (("train", s.train), ("val", s.validation),
                                    ("test", s.test))}


# ---------------------------------------------------------------------------------------------
# The policy: a log-linear prefix-tree LM over the item tokens, conditioned on the last item


def policy_space(task) -> st.SequenceSpace:
    """Every 2-token sequence over the V tokens (valid items and the rest)."""
    return st.SequenceSpace(vocab_size(task), 2)


def features(task, last, kind: str = "tokens") -> np.ndarray:
    """Features of the last item of each history: "tokens": [n, 1 + C + A + B] a constant and
    one-hots of its cluster, first and second token (the item as its semantic ID shows it,
    parameters shared across items); "item": [n, 1 + I] one-hot of the item (a table)."""
    a, b, c = int(task.num_first), int(task.num_second), int(task.clusters)
    last = np.asarray(last)
    rows = np.arange(len(last))
    if kind == "item":
        out = np.zeros((len(last), 1 + a * b), np.float32)
        out[rows, 1 + last] = 1.0
    else:
        first, second = np.divmod(last, b)
        out = np.zeros((len(last), 1 + c + a + b), np.float32)
        out[rows, 1 + first % c] = 1.0
        out[rows, 1 + c + first] = 1.0
        out[rows, 1 + c + a + second] = 1.0
    out[:, 0] = 1.0
    return out


def sequence_index(task, items):
    """The policy space's sequence index of items (jax)."""
    toks = jnp.asarray(catalogue(task))[items]
    return toks[..., 0] * vocab_size(task) + toks[..., 1]


def logits_fn_of(space, params, phi):
    """`trie.beam_search`'s logits_fn of the table policy for contexts `phi` [B, F]."""
    node_logits = params["bias"] + jnp.einsum("bf,mfv->bmv", phi, params["weight"])

    def logits_fn(tokens, t):
        node = jnp.where(t > 0, 1 + tokens[..., 0], 0)  # sequence_table's node of (a)
        return jnp.take_along_axis(node_logits[:, None], node[..., None, None], axis=2)[:, :, 0]

    return logits_fn


def item_log_probs(space, task, params, phi, items):
    """[M, G] log pi(item | context) under the model (full vocabulary): the update's log-prob,
    the same value the decoders report as `logps` (tests/sampling/test_trie.py)."""
    return st.path_log_probs(space, params, sequence_index(task, items), phi[:, None, :])


def ranked_items(trie, space, params, phi, beams: int) -> jax.Array:
    """[B, beams] the ranked list of trie-constrained beam search for contexts `phi`."""
    return tr.beam_search(trie, logits_fn_of(space, params, phi), batch_size=phi.shape[0],
                          num_beams=beams).items


def list_metrics(items, targets, *, prefix: str, k: int = _K) -> dict:
    """HR@K / NDCG@K (K = 5, 10, 20 and `k`, up to the list length) of ranked lists [B, K'],
    means over the contexts."""
    metrics = {}
    for kk in sorted({5, 10, 20, int(k)}):
        if kk <= items.shape[-1]:
            metrics[f"{prefix}_hr{kk}"] = ranking.hit_rate_at_k(items, targets, kk).mean()
            metrics[f"{prefix}_ndcg{kk}"] = ranking.ndcg_at_k(items, targets, kk).mean()
    return metrics


# ---------------------------------------------------------------------------------------------
# Training: SFT, then GRPO (temperature sampling) or ReRe (beam search + rank reward)


def _data(task, splits, names, kind) -> dict:
    """{split: {"phi": [S, N, F], "target": [S, N]}} stacked over the seeds."""
    return {name: {"phi": jnp.asarray(np.stack([features(task, s[name]["history"][:, -1], kind)
                                                for s in splits])),
                   "target": jnp.asarray(np.stack([s[name]["target"] for s in splits]),
                                         jnp.int32)} for name in names}


def _adam(learning_rate: float) -> optax.GradientTransformation:
    """Adam with its learning rate in the optimizer state (`optax.inject_hyperparams`): the
    runs of a learning-rate grid compile one program."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=float(learning_rate))


def train_sft(config, workdir, space, trie, data, learning_rate: float):
    """Maximum likelihood of the next item's tokens, minibatches, the step with the best
    validation NDCG@K kept (all seeds in one program)."""
    task, cfg = config.task, config.sft

    def loss_fn(params, batch):
        return -st.path_log_probs(space, params, sequence_index(task, batch["target"]),
                                  batch["phi"]).mean()

    num_features = features(task, [0], config.policy.features).shape[1]
    return fit_small(
        workdir, loss_fn=loss_fn, init_params=st.init_table(space, num_features),
        tx=_adam(learning_rate), num_steps=int(cfg.steps), data=data["train"],
        seeds=[int(s) for s in config.seeds], per_seed_data=True,
        batch_fn=minibatch_fn(int(cfg.batch_size)), steps_per_log=int(cfg.steps_per_log),
        eval_fn=_val_eval(config, space, trie), eval_data=data["val"],
        select=(f"val_ndcg{int(config.eval.k)}", "max"), desc="sft")


def choose_learning_rate(fits: dict, seeds) -> dict:
    """Per seed, the run of the learning-rate grid {lr: SmallFit} with the best validation
    NDCG@K at its chosen step (`choose_on_validation`, ties to the earlier rate): {"params"
    (leaves [S, ...]), "step" [S], "score" [S], "learning_rate" [S], "records"}."""
    rates = list(fits)
    picks, records = [], {}
    for i, seed in enumerate(seeds):
        name, record = choose_on_validation(
            {f"lr={lr}": float(fits[lr].best_score[i]) for lr in rates}, lambda x: x)
        picks.append(rates.index(float(name[3:])))
        records[f"seed_{seed}"] = record
    pick = np.array(picks)
    rows = np.arange(len(seeds))
    params = jax.tree.map(lambda *xs: jnp.stack(xs)[pick, rows],
                          *[fits[lr].best_params for lr in rates])
    return {"params": params,
            "step": np.array([fits[rates[p]].best_step[i] for i, p in enumerate(picks)]),
            "score": np.array([fits[rates[p]].best_score[i] for i, p in enumerate(picks)]),
            "learning_rate": np.array([rates[p] for p in picks]), "records": records,
            "fits": [fits[rates[p]] for p in picks]}


def _val_eval(config, space, trie):
    def evaluate(params, val):
        items = ranked_items(trie, space, params, val["phi"], int(config.eval.beams))
        return list_metrics(items, val["target"], prefix="val", k=int(config.eval.k))
    return evaluate


def rl_loss(config, method: str, space, trie):
    """`group_pg_loss` of the method: its sampler, its reward, the exact KL to the SFT policy."""
    task, cfg = config.task, config.rl
    g, m = int(cfg.group_size), int(cfg.prompts)

    def prompt_fn(key, data):
        rows = jax.random.randint(key, (m,), 0, data["target"].shape[0])
        return {"phi": data["phi"][rows], "target": data["target"][rows]}

    def sample_fn(params, key, prompts, n):
        fn = logits_fn_of(space, params, prompts["phi"])
        if method == "rere":
            return tr.beam_search(trie, fn, batch_size=m, num_beams=n).items
        return tr.constrained_sample(trie, fn, key, batch_size=m, num_samples=n,
                                     temperature=float(cfg.temperature)).items

    def log_prob_fn(params, prompts, items):
        return item_log_probs(space, task, params, prompts["phi"], items)

    def reward_fn(prompts, items, data):
        hit = ranking.hits(items, prompts["target"])
        rewards = ranking.rere_rewards(hit) if method == "rere" else hit.astype(jnp.float32)
        distinct = jnp.mean(jnp.sum(_first_occurrence(items), axis=1) / g)
        return rewards, {"hit_groups": hit.any(1).mean(), "distinct": distinct,
                         "invalid": jnp.mean(items < 0)}

    def kl_fn(params, prompts, items, data):
        return st.sequence_kl(space, params, jax.lax.stop_gradient(data["ref_params"]),
                              prompts["phi"])

    return group_pg_loss(sample_fn, log_prob_fn, reward_fn, group_size=g, advantage="grpo",
                         kl_coef=float(cfg.kl_coef), kl_fn=kl_fn, prompt_fn=prompt_fn)


def _first_occurrence(items) -> jax.Array:
    """[M, G] bool: the item does not occur earlier in its group."""
    same = items[:, :, None] == items[:, None, :]
    earlier = jnp.tril(jnp.ones(same.shape[1:], bool), -1)
    return ~jnp.any(same & earlier, axis=2)


def train_rl(config, method: str, workdir, space, trie, data, sft_params,
             learning_rate: float):
    """RL from each seed's SFT policy (also the KL reference), the step with the best
    validation NDCG@K kept; both methods get the same steps, prompts x group samples per
    update, learning rates, KL and selection."""
    cfg = config.rl
    train = {**data["train"], "ref_params": sft_params}
    return fit_small(
        workdir, loss_fn=rl_loss(config, method, space, trie), init_params=sft_params,
        per_seed_init=True, tx=_adam(learning_rate), num_steps=int(cfg.steps),
        data=train, seeds=[int(s) for s in config.seeds], per_seed_data=True,
        batch_fn=rl_batch, has_aux=True, steps_per_log=int(cfg.steps_per_log),
        eval_fn=_val_eval(config, space, trie), eval_data=data["val"],
        select=(f"val_ndcg{int(config.eval.k)}", "max"), desc=method)


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed at once: SFT, then GRPO and ReRe from it (each early-stopped on validation
    NDCG@K), then every policy's test metrics (`:real`: one run per seed, `_run_real`)."""
    if real.is_real(config):
        return {int(s): _run_real(config, os.path.join(workdir, f"seed_{s}"), int(s))
                for s in config.seeds}
    task = config.task
    seeds = [int(s) for s in config.seeds]
    chain = transition_matrix(task)
    space = policy_space(task)
    trie = tr.build_trie(catalogue(task), vocab_size=vocab_size(task))
    splits = [make_split(config, s, chain) for s in seeds]
    data = _data(task, splits, ("train", "val", "test"), config.policy.features)
    sft = choose_learning_rate({float(lr): train_sft(
        config, os.path.join(workdir, "sft", f"lr_{lr}"), space, trie, data, lr)
        for lr in config.sft.learning_rates}, seeds)
    chosen = {m: choose_learning_rate({float(lr): train_rl(
        config, m, os.path.join(workdir, m, f"lr_{lr}"), space, trie, data, sft["params"], lr)
        for lr in config.rl.learning_rates}, seeds) for m in METHODS}
    test = data["test"]
    policies = {"sft": sft["params"], **{m: c["params"] for m, c in chosen.items()}}
    measured = jax.device_get(_test_program(config, space, trie)(
        policies, test["phi"], test["target"], jnp.stack([jax.random.key(s) for s in seeds])))
    k = int(config.eval.k)
    out = {}
    for i, seed in enumerate(seeds):
        res = {name: float(v[i]) for name, v in measured.items()}
        for name, c in {"sft": sft, **chosen}.items():
            res[f"{name}_chosen_step"] = float(c["step"][i])
            res[f"{name}_chosen_learning_rate"] = float(c["learning_rate"][i])
            res[f"val_{name}_ndcg{k}"] = float(c["score"][i])
        for m, c in chosen.items():
            # the chosen run's training rollouts: groups holding the target, distinct items
            for key in ("hit_groups", "distinct", "invalid"):
                res[f"{m}_train_{key}"] = float(np.mean(
                    [r[f"seed_{seed}/reward_{key}"] for r in c["fits"][i].history]))
        out[seed] = res
    _write_selection(workdir, {"sft": sft, **chosen})
    return out


def _test_program(config, space, trie):
    """One jitted program, vmapped over the seeds: every policy's test HR@K / NDCG@K (one beam
    search, vmapped over the policies), and the decoders' sanity counts on the test contexts
    (each decoded item's tokens walked down the trie, `trie.lookup_items`): invalid items
    (tokens that spell no catalogue item, or not the item reported) and duplicates among a
    context's beams, over every policy's beams; invalid items and the duplicate fraction of G
    constrained samples of the final ReRe policy; and the SFT policy's probability mass on
    invalid token sequences (what unconstrained decoding would risk)."""
    beams, g = int(config.eval.beams), int(config.rl.group_size)
    valid_seqs = sequence_index(config.task, jnp.arange(trie.num_items))

    def invalid(items, tokens):
        return jnp.sum((items < 0) | (tr.lookup_items(trie, tokens) != items))

    def one_seed(policies, phi, target, key):
        stacked = jax.tree.map(lambda *p: jnp.stack(p), *policies.values())
        beam = jax.vmap(lambda p: tr.beam_search(trie, logits_fn_of(space, p, phi),
                                                 batch_size=phi.shape[0], num_beams=beams)
                        )(stacked)
        out = {}
        for i, name in enumerate(policies):
            out.update(list_metrics(beam.items[i], target, prefix=f"test_{name}"))
        draw = tr.constrained_sample(trie, logits_fn_of(space, policies["rere"], phi), key,
                                     batch_size=phi.shape[0], num_samples=g,
                                     temperature=float(config.rl.temperature))
        out["test_invalid_beam_items"] = invalid(beam.items, beam.tokens)
        out["test_invalid_sampled_items"] = invalid(draw.items, draw.tokens)
        out["test_duplicate_beam_items"] = jnp.sum(~_first_occurrence(
            beam.items.reshape(-1, beams)))
        out["test_sample_duplicate_fraction"] = jnp.mean(~_first_occurrence(draw.items))
        lp = st.sequence_log_probs(space, policies["sft"], phi)
        out["test_sft_invalid_mass"] = 1.0 - jnp.exp(lp[:, valid_seqs]).sum(1).mean()
        return out

    return jax.jit(jax.vmap(one_seed))


def _write_selection(workdir, chosen: dict) -> None:
    """selection.json: per stage and seed, the learning rate chosen on validation (every
    candidate's score) and its step (`fit_small(select=)`: the logged step with the best
    validation NDCG@K, ties to the earliest)."""
    if jax.process_index() != 0:
        return
    record = {name: {"learning_rate": c["records"],
                     "step": {s: int(c["step"][i]) for i, s in enumerate(c["records"])}}
              for name, c in chosen.items()}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump(record, f, indent=1)


# ---------------------------------------------------------------------------------------------
# :real: GRPO with the beam-search rollout and ReRe's reward on a user's checkpoint and data


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): ReRe from `model.path` on the histories of `data.path`,
    items from the catalogue at `data.catalog_path`."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real.add_real_fields(c, max_length=512, target_field="target", catalog_path="",
                         catalog_split="train", title_field="title")
    c.rl = policy_gradient.default_config(
        iterations=200, prompts_per_iteration=8, num_samples=16, max_new_tokens=1,
        temperature=1.0, advantage="grpo", kl_coef=0.04, epochs=1, minibatches=1,
        checkpoint_every=20, log_every=1, eval_every=20, optimizer=real.optimizer(1e-6))
    c.rl.stop_tokens = (-1,)
    with c.rl.unlocked():  # the response length is the catalogue's longest item (run time)
        del c.rl["max_new_tokens"]
    c.eval = dict(beams=20, k=10)
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    beams, k = int(config.eval.beams), int(config.eval.k)
    if not 1 <= k <= beams:
        raise ValueError(f"eval.k={k} must be in [1, eval.beams={beams}]")
    if real.is_real(config):
        real.require(config, "model.path", "data.path", "data.catalog_path", what={
            "data.catalog_path": "an HF dataset of the item catalogue, one row per item with "
                                 "a `data.title_field` column"})
        policy_gradient.validate(real.online_config(config, "rl"))
        return
    if beams < _K:
        raise ValueError(f"eval.beams={beams} must be >= {_K} (the claims read NDCG@{_K})")
    if config.policy.features not in ("tokens", "item"):
        raise ValueError(f"policy.features={config.policy.features!r} must be 'tokens' or "
                         "'item'")
    if int(config.rl.group_size) < 2:
        raise ValueError(f"rl.group_size={config.rl.group_size} must be >= 2")
    for group in ("sft", "rl"):
        rates = [float(r) for r in config[group].learning_rates]
        if not rates or min(rates) <= 0 or len(set(rates)) != len(rates):
            raise ValueError(f"{group}.learning_rates={rates} must be distinct positive rates")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """One seed of the `:real` config (the toy runs all seeds at once: `run_seeds`)."""
    return _run_real(config, workdir, int(config.seed))


def catalogue_trie(config, tok) -> tuple[tr.TokenTrie, dict[str, int]]:
    """The trie of the catalogue's titles (`tok.encode(title) + [eos]`) and {title: item}."""
    from alignax.data import DataError, load_hf_dataset

    if tok.eos_id is None:
        raise ValueError("the tokenizer has no eos token: :real items end with one")
    rows = load_hf_dataset(config.data.catalog_path, split=config.data.catalog_split or None)
    field = config.data.title_field
    if field not in rows.column_names:
        raise DataError(f"{config.data.catalog_path}: no column data.title_field={field!r} "
                        f"(columns: {rows.column_names})", path=str(config.data.catalog_path))
    titles = [str(t).strip() for t in rows[field]]
    trie = tr.build_trie([tok.encode(t) + [int(tok.eos_id)] for t in titles],
                         vocab_size=int(tok.vocab_size), pad_id=int(tok.pad_id))
    index: dict[str, int] = {}
    for i, t in enumerate(titles):
        index.setdefault(t, i)
    return trie, index


def _targets(config, data, index: dict[str, int]) -> dict[str, np.ndarray]:
    """Each split's target items [N]; a target that is no catalogue title is a DataError
    naming its dataset row."""
    from alignax.data import DataError

    field, out, offset = config.data.target_field, {}, 0
    for split in ("train", "validation", "test"):
        items = []
        for i, t in enumerate(data[split][field]):
            if str(t).strip() not in index:
                raise DataError(f"{config.data.path}:{offset + i}: field '{field}': {str(t)!r} "
                                f"is not a title of the catalogue {config.data.catalog_path}",
                                path=str(config.data.path), line=offset + i, field=field)
            items.append(index[str(t).strip()])
        out[split] = np.array(items, np.int32)
        offset += len(items)
    return out


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    """`:real` (module docstring): GRPO with the trie-constrained beam-search rollout and
    ReRe's reward from `model.path` (the starting policy and the reference), held-out HR@K /
    NDCG@K before training and at the evaluated iteration chosen on validation NDCG@K."""
    from alignax.algorithms import pretrained
    from alignax.sampling import left_align

    tok = real.tokenizer(config)
    trie, index = catalogue_trie(config, tok)
    field = config.data.target_field
    data = real.prompt_data(config, tok, int(config.data.max_length), fields=(field,))
    model, params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    held_ids, held_mask, n_val = real.held_out_prompts(data)
    targets = _targets(config, data, index)
    held_targets = np.concatenate([targets["validation"], targets["test"]])
    train_targets = targets["train"]
    beams, k = int(config.eval.beams), int(config.eval.k)
    if beams > trie.num_distinct_items:
        raise ValueError(f"eval.beams={beams} exceeds the catalogue's "
                         f"{trie.num_distinct_items} distinct items")

    @jax.jit
    def ranked(params, ids, mask):
        def chunk(d):
            ids, mask = left_align(d["ids"], d["mask"])
            return tr.beam_search(trie, tr.lm_logits_fn(model, params, ids, mask),
                                  batch_size=ids.shape[0], num_beams=beams).items
        return real.map_in_chunks(chunk, {"ids": ids, "mask": mask},
                                  int(config.data.eval_batch_size))

    def evaluate(params):
        items = jnp.asarray(ranked(params, jnp.asarray(held_ids), jnp.asarray(held_mask)))
        out = {}
        for kk in sorted({5, 10, 20, k}):
            if kk <= beams:
                out.update(real.split_means(ranking.hit_rate_at_k(items, held_targets, kk),
                                            n_val, f"hr{kk}"))
                out.update(real.split_means(ranking.ndcg_at_k(items, held_targets, kk),
                                            n_val, f"ndcg{kk}"))
        return out

    g = int(config.rl.num_samples)
    lookup = jax.jit(lambda responses: tr.lookup_items(trie, responses))

    def reward_fn(rollout):
        items = np.asarray(lookup(rollout.responses))
        target = train_targets[np.asarray(rollout.prompt_index)]
        return ranking.rere_rewards((items == target).reshape(-1, g)).reshape(-1)

    before = evaluate(params)
    cfg = real.online_config(config, "rl", real.stop_tokens(tok, config.rl.stop_tokens),
                             max_new_tokens=trie.max_len)
    train = data["train"]
    out = policy_gradient.train(cfg, os.path.join(workdir, "rere"), model=model,
                                init_params=params, ref_params=params,
                                prompt_ids=train["prompt_ids"], prompt_mask=train["prompt_mask"],
                                reward_fn=reward_fn, eval_fn=evaluate, seed=seed,
                                rollout_fn=tr.beam_rollout_from_config(trie))
    chosen = real.choose_iteration(out["history"], f"eval/val_ndcg{k}", workdir)
    history = out["history"]
    result = {f"{name.split('_', 1)[0]}_ref_{name.split('_', 1)[1]}": v
              for name, v in before.items()}
    result.update({f"{name.split('_', 1)[0]}_rere_{name.split('_', 1)[1]}": v
                   for name, v in chosen.items() if name != "chosen_iteration"})
    result.update({
        "rere_chosen_iteration": chosen["chosen_iteration"],
        "catalogue_items": float(trie.num_distinct_items),
        "item_max_tokens": float(trie.max_len),
        "train_reward_first": float(np.mean([r["reward"] for r in history[:5]])),
        "train_reward_last": float(np.mean([r["reward"] for r in history[-5:]])),
    })
    return result


def claims(results) -> list[protocol.Claim]:
    if "rere_chosen_iteration" in results["default"]["metrics"]:
        return []  # :real reports held-out metrics (a user's data: no claims)
    k = f"ndcg{_K}"
    sft = protocol.per_seed(results, "default", f"test_sft_{k}")
    rere = protocol.per_seed(results, "default", f"test_rere_{k}")
    ratio = {s: rere[s] / sft[s] for s in rere if s in sft and sft[s] > 0}

    def mean(metric):
        return protocol.seed_mean(results, "default", metric)

    detail = (f"test NDCG@{_K} (means over seeds): SFT {mean(f'test_sft_{k}'):.4f}, GRPO "
              f"{mean(f'test_grpo_{k}'):.4f}, ReRe {mean(f'test_rere_{k}'):.4f}; HR@{_K}: SFT "
              f"{mean(f'test_sft_hr{_K}'):.4f}, GRPO {mean(f'test_grpo_hr{_K}'):.4f}, ReRe "
              f"{mean(f'test_rere_hr{_K}'):.4f}; each policy at its step chosen on validation "
              f"NDCG@{_K} (mean chosen step: SFT {mean('sft_chosen_step'):.0f}, GRPO "
              f"{mean('grpo_chosen_step'):.0f}, ReRe {mean('rere_chosen_step'):.0f}); training "
              f"groups holding the target: GRPO {mean('grpo_train_hit_groups'):.3f}, ReRe "
              f"{mean('rere_train_hit_groups'):.3f}; distinct items per group: GRPO "
              f"{mean('grpo_train_distinct'):.3f}, ReRe {mean('rere_train_distinct'):.3f}")
    checks = {name: max(protocol.per_seed(results, "default", name).values()) for name in (
        "test_invalid_beam_items", "test_invalid_sampled_items", "test_duplicate_beam_items",
        "grpo_train_invalid", "rere_train_invalid")}
    return [
        protocol.decide(
            f"ReRe raises test NDCG@{_K} by >= 10% relative to the SFT policy it starts from "
            f"(per-seed ratio ReRe / SFT >= 1.10)", ratio, kind="threshold", at_least=1.10,
            measured={"ratio_mean": float(np.mean(list(ratio.values())))}, detail=detail),
        protocol.compare(
            f"ReRe's test NDCG@{_K} is at least vanilla GRPO's (temperature sampling, rule "
            "reward; equal steps and samples per update)", results,
            ("default", f"test_rere_{k}"), ("default", f"test_grpo_{k}"), at_least=0.0,
            detail=detail),
        protocol.sanity(
            "trie-constrained decoding yields 0 invalid items (beam search and sampling, on "
            "the test contexts and in every training rollout) and 0 duplicate items among a "
            "context's beams", all(v == 0 for v in checks.values()), checks,
            "by construction of the trie (each item checked by walking its tokens down the "
            "trie, `trie.lookup_items`); the SFT policy's mass on invalid token sequences is "
            f"{mean('test_sft_invalid_mass'):.4f}, what unconstrained decoding would risk"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Validation NDCG@K along training of SFT, GRPO and ReRe (mean over seeds)."""
    from alignax.train.plots import plot_curves
    from alignax.train.writers import read_metrics

    import glob

    curves = {}
    for name in ("sft", *METHODS):
        for path in sorted(glob.glob(os.path.join(workdir, "default", name, "lr_*",
                                                  "metrics.jsonl"))):
            rows = [r for r in read_metrics(path) if f"eval/val_ndcg{_K}" in r]
            label = f"{name} {os.path.basename(os.path.dirname(path)).replace('_', '=')}"
            curves[label] = ([r["step"] for r in rows], [r[f"eval/val_ndcg{_K}"] for r in rows])
    if not curves:
        return []
    return [plot_curves(curves, os.path.join(workdir, "plots", "val_ndcg.png"),
                        title="validation NDCG@10 along training (mean over seeds)",
                        xlabel="logged step (sft/rl.steps_per_log updates each)",
                        ylabel=f"NDCG@{_K}")]
