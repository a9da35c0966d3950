"""Goal-conditioned contrastive representations for a reward model on arithmetic chains: prefix
AUROC and pruned majority voting.

Paper: Nath et al. 2024, "Learning Goal-Conditioned Representations for Language Reward Models"
(arXiv 2407.13887). The RM is trained with Bradley-Terry plus a contrastive term on its token
representations z_t = g(h_t): a source token and a later goal token of the preferred response are
a positive pair, a token of the dispreferred response is the negative goal
(`alignax.losses.reward.goal_contrastive_loss`). At inference the value of a prefix is
Q = cos(z_t, g_bar), g_bar the mean z of the final states of correct training solutions
(`prefix_goal_values`); low-Q generations are stopped early during majority voting.

Setting: modular-arithmetic chains (mod 10, 2 to 4 steps, `alignax.tasks.arithmetic`) written
step by step. Pairs: the correct solution (chosen) vs a corrupted one of the same problem
(rejected). The corruption is a transcription error: one step starts from a wrong left operand
(not the previous result), computes correctly from it, and later steps follow consistently, so the
final answer is wrong (`copy_error_solution`; `data.corruption="arithmetic"` uses
`arithmetic.corrupt_solution`, a wrong result inside one step, which this 2-layer RM did not learn
to detect within the budget: pairwise accuracy about 0.55 after 1500 steps). Per seed and variant:
a 2-layer transformer RM (d_model 64) with a scalar head on every token and a linear projection
head g, trained with BT only (`bt`, lambda = 0) or BT + lambda * contrastive (`contrastive`,
lambda = 1), same data, steps and seed (AdamW on random minibatches; all seeds of a variant train
in one `alignax.train.small.fit_small` program under `<variant>/rm`: metrics every step,
checkpoints). Evaluation on held-out problems:
  - prefix AUROC: correct vs corrupted solutions scored after a fraction f of their solution
    tokens (`alignax.eval.ranking.auroc`), by Q = cos(z_t, g_bar) and by the reward head at the
    prefix's last token;
  - majority voting over 16 sampled solutions per problem: a synthetic policy, correct with a
    per-problem probability in [0.2, 0.7], whose wrong solutions repeat the problem's one common
    mistake with probability 0.6 (else another random corruption), so that a plain vote errs on
    some problems; each sample is scored at 50% of its tokens and the samples below the 70%
    quantile of the problem's scores are stopped there (`pruned_majority_vote`; identical
    samples get identical scores, and a 1e-6 random jitter breaks those exact ties).

Splits (docs/protocol.md): experiment seed s trains on pairs from data seed `split_seeds(s).train`
(3s); its validation pairs and validation vote problems come from `.validation` (3s + 1), its
test pairs (prefix AUROC) and test vote problems from `.test` (3s + 2). Model initialisation and
minibatch order use the experiment seed. (Problems are drawn from the same finite space, so a
test problem can repeat a training problem by chance, as in the paper's benchmarks.)

Selection on validation, the same procedure for both variants (`bt`, `contrastive`):
  - early stopping: `train.steps` updates, the params of the logged step (every 50) with the
    best validation pair accuracy of the reward head (`fit_small(select=("val_accuracy",
    "max"))`); `chosen_steps` and `val_accuracy` are recorded;
  - the prefix scorer: Q or the reward head, whichever has the higher validation AUROC at the
    50% prefix (`choose_on_validation`); `test_auroc_chosen_50` is the chosen scorer's test
    AUROC, `chosen_scorer_q` = 1 when Q was chosen;
  - the pruning quantile of each scorer, from {0.6, 0.7, 0.8}: the one that saves the most
    tokens on the validation vote problems among those whose validation accuracy loss is <= 1
    point (else the one with the smallest loss); `chosen_quantile_<scorer>`.
The learning rate, lambda = 1 and the toy's policy parameters are the first version's (set by
hand before this protocol; not tuned here). The previous version pruned at a fixed quantile 0.7
and trained 1000 steps; the full setting now trains 400 (with early stopping), because the
5-seed run had to fit the time limit of a shared, heavily loaded 2-core machine (1000 steps ran
at ~3 s per step there).

Claims (5 seeds, 95% t intervals over seeds; test metrics only):
  1. comparative: prefix AUROC at the 50% prefix, the contrastive RM's Q minus the BT-only RM's
     prefix score chosen on validation (the better of its reward head and its Q there) is
     >= 0.05;
  2. threshold: pruning the lowest-Q samples at the 50% prefix (contrastive RM, quantile chosen
     on validation) saves >= 30% of the tokens;
  3. threshold: ... with a majority-vote accuracy loss <= 1 point (claims 2 and 3 together are
     the notes' pass criterion).
Pruning by the reward heads of both RMs and by the BT-only RM's Q is measured the same way and
reported in the details.

    alignax run experiments/goal_conditioned_rm.py            # full setting, 5 seeds
    alignax run experiments/goal_conditioned_rm.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from alignax.eval.ranking import auroc, pruned_majority_vote
from alignax import protocol
from alignax.experiment import is_smoke
from alignax.losses.reward import bradley_terry_loss, goal_contrastive_loss, prefix_goal_values
from alignax.models.transformer import Decoder, TransformerConfig, make_from_module
from alignax.tasks import arithmetic
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.small import fit_small

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.task = dict(modulus=10, min_steps=2, max_steps=4, ops=("+", "-", "*"), seed=0)
    c.model = dict(d_model=64, n_layers=2, n_heads=4, d_ff=128, proj_dim=32)
    c.data = dict(num_pairs=4000 if not smoke else 64, num_eval=1000 if not smoke else 32,
                  num_val=500 if not smoke else 32,
                  num_vote_problems=400 if not smoke else 8, samples_per_problem=16,
                  p_correct=(0.2, 0.7), common_mistake=0.6, corruption="copy")
    # 400 steps (was 1000): the full run had to fit the shared 2-core machine's time limit
    c.train = dict(steps=400 if not smoke else 3, batch_size=32 if not smoke else 8,
                   learning_rate=1e-3, steps_per_log=50 if not smoke else 3)
    c.contrastive_weight = 0.0  # lambda; the variants set it
    c.vote = dict(prefix_fraction=0.5, quantiles=(0.6, 0.7, 0.8), max_loss=0.01)
    c.variants = dict(bt=dict(contrastive_weight=0.0), contrastive=dict(contrastive_weight=1.0))
    return c


# ----------------------------------------------------------------------------- the reward model


class GoalRewardModel(nnx.Module):
    """Decoder with a scalar reward head and a goal-projection head on every token."""

    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs, proj_dim: int):
        self.decoder = Decoder(cfg, rngs)
        self.score = nnx.Linear(cfg.d_model, 1, kernel_init=nnx.initializers.normal(0.02),
                                rngs=rngs)
        self.head = nnx.Linear(cfg.d_model, proj_dim, rngs=rngs)

    def __call__(self, input_ids, mask):
        """(token rewards [B, T], token projections z [B, T, P])."""
        hidden = self.decoder(input_ids, mask)
        return self.score(hidden)[..., 0].astype(jnp.float32), self.head(hidden)


def make_rm(model_config, max_len: int):
    """The goal-conditioned RM of `config.model` for sequences of up to `max_len` tokens."""
    m = dict(model_config)
    proj = int(m.pop("proj_dim"))
    cfg = TransformerConfig(**m, vocab_size=arithmetic.VOCAB_SIZE, max_len=max_len)
    return make_from_module(lambda c, rngs: GoalRewardModel(c, rngs, proj), cfg)


# ----------------------------------------------------------------------------- data


def encode_solutions(problems, texts, max_len: int):
    """[BOS] + prompt + solution + [EOS], right-padded: ids, mask [N, T]; solution start and
    end (index of EOS) [N]."""
    prompts = [[arithmetic.BOS_ID] + arithmetic.encode(arithmetic.prompt_text(p))
               for p in problems]
    seqs = [q + arithmetic.encode(t) + [arithmetic.EOS_ID] for q, t in zip(prompts, texts)]
    ids, mask = arithmetic.pad_sequences(seqs, max_len=max_len)
    start = np.array([len(q) for q in prompts], np.int32)
    end = np.array([len(s) - 1 for s in seqs], np.int32)
    return ids, mask.astype(bool), start, end


def _chain_text(lhs, problem, res) -> str:
    steps = "".join(f"{a}{op}{b}{arithmetic.EQUALS}{r}{arithmetic.STEP_SEP}"
                    for a, op, b, r in zip(lhs, problem.ops, problem.operands, res))
    return steps + f"{arithmetic.ANSWER_MARK}{res[-1]}"


def copy_error_solution(problem, rng: np.random.Generator) -> str:
    """A solution with one transcription error: step s starts from a wrong left operand (not the
    previous result, or not a_0 for s = 0), computes correctly from it, and later steps follow
    consistently, so the final answer is wrong. (s, wrong value) are drawn uniformly among those
    that change the final answer."""
    p, true = problem, problem.results
    options = []
    for s in range(p.num_steps):
        right = p.start if s == 0 else true[s - 1]
        for w in range(p.modulus):
            if w == right:
                continue
            lhs, res, a = [], [], w
            for j in range(s, p.num_steps):
                lhs.append(a)
                a = arithmetic.apply_op(a, p.ops[j], p.operands[j], p.modulus)
                res.append(a)
            if res[-1] != p.answer:
                options.append((s, lhs, res))
    s, lhs, res = options[int(rng.integers(len(options)))]
    prefix_lhs = [p.start] + list(true[:s - 1]) if s > 0 else []
    return _chain_text(prefix_lhs[:s] + lhs, p, list(true[:s]) + res)


def corrupt(problem, rng: np.random.Generator, kind: str) -> str:
    if kind == "copy":
        return copy_error_solution(problem, rng)
    if kind == "arithmetic":
        return arithmetic.corrupt_solution(problem, rng=rng)[0]
    raise ValueError(f"corruption must be 'copy' or 'arithmetic', got {kind!r}")


def make_pairs(task, n: int, seed: int, max_len: int, kind: str):
    rng = np.random.default_rng([seed, 5])
    problems = task.sample_problems(n, seed=1000 + seed)
    good = [arithmetic.solution_text(p) for p in problems]
    bad = [corrupt(p, rng, kind) for p in problems]
    return encode_solutions(problems, good, max_len), encode_solutions(problems, bad, max_len)


def vote_samples(task, config, seed: int, max_len: int):
    """S sampled solutions of each of P problems from a synthetic policy with correlated errors.

    Returns (encoded [P*S] solutions, final answers [P, S], true answers [P])."""
    rng = np.random.default_rng([seed, 6])
    d = config.data
    problems = task.sample_problems(d.num_vote_problems, seed=3000 + seed)
    probs, texts, answers = [], [], []
    for p in problems:
        p_ok = rng.uniform(*d.p_correct)
        common = corrupt(p, rng, d.corruption)
        for _ in range(d.samples_per_problem):
            u = rng.random()
            if u < p_ok:
                t = arithmetic.solution_text(p)
            elif rng.random() < d.common_mistake:
                t = common
            else:
                t = corrupt(p, rng, d.corruption)
            probs.append(p)
            texts.append(t)
            answers.append(arithmetic.extract_answer(t))
    enc = encode_solutions(probs, texts, max_len)
    shape = (len(problems), d.samples_per_problem)
    return enc, np.asarray(answers, np.int32).reshape(shape), np.array([p.answer for p in problems])


# ----------------------------------------------------------------------------- training


def _gather(x, idx):
    """x [B, T, ...] at idx [B] -> [B, ...]."""
    return jnp.take_along_axis(x, idx.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]


def make_batch_fn(batch_size: int):
    """`(data, rng) -> batch`: `batch_size` random pairs of `data` (a seed's [N, ...] arrays)
    and the contrastive triplet's token positions: a source in the chosen solution (before its
    last token), a later goal of the same solution (positive), and a negative goal anywhere in
    the rejected solution."""
    def batch_fn(data, rng):
        k_idx, k1, k2, k3 = jax.random.split(rng, 4)
        idx = jax.random.randint(k_idx, (batch_size,), 0, data["c_ids"].shape[0])
        batch = jax.tree.map(lambda x: x[idx], data)
        c_start, c_end = batch["c_start"], batch["c_end"]
        src = c_start + jax.random.randint(k1, (batch_size,), 0, c_end - c_start)
        pos = src + 1 + jax.random.randint(k2, (batch_size,), 0, c_end - src)
        neg = batch["r_start"] + jax.random.randint(k3, (batch_size,), 0,
                                                    batch["r_end"] - batch["r_start"] + 1)
        return {**batch, "src": src, "pos": pos, "neg": neg}

    return batch_fn


def make_loss(model, contrastive_weight: float):
    """BT on the last-token rewards + lambda * the goal-contrastive loss of the batch's
    (source, positive, negative) token projections."""
    def loss_fn(params, batch):
        ids = jnp.concatenate([batch["c_ids"], batch["r_ids"]])
        mask = jnp.concatenate([batch["c_mask"], batch["r_mask"]])
        rewards, z = model.apply(params, ids, mask)
        b = batch["c_ids"].shape[0]
        last = jnp.concatenate([batch["c_end"], batch["r_end"]])
        r = _gather(rewards, last)
        bt = bradley_terry_loss(r[:b], r[b:]).mean()
        zc, zr = z[:b], z[b:]
        con = goal_contrastive_loss(_gather(zc, batch["src"]), _gather(zc, batch["pos"]),
                                    _gather(zr, batch["neg"])).mean()
        loss = bt + contrastive_weight * con
        return loss, {"bt": bt, "contrastive": con,
                      "accuracy": jnp.mean(r[:b] > r[b:])}

    return loss_fn


def train_rm(config, workdir: str, model, data: dict, val: dict, seeds, init_keys, train_keys):
    """`train.steps` AdamW steps on random minibatches of each seed's pairs, every seed in one
    `fit_small` program, early-stopped on the reward head's validation pair accuracy (logged
    every `train.steps_per_log` steps). data / val: [S, N, ...] / [S, V, ...] pair arrays
    (c_ids, c_mask, c_end, r_ids, r_mask, r_end, ...); init_keys and train_keys [S]. Returns
    (the SmallFit, per seed the bt, contrastive and accuracy of the last logged step)."""
    tc = config.train
    # eager (a jitted init fuses the initializers: different float rounding); stacked on the
    # host (no stacking program per leaf)
    init = jax.tree.map(lambda *x: np.stack(x), *[jax.device_get(model.init(k))
                                                  for k in init_keys])

    def val_metrics(params, v):
        ids = jnp.concatenate([v["c_ids"], v["r_ids"]])
        mask = jnp.concatenate([v["c_mask"], v["r_mask"]])
        rewards, _ = model.apply(params, ids, mask)
        r = _gather(rewards, jnp.concatenate([v["c_end"], v["r_end"]]))
        b = v["c_ids"].shape[0]
        return {"val_accuracy": jnp.mean((r[:b] > r[b:]).astype(jnp.float32))}

    fit = fit_small(workdir, loss_fn=make_loss(model, float(config.contrastive_weight)),
                    init_params=init, per_seed_init=True,
                    tx=optax.adamw(float(tc.learning_rate), weight_decay=0.0),
                    num_steps=int(tc.steps), data=data, seeds=seeds,
                    seed_keys=train_keys, per_seed_data=True,
                    batch_fn=make_batch_fn(int(tc.batch_size)), has_aux=True,
                    steps_per_log=int(tc.steps_per_log), checkpoint_every=5,
                    eval_fn=val_metrics, eval_data=val,
                    select=("val_accuracy", "max"))
    last = fit.history[-1]
    means = [{k: float(last[f"seed_{s}/{k}"]) for k in ("bt", "contrastive", "accuracy")}
             for s in fit.seeds]
    return fit, means


def make_forward(model, chunk: int = 512):
    """`(params, ids, mask) -> (token rewards [N, T], projections [N, T, P])` in chunks padded
    to `chunk` rows (one compilation for every call)."""
    apply = jax.jit(model.apply)

    def forward(params, ids, mask):
        rewards, zs = [], []
        for i in range(0, len(ids), chunk):
            n = min(chunk, len(ids) - i)
            pad = ((0, chunk - n), (0, 0))
            r, z = apply(params, jnp.asarray(np.pad(ids[i:i + n], pad)),
                         jnp.asarray(np.pad(mask[i:i + n], pad, constant_values=True)))
            rewards.append(np.asarray(r)[:n])
            zs.append(np.asarray(z)[:n])
        return np.concatenate(rewards), np.concatenate(zs)

    return forward


def prefix_positions(start, end, fraction: float) -> np.ndarray:
    """Index of the last token of the first ceil(f * L) solution tokens (L counts the EOS)."""
    length = end - start + 1
    return start + np.maximum(1, np.ceil(fraction * length - 1e-9).astype(np.int32)) - 1


def score_prefixes(forward, params, enc, prototype, fractions):
    """Q and reward-head scores after each prefix fraction: ([F, N], [F, N])."""
    ids, mask, start, end = enc
    rewards, z = forward(params, ids, mask)
    q = np.asarray(_prefix_goal_values(z, prototype))
    pos = np.stack([prefix_positions(start, end, f) for f in fractions])  # [F, N]
    take = lambda x: np.take_along_axis(x[None], pos[:, :, None], axis=2)[..., 0]  # noqa: E731
    return take(q), take(rewards)


def goal_prototype(forward, params, enc) -> jax.Array:
    """Mean projection of the final (EOS) states of correct solutions: [P]."""
    ids, mask, _, end = enc
    _, z = forward(params, ids, mask)
    return jnp.asarray(np.take_along_axis(z, end[:, None, None], axis=1)[:, 0].mean(0))


_batched_auroc = jax.jit(jax.vmap(auroc, in_axes=(0, None)))  # [F, N] scores -> [F]
_prefix_goal_values = jax.jit(prefix_goal_values)
_pruned_majority_vote = jax.jit(pruned_majority_vote, static_argnames="num_answers")


def prefix_auroc(forward, params, prototype, good, bad, fractions):
    """AUROC of correct (`good`) vs corrupted (`bad`) encoded solutions scored after each prefix
    fraction, by Q and by the reward head: ([F], [F]), and the full-sequence pairwise accuracy of
    the reward head."""
    enc = tuple(np.concatenate([a, b]) for a, b in zip(good, bad))
    labels = np.concatenate([np.ones(len(good[0]), bool), np.zeros(len(bad[0]), bool)])
    q, r = score_prefixes(forward, params, enc, prototype, fractions)
    accuracy = float(np.mean(r[-1][labels] > r[-1][~labels]))
    return np.asarray(_batched_auroc(q, labels)), np.asarray(_batched_auroc(r, labels)), accuracy


def vote_scores(config, forward, params, prototype, vote):
    """Q and reward-head scores [P, S] of every vote sample at the prefix, and the lengths
    [P, S] of the samples and of their prefixes."""
    enc, answers, _ = vote
    f = float(config.vote.prefix_fraction)
    q, r = score_prefixes(forward, params, enc, prototype, (f,))
    _, _, start, end = enc
    lengths = (end - start + 1).reshape(answers.shape)
    prefix_len = (prefix_positions(start, end, f) - start + 1).reshape(answers.shape)
    return ({"q": q[0].reshape(answers.shape), "reward": r[0].reshape(answers.shape)}, lengths,
            prefix_len)


def pruned_votes(task, vote, scored, quantile: float,
                 jitter_seed: int) -> dict[str, dict[str, float]]:
    """Majority voting on one vote set with pruning at the prefix, per scorer (Q, reward head;
    `scored` from `vote_scores`): {scorer: {acc_full, acc_pruned, acc_loss, tokens_saved,
    kept_correct}}."""
    _, answers, truth = vote
    scores, lengths, prefix_len = scored
    # identical samples (the same text) get identical scores; a tiny random jitter breaks those
    # exact ties so that every scorer prunes the same share of samples
    jitter = 1e-6 * np.random.default_rng([jitter_seed, 7]).random(answers.shape)
    out = {}
    for name in ("q", "reward"):
        v = jax.device_get(_pruned_majority_vote(  # host arrays: no program per metric op
            scores[name] + jitter, answers, lengths, prefix_len, quantile=float(quantile),
            num_answers=task.modulus))
        full = float(np.mean(np.asarray(v.full_answer) == truth))
        pruned = float(np.mean(np.asarray(v.answer) == truth))
        out[name] = {"acc_full": full, "acc_pruned": pruned, "acc_loss": full - pruned,
                     "tokens_saved": float(1 - np.sum(v.tokens_used) / np.sum(v.tokens_full)),
                     "kept_correct": float(np.mean((answers == truth[:, None])[
                         np.asarray(v.kept)]))}
    return out


def _quantile_score(max_loss: float):
    """Validation score of a pruning quantile: the tokens saved when the accuracy loss is
    <= max_loss (feasible, >= 0), else minus the loss (< 0: any feasible quantile wins)."""
    def score(v):
        return v["tokens_saved"] if v["acc_loss"] <= max_loss + 1e-12 else -v["acc_loss"]
    return score


def evaluate(config, task, forward, params, chosen, seed: int, max_len: int) -> dict[str, float]:
    """One seed's selections on validation (prefix scorer, pruning quantile per scorer) and its
    test metrics: prefix AUROC on test pairs, full-sequence pairwise accuracy and majority voting
    with pruning at the prefix on the test vote problems. `chosen` are its training pairs'
    correct solutions (the goal prototype)."""
    splits = split_seeds(seed)
    data = config.data
    out: dict[str, float] = {}
    prototype = goal_prototype(forward, params, chosen)
    half = FRACTIONS.index(0.5)

    # the prefix scorer, chosen on validation AUROC at the 50% prefix
    val_good, val_bad = make_pairs(task, data.num_val, splits.validation, max_len,
                                   data.corruption)
    vq, vr, _ = prefix_auroc(forward, params, prototype, val_good, val_bad, FRACTIONS)
    out["val_auroc_q_50"], out["val_auroc_reward_50"] = float(vq[half]), float(vr[half])
    scorer, _ = choose_on_validation({"q": out["val_auroc_q_50"],
                                      "reward": out["val_auroc_reward_50"]}, lambda x: x)
    out["chosen_scorer_q"] = float(scorer == "q")

    # test prefix AUROC
    good, bad = make_pairs(task, data.num_eval, splits.test, max_len, data.corruption)
    auc_q, auc_r, acc = prefix_auroc(forward, params, prototype, good, bad, FRACTIONS)
    for f, a_q, a_r in zip(FRACTIONS, auc_q, auc_r):
        out[f"test_auroc_q_{int(round(f * 100))}"] = float(a_q)
        out[f"test_auroc_reward_{int(round(f * 100))}"] = float(a_r)
    out["test_auroc_chosen_50"] = float((auc_q if scorer == "q" else auc_r)[half])
    out["test_pairwise_accuracy"] = acc

    # the pruning quantile of each scorer, chosen on the validation vote problems
    quantiles = [float(x) for x in config.vote.quantiles]
    val_vote = vote_samples(task, config, splits.validation, max_len)
    val_scored = vote_scores(config, forward, params, prototype, val_vote)
    val_runs = {x: pruned_votes(task, val_vote, val_scored, x, splits.validation)
                for x in quantiles}
    test_vote = vote_samples(task, config, splits.test, max_len)
    test_scored = vote_scores(config, forward, params, prototype, test_vote)
    for name in ("q", "reward"):
        best, _ = choose_on_validation({x: val_runs[x][name] for x in quantiles},
                                       _quantile_score(float(config.vote.max_loss)))
        out[f"chosen_quantile_{name}"] = float(best)
        out[f"val_vote_acc_loss_{name}"] = val_runs[best][name]["acc_loss"]
        out[f"val_tokens_saved_{name}"] = val_runs[best][name]["tokens_saved"]
        t = pruned_votes(task, test_vote, test_scored, best, splits.test)[name]
        out["test_vote_acc_full"] = t["acc_full"]
        out[f"test_vote_acc_pruned_{name}"] = t["acc_pruned"]
        out[f"test_vote_acc_loss_{name}"] = t["acc_loss"]
        out[f"test_tokens_saved_{name}"] = t["tokens_saved"]
        out[f"test_kept_correct_{name}"] = t["kept_correct"]
    out["test_sample_correct_rate"] = float(np.mean(test_vote[1] == test_vote[2][:, None]))
    return out


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one variant: the RMs train in one program under `workdir/rm` (early
    stopping on validation), then each seed's selections on validation and test metrics."""
    seeds = [int(s) for s in config.seeds]
    task = arithmetic.ArithmeticTask(**config.task)
    max_len = task.max_prompt_len() + task.max_solution_len()
    model = make_rm(config.model.to_dict(), max_len)
    keys = [jax.random.split(jax.random.key(s)) for s in seeds]  # init, train
    splits = [split_seeds(s) for s in seeds]

    def stacked(pairs):
        names = ("ids", "mask", "start", "end")
        return {f"{side}_{name}": np.stack([p[j][k] for p in pairs])
                for j, side in enumerate("cr") for k, name in enumerate(names)}  # [S, N, ...]

    pairs = [make_pairs(task, config.data.num_pairs, sp.train, max_len, config.data.corruption)
             for sp in splits]
    val = [make_pairs(task, config.data.num_val, sp.validation, max_len, config.data.corruption)
           for sp in splits]
    fit, train_metrics = train_rm(config, os.path.join(workdir, "rm"), model, stacked(pairs),
                                  stacked(val), seeds, [k[0] for k in keys],
                                  jnp.stack([k[1] for k in keys]))
    forward = make_forward(model)
    best_params = jax.device_get(fit.best_params)  # host rows: no slicing program per leaf
    best = lambda i: jax.tree.map(lambda x: x[i], best_params)  # noqa: E731
    return {s: {**{f"train_{k}": v for k, v in train_metrics[i].items()},
                "chosen_steps": float(fit.best_step[i]), "val_accuracy": float(fit.best_score[i]),
                **evaluate(config, task, forward, best(i), pairs[i][0], s, max_len)}
            for i, s in enumerate(seeds)}


# ----------------------------------------------------------------------------- claims and plots


def claims(results) -> list[protocol.Claim]:
    def mean(variant, key):
        return float(np.mean(list(protocol.per_seed(results, variant, key).values())))

    con = ("contrastive", "test_auroc_q_50")
    others = ("test means: contrastive RM's reward head "
              f"{mean('contrastive', 'test_auroc_reward_50'):.3f}, "
              f"BT-only RM's Q {mean('bt', 'test_auroc_q_50'):.3f} and reward head "
              f"{mean('bt', 'test_auroc_reward_50'):.3f}; the BT-only scorer chosen on "
              f"validation was Q on {mean('bt', 'chosen_scorer_q'):.0%} of the seeds")
    vote = ", ".join(
        f"{v} RM by {n}: saves {mean(v, f'test_tokens_saved_{n}'):.3f}, loss "
        f"{mean(v, f'test_vote_acc_loss_{n}'):+.4f} (quantile "
        f"{mean(v, f'chosen_quantile_{n}'):.2f})"
        for v in ("contrastive", "bt") for n in ("q", "reward"))
    full = mean("contrastive", "test_vote_acc_full")
    return [
        protocol.compare(
            "prefix AUROC at the 50% prefix: the contrastive RM's Q exceeds the BT-only RM's "
            "prefix score (chosen on validation) by >= 0.05", results, con,
            ("bt", "test_auroc_chosen_50"), at_least=0.05, detail=others),
        protocol.threshold(
            "pruning the lowest-Q samples at the 50% prefix (contrastive RM, quantile chosen on "
            "validation) saves >= 30% of the tokens", results,
            ("contrastive", "test_tokens_saved_q"), at_least=0.30,
            detail=f"unpruned majority-vote accuracy {full:.4f}; {vote}"),
        protocol.threshold(
            "pruning the lowest-Q samples at the 50% prefix (contrastive RM, quantile chosen on "
            "validation) loses <= 1 point of majority-vote accuracy", results,
            ("contrastive", "test_vote_acc_loss_q"), at_most=0.01,
            detail=f"unpruned majority-vote accuracy {full:.4f}; {vote}"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Prefix AUROC against the prefix fraction for both RMs."""
    from alignax.train.plots import plot_curves

    xs = list(FRACTIONS)
    curves = {}
    for variant, label in (("contrastive", "BT + contrastive"), ("bt", "BT only")):
        if variant not in results:
            continue
        m = results[variant]["metrics"]
        for kind, name in (("q", "Q = cos(z_t, g)"), ("reward", "reward head")):
            keys = [f"test_auroc_{kind}_{int(round(f * 100))}" for f in xs]
            if all(k in m for k in keys):
                curves[f"{label}: {name}"] = (xs, [m[k]["mean"] for k in keys])
    if not curves:
        return []
    path = os.path.join(workdir, "plots", "prefix_auroc.png")
    plot_curves(curves, path, title="Prefix AUROC of correct vs corrupted solutions",
                xlabel="prefix fraction of the solution", ylabel="AUROC")
    return [path]
