"""MPO: Meta Policy Optimization with an evolving rubric reward vs a fixed rubric.

Paper: Kim et al. 2025, "Toward Evaluative Thinking: Meta Policy Optimization with Evolving
Reward Models" (arXiv 2504.20157).

Mechanism: the policy is trained by RL on a rubric judge's reward; every K policy updates a
meta reward model reads the training context (sampled generations, their scores, the rubric)
and rewrites the rubric (meta-analysis, refinement, merging), tightening what the policy
exploits. Here the rubric is numeric (`alignax.rewards.meta_rubric`): weights over
interpretable items of a response, and the meta step audits the 16 top-scored samples of the
current policy with a gold scorer, refits the weights toward the audit (ridge least squares
anchored at the current weights) and merges by averaging old and refined weights.

Setting (the notes' toy; exact expectations, `alignax.models.sequence_table`): responses are
all sequences of L = 5 tokens over {0, ..., 5}, token 0 ends the response (what follows it is
ignored). A prompt names a keyword k and a banned token b (k != b in {1..5}: 20 prompts,
features [1, onehot(k), onehot(b)]); the policy is log-linear in them, starting uniform. Items
of a response (`ITEMS`): keyword count c_k, keyword repeats max(c_k - 1, 0), length / L,
distinct non-keyword tokens / L, banned-token count. Gold = items . (1, -1.5, 0.5, 0.5, -1): one
mention of the keyword is good, repeating it is bad. The initial proxy rubric is the gold
without the repeats item (weight 0), so it pays for every extra keyword: repeating the keyword
is the hack (the all-keyword response has the top proxy score and a gold below the uniform
policy's).

Training (every variant): `rounds` rounds x `steps` GRPO updates (`alignax.algorithms.small_pg.
group_pg_loss`: 8 training prompts x 8 samples per update, (r - mean) / std group advantages,
the exact KL(pi || uniform) in the loss with a coefficient from the grid) through
`alignax.train.small.fit_rounds`, every seed and KL coefficient vmapped into one program.
Variants at equal RL budget:
  - `fixed`: the initial proxy rubric throughout;
  - `mpo` (the method): before each round r > 0, 64 samples (8 training prompts x 8) of the
    current policy, the 16 with the highest rubric score audited by the gold, `meta_step`
    (ridge 1, mix 1/2); 16 gold audits per meta step, (rounds - 1) x 16 = 112 per run,
    reported as `gold_audits`: MPO's extra supervision;
  - `oracle` (reference): the gold itself as the reward (what the rubric could at best become).

Splits (`split_seeds`): the 20 prompts are split into 10 training, 5 validation and 5 test
prompts drawn with the data seeds 3s, 3s + 1, 3s + 2 (`check_disjoint`). Selection on
validation, the same for every variant: the KL coefficient from `kl_coefs` (0, 0.01, 0.05,
0.2, all trained vmapped) with the highest exact gold on the validation prompts at the end of
training (`choose_on_validation`, recorded as val_gold_kl=<c> and chosen_kl_coef). Exact
validation gold is privileged information given to every variant equally; MPO's audits are its
only extra supervision. Reported, not claimed: the checkpoint (round) chosen on validation gold
too (`es_*`, early stopping), which lets the fixed rubric stop before it hacks.

Metrics (test prompts, end of training at the chosen KL): exact E[gold] (`test_gold`), its gain
over the uniform start (`test_gold_gain`, the start's exact gold is `test_gold_uniform`), the
gold normalised per prompt by its min and max over all responses (`test_gold_norm`), E[proxy]
under the run's current rubric, KL to the uniform start, E[keyword repeats]; `test_spearman`:
Spearman's rho between the current rubric and the gold over 64 samples of the policy per test
prompt (pooled, average ranks), `spearman_min_rounds` its minimum over the rounds; the rubric's
final weights (`weight_<item>`); `gold_audits`.

Claims (5 seeds, paired 95% t intervals; the notes' pass criteria): (1, comparative) the final
gold with the evolving rubric is >= 20% above the fixed rubric's, measured as gains over the
uniform start (the gold's zero is arbitrary): per seed gain_mpo - 1.2 gain_fixed >= 0; (2,
threshold) on policy samples the proxy-gold Spearman is >= 0.5 for MPO and (3, threshold)
<= 0.2 for the fixed rubric (the notes' "< 0.2", closed), both at the end of training. Sanity
(by construction, never counted): the initial rubric is hackable (its best response repeats the
keyword and has a gold below the uniform policy's), and MPO's gold audits are 16 per meta step.
History of the protocol (decided on exploratory runs of seeds 0-1, read on validation
numbers): the first version claimed on the min-max normalised gold ratio, which put every
policy near 0.75-0.9 (the gold's minimum lies far below any policy), so the gain over the
start is used; it also chose the round on validation, which stops the fixed rubric before
it hacks and makes its Spearman that of an early policy, while the notes' claims are about
the final reward and the Spearman along training, so the claims are at the end of training
and early stopping is reported (`es_*`).

    alignax run experiments/mpo.py            # full setting, 5 seeds
    alignax run experiments/mpo.py:smoke      # seconds, for the tests

`:real` runs the same meta loop in GRPO on a Hugging Face checkpoint (`policy_gradient.train`)
and the prompts of a dataset: the reward is a rubric over text items of the decoded completion
(per keyword of `rubric.keywords`: its count and its repeats max(count - 1, 0); then the
length in words / `rubric.max_words` and the share of distinct words), weights
`rubric.weights` (default: +1 per keyword count, 0 elsewhere). Every `meta.every` iterations
the `meta.audits` top-scored samples of the iteration are audited by the gold scorer, a reward
checkpoint at `gold.path` (`pretrained.load_pretrained(..., "reward")`) or, without it, the
rubric `gold.weights`, and the rubric is refined and merged; the rubric is the recipe's
`reward_state`, checkpointed with the run. Reported: the held-out proxy and gold rewards before
and after, the audit count and the rubric's weights (no claim: a user's data has no gold).

    alignax run experiments/mpo.py:real --workdir runs/mpo_real \
        --config.model.path=/ckpt/Qwen2.5-0.5B-Instruct --config.data.path=/data/prompts \
        --config.gold.path=/ckpt/reward-model --config.rubric.keywords='("thanks",)'
"""

from __future__ import annotations

import glob
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import policy_gradient, pretrained, real
from alignax.algorithms.small_pg import group_pg_loss, rl_batch
from alignax.models import sequence_table as st
from alignax.ops.rank import spearman
from alignax.rewards import meta_rubric as mr
from alignax.tasks.splits import check_disjoint, choose_on_validation, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_rounds, stack_seeds
from alignax.train.writers import read_metrics

ITEMS = ("keyword", "keyword_repeats", "length", "distinct", "banned")
METHODS = ("fixed", "mpo", "oracle")
NUM_CONTENT = 5  # content tokens 1..5; token 0 ends the response


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "mpo"
    c.variants = {m: {"method": m} for m in METHODS}
    c.length = 4 if smoke else 5
    c.gold_weights = (1.0, -1.5, 0.5, 0.5, -1.0)
    c.proxy_weights = (1.0, 0.0, 0.5, 0.5, -1.0)  # the repeats item omitted: hackable
    c.data = dict(num_train=10, num_val=5)
    c.train = dict(rounds=2 if smoke else 8, steps=2 if smoke else 25, prompts=8,
                   group_size=8, learning_rate=0.05)
    c.kl_coefs = (0.01,) if smoke else (0.0, 0.01, 0.05, 0.2)
    c.meta = dict(prompts=8, group_size=8, audits=16, method="least_squares", ridge=1.0,
                  step_size=0.1, mix=0.5)
    c.eval = dict(samples=16 if smoke else 64)
    return c


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): GRPO with the evolving text rubric."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real.add_real_fields(c, max_length=256)  # data.max_length: the prompt length P
    c.rubric = dict(keywords=("the",), weights=(), max_words=64)
    c.gold = dict(path="", weights=())
    c.meta = dict(every=5, audits=16, method="least_squares", ridge=1.0, step_size=0.1,
                  mix=0.5)
    c.eval = dict(num_samples=1)
    c.rl = policy_gradient.default_config(
        iterations=100, prompts_per_iteration=8, num_samples=8, max_new_tokens=128,
        temperature=1.0, advantage="grpo", kl_coef=0.04, checkpoint_every=10, log_every=1,
        optimizer=real.optimizer(1e-6))
    c.rl.stop_tokens = (-1,)  # -1: the tokenizer's eos
    return c


def real_items(keywords) -> tuple[str, ...]:
    """The item names of the `:real` text rubric."""
    return (tuple(f"count_{k}" for k in keywords) + tuple(f"repeats_{k}" for k in keywords)
            + ("length", "distinct"))


def validate(config: ml_collections.ConfigDict) -> None:
    if real.is_real(config):
        real.require(config, "model.path", "data.path")
        keywords = tuple(config.rubric.keywords)
        if not keywords or any(not str(k).strip() for k in keywords):
            raise ValueError(f"rubric.keywords={keywords} must be non-empty words")
        num = len(real_items(keywords))
        for key in ("rubric.weights", "gold.weights"):
            w = tuple(config.rubric.weights if key == "rubric.weights" else config.gold.weights)
            if w and len(w) != num:
                raise ValueError(f"{key} has {len(w)} weights for the {num} items "
                                 f"{real_items(keywords)}")
        if not config.gold.path and not config.gold.weights:
            raise ValueError("gold.path or gold.weights is required by the :real config (the "
                             "audit's scorer); pass --config.gold.path=... or "
                             "--config.gold.weights=...")
        _check_meta(config.meta, int(config.rl.prompts_per_iteration)
                    * int(config.rl.num_samples))
        if int(config.meta.every) < 1:
            raise ValueError(f"meta.every={config.meta.every} must be >= 1")
        if int(config.rubric.max_words) < 1:
            raise ValueError(f"rubric.max_words={config.rubric.max_words} must be >= 1")
        policy_gradient.validate(real.online_config(config, "rl"))
        return
    if config.method not in METHODS:
        raise ValueError(f"method={config.method!r} must be one of {METHODS}")
    for key in ("gold_weights", "proxy_weights"):
        if len(config[key]) != len(ITEMS):
            raise ValueError(f"{key} needs {len(ITEMS)} weights ({ITEMS}), got "
                             f"{len(config[key])}")
    if not config.kl_coefs or any(float(k) < 0 for k in config.kl_coefs):
        raise ValueError(f"kl_coefs={tuple(config.kl_coefs)} must be non-empty and >= 0")
    _check_meta(config.meta, int(config.meta.prompts) * int(config.meta.group_size))


def _check_meta(meta, batch: int) -> None:
    if meta.method not in mr.REFINE_METHODS:
        raise ValueError(f"meta.method={meta.method!r} must be one of {mr.REFINE_METHODS}")
    if not 1 <= int(meta.audits) <= batch:
        raise ValueError(f"meta.audits={meta.audits} must be in [1, {batch}] (the samples "
                         "the meta step draws)")
    if not float(meta.ridge) > 0:
        raise ValueError(f"meta.ridge={meta.ridge} must be > 0")
    if not 0.0 <= float(meta.mix) <= 1.0:
        raise ValueError(f"meta.mix={meta.mix} must be in [0, 1]")


# --- the toy world ---------------------------------------------------------------------------

def space_of(config) -> st.SequenceSpace:
    return st.SequenceSpace(NUM_CONTENT + 1, int(config.length))


def all_prompts() -> list[tuple[int, int]]:
    """(keyword, banned) token pairs, k != b."""
    return [(k, b) for k in range(1, NUM_CONTENT + 1) for b in range(1, NUM_CONTENT + 1)
            if k != b]


def prompt_features(ids) -> np.ndarray:
    """[n, 1 + 2 C] features of prompt ids (indices into `all_prompts()`)."""
    prompts = np.array(all_prompts())[np.asarray(ids)]
    out = np.zeros((len(prompts), 1 + 2 * NUM_CONTENT), np.float32)
    out[:, 0] = 1.0
    out[np.arange(len(prompts)), prompts[:, 0]] = 1.0
    out[np.arange(len(prompts)), NUM_CONTENT + prompts[:, 1]] = 1.0
    return out


def item_table(space: st.SequenceSpace) -> np.ndarray:
    """[P, N, F] the rubric items (`ITEMS`) of every response for every prompt."""
    seqs = space.sequences
    length = space.length
    alive = np.cumprod(seqs != 0, axis=1).astype(bool)  # tokens before the first 0
    n = alive.sum(1)
    out = np.zeros((len(all_prompts()), len(seqs), len(ITEMS)), np.float32)
    for p, (k, b) in enumerate(all_prompts()):
        count = ((seqs == k) & alive).sum(1)
        present = np.stack([((seqs == t) & alive).any(1) for t in range(1, NUM_CONTENT + 1)
                            if t != k], 1)
        out[p, :, 0] = count
        out[p, :, 1] = np.maximum(count - 1, 0)
        out[p, :, 2] = n / length
        out[p, :, 3] = present.sum(1) / length
        out[p, :, 4] = ((seqs == b) & alive).sum(1)
    return out


def make_split(config, seed: int) -> dict:
    """Disjoint train / validation / test prompt ids from the seed's data seeds."""
    s = split_seeds(seed)
    ids = np.arange(len(all_prompts()))
    train = np.sort(np.random.default_rng([s.train, 707]).choice(
        ids, config.data.num_train, replace=False))
    rest = np.setdiff1d(ids, train)
    val = np.sort(np.random.default_rng([s.validation, 707]).choice(
        rest, config.data.num_val, replace=False))
    test = np.sort(np.random.default_rng([s.test, 707]).permutation(np.setdiff1d(rest, val)))
    check_disjoint(train=train.tolist(), validation=val.tolist(), test=test.tolist())
    return {"train": train, "val": val, "test": test}


def _policy(space):
    def sample_fn(params, key, prompts, n):
        return st.sample(space, params, key, n, prompts["features"])

    def log_prob_fn(params, prompts, responses):
        phi = jnp.broadcast_to(prompts["features"][:, None, :],
                               (*responses.shape, prompts["features"].shape[-1]))
        return st.path_log_probs(space, params, responses, phi)

    def kl_fn(params, prompts, responses, data):
        # KL(pi || uniform) = log V^L - H(pi), exact (a zero reference table built inside jit
        # made XLA:CPU return NaN for `sequence_kl` here: its YNNPACK fusions, now off, see
        # alignax._src.xla_flags; this form is kept so the recorded runs stay comparable)
        del responses
        h = st.entropy(space, params, prompts["features"])
        return data["kl_coef"] * (space.length * jnp.log(space.vocab_size) - h)

    return sample_fn, log_prob_fn, kl_fn


def _draw_prompts(num: int):
    def prompt_fn(key, d):
        pick = jax.random.randint(key, (num,), 0, d["ids"].shape[0])
        return {"ids": d["ids"][pick], "features": d["features"][pick]}
    return prompt_fn


def _items_of(d, prompt_ids, responses):
    """[M, G, F] items of responses [M, G] to prompts `prompt_ids` [M]."""
    return d["items"][prompt_ids[:, None], responses]


def loss_fn_of(config, space):
    tr = config.train
    sample_fn, log_prob_fn, kl_fn = _policy(space)

    def reward_fn(prompts, responses, d):
        items = _items_of(d, prompts["ids"], responses)
        gold = items @ d["gold_weights"]
        return items @ d["weights"], {"gold": gold.mean()}

    return group_pg_loss(sample_fn, log_prob_fn, reward_fn, group_size=int(tr.group_size),
                         kl_coef=1.0, kl_fn=kl_fn, prompt_fn=_draw_prompts(int(tr.prompts)))


def eval_fn_of(config, space):
    num = int(config.eval.samples)

    def split_metrics(params, e, name):
        ids = e[f"{name}_ids"]
        phi = jnp.asarray(prompt_features_table())[ids]
        lp = st.sequence_log_probs(space, params, phi)  # [P, N]
        p = jnp.exp(lp)
        items = e["items"][ids]  # [P, N, F]
        gold = items @ e["gold_weights"]
        proxy = items @ e["weights"]
        g_min, g_max = gold.min(-1), gold.max(-1)
        exp_gold = (p * gold).sum(-1)
        key = jax.random.fold_in(jax.random.wrap_key_data(e["key"]), len(name))
        ys = st.sample(space, params, key, num, phi)  # [P, num]
        rho = spearman(jnp.take_along_axis(proxy, ys, -1).reshape(-1),
                       jnp.take_along_axis(gold, ys, -1).reshape(-1))
        return {f"{name}_gold": exp_gold.mean(),
                f"{name}_gold_norm": ((exp_gold - g_min) / (g_max - g_min)).mean(),
                f"{name}_proxy": (p * proxy).sum(-1).mean(),
                f"{name}_kl": (p * (lp + space.length * jnp.log(space.vocab_size))).sum(
                    -1).mean(),
                f"{name}_spearman": rho,
                f"{name}_repeats": (p * items[..., 1]).sum(-1).mean()}

    def eval_fn(params, e):
        return {**split_metrics(params, e, "val"), **split_metrics(params, e, "test")}

    return eval_fn


def prompt_features_table() -> np.ndarray:
    return prompt_features(np.arange(len(all_prompts())))


def train(config, workdir: str, splits: list[dict]):
    """Every (seed, KL coefficient) run of the variant in one `fit_rounds` program; returns
    ({run id: [round metrics]}, {run id: [round weights]}, ids, audits per meta step)."""
    space = space_of(config)
    seeds = [int(s) for s in config.seeds]
    coefs = [float(k) for k in config.kl_coefs]
    ids = [1000 * s + j for s in seeds for j in range(len(coefs))]
    runs = [(i, j) for i in range(len(seeds)) for j in range(len(coefs))]
    items = item_table(space)
    gold_w = np.asarray(config.gold_weights, np.float32)
    start_w = gold_w if config.method == "oracle" else np.asarray(config.proxy_weights,
                                                                 np.float32)
    feats = prompt_features_table()
    per_run = [{"ids": splits[i]["train"].astype(np.int32), "features": feats[splits[i]["train"]],
                "items": items, "gold_weights": gold_w, "kl_coef": np.float32(coefs[j])}
               for i, j in runs]
    evals = [{"val_ids": splits[i]["val"].astype(np.int32),
              "test_ids": splits[i]["test"].astype(np.int32), "items": items,
              "gold_weights": gold_w,
              "key": np.asarray(jax.random.key_data(jax.random.key(seeds[i] + 1)))}
             for i, _ in runs]
    base, base_eval = stack_seeds(per_run), stack_seeds(evals)
    meta = config.meta
    m_prompts, m_group, audits = int(meta.prompts), int(meta.group_size), int(meta.audits)

    @jax.jit
    def meta_all(params, d, weights, keys):
        def one(p, dd, w, key):
            prompts = _draw_prompts(m_prompts)(jax.random.fold_in(key, 0), dd)
            ys = st.sample(space, p, jax.random.fold_in(key, 1), m_group, prompts["features"])
            phi = _items_of(dd, prompts["ids"], ys).reshape(-1, len(ITEMS))
            rubric = mr.linear_rubric(w)
            top = mr.audit_indices(mr.rubric_score(phi, rubric, gate_penalty=0.0), audits)
            out = mr.meta_step(rubric, phi[top], phi[top] @ dd["gold_weights"],
                               method=meta.method, ridge=float(meta.ridge),
                               step_size=float(meta.step_size), mix=float(meta.mix),
                               gate_penalty=0.0)
            return out.rubric.principle_weights, out.residual_before, out.residual_after
        return jax.vmap(one)(params, d, weights, keys)

    weights = [np.stack([start_w] * len(ids))]
    meta_log = []

    def make_round(r, fits):
        if r > 0 and config.method == "mpo":
            keys = jnp.stack([jax.random.fold_in(jax.random.key(i // 1000), 5000 + r)
                              for i in ids])
            w, before, after = meta_all(fits[-1].params, base, jnp.asarray(weights[-1]), keys)
            weights.append(np.asarray(w))
            meta_log.append({"residual_before": np.asarray(before),
                             "residual_after": np.asarray(after)})
        elif r > 0:
            weights.append(weights[-1])
        w = jnp.asarray(weights[r])
        return {"data": {**base, "weights": w}, "eval_data": {**base_eval, "weights": w}}

    tr = config.train
    init = st.init_table(space, feats.shape[1])
    fit = fit_rounds(workdir, num_rounds=int(tr.rounds), make_round=make_round,
                     init_params=init, loss_fn=loss_fn_of(config, space),
                     tx=optax.adam(float(tr.learning_rate)), num_steps=int(tr.steps),
                     seeds=ids, seed_keys=jnp.stack([jax.random.key(i // 1000) for i in ids]),
                     per_seed_data=True, batch_fn=rl_batch, has_aux=True,
                     steps_per_log=int(tr.steps), eval_fn=eval_fn_of(config, space),
                     plots=False)
    history = {i: [{k.split("/", 2)[-1]: v for k, v in f.history[-1].items()
                    if k.startswith(f"seed_{i}/")} for f in fit.fits] for i in ids}
    round_weights = {i: [weights[r][n] for r in range(len(fit.fits))] for n, i in enumerate(ids)}
    return history, round_weights, ids, meta_log


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    if real.is_real(config):
        return {int(s): _run_real(config, os.path.join(workdir, f"seed_{int(s)}"), int(s))
                for s in config.seeds}
    seeds = [int(s) for s in config.seeds]
    coefs = [float(k) for k in config.kl_coefs]
    rounds = int(config.train.rounds)
    splits = [make_split(config, s) for s in seeds]
    history, round_weights, ids, _ = train(config, os.path.join(workdir, "rounds"), splits)
    audits = int(config.meta.audits) if config.method == "mpo" else 0
    gold_table = item_table(space_of(config)) @ np.asarray(config.gold_weights, np.float32)
    out = {}
    for seed, split in zip(seeds, splits):
        # the claims' checkpoint: the end of training (equal budget), KL chosen on validation
        final = {f"kl={c}": 1000 * seed + j for j, c in enumerate(coefs)}
        name, record = choose_on_validation(final, lambda i: history[i][-1]["val_gold"])
        run_id = final[name]
        row = history[run_id][-1]
        res = {k: float(v) for k, v in row.items() if k.startswith(("val_", "test_"))}
        res["chosen_kl_coef"] = coefs[run_id % 1000]
        res["gold_audits"] = float(audits * (rounds - 1))
        res["meta_steps"] = float(rounds - 1 if config.method == "mpo" else 0)
        res["spearman_min_rounds"] = float(min(h["test_spearman"] for h in history[run_id]))
        res["test_gold_uniform"] = float(gold_table[split["test"]].mean())
        res["test_gold_gain"] = res["test_gold"] - res["test_gold_uniform"]
        for item, w in zip(ITEMS, round_weights[run_id][-1]):
            res[f"weight_{item}"] = float(w)
        for cand, score in record["scores"].items():
            res[f"val_gold_{cand}"] = float(score)
        # reported, not claimed: early stopping, the round chosen on validation gold too
        stops = {f"kl={c},round={r}": (1000 * seed + j, r) for j, c in enumerate(coefs)
                 for r in range(rounds)}
        es_name, _ = choose_on_validation(stops, lambda v: history[v[0]][v[1]]["val_gold"])
        es_id, es_round = stops[es_name]
        res["es_round"] = float(es_round + 1)
        res["es_test_gold"] = float(history[es_id][es_round]["test_gold"])
        res["es_test_spearman"] = float(history[es_id][es_round]["test_spearman"])
        res["es_gold_audits"] = float(audits * es_round)
        out[seed] = res
    return out


def _hackable(config) -> dict:
    """The initial rubric's best response (prompt 0) and its gold vs the uniform policy's."""
    space = space_of(config)
    items = item_table(space)[0]
    proxy = items @ np.asarray(config.proxy_weights, np.float32)
    gold = items @ np.asarray(config.gold_weights, np.float32)
    best = int(np.argmax(proxy))
    return {"proxy_best_gold": float(gold[best]), "uniform_gold": float(gold.mean()),
            "proxy_best_repeats": float(items[best, 1])}


def claims(results) -> list[protocol.Claim]:
    if "default" in results:  # :real: metrics only (no gold reward on a user's data)
        return []
    cfg = get_config()
    gain = {v: protocol.per_seed(results, v, "test_gold_gain") for v in results}
    rel = {s: gain["mpo"][s] - 1.2 * gain["fixed"][s] for s in gain["mpo"]
           if s in gain["fixed"]}
    mean = {v: {m: protocol.seed_mean(results, v, m) for m in
                ("test_gold", "test_gold_gain", "test_spearman", "spearman_min_rounds",
                 "test_repeats", "test_kl", "chosen_kl_coef", "gold_audits", "es_test_gold",
                 "es_round", "es_test_spearman")}
            for v in results}
    uniform = protocol.seed_mean(results, "fixed", "test_gold_uniform")
    detail = f"uniform start: test gold {uniform:.3f}; " + "; ".join(
        f"{v}: gold {mean[v]['test_gold']:.3f} (gain {mean[v]['test_gold_gain']:.3f}), "
        f"keyword repeats {mean[v]['test_repeats']:.2f}, KL {mean[v]['test_kl']:.2f}, "
        f"Spearman {mean[v]['test_spearman']:.3f} (min over rounds "
        f"{mean[v]['spearman_min_rounds']:.3f}), KL coef {mean[v]['chosen_kl_coef']:.3f}, "
        f"gold audits {mean[v]['gold_audits']:.0f}; early-stopped on validation gold: round "
        f"{mean[v]['es_round']:.1f}, gold {mean[v]['es_test_gold']:.3f}, Spearman "
        f"{mean[v]['es_test_spearman']:.3f}" for v in results)
    hack = _hackable(cfg)
    out = [
        protocol.decide(
            "with the evolving rubric the final test gold gain over the start is >= 20% above "
            "the fixed rubric's (per seed gain_mpo - 1.2 gain_fixed >= 0)", rel,
            kind="comparative", at_least=0.0, detail=detail),
        protocol.threshold(
            "on policy samples the proxy-gold Spearman is >= 0.5 with MPO's evolving rubric "
            "(end of training)", results, ("mpo", "test_spearman"), at_least=0.5,
            detail=detail),
        protocol.threshold(
            "on policy samples the proxy-gold Spearman is <= 0.2 with the fixed rubric (end "
            "of training)", results, ("fixed", "test_spearman"), at_most=0.2, detail=detail),
        protocol.sanity(
            "the initial rubric is hackable: its best response repeats the keyword and has a "
            "gold below the uniform policy's", hack["proxy_best_gold"] < hack["uniform_gold"]
            and hack["proxy_best_repeats"] > 0, hack, "by construction of the toy"),
    ]
    if "mpo" in results:
        audits = mean["mpo"]["gold_audits"]
        steps = protocol.seed_mean(results, "mpo", "meta_steps")
        out.append(protocol.sanity(
            f"MPO's extra supervision is {int(cfg.meta.audits)} gold audits per meta step",
            bool(np.isclose(audits, int(cfg.meta.audits) * steps)),
            {"gold_audits": audits, "meta_steps": steps}, "counted, by construction"))
    return out


def plots(results, workdir: str) -> list[str]:
    """Validation gold and proxy-gold Spearman after each round, per variant (means over the
    seeds and KL coefficients)."""
    curves = {}
    for variant in results:
        rounds = sorted(glob.glob(os.path.join(workdir, variant, "rounds", "round_*",
                                               "metrics.jsonl")),
                        key=lambda p: int(p.split("round_")[-1].split(os.sep)[0]))
        rows = [read_metrics(p)[-1] for p in rounds]
        for metric in ("val_gold", "val_spearman"):
            if rows and all(f"eval/{metric}" in r for r in rows):
                curves[f"{variant}: {metric}"] = (list(range(1, len(rows) + 1)),
                                                  [r[f"eval/{metric}"] for r in rows])
    if not curves:
        return []
    return [plot_curves(curves, os.path.join(workdir, "plots", "rounds.png"),
                        title="validation gold and proxy-gold Spearman per round",
                        xlabel="round", ylabel="value")]


# --- :real -----------------------------------------------------------------------------------

def text_items(texts, keywords, max_words: int) -> np.ndarray:
    """[N, F] items of completions (`real_items` order): per keyword its count and repeats
    max(count - 1, 0) among the lower-cased words, then words / max_words and the share of
    distinct words."""
    out = np.zeros((len(texts), 2 * len(keywords) + 2), np.float32)
    kws = [str(k).lower() for k in keywords]
    for i, text in enumerate(texts):
        words = [w.strip(".,;:!?\"'()[]") for w in text.lower().split()]
        words = [w for w in words if w]
        for j, k in enumerate(kws):
            c = sum(w == k for w in words)
            out[i, j] = c
            out[i, len(kws) + j] = max(c - 1, 0)
        out[i, -2] = len(words) / max_words
        out[i, -1] = len(set(words)) / len(words) if words else 0.0
    return out


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    """`:real`: GRPO from `model.path` with the evolving rubric as the recipe's reward state."""
    tok = real.tokenizer(config)
    data = real.prompt_data(config, tok, int(config.data.max_length))
    model, params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    stops = real.stop_tokens(tok, config.rl.stop_tokens)
    keywords = tuple(str(k) for k in config.rubric.keywords)
    names = real_items(keywords)
    max_words = int(config.rubric.max_words)
    start = (np.asarray(config.rubric.weights, np.float32) if config.rubric.weights else
             np.array([1.0] * len(keywords) + [0.0] * (len(names) - len(keywords)), np.float32))
    if config.gold.path:
        gold_model, gold_params = pretrained.model_and_params(
            real.model_config(config, config.gold.path), "reward", seed=seed)
        gold_apply = jax.jit(gold_model.apply)

        def gold_of(ids, mask, texts):
            del texts
            return np.asarray(gold_apply(gold_params, jnp.asarray(ids), jnp.asarray(mask)),
                              np.float32)
    else:
        gold_w = np.asarray(config.gold.weights, np.float32)

        def gold_of(ids, mask, texts):
            del ids, mask
            return text_items(texts, keywords, max_words) @ gold_w
    meta = config.meta
    every, audits = int(meta.every), int(meta.audits)

    @jax.jit
    def meta_fn(weights, phi, gold):
        out = mr.meta_step(mr.linear_rubric(weights), phi, gold, method=meta.method,
                           ridge=float(meta.ridge), step_size=float(meta.step_size),
                           mix=float(meta.mix), gate_penalty=0.0)
        return out.rubric.principle_weights

    def reward_fn(rollout, state):
        texts = real.decode_responses(tok, rollout.responses, rollout.response_mask)
        phi = text_items(texts, keywords, max_words)
        proxy = phi @ np.asarray(state["weights"])
        it = int(state["iteration"]) + 1
        new = {"weights": state["weights"], "iteration": jnp.int32(it),
               "audits": state["audits"]}
        if it % every == 0:  # the meta step: audit the top-scored samples of this iteration
            top = np.asarray(mr.audit_indices(proxy, audits))
            ids, mask = np.asarray(rollout.ids)[top], np.asarray(rollout.mask)[top]
            gold = gold_of(ids, mask, [texts[i] for i in top])
            new["weights"] = meta_fn(state["weights"], jnp.asarray(phi[top]), jnp.asarray(gold))
            new["audits"] = state["audits"] + audits
        return jnp.asarray(proxy, jnp.float32), new

    state0 = {"weights": jnp.asarray(start), "iteration": jnp.int32(0), "audits": jnp.int32(0)}
    ids, mask, n_val = real.held_out_prompts(data)
    from alignax.algorithms import online

    rollout_fn = jax.jit(online.make_rollout(
        model, num_samples=int(config.eval.num_samples),
        max_new_tokens=int(config.rl.max_new_tokens), stop_tokens=stops, pad_id=tok.pad_id))

    def held_out(p, weights, tag):
        r = rollout_fn(p, ids, mask, jax.random.key(seed + 77))
        texts = real.decode_responses(tok, r.responses, r.response_mask)
        phi = text_items(texts, keywords, max_words)
        k = int(config.eval.num_samples)
        proxy = (phi @ np.asarray(weights)).reshape(-1, k).mean(1)
        gold = gold_of(np.asarray(r.ids), np.asarray(r.mask), texts).reshape(-1, k).mean(1)
        return {**real.split_means(proxy, n_val, f"proxy_{tag}"),
                **real.split_means(gold, n_val, f"gold_{tag}")}

    before = held_out(params, start, "before")
    cfg = real.online_config(config, "rl", stops)
    train = data["train"]
    out = policy_gradient.train(cfg, os.path.join(workdir, "rl"), model=model, init_params=params,
                                ref_params=params, prompt_ids=train["prompt_ids"],
                                prompt_mask=train["prompt_mask"], reward_fn=reward_fn,
                                reward_state=state0, seed=seed)
    final = jax.device_get(out["state"].controls["reward"])
    res = {**before, **held_out(out["params"], final["weights"], "after"),
           "gold_audits": float(final["audits"]), "meta_steps": float(final["audits"] / audits),
           "train_reward_last": float(out["history"][-1]["reward"])}
    for name, w0, w in zip(names, start, np.asarray(final["weights"])):
        res[f"weight_{name}"] = float(w)
        res[f"weight_{name}_start"] = float(w0)
    return res
