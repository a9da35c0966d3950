r"""Is PRM Necessary? Outcome-only RL makes a policy a better judge of its own steps (Self-PRM).

Paper: Feng et al. 2025, "Is PRM Necessary? Problem-Solving RL Implicitly Induces PRM
Capability in LLMs" (arXiv 2505.11227).

Mechanism: RL on final-answer correctness alone, with no process supervision, improves the
policy's ability to judge reasoning processes (ProcessBench F1: locate the first erroneous step
of a solution, or say it has none), and the policy can re-rank its own N solutions by its own
judgment (Self-PRM: the answer of the solution it scores highest, or a self-score-weighted
vote), which the paper finds at least as good as majority voting, while the self-judge's
precision on the hardest problems stays low (< 10% in the paper: flawed solutions judged valid).

Self-judgment here is read off the policy's own token log-probs (`alignax.eval.self_judge`):
step j of a solution scores s_j = the mean log-prob, under the policy, of the step's tokens the
policy itself writes (the result y_j; the template writes the rest), and a solution scores
min_j s_j (as the probability exp(min_j s_j) in the votes). A threshold tau turns the step
scores into a first-error prediction (the first step with s_j < tau; none: "no error").

Setting (`alignax.tasks.chains`): modular-arithmetic chains "3+4*2-1+5?3+4=7;7*2=4;...;>y"
(mod 10, left to right) with k in [4, 6] steps.
  - Policy: a tiny Llama-style LM (1 layer, D 32) whose attention window is one step (6 tokens,
    as in experiments/easy_to_hard.py, so its per-step skill does not depend on k). It writes
    a solution one result at a time into the chain's template (`chains.sample_values`, digits
    only), so its only errors are wrong results; log pi is that digit-restricted distribution.
  - SFT on NOISY traces: 150 chains, 30% of them corrupted at a uniform random step
    (`chains.corrupt`, consistent: the later steps compute correctly from the wrong value),
    next-token NLL of the result tokens, through `fit_small` (every seed vmapped).
  - GRPO on final-answer correctness only: `small_pg.group_pg_loss` in `fit_small` (M = 16
    prompts of a 2000-prompt pool x G = 8 samples drawn with `chains.sample_values` per update,
    group-normalised advantages, reward 1[answer == gold], no KL), from the chosen SFT params.
  - Evaluation of each model (SFT, RL), on perturbed chains of held-out problems (half gold,
    half corrupted at a uniform random step, consistent): ProcessBench accuracies on the
    erroneous and the correct chains and their F1 (`self_judge.processbench_scores`), at the
    tau chosen per model on validation perturbed chains (`self_judge.choose_threshold`, a grid
    of 101 log-probabilities from log 1e-5 to 0). On N = 16 samples (temperature 1) per test
    problem: majority vote, Self-PRM re-ranking (best-of-N by the self-score), self-score
    weighted voting, pass@N; and the self-judge's solution-level precision (accepted = no step
    below tau; correct = no wrong step; `self_judge.judge_precision_recall`) per k.

Splits (`alignax.tasks.splits.split_seeds`): experiment seed s draws from data seed 3s the SFT
chains, their corruption and then the RL prompts; from 3s + 1 the validation problems and
their perturbation; from 3s + 2 the test problems and theirs. Initialisation, batch order and
sampling use s. Disjoint in seeds, not in problems (a 4-step chain may recur).

Selection on validation (the same criterion for both stages, `fit_small(select=...)`,
`selection.json`): the SFT step and the RL step each have the best greedy accuracy on the
validation problems (problem solving, not judging: the judge is never selected on); each
model's tau has the best F1 on its validation perturbed chains. One toy parameter, the number
of SFT chains, was set in 2-seed exploratory runs by a recorded rule: the policy must stay
imperfect, so the count whose SFT policy's validation greedy accuracy is nearest the middle.
300 chains (the first run, whose test numbers were also printed) gave SFT 0.83 and RL 0.98
validation accuracy, validation F1 0.94 -> 0.99, a judge near its ceiling; 100 gave 0.37 ->
0.59 (F1 0.64 -> 0.67); 150 gave 0.58 -> 0.84 (F1 0.83 -> 0.92) and was kept. The other
sizes (400 SFT steps, 300 RL updates, 30% noise) were set before any run; nothing else was
tuned.

Claims (5 seeds, paired 95% t intervals over seeds, test split): (1, comparative) after RL the
ProcessBench F1 on perturbed chains rises by >= 5 points over the SFT model (the notes'
criterion); (2, comparative) at N = 16 the RL policy's Self-PRM re-ranking is at least as
accurate as majority voting (difference >= 0); (3, threshold) the self-judge's precision on the
hardest bucket (k = 6) of the RL policy's own samples is <= 10% (the paper's number, with the
paper's meaning of precision: the fraction of accepted solutions that are truly correct). The
toy's hardest bucket is not hard in the paper's sense (the policy solves most k = 6 chains,
and precision is tied to that base rate), so (3) tests a number from another regime; (3b,
comparative) the direction: precision on the hardest bucket is below that on the easiest
(k = 4). Sanity: no vote beats pass@N.

Reading the full run (5 seeds, test): outcome-only RL raised greedy validation accuracy from
0.56 to 0.85 and the ProcessBench F1 on perturbed chains from 0.781 to 0.895 (+11.4 points,
interval [8.2, 14.6]: claim (1) PASSes; accuracy on erroneous chains 0.76 -> 0.90, on correct
ones 0.80 -> 0.89; step AUROC 0.975 -> 0.992). At N = 16 the RL policy's self-re-ranking
answers 0.856, its self-weighted vote 0.855, majority voting 0.852 (pass@N 0.902): +0.4 points,
interval [-0.02, 0.82], so (2) is INCONCLUSIVE by a hair. On its own samples the judge is far
weaker than on planted errors: at the tau chosen on validation it accepts 95% of the k = 6
samples, and its precision there is 0.75 after RL (0.28 for the SFT policy, whose k = 6 samples
are mostly wrong): its own errors are the values it believes in, the paper's "flawed
solutions judged valid". (3) FAILs (0.75, interval [0.67, 0.83], far above 10%: the toy's
hardest bucket is solved 76% of the time), while (3b) PASSes (k = 6 minus k = 4: -7.4 points,
interval [-13.7, -1.0]).

    alignax run experiments/self_prm.py            # full setting, 5 seeds
    alignax run experiments/self_prm.py:smoke      # seconds, for the tests

`:real` applies Self-PRM to a Hugging Face checkpoint and a prompt-only dataset with an answer
column (`data.answer_field`, default "answer"; TRL's prompt-only format, e.g. GSM8K): optional
GRPO with the outcome reward (`policy_gradient.train`, exact match of the text after the last
`reward.answer_marker`, `rl.iterations` iterations when `with_rl` is True, skipped by the
default False; the iteration with the best validation greedy accuracy is kept), then
N = `vote.num_samples` solutions per held-out prompt (the last `data.eval_fraction` rows are
test, as many before them validation), split into steps at `data.step_separator` (at most
`vote.max_steps`), each step scored by the policy's own mean token log-prob
(`online.response_logps`, untempered), and the selection rules scored by exact match
(`{val,test}_{majority,self_rerank,self_vote,coverage,sample}_accuracy`) with the self-judge's
solution-level AUROC against the outcome. No claim is evaluated on a user's data (one seed):

    alignax run experiments/self_prm.py:real --workdir runs/self_prm_real \
        --config.model.path=/ckpt/Qwen2.5-0.5B-Instruct --config.data.path=/data/gsm8k \
        --config.reward.answer_marker='####' --config.with_rl=True --config.rl.iterations=100 \
        --config.model.dtype=bfloat16
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
from alignax.algorithms import online, policy_gradient, pretrained, real
from alignax.algorithms.small_pg import group_pg_loss, rl_batch
from alignax.eval import self_judge, voting
from alignax.eval.ranking import auroc
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.tasks import arithmetic
from alignax.tasks import chains as ch
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small, minibatch_fn, stack_seeds

MODELS = ("sft", "rl")
RULES = ("majority", "self_rerank", "self_vote", "coverage", "sample")
DATA_TAG = 2505  # the numpy streams' second seed word (the paper's arXiv month)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.task = dict(modulus=10, step_range=(4, 6))
    c.data = dict(num_sft=150 if not smoke else 16,
                  sft_noise=0.3,                          # fraction of corrupted SFT traces
                  num_rl=2000 if not smoke else 16,       # RL prompt pool
                  num_val=400 if not smoke else 8,        # validation problems
                  num_test=400 if not smoke else 8,       # test problems
                  test_samples=16 if not smoke else 4)    # N samples per test problem
    c.policy = dict(d_model=32 if not smoke else 16, n_layers=1, n_heads=4 if not smoke else 2,
                    d_ff=64 if not smoke else 32, window=6)
    c.sft = dict(steps=400 if not smoke else 2, batch_size=64 if not smoke else 8,
                 learning_rate=3e-3, log_every=50 if not smoke else 1)
    c.rl = dict(steps=300 if not smoke else 2, prompts=16 if not smoke else 2,
                group_size=8 if not smoke else 2, learning_rate=1e-3,
                log_every=25 if not smoke else 1, temperature=1.0)
    # tau candidates: log p for p in geomspace(min_prob, 1, num_thresholds)
    c.judge = dict(aggregation="min", min_prob=1e-5, num_thresholds=101)
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if real.is_real(config):
        _validate_real(config)
        return
    lo, hi = config.task.step_range
    if not 1 <= int(lo) <= int(hi):
        raise ValueError(f"task.step_range={tuple(config.task.step_range)} must be (lo, hi) with "
                         f"1 <= lo <= hi")
    if not 2 <= int(config.task.modulus) <= 10:
        raise ValueError(f"task.modulus={config.task.modulus} must be in [2, 10]")
    if not 0.0 <= float(config.data.sft_noise) <= 1.0:
        raise ValueError(f"data.sft_noise={config.data.sft_noise} must be in [0, 1]")
    if int(config.rl.group_size) < 2:
        raise ValueError(f"rl.group_size={config.rl.group_size} must be >= 2")
    if config.judge.aggregation not in voting.AGGREGATIONS:
        raise ValueError(f"judge.aggregation={config.judge.aggregation!r} must be one of "
                         f"{voting.AGGREGATIONS}")
    if not 0.0 < float(config.judge.min_prob) < 1.0 or int(config.judge.num_thresholds) < 2:
        raise ValueError(f"judge.min_prob={config.judge.min_prob} must be in (0, 1) and "
                         f"judge.num_thresholds={config.judge.num_thresholds} >= 2")


# ----------------------------------------------------------------------------- data


def perturb(chains: ch.Chains, rng: np.random.Generator, fraction: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Solutions of `chains`: gold, except a `fraction` of rows (drawn from `rng`) written
    wrong at a uniform random step (`chains.corrupt`, consistent). Returns (values [N, K],
    gold first error [N]: k where the solution is correct)."""
    n = chains.size
    corrupted = np.zeros(n, bool)
    corrupted[rng.permutation(n)[:int(round(fraction * n))]] = True
    step = (rng.random(n) * chains.num_steps).astype(np.int64)
    bad, _ = ch.corrupt(chains, step, rng=rng)
    values = np.where(corrupted[:, None], bad, ch.reference_values(chains)).astype(np.int32)
    return values, ch.first_error(chains, values)


def make_world(config, seed: int) -> dict:
    """The problems of experiment seed `seed` (`split_seeds`): from data seed 3s the noisy SFT
    traces and then the RL prompts; from 3s + 1 the validation problems and their perturbed
    solutions (half corrupted); from 3s + 2 the test problems and theirs."""
    t, d = config.task, config.data
    s = split_seeds(seed)
    train, val, test = (np.random.default_rng([x, DATA_TAG]) for x in s)
    kw = dict(num_steps=tuple(int(x) for x in t.step_range), modulus=int(t.modulus))
    out = {"sft": ch.sample_chains(int(d.num_sft), rng=train, **kw)}
    out["sft_values"], _ = perturb(out["sft"], train, float(d.sft_noise))
    out["rl"] = ch.sample_chains(int(d.num_rl), rng=train, **kw)
    for name, rng, n in (("val", val, d.num_val), ("test", test, d.num_test)):
        out[name] = ch.sample_chains(int(n), rng=rng, **kw)
        out[f"{name}_values"], out[f"{name}_first_error"] = perturb(out[name], rng, 0.5)
    return out


def rows(chains: ch.Chains, values=None) -> dict[str, np.ndarray]:
    """Token rows of solutions (`values` [N, K]; None: the empty template for sampling): ids,
    mask [N, T], result positions rpos [N, K], k [N] and the gold answers [N]."""
    v = np.zeros(chains.ops.shape, np.int32) if values is None else values
    ids, mask = ch.encode(chains, v, length=ch.max_length(chains.max_steps))
    return {"ids": ids, "mask": mask, "rpos": ch.result_positions(chains),
            "k": np.asarray(chains.num_steps, np.int32), "answer": ch.answers(chains)}


# ----------------------------------------------------------------------------- the policy


def policy_model(config):
    g, t = config.policy, config.task
    return make_lm(TransformerConfig(
        vocab_size=arithmetic.VOCAB_SIZE, d_model=int(g.d_model), n_layers=int(g.n_layers),
        n_heads=int(g.n_heads), d_ff=int(g.d_ff), max_len=ch.max_length(int(t.step_range[1])),
        sliding_window=int(g.window)))


def write_results(ids, rpos, k, values):
    """Template rows `ids` [B, T] with the results `values` [B, K] written in (jnp): y_j at its
    position, again as step j + 1's left operand (two tokens on) or, for the last step, as the
    answer after '>' (three tokens on), as `chains.sample_values` writes them."""
    b, t = ids.shape
    j = jnp.arange(rpos.shape[1])[None, :]
    live = j < k[:, None]
    tok = ch.DIGIT0 + values
    rows_ = jnp.arange(b)[:, None]
    ids = ids.at[rows_, jnp.where(live, rpos, t)].set(tok, mode="drop")
    copy = jnp.where(j == k[:, None] - 1, rpos + 3, rpos + 2)
    return ids.at[rows_, jnp.where(live, copy, t)].set(tok, mode="drop")


def own_step_scores(apply_fn, params, r, modulus: int) -> self_judge.StepScores:
    """The policy's self-judgment of the solutions in rows `r` (ids, mask, rpos, k): token
    log-probs under the digit-restricted policy (the distribution `chains.sample_values` draws
    from), the policy's own tokens = the results y_j (the template writes the rest), steps =
    `chains.step_spans` -> `self_judge.step_scores` ([B, K] fields)."""
    ids, rpos = r["ids"], r["rpos"]
    b, t = ids.shape
    logits = apply_fn(params, ids, r["mask"])[:, :-1, ch.DIGIT0:ch.DIGIT0 + modulus]
    digit = jnp.clip(ids[:, 1:] - ch.DIGIT0, 0, modulus - 1)
    lp = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32), -1),
                             digit[..., None], -1)[..., 0]
    token_logps = jnp.concatenate([jnp.zeros((b, 1), jnp.float32), lp], axis=1)  # [B, T]
    start = jnp.where(rpos >= 0, rpos - 4, -1)  # step j = "x op b = y ;" at rpos - 4 ..
    step_ids = self_judge.step_ids_from_spans(start, jnp.where(rpos >= 0, rpos + 2, -1), t)
    own = (jnp.arange(t)[None, None, :] == rpos[:, :, None]).any(1)
    return self_judge.step_scores(token_logps, step_ids, own, num_steps=rpos.shape[1])


def draw(apply_fn, params, r, key, modulus: int, temperature):
    """Solutions [B, K] of the policy in the template rows `r` (`chains.sample_values`)."""
    return ch.sample_values(lambda ids: apply_fn(params, ids, r["mask"]), r["ids"], r["rpos"],
                            r["k"], key, modulus=modulus, temperature=temperature)[0]


def greedy_accuracy(apply_fn, modulus: int):
    """`(params, val rows) -> {"val_accuracy"}`: greedy final-answer accuracy (the selection
    metric of both stages)."""
    def evaluate(params, r):
        v = draw(apply_fn, params, r, jax.random.key(0), modulus, 0.0)
        final = jnp.take_along_axis(v, (r["k"] - 1)[:, None], 1)[:, 0]
        return {"val_accuracy": (final == r["answer"]).astype(jnp.float32).mean()}
    return evaluate


def train_sft(config, workdir: str, worlds: list[dict]):
    """SFT on the noisy traces (NLL of the result tokens), every seed at once; the step with the
    best validation greedy accuracy is kept (`select`)."""
    lm, s, p = policy_model(config), config.sft, int(config.task.modulus)

    def loss_fn(params, batch):
        sc = own_step_scores(lm.apply, params, batch, p)
        nll = -sc.total.sum() / jnp.maximum(sc.count.sum(), 1)
        return nll, {"nll": nll}

    return fit_small(workdir, loss_fn=loss_fn, init_params=lm.init,
                     tx=optax.adam(float(s.learning_rate)), num_steps=int(s.steps),
                     data=stack_seeds([rows(w["sft"], w["sft_values"]) for w in worlds]),
                     seeds=list(config.seeds), per_seed_data=True,
                     batch_fn=minibatch_fn(int(s.batch_size)), has_aux=True,
                     steps_per_log=int(s.log_every), eval_fn=greedy_accuracy(lm.apply, p),
                     eval_data=stack_seeds([rows(w["val"]) for w in worlds]),
                     select=("val_accuracy", "max"), desc="sft")


def train_rl(config, workdir: str, worlds: list[dict], sft_params):
    """GRPO on final-answer correctness from the chosen SFT params (`group_pg_loss` in
    `fit_small`), every seed at once; the update with the best validation greedy accuracy is
    kept."""
    lm, r, p = policy_model(config), config.rl, int(config.task.modulus)
    m, g = int(r.prompts), int(r.group_size)

    def prompt_fn(key, data):
        pick = jax.random.randint(key, (m,), 0, data["k"].shape[0])
        return jax.tree.map(lambda x: x[pick], data)

    def repeat(prompts):
        return jax.tree.map(lambda x: jnp.repeat(x, g, axis=0), prompts)

    def sample_fn(params, key, prompts, n):
        values = draw(lm.apply, params, repeat(prompts), key, p, float(r.temperature))
        return values.reshape(m, n, -1)

    def log_prob_fn(params, prompts, values):
        rep = repeat(prompts)
        filled = {**rep, "ids": write_results(rep["ids"], rep["rpos"], rep["k"],
                                              values.reshape(m * g, -1))}
        return own_step_scores(lm.apply, params, filled, p).total.sum(-1).reshape(m, g)

    def reward_fn(prompts, values, data):
        final = jnp.take_along_axis(values, (prompts["k"] - 1)[:, None, None], 2)[..., 0]
        return (final == prompts["answer"][:, None]).astype(jnp.float32)

    loss = group_pg_loss(sample_fn, log_prob_fn, reward_fn, group_size=g, advantage="grpo",
                         prompt_fn=prompt_fn)
    return fit_small(workdir, loss_fn=loss, init_params=sft_params, per_seed_init=True,
                     tx=optax.adam(float(r.learning_rate)), num_steps=int(r.steps),
                     data=stack_seeds([rows(w["rl"]) for w in worlds]),
                     seeds=list(config.seeds), per_seed_data=True, batch_fn=rl_batch,
                     has_aux=True, steps_per_log=int(r.log_every),
                     eval_fn=greedy_accuracy(lm.apply, p),
                     eval_data=stack_seeds([rows(w["val"]) for w in worlds]),
                     select=("val_accuracy", "max"), desc="grpo")


# ----------------------------------------------------------------------------- evaluation


def make_evaluate(config):
    """`(params, data, key) -> metrics` of one model of one seed (jit, vmapped by the caller):
    tau chosen on the validation perturbed chains, ProcessBench on the test ones, the
    selection rules and the self-judge's precision on N test samples per problem."""
    lm, p = policy_model(config), int(config.task.modulus)
    n, agg = int(config.data.test_samples), config.judge.aggregation
    candidates = jnp.log(jnp.geomspace(float(config.judge.min_prob), 1.0,
                                       int(config.judge.num_thresholds)))
    lo, hi = (int(x) for x in config.task.step_range)

    def evaluate(params, d, key):
        val, test, temp = d["val"], d["test"], d["template"]
        sv = own_step_scores(lm.apply, params, val, p)
        tau, val_f1 = self_judge.choose_threshold(sv.mean, sv.mask, d["val_first_error"],
                                                  candidates)
        st = own_step_scores(lm.apply, params, test, p)
        pred = self_judge.first_error(st.mean, st.mask, tau)
        pb = self_judge.processbench_scores(pred, d["test_first_error"], test["k"])
        out = {"tau": tau, "val_f1": val_f1, "f1": pb["f1"],
               "error_accuracy": pb["error_accuracy"],
               "correct_accuracy": pb["correct_accuracy"],
               "step_auroc": auroc(-st.mean.ravel(), (jnp.arange(st.mean.shape[1])[None]
                                                      == d["test_first_error"][:, None]).ravel(),
                                   (st.mask & (jnp.arange(st.mean.shape[1])[None]
                                               <= d["test_first_error"][:, None])).ravel())}
        # N samples per test problem, judged by the policy itself
        values = draw(lm.apply, params, temp, key, p, 1.0)
        filled = {**temp, "ids": write_results(temp["ids"], temp["rpos"], temp["k"], values)}
        ss = own_step_scores(lm.apply, params, filled, p)
        score = self_judge.solution_scores(ss.mean, ss.mask, agg)
        final = jnp.take_along_axis(values, (temp["k"] - 1)[:, None], 1)[:, 0]
        correct = final == temp["answer"]
        shape = (-1, n)
        answers, correct_pn = final.reshape(shape), correct.reshape(shape)
        gold = temp["answer"].reshape(shape)[:, 0]
        right = lambda a: (a == gold).astype(jnp.float32).mean()  # noqa: E731
        out.update(
            majority_accuracy=right(voting.majority_vote(answers, num_answers=p)),
            self_rerank_accuracy=right(voting.best_of_n_answer(answers, score.reshape(shape))),
            self_vote_accuracy=right(voting.weighted_vote(answers, score.reshape(shape),
                                                          num_answers=p)),
            coverage_accuracy=voting.coverage(correct_pn).mean(),
            sample_accuracy=correct.astype(jnp.float32).mean())
        # the self-judge on its own samples: accepted = no step below tau
        accepted = self_judge.first_error(ss.mean, ss.mask, tau) >= temp["k"]
        valid = _process_correct(temp, values, p)
        for k in range(lo, hi + 1):
            bucket = temp["k"] == k
            pr = self_judge.judge_precision_recall(accepted, valid, bucket)
            out[f"precision_steps_{k}"] = pr["precision"]
            out[f"recall_steps_{k}"] = pr["recall"]
            out[f"accept_rate_steps_{k}"] = pr["accept_rate"]
            out[f"sample_accuracy_steps_{k}"] = (correct & bucket).sum() / jnp.maximum(
                bucket.sum(), 1)
            out[f"outcome_precision_steps_{k}"] = self_judge.judge_precision_recall(
                accepted, correct, bucket)["precision"]
        pr = self_judge.judge_precision_recall(accepted, valid)
        out["precision"], out["recall"] = pr["precision"], pr["recall"]
        return out

    return evaluate


def _process_correct(r, values, modulus: int):
    """[B] bool: every result of the consistent chain is right, y_j = (y_{j-1} op_j b_j) mod p
    (read off the template: operations and operands at rpos - 3, rpos - 2)."""
    ids = r["ids"]
    op_tok = jnp.take_along_axis(ids, jnp.maximum(r["rpos"] - 3, 0), 1)
    b = jnp.take_along_axis(ids, jnp.maximum(r["rpos"] - 2, 0), 1) - ch.DIGIT0
    op = jnp.argmax(op_tok[..., None] == jnp.asarray(ch.OP_TOKENS), -1)
    a0 = ids[:, 1] - ch.DIGIT0
    prev = jnp.concatenate([a0[:, None], values[:, :-1]], 1)
    ok = values == ch.apply_ops(prev, op, b, modulus)
    live = jnp.arange(values.shape[1])[None] < r["k"][:, None]
    return (ok | ~live).all(-1)


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed at once: noisy SFT, GRPO, then both models' self-judgment and self-PRM
    selection on the test split (`:real`: one run per seed, `_run_real`)."""
    if real.is_real(config):
        return {int(s): _run_real(config, os.path.join(workdir, f"seed_{s}"), int(s))
                for s in config.seeds}
    seeds = [int(s) for s in config.seeds]
    worlds = [make_world(config, s) for s in seeds]
    sft = train_sft(config, os.path.join(workdir, "sft"), worlds)
    rl = train_rl(config, os.path.join(workdir, "grpo"), worlds, sft.best_params)

    n = int(config.data.test_samples)
    data = jax.tree.map(lambda *x: jnp.asarray(np.stack(x)), *[
        {"val": rows(w["val"], w["val_values"]), "val_first_error": w["val_first_error"],
         "test": rows(w["test"], w["test_values"]), "test_first_error": w["test_first_error"],
         "template": rows(w["test"].repeat(n))} for w in worlds])
    keys = jnp.stack([jax.random.fold_in(jax.random.key(s), DATA_TAG) for s in seeds])
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), sft.best_params, rl.best_params)
    evaluate = jax.jit(jax.vmap(jax.vmap(make_evaluate(config)), in_axes=(0, None, None)))
    metrics = jax.device_get(evaluate(both, data, keys))
    out = {}
    for i, seed in enumerate(seeds):
        res = {}
        for j, model in enumerate(MODELS):
            for name, x in metrics.items():
                res[f"{'val' if name == 'val_f1' else 'test'}_{model}_"
                    f"{name[4:] if name == 'val_f1' else name}"] = float(x[j, i])
        res["sft_chosen_step"], res["rl_chosen_step"] = (float(sft.best_step[i]),
                                                         float(rl.best_step[i]))
        res["val_sft_accuracy"], res["val_rl_accuracy"] = (float(sft.best_score[i]),
                                                           float(rl.best_score[i]))
        out[seed] = res
    _write_selection(workdir, seeds, sft, rl, metrics)
    return out


def _write_selection(workdir: str, seeds, sft, rl, metrics) -> None:
    """Every seed's validation choices: the SFT and RL steps (greedy validation accuracy) and
    each model's tau (validation F1)."""
    if jax.process_index() != 0:
        return
    record = {"procedure": "fit_small select: the logged step with the best validation greedy "
                           "accuracy (ties to the earlier); tau: the grid value with the best "
                           "validation F1 (ties to the smaller)"}
    for name, fit in (("sft", sft), ("rl", rl)):
        record[name] = {"metric": "val_accuracy (max)",
                        "chosen_step": {str(s): int(x) for s, x in zip(seeds, fit.best_step)},
                        "score": {str(s): float(x) for s, x in zip(seeds, fit.best_score)}}
    for j, name in enumerate(MODELS):
        record[f"{name}_tau"] = {"metric": "val_f1 (max)",
                                 "tau": {str(s): float(x) for s, x in
                                         zip(seeds, metrics["tau"][j])},
                                 "score": {str(s): float(x) for s, x in
                                           zip(seeds, metrics["val_f1"][j])}}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump(record, f, indent=1)


def claims(results) -> list[protocol.Claim]:
    r = "default"
    if "test_rl_f1" not in results[r]["metrics"]:  # :real: a user's data, no claim
        return []
    hi, lo = 6, 4
    get = lambda m: protocol.seed_mean(results, r, m)  # noqa: E731
    detail = ("test means, SFT -> RL: F1 {:.3f} -> {:.3f} (acc. erroneous {:.3f} -> {:.3f}, "
              "correct {:.3f} -> {:.3f}); N=16 RL: majority {:.3f}, self-rerank {:.3f}, "
              "self-vote {:.3f}, pass@N {:.3f}, sample {:.3f}; SFT: majority {:.3f}, "
              "self-rerank {:.3f}, self-vote {:.3f}; RL precision k=4/5/6 "
              "{:.3f}/{:.3f}/{:.3f}").format(
        get("test_sft_f1"), get("test_rl_f1"), get("test_sft_error_accuracy"),
        get("test_rl_error_accuracy"), get("test_sft_correct_accuracy"),
        get("test_rl_correct_accuracy"), get("test_rl_majority_accuracy"),
        get("test_rl_self_rerank_accuracy"), get("test_rl_self_vote_accuracy"),
        get("test_rl_coverage_accuracy"), get("test_rl_sample_accuracy"),
        get("test_sft_majority_accuracy"), get("test_sft_self_rerank_accuracy"),
        get("test_sft_self_vote_accuracy"), *(get(f"test_rl_precision_steps_{k}")
                                              for k in (4, 5, 6)))
    gap = {s: max(v[f"test_{m}_{x}_accuracy"] - v[f"test_{m}_coverage_accuracy"]
                  for m in MODELS for x in ("majority", "self_rerank", "self_vote"))
           for s, v in results[r]["per_seed"].items()}
    return [
        protocol.compare(
            "after outcome-only RL the policy's ProcessBench F1 on perturbed chains rises by "
            ">= 5 points over the SFT model", results, (r, "test_rl_f1"), (r, "test_sft_f1"),
            at_least=0.05, detail=detail),
        protocol.compare(
            "at N = 16 Self-PRM re-ranking (argmax of the RL policy's self-score) is at least "
            "as accurate as majority voting", results, (r, "test_rl_self_rerank_accuracy"),
            (r, "test_rl_majority_accuracy"), at_least=0.0, detail=detail),
        protocol.threshold(
            f"the self-judge's precision on the hardest bucket (k = {hi}) of its own samples "
            "is <= 10%", results, (r, f"test_rl_precision_steps_{hi}"), at_most=0.10,
            detail=detail),
        protocol.compare(
            f"the self-judge's precision is lower on the hardest bucket (k = {hi}) than on the "
            f"easiest (k = {lo})", results, (r, f"test_rl_precision_steps_{hi}"),
            (r, f"test_rl_precision_steps_{lo}"), at_most=0.0, detail=detail),
        protocol.sanity("no vote beats pass@N (they answer with a sampled answer)",
                        all(g <= 1e-9 for g in gap.values()),
                        {"max_vote_minus_coverage": max(gap.values())}, "by construction"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Test metrics of the SFT and the RL policy (mean +- std over seeds): ProcessBench F1 and
    its two accuracies, the N-sample selection rules, and the self-judge's precision per k."""
    m = results["default"]["metrics"]
    if "test_rl_f1" not in m:  # :real: the runs' own metrics.jsonl
        return []
    names = ["f1", "error_accuracy", "correct_accuracy",
             *(f"{x}_accuracy" for x in RULES),
             *sorted(k[len("test_rl_"):] for k in m if k.startswith("test_rl_precision_steps_"))]
    series = {model: ([m[f"test_{model}_{x}"]["mean"] for x in names],
                      [m[f"test_{model}_{x}"]["std"] for x in names]) for model in MODELS}
    return [plot_grouped_bars(names, series, os.path.join(workdir, "plots", "self_prm.png"),
                              title="SFT vs outcome-RL policy as its own judge (test)",
                              ylabel="value", ylim=(0.0, 1.0))]


# ----------------------------------------------------------------------------- :real


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): Self-PRM on `model.path`'s own samples of `data.path`."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    # data.max_length: the prompt's tokens; data.step_separator: where a solution's steps end
    real.add_real_fields(c, max_length=512, answer_field="answer", step_separator="\n")
    c.reward = dict(answer_marker="")
    # with_rl False: Self-PRM on the checkpoint as it is; True: GRPO for rl.iterations first
    c.with_rl = False
    c.rl = policy_gradient.default_config(
        iterations=200, prompts_per_iteration=16, num_samples=8, max_new_tokens=512,
        temperature=1.0, advantage="grpo", kl_coef=0.02, epochs=1, minibatches=1,
        checkpoint_every=20, log_every=1, eval_every=20, optimizer=real.optimizer(1e-6))
    c.rl.stop_tokens = (-1,)  # -1: the tokenizer's eos
    c.vote = dict(num_samples=16, max_new_tokens=512, temperature=1.0, aggregation="min",
                  max_steps=64)
    return c


def _validate_real(config) -> None:
    real.require(config, "model.path", "data.path")
    v = config.vote
    if not str(config.data.step_separator):
        raise ValueError("data.step_separator must be a non-empty string")
    if int(v.num_samples) < 1 or float(v.temperature) <= 0:
        raise ValueError(f"vote.num_samples={v.num_samples} must be >= 1 and vote.temperature="
                         f"{v.temperature} > 0")
    if int(v.max_steps) < 1:
        raise ValueError(f"vote.max_steps={v.max_steps} must be >= 1")
    if v.aggregation not in voting.AGGREGATIONS:
        raise ValueError(f"vote.aggregation={v.aggregation!r} must be one of "
                         f"{voting.AGGREGATIONS}")
    if config.with_rl:
        policy_gradient.validate(real.online_config(config, "rl"))


def token_step_ids(tok, tokens, separator: str, max_steps: int, context: int = 8
                   ) -> np.ndarray:
    """The step of each generated token: tokens [R] (the valid ones) -> [R] int32. Step ids
    start at 0 and move on after the token that completes an occurrence of `separator` in the
    text so far (the separator's tokens close their step); steps past `max_steps` - 1 get -1.
    Each token's text is decode(previous `context` tokens + it) minus decode(previous
    `context` tokens), so leading spaces (SentencePiece) and characters split across
    byte-level tokens come out as in the whole text, at O(R * context) decoding."""
    out, step, text = [], 0, ""
    tail = max(len(separator) - 1, 0)
    tokens = [int(t) for t in tokens]
    for i, t in enumerate(tokens):
        out.append(step if step < max_steps else -1)
        ctx = tokens[max(0, i - context):i]
        piece = tok.decode(ctx + [t])[len(tok.decode(ctx)) if ctx else 0:]
        # occurrences that end inside `piece` (a separator may straddle earlier tokens)
        window = text[len(text) - tail:] if tail else ""
        step += (window + piece).count(separator) - window.count(separator)
        text += piece
    return np.array(out, np.int32)


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    """`:real` (module docstring): optional outcome-reward GRPO, then Self-PRM on N samples per
    held-out prompt."""
    tok = real.tokenizer(config)
    d, v, field, marker = config.data, config.vote, config.data.answer_field, \
        config.reward.answer_marker
    data = real.prompt_data(config, tok, int(d.max_length), fields=(field,))
    model, params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    out: dict[str, float] = {}
    if config.with_rl:
        params, chosen = _grpo(config, workdir, tok, model, params, data, seed)
        out.update(chosen)
    ids, mask, n_val = real.held_out_prompts(data)
    answers = [str(a).strip() for a in (*data["validation"][field], *data["test"][field])]
    n = int(v.num_samples)
    rollout = jax.jit(online.make_rollout(
        model, num_samples=n, max_new_tokens=int(v.max_new_tokens),
        temperature=float(v.temperature), stop_tokens=real.stop_tokens(tok, config.rl.stop_tokens),
        pad_id=tok.pad_id))
    ro = rollout(params, ids, mask, jax.random.fold_in(jax.random.key(seed), DATA_TAG))
    resp_len = ro.response_len
    logps = jax.jit(lambda p, i, m: online.response_logps(model.apply, p, i, m, resp_len))(
        params, ro.ids, ro.mask)  # the policy's own, untempered
    responses, rmask = np.asarray(ro.responses), np.asarray(ro.response_mask, bool)
    texts = real.decode_responses(tok, responses, rmask)
    step_ids = np.full(responses.shape, -1, np.int32)
    for i in range(len(texts)):
        valid = np.flatnonzero(rmask[i])
        step_ids[i, valid] = token_step_ids(tok, responses[i, valid], d.step_separator,
                                            int(v.max_steps))
    sc = self_judge.step_scores(logps, step_ids, rmask, num_steps=int(v.max_steps))
    score = np.asarray(self_judge.solution_scores(sc.mean, sc.mask, v.aggregation))
    index = np.asarray(ro.prompt_index)
    p = len(answers)
    order = np.argsort(index, kind="stable")  # rows grouped by prompt, N each
    finals = [real.final_answer(t, marker) for t in texts]
    answer_ids = np.full(len(texts), -1, np.int32)
    correct = np.zeros(len(texts), bool)
    for i in range(p):
        seen: dict[str, int] = {}
        for r in np.flatnonzero(index == i):
            if finals[r] is not None:
                answer_ids[r] = seen.setdefault(finals[r], len(seen))
                correct[r] = finals[r] == answers[i]
    a = jnp.asarray(answer_ids[order].reshape(p, n))
    c = jnp.asarray(correct[order].reshape(p, n))
    s = jnp.asarray(score[order].reshape(p, n))
    gold = jnp.argmax(c, -1)
    gold_id = jnp.where(c.any(-1), jnp.take_along_axis(a, gold[:, None], -1)[:, 0], -2)
    valid = a >= 0
    chosen = {"majority": voting.majority_vote(a, valid, num_answers=n),
              "self_rerank": voting.best_of_n_answer(a, s, valid),
              "self_vote": voting.weighted_vote(a, s, valid, num_answers=n)}
    per_problem = {k: np.asarray(x == gold_id, np.float64) for k, x in chosen.items()}
    per_problem["coverage"] = np.asarray(voting.coverage(c), np.float64)
    per_problem["sample"] = np.asarray(c.mean(-1), np.float64)
    for rule, x in per_problem.items():
        out.update(real.split_means(x, n_val, f"{rule}_accuracy"))
    flat_c, flat_s = np.asarray(c), np.asarray(s)
    for name, part in (("val", slice(0, n_val)), ("test", slice(n_val, None))):
        cc, ss = flat_c[part].ravel(), flat_s[part].ravel()
        out[f"{name}_self_judge_auroc"] = float(auroc(jnp.asarray(ss), jnp.asarray(cc),
                                                      jnp.ones(cc.shape, bool)))
    out["mean_steps"] = float(np.asarray(sc.mask).sum(-1).mean())
    return out


def _grpo(config, workdir, tok, model, params, data, seed):
    """GRPO with the exact-match outcome reward from `params`; the evaluated iteration with
    the best validation greedy accuracy (selection.json). Returns (its params, metrics)."""
    field, marker = config.data.answer_field, config.reward.answer_marker
    stops = real.stop_tokens(tok, config.rl.stop_tokens)

    def matches(answers):
        def correct(rollout):
            texts = real.decode_responses(tok, rollout.responses, rollout.response_mask)
            idx = np.asarray(rollout.prompt_index)
            return np.array([float(real.final_answer(t, marker) == str(answers[i]).strip())
                             for t, i in zip(texts, idx)], np.float32)
        return correct

    ids, mask, n_val = real.held_out_prompts(data)
    answers = [*data["validation"][field], *data["test"][field]]
    greedy = jax.jit(online.make_rollout(model, num_samples=1,
                                         max_new_tokens=int(config.rl.max_new_tokens),
                                         temperature=0.0, stop_tokens=stops, pad_id=tok.pad_id))
    kept = {"score": -np.inf, "params": params}

    def evaluate(p):
        right = matches(answers)(greedy(p, ids, mask, jax.random.key(0)))
        m = real.split_means(right, n_val, "greedy_accuracy")
        if m["val_greedy_accuracy"] > kept["score"]:  # ties keep the earlier iteration
            kept.update(score=m["val_greedy_accuracy"], params=jax.tree.map(jnp.copy, p))
        return m

    train = data["train"]
    res = policy_gradient.train(real.online_config(config, "rl", stops),
                                os.path.join(workdir, "grpo"), model=model, init_params=params,
                                ref_params=params, prompt_ids=train["prompt_ids"],
                                prompt_mask=train["prompt_mask"],
                                reward_fn=matches(train[field]), eval_fn=evaluate, seed=seed)
    chosen = real.choose_iteration(res["history"], "eval/val_greedy_accuracy", workdir)
    return kept["params"], {"rl_chosen_iteration": chosen["chosen_iteration"],
                            "val_rl_greedy_accuracy": chosen["val_greedy_accuracy"],
                            "test_rl_greedy_accuracy": chosen["test_greedy_accuracy"]}
