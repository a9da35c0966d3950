"""CLiTSSA: cross-lingual time-sensitive semantic alignment of a demonstration retriever.

Paper: "Multilingual LLMs Inherently Reward In-Language Time-Sensitive Semantic Alignment for
Low-Resource Languages" (Bajpai & Chakraborty, AAAI 2025; the CLiTSSA retriever, evaluated on
mTEMPREASON).

Mechanism: an LLM answers a temporal question in a low-resource language better when its
in-context demonstrations are the English questions most similar to it. CLiTSSA fine-tunes the
multilingual sentence encoder E that retrieves them so that the cosine similarity of a
cross-lingual pair regresses onto the pair's in-language (English, time-sensitive)
similarity: L = (cos(E(q_low), E(q'_en)) - s*(q, q'))^2
(`alignax.losses.embedding.cosine_regression_loss`); retrieval is cosine top-k over the
English pool (`alignax.eval.retrieval`).

Setting (the notes' toy): a base language ("English") of T topics x W content words and Y
year tokens (E eras of Y / E consecutive years). A query is `words` content words of one topic
and one year; its ICL label is (topic, era), so the answer is time-sensitive. The reference
English encoder R (fixed) is the mean of token vectors: a word's vector is its topic's centroid
plus word noise, a year's vector is a smooth function of the year (random Fourier features,
weight `world.year_weight`), so s*(q, q') = cos(R(q_en), R(q'_en)) is high for the same topic
in nearby years. Each of `world.languages` low-resource languages renames the content words by
a permutation of its own ids and replaces each word with probability `world.noise` by one of
its F filler tokens; years are written with the shared year tokens. The encoder
E(q) = mean_t table[q_t] @ proj (`table` [V, D], `proj` [D, D]) starts from a "multilingual
pretrained" point: English words at their reference vectors, the years at
`world.raw_year_scale` of theirs (time-insensitive), a language's words at
`world.raw_align` x their translation's vector plus N(0, `world.raw_noise`^2 / D) noise,
fillers random, proj = I.

Variants (equal budget: the same steps, batch, learning-rate grid and validation selection):
  - `raw`: the pretrained encoder, untrained;
  - `clitssa`: cosine regression on cross-lingual pairs (q_low, q'_en): for each training query
    its own English version and `data.partners` English training queries (half of the same
    topic, so that the targets vary with the year), target s* from R;
  - `contrastive`: the in-batch contrastive (InfoNCE, temperature `train.temperature`) loss on
    translation pairs (q_low, q_en), the usual cross-lingual alignment.
Both trained variants run in `fit_small` (seeds vmapped, Adam, `train.steps` minibatches of
`train.batch_size`), once per learning rate of `train.learning_rates`.

Splits (`alignax.tasks.splits.split_seeds`): the world (reference vectors, permutations) and
the training queries come from the data seed 3s, the validation queries and their English
demonstration pool from 3s + 1, the test ones from 3s + 2; a query whose English tokens
occur in an earlier split is redrawn (`check_disjoint` on the token tuples). Per seed, the
(learning rate, step) of the best validation precision@k (early stopping every
`train.steps_per_log` updates, `fit_small(select=)`) is kept, the same procedure for both
trained variants (`<workdir>/<variant>/selection.json`); claims on test.

Metrics (each low-resource query retrieves k = `eval.k` demonstrations from the split's
English pool; relevant = same topic and era): `{val,test}_precision_at_k`, `_recall_at_k`,
`_mrr`, `_knn_accuracy` (the majority label of the k demonstrations, the "ICL" stand-in),
`test_sim_mse` (mean (cos - s*)^2 over the test pool pairs) and `test_oracle_precision_at_k`
(R on the English versions: the ceiling the target encodes).

Claims (5 seeds, paired 95% t intervals; the notes' pass criteria): (1, comparative)
precision@5 of the retrieved demonstrations is >= 0.10 above the raw encoder's;
(2, comparative) the k-NN "ICL" accuracy improves over the raw encoder (difference >= 0.01);
(3, comparative; the paper's "beats the baselines") precision@5 is no lower than the
contrastive-trained encoder's (difference >= 0). Sanity: the reference similarity retrieves
relevant demonstrations (oracle precision@5 >= 0.5, by construction of the world).

Reading the full run (5 seeds): test precision@5 0.85 (CLiTSSA) vs 0.33 (raw) and 0.57
(contrastive), k-NN accuracy 0.92 vs 0.37 and 0.70, against an oracle ceiling of 0.88
precision@5; every claim PASSes. The contrastive encoder peaks early (about 100 updates) and
then declines on validation: its in-batch negatives include demonstrations of the same topic
and era, which it pushes apart, while the regression target keeps them close.

    alignax run experiments/clitssa.py            # full setting, 5 seeds
    alignax run experiments/clitssa.py:smoke      # seconds, for the tests

`:real` trains a projection head on a user's checkpoint's frozen embeddings
(`alignax.eval.embeddings.sequence_embeddings`, the final hidden state at the last token of
`[bos] text eos`) by the same cosine regression, on an HF dataset of cross-lingual query pairs
with a target similarity (`data.query_field`, `data.candidate_field`,
`data.similarity_field`): head p(e) = e W + b from W = I, b = 0 (the raw encoder), trained in
`fit_small` with the step chosen on validation MSE; it reports the regression MSE, the Pearson
correlation of cos with s* and the retrieval metrics of the held-out pairs (each distinct
query ranks the split's distinct candidates; relevant: the candidates it is paired with at
s* >= `retrieval.relevance_threshold`) before and after. Toy claims are not evaluated there.

    alignax run experiments/clitssa.py:real --workdir runs/clitssa_real \\
        --config.model.path=/ckpt --config.data.path=/pairs_dataset
"""

from __future__ import annotations

import functools
import glob
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import real
from alignax.eval import retrieval
from alignax.losses.embedding import (cosine_matrix, cosine_regression_loss,
                                      cosine_similarity, in_batch_contrastive_loss)
from alignax.tasks.splits import check_disjoint, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, minibatch_fn
from alignax.train.writers import read_metrics

METHODS = ("raw", "clitssa", "contrastive")
METRICS = ("precision_at_k", "recall_at_k", "mrr", "knn_accuracy")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "clitssa"
    c.variants = {m: {"method": m} for m in METHODS}
    c.world = dict(topics=8, words_per_topic=6, years=24, eras=4, fillers=16, languages=2,
                   dim=32, topic_spread=0.6, year_weight=1.5, year_bandwidth=3.0,
                   noise=0.2, raw_year_scale=0.25, raw_align=0.5, raw_noise=1.0)
    c.data = dict(words=4, num_train=256 if smoke else 1024, partners=8,
                  num_queries=64 if smoke else 256, pool=128 if smoke else 512)
    c.train = dict(steps=60 if smoke else 1500, steps_per_log=30 if smoke else 50,
                   batch_size=64, learning_rates=[1e-2] if smoke else [3e-3, 1e-2],
                   temperature=0.05)
    c.eval = dict(k=5)
    return c


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): the checkpoint, the pairs dataset, the head's training."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]  # the minibatch order; several seeds train as one vmapped program
    c.method = "clitssa"
    real.add_real_fields(c, max_length=128, query_field="query", candidate_field="candidate",
                         similarity_field="similarity")
    c.train = dict(steps=500, steps_per_log=25, batch_size=32, learning_rates=[1e-4, 1e-3])
    c.retrieval = dict(k=5, relevance_threshold=0.5)
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """The keys a run reads, before any work (`alignax run` calls it)."""
    if real.is_real(config):
        from alignax.data.tokenize import check_truncation_mode

        real.require(config, "model.path", "data.path", what={
            "data.path": "an HF dataset of cross-lingual query pairs with a target similarity"})
        check_truncation_mode(config.data.truncation_mode)
        for key in ("query_field", "candidate_field", "similarity_field"):
            if not config.data[key]:
                raise ValueError(f"data.{key} must name a column of data.path")
        if not 0 < float(config.retrieval.relevance_threshold) <= 1:
            raise ValueError(f"retrieval.relevance_threshold={config.retrieval.relevance_threshold}"
                             f" must be in (0, 1]")
    elif config.method not in METHODS:
        raise ValueError(f"method={config.method!r} must be one of {METHODS}")
    if not list(config.train.learning_rates) or min(config.train.learning_rates) <= 0:
        raise ValueError(f"train.learning_rates={list(config.train.learning_rates)} must be a "
                         f"non-empty list of numbers > 0")
    for key in ("steps", "steps_per_log", "batch_size"):
        if int(config.train[key]) < 1:
            raise ValueError(f"train.{key}={config.train[key]} must be >= 1")
    k = int(config.retrieval.k if real.is_real(config) else config.eval.k)
    if k < 1:
        raise ValueError(f"{'retrieval' if real.is_real(config) else 'eval'}.k={k} must be >= 1")


# ------------------------------------------------------------------------------ the toy world

def _layout(w) -> dict:
    """Token id ranges: English words, years, then per language its words and fillers."""
    n_words = int(w.topics) * int(w.words_per_topic)
    per_lang = n_words + int(w.fillers)
    base = n_words + int(w.years)
    return {"words": n_words, "years": int(w.years), "base": base, "per_lang": per_lang,
            "vocab": base + int(w.languages) * per_lang}


def make_world(config, seed: int) -> dict:
    """The reference vectors, the languages' permutations and the raw encoder (data seed 3s).

    Returns {"ref": [W + Y, D] reference vectors of English words then years, "perm":
    [languages, W] the id offset of word w in each language, "raw": the raw encoder's params}.
    """
    w = config.world
    lay = _layout(w)
    d = int(w.dim)
    rng = np.random.default_rng([split_seeds(seed).train, 31])
    centroids = rng.normal(size=(int(w.topics), d)) / np.sqrt(d)
    topic_of = np.repeat(np.arange(int(w.topics)), int(w.words_per_topic))
    words = centroids[topic_of] + float(w.topic_spread) * rng.normal(
        size=(lay["words"], d)) / np.sqrt(d)
    # years: random Fourier features of a Gaussian kernel of bandwidth year_bandwidth
    freq = rng.normal(size=d // 2) / float(w.year_bandwidth)
    phase = rng.uniform(0, 2 * np.pi, size=d // 2)
    ys = np.arange(int(w.years))[:, None]
    years = np.concatenate([np.cos(ys * freq + phase), np.sin(ys * freq + phase)], 1)
    years = float(w.year_weight) * years / np.linalg.norm(years, axis=1, keepdims=True) * (
        np.linalg.norm(words, axis=1).mean())
    ref = np.concatenate([words, years]).astype(np.float32)
    perm = np.stack([rng.permutation(lay["words"]) for _ in range(int(w.languages))])
    table = np.zeros((lay["vocab"], d), np.float32)
    table[:lay["words"]] = words
    table[lay["words"]:lay["base"]] = float(w.raw_year_scale) * years
    for lang in range(int(w.languages)):
        start = lay["base"] + lang * lay["per_lang"]
        table[start + perm[lang]] = float(w.raw_align) * words + float(w.raw_noise) * rng.normal(
            size=(lay["words"], d)) / np.sqrt(d)
        table[start + lay["words"]:start + lay["per_lang"]] = rng.normal(
            size=(int(w.fillers), d)) / np.sqrt(d)
    raw = {"table": table, "proj": np.eye(d, dtype=np.float32)}
    return {"ref": ref, "perm": perm, "raw": raw}


def sample_queries(config, world, n: int, rng: np.random.Generator) -> dict:
    """n queries: English tokens [n, L], a low-resource version [n, L], label [n], id [n].

    A query's id encodes its topic, year and words (for `check_disjoint`)."""
    w, lay = config.world, _layout(config.world)
    n_words = int(config.data.words)
    topic = rng.integers(0, int(w.topics), n)
    year = rng.integers(0, int(w.years), n)
    word = topic[:, None] * int(w.words_per_topic) + rng.integers(
        0, int(w.words_per_topic), (n, n_words))
    en = np.concatenate([word, lay["words"] + year[:, None]], 1)
    lang = rng.integers(0, int(w.languages), n)
    start = lay["base"] + lang * lay["per_lang"]
    low_words = start[:, None] + world["perm"][lang[:, None], word]
    filler = start[:, None] + lay["words"] + rng.integers(0, int(w.fillers), (n, n_words))
    low_words = np.where(rng.uniform(size=(n, n_words)) < float(w.noise), filler, low_words)
    low = np.concatenate([low_words, lay["words"] + year[:, None]], 1)
    era = year * int(w.eras) // int(w.years)
    ids = np.array([hash(tuple(r)) for r in en.tolist()])
    return {"en": en.astype(np.int32), "low": low.astype(np.int32),
            "label": (topic * int(w.eras) + era).astype(np.int32), "id": ids}


def _np_cosine(a, b) -> np.ndarray:
    """Elementwise a_i b_i / (|a| |b|) terms; `.sum(-1)` is the cosine (numpy, host)."""
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)) * (
        b / np.linalg.norm(b, axis=-1, keepdims=True))


def reference_embeddings(world, en_tokens) -> np.ndarray:
    """R(q_en) [N, D]: the mean of the reference vectors of an English query's tokens."""
    return world["ref"][np.asarray(en_tokens)].mean(1)


def encode(params, tokens) -> jax.Array:
    """E(q) [..., D] = mean_t table[q_t] @ proj for token rows [..., L]."""
    return params["table"][tokens].mean(-2) @ params["proj"]


def fresh_queries(config, world, n: int, rng: np.random.Generator, exclude: set) -> dict:
    """`sample_queries` without the queries whose id is in `exclude` (an earlier split's):
    draws until n remain."""
    parts, have = [], 0
    while have < n:
        q = sample_queries(config, world, n, rng)
        keep = np.array([i not in exclude for i in q["id"].tolist()])
        parts.append({k: v[keep] for k, v in q.items()})
        have += int(keep.sum())
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}


def eval_set(config, world, seed_of_split: int, exclude: set) -> dict:
    """A split's low-resource queries, its English demonstration pool, the relevance (same
    label) and the target similarity s* [Q, K] of every (query, demonstration) pair."""
    rng = np.random.default_rng([seed_of_split, 32])
    queries = fresh_queries(config, world, int(config.data.num_queries), rng, exclude)
    pool = fresh_queries(config, world, int(config.data.pool), rng, exclude)
    target = _np_cosine(reference_embeddings(world, queries["en"])[:, None],
                        reference_embeddings(world, pool["en"])[None, :]).sum(-1)
    return {"queries": queries["low"], "query_en": queries["en"], "query_label": queries["label"],
            "pool": pool["en"], "pool_label": pool["label"],
            "relevant": queries["label"][:, None] == pool["label"][None, :],
            "target": np.asarray(target, np.float32),
            "ids": set(queries["id"].tolist()) | set(pool["id"].tolist())}


def make_seed_data(config, seed: int) -> dict:
    """World, training pairs and validation / test sets of one seed (disjoint data seeds)."""
    s = split_seeds(seed)
    world = make_world(config, seed)
    rng = np.random.default_rng([s.train, 33])
    train = sample_queries(config, world, int(config.data.num_train), rng)
    n, m = len(train["label"]), int(config.data.partners)
    w = config.world
    topic = train["label"] // int(w.eras)
    # partners: half of the same topic (any year), half uniform over the training queries
    same = np.stack([rng.choice(np.flatnonzero(topic == t), m // 2) for t in topic])
    partners = np.concatenate([np.arange(n)[:, None], same,
                               rng.integers(0, n, (n, m - m // 2))], 1)  # [n, 1 + m]
    ref = reference_embeddings(world, train["en"])
    rows = np.repeat(np.arange(n), 1 + m)
    cols = partners.ravel()
    target = _np_cosine(ref[rows], ref[cols]).sum(-1)
    seen = set(train["id"].tolist())
    val = eval_set(config, world, s.validation, seen)
    test = eval_set(config, world, s.test, seen | val["ids"])
    check_disjoint(train=seen, validation=val["ids"], test=test["ids"])
    return {"world": world, "val": val, "test": test,
            "pairs": {"low": train["low"][rows], "en": train["en"][cols],
                      "target": target.astype(np.float32)},
            "translations": {"low": train["low"], "en": train["en"]}}


def _split_arrays(split) -> dict:
    return {k: split[k] for k in ("queries", "pool", "relevant", "pool_label", "query_label",
                                  "target")}


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    if real.is_real(config):
        return _run_real(config, workdir)
    seeds = [int(s) for s in config.seeds]
    k = int(config.eval.k)
    num_classes = int(config.world.topics) * int(config.world.eras)
    per_seed = [make_seed_data(config, s) for s in seeds]
    raw = jax.tree.map(lambda *x: jnp.asarray(np.stack(x)), *[d["world"]["raw"] for d in per_seed])
    val = jax.tree.map(lambda *x: jnp.asarray(np.stack(x)),
                       *[_split_arrays(d["val"]) for d in per_seed])
    test = jax.tree.map(lambda *x: jnp.asarray(np.stack(x)),
                        *[_split_arrays(d["test"]) for d in per_seed])

    def evaluate(params, split, prefix):
        return _evaluate(params, split, prefix, k, num_classes)

    fitted, best_step = raw, np.zeros(len(seeds))
    if config.method != "raw":
        tr = config.train
        if config.method == "clitssa":
            data = {k_: np.stack([d["pairs"][k_] for d in per_seed]) for k_ in
                    ("low", "en", "target")}

            def loss_fn(params, batch):
                return cosine_regression_loss(encode(params, batch["low"]),
                                              encode(params, batch["en"]),
                                              batch["target"]).mean()
        else:
            data = {k_: np.stack([d["translations"][k_] for d in per_seed]) for k_ in
                    ("low", "en")}
            temperature = float(tr.temperature)

            def loss_fn(params, batch):
                return in_batch_contrastive_loss(encode(params, batch["low"]),
                                                 encode(params, batch["en"]),
                                                 temperature=temperature).mean()
        fitted, best_step, chosen_lr = fit_on_validation(
            workdir, loss_fn=loss_fn, init_params=raw, per_seed_init=True,
            data=jax.tree.map(jnp.asarray, data), per_seed_data=True,
            eval_fn=lambda p, v: evaluate(p, v, "val"), eval_data=val, seeds=seeds, train=tr,
            select=(f"val_{METRICS[0]}", "max"))
    oracle = jax.tree.map(lambda *x: jnp.asarray(np.stack(x)),
                          *[{"table": d["world"]["ref"], "proj": np.eye(d["world"]["ref"].shape[1],
                                                                        dtype=np.float32)}
                            for d in per_seed])
    test_en = jnp.asarray(np.stack([d["test"]["query_en"] for d in per_seed]))
    scores = jax.device_get(_final_scores(fitted, oracle, val, test, test_en, k, num_classes))
    out = {}
    for i, seed in enumerate(seeds):
        res = {name: float(v[i]) for name, v in scores.items()}
        res["chosen_step"] = float(best_step[i])
        if config.method != "raw":
            res["chosen_learning_rate"] = float(chosen_lr[i])
        out[seed] = res
    return out


def _evaluate(params, split, prefix: str, k: int, num_classes: int) -> dict:
    """`{prefix}_<metric>` retrieval metrics of encoder `params` on one split (jnp)."""
    m = retrieval.retrieval_metrics(
        encode(params, split["queries"]), encode(params, split["pool"]), split["relevant"],
        k=k, key_labels=split["pool_label"], query_labels=split["query_label"],
        num_classes=num_classes)
    return {f"{prefix}_{name}": m[name] for name in METRICS}


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _final_scores(params, oracle, val, test, test_en, k: int, num_classes: int) -> dict:
    """Every seed's validation and test metrics, `test_sim_mse` and the oracle's (the reference
    encoder on the English versions of the test queries), in one program: leaves [S]."""
    def one(p, o, v, t, t_en):
        orc = _evaluate(o, {**t, "queries": t_en}, "test_oracle", k, num_classes)
        return {**_evaluate(p, v, "val", k, num_classes), **_evaluate(p, t, "test", k, num_classes),
                "test_sim_mse": _sim_mse(p, t),
                "test_oracle_precision_at_k": orc["test_oracle_precision_at_k"],
                "test_oracle_knn_accuracy": orc["test_oracle_knn_accuracy"]}
    return jax.vmap(one)(params, oracle, val, test, test_en)


def fit_on_validation(workdir: str, *, loss_fn, init_params, data, eval_fn, eval_data, seeds,
                      train, select, per_seed_init: bool = False, per_seed_data: bool = False):
    """`fit_small` for each learning rate of `train.learning_rates` (Adam, `train.steps`
    minibatches of `train.batch_size`, early stopping every `train.steps_per_log` on the
    validation metric `select`), then per seed the (learning rate, step) of the best validation
    score (ties keep the earlier learning rate); the candidates and the choice are written to
    `<workdir>/selection.json`.

    Returns:
      (params with leaves [S, ...], chosen step [S], chosen learning rate [S]).
    """
    import json

    metric, mode = select
    sign = 1.0 if mode == "max" else -1.0
    best_score = np.full(len(seeds), -np.inf)
    fitted, best_step, chosen_lr = None, np.zeros(len(seeds)), np.zeros(len(seeds))
    candidates = {}
    for lr in [float(x) for x in train.learning_rates]:
        fit = fit_small(os.path.join(workdir, f"encoder_lr={lr:g}"), loss_fn=loss_fn,
                        init_params=init_params, per_seed_init=per_seed_init,
                        tx=optax.adam(lr), num_steps=int(train.steps), data=data, seeds=seeds,
                        per_seed_data=per_seed_data, batch_fn=minibatch_fn(int(train.batch_size)),
                        steps_per_log=int(train.steps_per_log), checkpoint_every=10,
                        eval_fn=eval_fn, eval_data=eval_data, select=(metric, mode))
        score = sign * np.asarray(fit.best_score, np.float64)
        better = score > best_score
        candidates[f"lr={lr:g}"] = {"val_score": fit.best_score.tolist(),
                                    "step": fit.best_step.tolist()}
        if fitted is None:
            fitted = fit.best_params
        else:
            pick = jnp.asarray(better)
            fitted = jax.tree.map(
                lambda n, o: jnp.where(pick.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
                fit.best_params, fitted)
        best_step = np.where(better, fit.best_step, best_step)
        chosen_lr = np.where(better, lr, chosen_lr)
        best_score = np.maximum(best_score, score)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump({"procedure": f"{mode} validation {metric} over learning rates x logged "
                                f"steps, per seed", "seeds": list(seeds),
                   "candidates": candidates, "chosen_learning_rate": chosen_lr.tolist(),
                   "chosen_step": best_step.tolist()}, f, indent=1)
    return fitted, best_step.astype(np.float64), chosen_lr


def _sim_mse(params, split) -> jax.Array:
    """Mean (cos(E(q_low), E(d_en)) - s*(q, d))^2 over a split's (query, pool) pairs."""
    cos = cosine_matrix(encode(params, split["queries"]), encode(params, split["pool"]))
    return ((cos - split["target"]) ** 2).mean()


# ------------------------------------------------------------------------------------ claims

def claims(results) -> list[protocol.Claim]:
    if "raw" not in results:  # :real: metrics only
        return []
    k = get_config().eval.k
    p, acc = f"test_{METRICS[0]}", "test_knn_accuracy"
    mean = {v: {m: protocol.seed_mean(results, v, m) for m in (p, acc)} for v in results}
    detail = "; ".join(f"{v}: precision@{k} {mean[v][p]:.3f}, k-NN accuracy {mean[v][acc]:.3f}"
                       for v in results)
    oracle = protocol.per_seed(results, "raw", "test_oracle_precision_at_k")
    out = [
        protocol.compare(f"precision@{k} of the retrieved demonstrations is >= 0.10 above the "
                         f"raw encoder's", results, ("clitssa", p), ("raw", p), at_least=0.10,
                         detail=detail),
        protocol.compare("the k-NN 'ICL' accuracy improves over the raw encoder (difference "
                         ">= 0.01)", results, ("clitssa", acc), ("raw", acc), at_least=0.01,
                         detail=detail),
    ]
    if "contrastive" in results:
        out.append(protocol.compare(
            f"precision@{k} is no lower than the contrastive-trained encoder's at equal budget",
            results, ("clitssa", p), ("contrastive", p), at_least=0.0, detail=detail))
    out.append(protocol.sanity(
        f"the reference (English) similarity retrieves relevant demonstrations: oracle "
        f"precision@{k} >= 0.5", min(oracle.values()) >= 0.5,
        {"oracle_precision_min": float(min(oracle.values()))}, "by construction of the world"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Validation precision@k along training per trained variant (mean over seeds)."""
    curves = {}
    for variant in results:
        for path in sorted(glob.glob(os.path.join(workdir, variant, "encoder_lr=*",
                                                  "metrics.jsonl"))):
            rows = [r for r in read_metrics(path) if f"eval/val_{METRICS[0]}" in r]
            label = f"{variant} {os.path.basename(os.path.dirname(path))[len('encoder_'):]}"
            curves[label] = ([r["step"] for r in rows],
                             [r[f"eval/val_{METRICS[0]}"] for r in rows])
    if "raw" in results:
        raw = protocol.seed_mean(results, "raw", f"val_{METRICS[0]}")
        steps = next(iter(curves.values()))[0] if curves else [0, 1]
        curves["raw"] = (steps, [raw] * len(steps))
    if not curves:
        return []
    return [plot_curves(curves, os.path.join(workdir, "plots", "val_precision.png"),
                        title="validation precision@k (mean over seeds)", xlabel="logged step",
                        ylabel="precision@k")]


def text_rows(config, tok, texts) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> token rows [N, T] and masks [N, T] (T = `data.max_length`, right-padded):
    `[bos] text eos` (the bos where the tokenizer prepends one to plain text, the eos where it
    has one: a last-token embedding then reads the state after the whole text). An over-long
    text is refused (`data.truncation_mode` "error") or cut ("keep_start" / "keep_end")."""
    from alignax.data.tokenize import check_truncation_mode

    mode = check_truncation_mode(config.data.truncation_mode)
    t = int(config.data.max_length)
    add_bos = bool(getattr(tok, "add_bos", False)) and tok.bos_id is not None
    ids = np.full((len(texts), t), int(tok.pad_id), np.int32)
    mask = np.zeros((len(texts), t), np.int32)
    for i, text in enumerate(texts):
        row = tok.encode(text, add_bos=add_bos, add_eos=tok.eos_id is not None)
        if len(row) > t:
            if mode == "error":
                raise ValueError(f"text {i} of data.path has {len(row)} tokens > "
                                 f"data.max_length={t} (raise it, or set data.truncation_mode)")
            row = row[:t] if mode == "keep_start" else row[-t:]
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return ids, mask


def pair_rows(config) -> dict:
    """The dataset's (query, candidate, s*) rows: {"query", "candidate": [N] str, "target": [N]
    float32}.

    Raises:
      ValueError: a missing column (naming the `data.*_field` key) or a target that is not a
        finite number in [-1, 1] (naming the row).
    """
    ds = real.dataset(config)
    cols = list(ds.column_names)
    out = {}
    for key, name in (("query_field", "query"), ("candidate_field", "candidate"),
                      ("similarity_field", "target")):
        field = config.data[key]
        if field not in cols:
            raise ValueError(f"data.{key}={field!r} is not a column of data.path ({cols})")
        out[name] = list(ds[field])
    target = np.array([np.nan if x is None else float(x) for x in out["target"]], np.float64)
    bad = np.flatnonzero(~(np.isfinite(target) & (np.abs(target) <= 1)))
    if len(bad):
        raise ValueError(f"data.similarity_field={config.data.similarity_field!r}: row "
                         f"{int(bad[0])} has {out['target'][bad[0]]!r}, not a number in [-1, 1]")
    return {"query": [str(q) for q in out["query"]],
            "candidate": [str(c) for c in out["candidate"]], "target": target.astype(np.float32)}


def held_out_retrieval(queries, candidates, target, threshold: float) -> dict:
    """Each distinct query of a split ranks the split's distinct candidates.

    Returns {"query_index": [Q] a row of each distinct query, "candidate_index": [K] a row of
    each distinct candidate, "relevant": [Q, K] bool (some row pairs them with
    s* >= threshold)}."""
    qs = list(dict.fromkeys(queries))
    cs = list(dict.fromkeys(candidates))
    rel = np.zeros((len(qs), len(cs)), bool)
    for q, c, s in zip(queries, candidates, target):
        if s >= threshold:
            rel[qs.index(q), cs.index(c)] = True
    return {"query_index": np.array([queries.index(q) for q in qs]),
            "candidate_index": np.array([candidates.index(c) for c in cs]), "relevant": rel}


def head_apply(head, emb) -> jax.Array:
    """The projection head p(e) = e W + b, [..., D] -> [..., D]."""
    return emb @ head["w"] + head["b"]


def _pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _run_real(config, workdir: str) -> dict[int, dict[str, float]]:
    """`:real` (module docstring): a projection head on frozen checkpoint embeddings."""
    from alignax.algorithms import pretrained
    from alignax.eval.embeddings import sequence_embeddings

    seeds = [int(s) for s in config.seeds]
    rows = pair_rows(config)
    tok = real.tokenizer(config)
    texts = list(dict.fromkeys(rows["query"] + rows["candidate"]))
    ids, mask = text_rows(config, tok, texts)
    model, params = pretrained.load_pretrained(real.model_config(config), "lm")
    params = jax.device_put(params)
    emb = sequence_embeddings(model, params, ids, mask, pool="last",
                              batch_size=int(config.data.eval_batch_size) or len(texts))
    where = {t: i for i, t in enumerate(texts)}
    e_q = emb[[where[q] for q in rows["query"]]]
    e_c = emb[[where[c] for c in rows["candidate"]]]
    target = rows["target"]
    train, val, test = real.held_out_split(len(target), config.data.eval_fraction,
                                           config.data.max_eval_rows)
    d = emb.shape[1]
    head0 = {"w": np.eye(d, dtype=np.float32), "b": np.zeros(d, np.float32)}

    def loss_fn(head, batch):
        return cosine_regression_loss(head_apply(head, batch["q"]), head_apply(head, batch["c"]),
                                      batch["target"]).mean()

    def val_metrics(head, v):
        return {"val_mse": cosine_regression_loss(head_apply(head, v["q"]),
                                                  head_apply(head, v["c"]), v["target"]).mean()}

    def split(rows_):
        return {"q": jnp.asarray(e_q[rows_]), "c": jnp.asarray(e_c[rows_]),
                "target": jnp.asarray(target[rows_])}

    heads, best_step, chosen_lr = fit_on_validation(
        workdir, loss_fn=loss_fn, init_params=head0, data=split(train), eval_fn=val_metrics,
        eval_data=split(val), seeds=seeds, train=config.train, select=("val_mse", "min"))

    thr = float(config.retrieval.relevance_threshold)
    held = {name: (r, held_out_retrieval([rows["query"][i] for i in r],
                                         [rows["candidate"][i] for i in r], target[r], thr))
            for name, r in (("val", val), ("test", test))}
    out = {}
    for i, seed in enumerate(seeds):
        head = jax.tree.map(lambda x, i=i: x[i], heads)
        res = {"chosen_step": float(best_step[i]), "chosen_learning_rate": float(chosen_lr[i]),
               "num_train": float(len(train)), "num_val": float(len(val)),
               "num_test": float(len(test))}
        for stage, h in (("before", head0), ("after", head)):
            for name, (r, ret) in held.items():
                q = np.asarray(head_apply(h, e_q[r]))
                c = np.asarray(head_apply(h, e_c[r]))
                cos = np.asarray(cosine_similarity(q, c))
                res[f"{name}_{stage}_mse"] = float(np.mean((cos - target[r]) ** 2))
                res[f"{name}_{stage}_pearson"] = _pearson(cos, target[r])
                keep = ret["relevant"].any(1)  # queries with a relevant candidate
                res[f"num_{name}_retrieval_queries"] = float(keep.sum())
                if not keep.any():
                    continue
                k = min(int(config.retrieval.k), len(ret["candidate_index"]))
                m = retrieval.retrieval_metrics(q[ret["query_index"][keep]],
                                                c[ret["candidate_index"]],
                                                ret["relevant"][keep], k=k)
                for key, value in m.items():
                    res[f"{name}_{stage}_{key}"] = float(value)
        out[seed] = res
    return out
