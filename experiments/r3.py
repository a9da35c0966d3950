"""R^3: preference-free regularised relevance reward vs pure relevance and a preference RM.

Paper: Kim and Seo 2024, "Preference-free Alignment Learning with Regularized Relevance
Reward" (arXiv 2402.03469).

Setting (a tiny LM with exact expectations, `alignax.models.sequence_table`): responses are
all 7^5 = 16807 token sequences over {END, t1..t6}; the response is the tokens before the first
END (length n = 0..5). The content tokens form two topics, {t1, t2, t3} and {t4, t5, t6}. A
prompt is one query token q (6 kinds; features = its one-hot and a constant 1); its topic is
q's. Gold = on-topic AND informative (the notes' toy read literally): gold(x, y) = I if y has
no off-topic token, else 0, with I the number of distinct on-topic tokens of y other than q
itself (new information, 0..2); repeats neither add nor cost.
The "SFT" reference writes mostly on topic (END with probability (0.02, 0.3, 0.5, 0.6, 0.6)
at depth 0..4, mean length about 2.2; an on-topic token 4 times as likely as an off-topic one).

The retriever is a bag-of-token embedding (`alignax.rewards.relevance`): token embeddings are
their topic's vector plus noise (D = 8, orthonormal topic vectors, noise std `noise` per
token, drawn per experiment seed), rel(x, y) = cos(E(q), mean of E over y's tokens); repeating
q is the most relevant response (rel = 1): the hack.

Rewards (each optimised by GRPO, `small_pg.group_pg_loss`, advantage "grpo", no KL term; same
prompts per update, group size, updates, learning-rate grid and checkpoints):
  - `relevance`: rel alone;
  - `r3`: the regularised mixture rel + distinct-token ratio + capped length min(n, 3) / 3
    (`relevance.r3_reward`, weights (1, 1, 1) fixed a priori; the notes' toy mixture: the
    paper's exact terms are unverified). The length incentive saturates at 3 tokens, the length
    of a complete answer here: this toy knowledge is planted in the regulariser;
  - `r3_product`: R^3's open-ended form as a review of the paper reports it (the notes
    marked the mixture unverified): rel x length incentive n / L x distinct-token ratio
    (`relevance.r3_product_reward`; the paper's LI is #words / 100 and its RP counts unique
    trigrams: a response here has at most 5 tokens, so unigrams);
  - `bt_rm`: a Bradley-Terry RM (linear in (on-topic tokens, off-topic tokens, distinct
    tokens) of the response for its prompt) trained on `num_pairs` pairs of SFT responses
    labelled by length-biased annotators, P(a > b) = sigmoid(u_a - u_b), u = gold +
    `length_bias` * n; early-stopped on validation pairs labelled the same way.

Splits: experiment seed s draws its training prompts and RM pairs from data seed 3s, validation
prompts and pairs from 3s + 1, test prompts, RM test pairs and probe pairs from 3s + 2
(`split_seeds`); the embeddings (the world) are seeded by s.

Selection on validation (the same candidates for every variant: `learning_rates` x the
checkpoints every `eval_every` updates): each variant picks the candidate with the best value of
its OWN reward on the validation prompts (exact expectation), as a preference-free practitioner
would; the gold is never used to select (`choose_on_validation`, recorded as chosen_*). Test
metrics at the chosen candidate (exact, on test prompts): `test_gold`, `test_rel`, `test_length`;
`*_final` are those of the last update at the chosen learning rate ("after N steps"); `sft_*`
the reference's.

Claims (5 seeds, paired 95% Student t intervals; the notes' pass criterion as intervals):
  - comparative: pure relevance raises its proxy after N updates (rel_final - rel_SFT >= 0)
  - comparative: ... while the gold falls (gold_final - gold_SFT <= 0);
  - threshold: R^3 raises the test gold by >= 20% over SFT (gold / gold_SFT - 1 >= 0.2), for
    the notes' additive mixture and for the paper's product form;
  - threshold: the BT-RM ranks a long off-topic response (5 off-topic tokens) above a short
    on-topic one (1-2 on-topic tokens) in more than half of the probe pairs (fraction >= 0.5);
  - comparative: R^3's test gold is >= the BT-RM policy's (the abstract's "outperforming
    open-source reward models") and >= pure relevance's.

What the toy can and cannot show: the BT-RM here is linear in the response's on-topic,
off-topic and distinct token counts for its prompt, features close to the gold's own
statistics, and the gold does not charge for repeated on-topic tokens; so although the RM
learns the annotators' length bias (a positive off-topic coefficient, and long off-topic
responses outrank short on-topic ones on the probes), the response that maximises it is a long
run of on-topic tokens, which loses no gold: its policy is not hurt by the bias. The paper's
RMs are LLMs whose shortcuts we do not model. R^3's own mixture is mildly over-optimised too
(seen in a trial run: the gold peaks early and slides while the R^3 value still rises; the
checkpoint is chosen by the R^3 value on validation, as for every variant by its own reward).
The additive mixture's length term saturates at 3 tokens (planted). The paper's product form
fails in this toy: with a mean-of-embeddings retriever an off-topic token lowers the cosine
less than the linear length incentive n / L raises the product (e.g. "q a b" 0.88 x 0.6 vs
"q a b x y" 0.73 x 1.0), so its optimum pads the answer with distinct off-topic tokens (length
about 5, gold about 0); in the paper the balance rests on Contriever and a #words / 100
incentive, which this toy does not model.

    alignax run experiments/r3.py            # full setting, 5 seeds
    alignax run experiments/r3.py:smoke      # seconds, for the tests
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
from alignax.algorithms import small_pg
from alignax.experiment import is_smoke
from alignax.losses.reward import bradley_terry_loss
from alignax.models import sequence_table as st
from alignax.protocol import seed_mean
from alignax.rewards import relevance
from alignax.tasks.simulators import bradley_terry
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, pair_accuracy_selection

METHODS = ("relevance", "r3", "r3_product", "bt_rm")
END = 0
NUM_CONTENT = 6
TOPIC = np.array([0, 0, 0, 1, 1, 1])  # topic of content token t1..t6
KIND_FEATURES = np.concatenate([np.eye(NUM_CONTENT, dtype=np.float32),
                                np.ones((NUM_CONTENT, 1), np.float32)], 1)  # [6, 7]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "r3"
    c.variants = {m: {"method": m} for m in METHODS}
    c.length = 3 if smoke else 5
    c.ref = dict(end_probs=(0.02, 0.3, 0.5, 0.6, 0.6), topic_boost=float(np.log(4.0)))
    c.embedding = dict(dim=8, noise=0.7)
    c.r3 = dict(weights=(1.0, 1.0, 1.0), length_target=3.0)
    c.data = dict(train_prompts=64, val_prompts=64, test_prompts=128,
                  num_pairs=200 if smoke else 2000, val_pairs=100 if smoke else 500,
                  test_pairs=100 if smoke else 1000, probe_pairs=100 if smoke else 1000)
    c.annotator = dict(length_bias=1.5, temperature=1.0)
    c.rm = dict(steps=30 if smoke else 300, learning_rate=0.1, eval_every=10 if smoke else 20)
    c.rl = dict(steps=10 if smoke else 200, prompts_per_update=8 if smoke else 16,
                group_size=8, eval_every=5 if smoke else 20)
    c.learning_rates = (0.1,) if smoke else (0.03, 0.1)
    return c


# ---------------------------------------------------------------------------------------------
# The world


def space_of(config) -> st.SequenceSpace:
    return st.SequenceSpace(vocab_size=NUM_CONTENT + 1, length=int(config.length))


def embedding_table(config, seed: int) -> np.ndarray:
    """[V, D]: row 0 (END) zero, token t = its topic's unit vector + noise."""
    e = config.embedding
    rng = np.random.default_rng([seed, 2929])
    topics = np.linalg.qr(rng.standard_normal((e.dim, 2)))[0].T  # [2, D] orthonormal
    noise = e.noise * rng.standard_normal((NUM_CONTENT, e.dim)) / np.sqrt(e.dim)
    return np.concatenate([np.zeros((1, e.dim)), topics[TOPIC] + noise]).astype(np.float32)


def response_stats(tokens, query):
    """tokens [..., L], query [...] (content index 0..5, broadcast): length, mask, on-topic
    and off-topic token counts, distinct informative on-topic tokens."""
    alive = jnp.cumprod(tokens != END, axis=-1).astype(jnp.float32)
    onehot = jax.nn.one_hot(tokens - 1, NUM_CONTENT) * alive[..., None]  # [..., L, 6]
    counts = onehot.sum(-2)  # [..., 6]
    topic = jnp.asarray(TOPIC)
    on = (topic == topic[query][..., None]).astype(jnp.float32)  # [..., 6]
    not_q = 1.0 - jax.nn.one_hot(query, NUM_CONTENT)
    return {"length": alive.sum(-1), "mask": alive, "on": jnp.sum(counts * on, -1),
            "off": jnp.sum(counts * (1 - on), -1),
            "info": jnp.sum((counts > 0) * on * not_q, -1),
            "distinct": jnp.sum(counts > 0, -1).astype(jnp.float32)}


def gold_of(stats):
    """On-topic AND informative: I (distinct on-topic tokens other than q) when the response
    has no off-topic token, else 0."""
    return stats["info"] * (stats["off"] == 0)


def rm_features(stats):
    return jnp.stack(jnp.broadcast_arrays(stats["on"], stats["off"], stats["distinct"]), -1)


def rewards_of(tokens, stats, query, table, weights, target):
    """(relevance, R^3 additive, R^3 product) of responses tokens [..., L] to query tokens
    [...]."""
    q = (query + 1)[..., None]
    rel = relevance.relevance_reward(q, jnp.ones_like(q), tokens, stats["mask"], table)
    distinct = relevance.distinct_token_ratio(tokens, stats["mask"])
    length = relevance.capped_length_reward(stats["mask"], target=target)
    incentive = relevance.capped_length_reward(stats["mask"], target=float(tokens.shape[-1]))
    return (rel, relevance.r3_reward(rel, distinct, length, weights),
            relevance.r3_product_reward(rel, distinct, incentive))


def r3_args(config) -> dict:
    return {"weights": tuple(float(w) for w in config.r3.weights),
            "target": float(config.r3.length_target)}


def reference_params(config, space) -> dict:
    """SFT: END with probability end_probs[depth] before any END (0.99 after), on-topic tokens
    with log-odds topic_boost over off-topic ones."""
    v, length = space.vocab_size, space.length
    end_probs = np.asarray(config.ref.end_probs, np.float64)[:length]
    a = float(config.ref.topic_boost)
    z_content = 3.0 * np.exp(a) + 3.0
    depth = np.zeros(space.num_nodes, np.int64)
    ended = np.zeros(space.num_nodes, bool)
    seqs, nodes = space.sequences, space.prefix_nodes
    for t in range(length):
        depth[nodes[:, t]] = t
        if t:
            ended[nodes[:, t]] = np.any(seqs[:, :t] == END, axis=1)
    bias = np.zeros((space.num_nodes, v), np.float32)
    weight = np.zeros((space.num_nodes, NUM_CONTENT + 1, v), np.float32)
    p = end_probs[depth]
    bias[:, END] = np.log(p * z_content / (1.0 - p))
    for q in range(NUM_CONTENT):
        weight[:, q, 1:] = a * (TOPIC == TOPIC[q])
    bias[ended, END] = np.log(99.0 * NUM_CONTENT)
    weight[ended] = 0.0
    return {"bias": bias, "weight": weight}  # host arrays: the jitted programs take them


@functools.partial(jax.jit, static_argnames=("weights", "target"))
def _kind_tables(table, seqs, *, weights, target):
    seqs = seqs[None]  # an argument, not a constant: XLA would fold it slowly
    query = jnp.arange(NUM_CONTENT)[:, None]
    stats = response_stats(seqs, query)
    rel, r3, r3p = rewards_of(jnp.broadcast_to(seqs, (NUM_CONTENT,) + seqs.shape[1:]), stats,
                              query, table, weights, target)
    return {"gold": gold_of(stats), "rel": rel, "r3": r3, "r3p": r3p,
            "features": rm_features(stats), "length": stats["length"][0]}


def kind_tables(config, space, table) -> dict:
    """Per query kind, every sequence's gold, rel, R^3 [6, N], RM features [6, N, 3] and length
    [N] (numpy)."""
    out = _kind_tables(table, space.sequences, **r3_args(config))
    return {k: np.asarray(v) for k, v in out.items()}


_seq_logp = jax.jit(st.sequence_log_probs, static_argnums=0)


def prompt_kinds(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 2930]).integers(0, NUM_CONTENT, n)


def preference_pairs(config, space, ref, tables, n: int, seed: int) -> dict:
    """n pairs of SFT responses labelled by the length-biased annotators (RM features)."""
    rng = np.random.default_rng([seed, 2931])
    kinds = prompt_kinds(n, seed)
    p = np.exp(np.asarray(_seq_logp(space, ref, KIND_FEATURES), np.float64))
    cdf = np.cumsum(p / p.sum(-1, keepdims=True), -1)
    u = rng.random((2, n))
    ya, yb = (np.array([min(np.searchsorted(cdf[k], x), space.num_sequences - 1)
                        for k, x in zip(kinds, row)]) for row in u)
    ga, gb = tables["gold"][kinds, ya], tables["gold"][kinds, yb]
    ann = config.annotator
    ua = ga + ann.length_bias * tables["length"][ya]
    ub = gb + ann.length_bias * tables["length"][yb]
    a_pref = bradley_terry(ua, ub, rng=rng, temperature=ann.temperature).astype(bool)
    fa, fb = tables["features"][kinds, ya], tables["features"][kinds, yb]
    return {"chosen": np.where(a_pref[:, None], fa, fb).astype(np.float32),
            "rejected": np.where(a_pref[:, None], fb, fa).astype(np.float32)}


def probe_pairs(config, space, tables, n: int, seed: int) -> dict:
    """n probe pairs: a long off-topic response (L off-topic tokens, uniform) vs a short
    on-topic one (1 or 2 on-topic tokens, uniform) to the same random prompt: RM features."""
    rng = np.random.default_rng([seed, 2932])
    kinds = prompt_kinds(n, seed)
    v, length = space.vocab_size, space.length
    long_tok = np.zeros((n, length), np.int64)
    short_tok = np.zeros((n, length), np.int64)
    for i, q in enumerate(kinds):
        on = np.flatnonzero(TOPIC == TOPIC[q]) + 1
        off = np.flatnonzero(TOPIC != TOPIC[q]) + 1
        long_tok[i] = rng.choice(off, length)
        k = rng.integers(1, 3)
        short_tok[i, :k] = rng.choice(on, k)
    idx = lambda t: (t * v ** np.arange(length - 1, -1, -1)).sum(-1)  # noqa: E731
    return {"long": tables["features"][kinds, idx(long_tok)].astype(np.float32),
            "short": tables["features"][kinds, idx(short_tok)].astype(np.float32)}


def make_data(config, seed: int, space, ref) -> dict:
    splits = split_seeds(seed)
    d = config.data
    table = embedding_table(config, seed)
    tables = kind_tables(config, space, table)
    out = {"train_kinds": prompt_kinds(int(d.train_prompts), splits.train).astype(np.int32),
           "table": table, "rel_table": tables["rel"], "r3_table": tables["r3"],
           "r3p_table": tables["r3p"]}
    for name, n, s in (("val", d.val_prompts, splits.validation),
                       ("test", d.test_prompts, splits.test)):
        out[f"{name}_w"] = (np.bincount(prompt_kinds(int(n), s), minlength=NUM_CONTENT)
                            / float(n)).astype(np.float32)
    for name, n, s in (("train", d.num_pairs, splits.train), ("val", d.val_pairs,
                                                             splits.validation),
                       ("test", d.test_pairs, splits.test)):
        pairs = preference_pairs(config, space, ref, tables, int(n), s)
        out.update({f"{name}_{k}": v for k, v in pairs.items()})
    probes = probe_pairs(config, space, tables, int(d.probe_pairs), splits.test)
    out.update({f"probe_{k}": v for k, v in probes.items()})
    return out, tables


# ---------------------------------------------------------------------------------------------
# The BT reward model


def train_rm(config, workdir, data):
    rc = config.rm

    def loss_fn(theta, batch):
        return jnp.mean(bradley_terry_loss(batch["train_chosen"] @ theta,
                                           batch["train_rejected"] @ theta))

    selection = pair_accuracy_selection(
        lambda theta, x: x @ theta,
        {"chosen": data["val_chosen"], "rejected": data["val_rejected"]},
        steps_per_log=int(rc.eval_every))
    return fit_small(workdir, loss_fn=loss_fn, init_params=np.zeros(3, np.float32),
                     tx=optax.adam(float(rc.learning_rate)), num_steps=int(rc.steps),
                     data={k: data[k] for k in ("train_chosen", "train_rejected")},
                     seeds=list(config.seeds), per_seed_data=True, plots=False, **selection)


# ---------------------------------------------------------------------------------------------
# RL


def eval_fn_of(space, tables):
    """Exact metrics on val / test: per query kind over all N sequences, weighted by the
    split's kind frequencies."""
    z = KIND_FEATURES  # host constants of the program (no transfer program each)
    gold, length, feats = tables["gold"], tables["length"], tables["features"]

    def eval_fn(params, e):
        lp = st.sequence_log_probs(space, params, z)
        lq = st.sequence_log_probs(space, e["ref_params"], z)
        p = jnp.exp(lp)
        per_kind = {"gold": jnp.sum(p * gold, -1), "length": p @ length,
                    "rel": jnp.sum(p * e["rel_table"], -1),
                    "r3": jnp.sum(p * e["r3_table"], -1),
                    "r3p": jnp.sum(p * e["r3p_table"], -1),
                    "rm": jnp.sum(p * (feats @ e["theta"]), -1),
                    "kl": jnp.sum(p * (lp - lq), -1)}
        return {f"{split}_{k}": jnp.sum(e[f"{split}_w"] * v)
                for split in ("val", "test") for k, v in per_kind.items()}

    return eval_fn


def loss_of(config, space, method: str):
    rl = config.rl
    seqs = jnp.asarray(space.sequences)
    num_prompts = int(rl.prompts_per_update)
    kinds_f = jnp.asarray(KIND_FEATURES)

    def prompt_fn(key, data):
        rows = jax.random.randint(key, (num_prompts,), 0, data["kinds"].shape[0])
        return data["kinds"][rows]  # query indices [M]

    def sample_fn(params, key, query, n):
        return st.sample_paths(space, params, key, n, kinds_f[query])

    def log_prob_fn(params, query, responses):
        return st.path_log_probs(space, params, responses, kinds_f[query][:, None, :])

    def reward_fn(query, responses, data):
        tokens = seqs[responses]  # [M, G, L]
        q = jnp.broadcast_to(query[:, None], responses.shape)
        stats = response_stats(tokens, q)
        rel, r3, r3p = rewards_of(tokens, stats, q, data["table"], **r3_args(config))
        reward = {"relevance": rel, "r3": r3, "r3_product": r3p,
                  "bt_rm": rm_features(stats) @ data["theta"]}[method]
        return reward, {"length": stats["length"].mean(), "gold": gold_of(stats).mean(),
                        "rel": rel.mean()}

    return small_pg.group_pg_loss(sample_fn, log_prob_fn, reward_fn,
                                  group_size=int(rl.group_size), advantage="grpo",
                                  prompt_fn=prompt_fn)


EVAL_METRICS = tuple(f"{s}_{k}" for s in ("val", "test")
                     for k in ("gold", "length", "rel", "r3", "r3p", "rm", "kl"))


def train_rl(config, workdir, data, space, ref, tables, lr: float):
    seeds = [int(s) for s in config.seeds]
    rl = config.rl
    ref_s = jax.tree.map(lambda x: np.broadcast_to(x, (len(seeds),) + x.shape), ref)
    train = {"kinds": data["train_kinds"], "table": data["table"], "theta": data["theta"]}
    evals = {k: data[k] for k in ("val_w", "test_w", "rel_table", "r3_table", "r3p_table",
                                  "theta")}
    evals["ref_params"] = ref_s
    fit = fit_small(workdir, loss_fn=loss_of(config, space, config.method),
                    init_params=ref_s, per_seed_init=True, tx=optax.adam(lr),
                    num_steps=int(rl.steps), data=train, seeds=seeds, per_seed_data=True,
                    batch_fn=small_pg.rl_batch, has_aux=True,
                    steps_per_log=int(rl.eval_every), eval_fn=eval_fn_of(space, tables),
                    eval_data=evals, plots=False)
    return [((t + 1) * int(rl.eval_every),
             {m: np.array([row[f"seed_{x}/eval/{m}"] for x in seeds]) for m in EVAL_METRICS})
            for t, row in enumerate(fit.history)]


@jax.jit
def _pair_wins(a, b, theta):
    """[S] share of the pairs whose first response the linear RM theta [S, F] scores higher:
    features a, b [S, N, F]."""
    return jnp.mean(jnp.einsum("snf,sf->sn", a - b, theta) > 0, -1)


# the jitted evaluation of the SFT policy per (space, tables): the variants of one run share
# it, so it is traced and compiled once per process instead of once per variant
_REF_EVAL_PROGRAMS: dict = {}


def _ref_eval(space, tables):
    """`jit(vmap(eval_fn_of(space, tables)))`, one per sequence space and tables."""
    key = (space.vocab_size, space.length,
           *(np.asarray(tables[k]).tobytes() for k in ("gold", "length", "features")))
    if key not in _REF_EVAL_PROGRAMS:
        _REF_EVAL_PROGRAMS[key] = jax.jit(jax.vmap(eval_fn_of(space, tables)))
    return _REF_EVAL_PROGRAMS[key]


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    space = space_of(config)
    ref = reference_params(config, space)
    made = [make_data(config, s, space, ref) for s in seeds]
    tables = made[0][1]  # gold, features and length do not depend on the world's embeddings
    # host arrays: no device transfer program per field (the jitted programs take them)
    data = {k: np.stack([m[0][k] for m in made]) for k in made[0][0]}
    out = {s: {} for s in seeds}
    data["theta"] = np.zeros((len(seeds), 3), np.float32)  # no RM: its metrics read 0
    if method == "bt_rm":
        rm = train_rm(config, os.path.join(workdir, "reward_model"), data)
        data["theta"] = theta = jax.device_get(rm.best_params)
        acc = np.asarray(_pair_wins(data["test_chosen"], data["test_rejected"], theta))
        probe = np.asarray(_pair_wins(data["probe_long"], data["probe_short"], theta))
        for i, s in enumerate(seeds):
            out[s].update({"rm_val_accuracy": float(rm.best_score[i]),
                           "rm_test_accuracy": float(acc[i]),
                           "rm_probe_long_offtopic_wins": float(probe[i]),
                           "rm_coef_on": float(theta[i, 0]),
                           "rm_coef_off": float(theta[i, 1]),
                           "rm_coef_distinct": float(theta[i, 2])})
    ref_s = jax.tree.map(lambda x: np.broadcast_to(x, (len(seeds),) + x.shape), ref)
    ev = {k: data[k] for k in ("val_w", "test_w", "rel_table", "r3_table", "r3p_table",
                               "theta")}
    ref_m = {k: np.asarray(v) for k, v in _ref_eval(space, tables)(
        ref_s, {**ev, "ref_params": ref_s}).items()}
    candidates = {}
    for lr in [float(x) for x in config.learning_rates]:
        for updates, m in train_rl(config, os.path.join(workdir, f"lr_{lr:g}"), data, space,
                                   ref, tables, lr):
            candidates[f"lr={lr:g},updates={updates}"] = (lr, updates, m)
    signal = {"relevance": "val_rel", "r3": "val_r3", "r3_product": "val_r3p",
              "bt_rm": "val_rm"}[method]
    for i, s in enumerate(seeds):
        name, record = choose_on_validation(
            {n: float(m[signal][i]) for n, (_, _, m) in candidates.items()}, float)
        lr, updates, m = candidates[name]
        res = out[s]
        res.update({k: float(v[i]) for k, v in m.items()})
        res.update({"chosen_lr": lr, "chosen_updates": float(updates),
                    "num_candidates": float(len(record["scores"]))})
        res.update({f"sft_{k[5:]}": float(ref_m[k][i]) for k in ref_m if k.startswith("test_")})
        last = max((v for v in candidates.values() if v[0] == lr), key=lambda v: v[1])
        for k in ("gold", "rel", "r3", "length"):
            res[f"test_{k}_final"] = float(last[2][f"test_{k}"][i])
        res["test_gold_rel_gain"] = res["test_gold"] / res["sft_gold"] - 1.0
    return out


def claims(results) -> list[protocol.Claim]:
    def show(v):
        return (f"{v}: gold {seed_mean(results, v, 'test_gold'):.2f}, rel "
                f"{seed_mean(results, v, 'test_rel'):.2f}, length "
                f"{seed_mean(results, v, 'test_length'):.2f}")

    sft = (f"SFT gold {seed_mean(results, 'r3', 'sft_gold'):.2f}, rel "
           f"{seed_mean(results, 'r3', 'sft_rel'):.2f}, length "
           f"{seed_mean(results, 'r3', 'sft_length'):.2f}")
    detail = "; ".join([show(v) for v in METHODS if v in results] + [sft])
    final = (f"after the last update: gold {seed_mean(results, 'relevance', 'test_gold_final'):.2f}"
             f", rel {seed_mean(results, 'relevance', 'test_rel_final'):.2f}, length "
             f"{seed_mean(results, 'relevance', 'test_length_final'):.2f}")
    coef = (f"RM coefficients (on-topic, off-topic, distinct): "
            f"{seed_mean(results, 'bt_rm', 'rm_coef_on'):.2f}, "
            f"{seed_mean(results, 'bt_rm', 'rm_coef_off'):.2f}, "
            f"{seed_mean(results, 'bt_rm', 'rm_coef_distinct'):.2f}; test pair accuracy "
            f"{seed_mean(results, 'bt_rm', 'rm_test_accuracy'):.3f}")
    return [
        protocol.compare(
            "pure relevance: the proxy (relevance) rises over SFT after N updates", results,
            ("relevance", "test_rel_final"), ("relevance", "sft_rel"), at_least=0.0,
            detail=f"{final}; {detail}"),
        protocol.compare(
            "pure relevance: the gold falls below SFT's after N updates", results,
            ("relevance", "test_gold_final"), ("relevance", "sft_gold"), at_most=0.0,
            detail=f"{final}; {detail}"),
        protocol.threshold(
            "R^3 raises the test gold by >= 20% over SFT", results,
            ("r3", "test_gold_rel_gain"), at_least=0.2, detail=detail),
        protocol.threshold(
            "R^3 in the paper's product form (relevance x length incentive x distinct ratio) "
            "raises the test gold by >= 20% over SFT", results,
            ("r3_product", "test_gold_rel_gain"), at_least=0.2,
            detail=detail + "; with the toy's mean-embedding retriever an off-topic token costs "
                   "less relevance than it gains in the linear length incentive, so the product "
                   "pads with off-topic tokens (module docstring)"),
        protocol.threshold(
            "the BT-RM trained on length-biased preferences ranks a long off-topic response "
            "above a short on-topic one in more than half of the probe pairs", results,
            ("bt_rm", "rm_probe_long_offtopic_wins"), at_least=0.5,
            detail=f"{coef}; annotators u = gold + 1.5 n"),
        protocol.compare(
            "R^3 (preference-free) reaches a test gold >= the preference RM's policy", results,
            ("r3", "test_gold"), ("bt_rm", "test_gold"), at_least=0.0,
            detail=detail + "; the toy RM sees the gold's own statistics and repeats cost no "
                   "gold, so its length bias does not hurt its policy (module docstring)"),
        protocol.compare(
            "R^3's regularisers fix the relevance hack: its test gold >= pure relevance's",
            results, ("r3", "test_gold"), ("relevance", "test_gold"), at_least=0.0,
            detail=detail),
    ]


def plots(results, workdir: str) -> list[str]:
    curves = {v: ([seed_mean(results, v, "test_length")],
                  np.asarray([seed_mean(results, v, "test_gold")])) for v in results}
    out = os.path.join(workdir, "plots", "r3_gold_vs_length.png")
    plot_curves(curves, out, title="test gold vs length at the validation-chosen checkpoints",
                xlabel="E_pi[length]", ylabel="E_pi[gold]")
    return [out]
