r"""SPARE (Rizvi et al. 2025): reference-guided single-pass step labels train a PRM as good as
Monte-Carlo rollout labels, at a fraction of the annotation compute.

Paper: Rizvi, Zhu and Gurevych 2025, "SPARE: Single-Pass Annotation with Reference-Guided
Evaluation for Automatic Process Supervision and Reward Modelling" (arXiv 2506.15498).

Mechanism: a process reward model (PRM) needs a label per step of each candidate solution.
SPARE annotates all steps in ONE pass by aligning each candidate step to the reference
solution's step(s) and judging it there (`alignax.tasks.step_labels.reference_labels`); the
automatic alternative, Monte-Carlo estimation (Math-Shepherd, arXiv 2312.08935; the paper
compares with tree-search annotation, which scores steps the same way by rollouts), completes
every prefix s_1..s_j M times with the policy and labels step j by the outcomes
(`rollout_labels` with the policy completer `make_policy_completer`: hard_j = 1[some rollout
reaches the gold answer], soft_j = the fraction that does). The PRMs are trained with the
step BCE (`prm_step_loss`) and rank N candidates by their min step probability.

Setting (`alignax.tasks.chains`, as experiments/easy_to_hard.py): modular-arithmetic chains
"3+4*2?3+4=2;2*2=4;>4" (mod 5), k uniform in [2, 5] steps everywhere (no easy/hard shift). The
prime modulus makes every operation with b in [1, p) a bijection, so a wrong result always
changes the answer: a perfect completer would give MC labels equal to the gold "prefix" labels,
and what separates the labellers is the policy's rollout noise (and which steps they label).
  - Generator (the policy): easy_to_hard's tiny Llama-style LM (1 layer, D 32, attention
    window one step) trained by SFT on 300 gold chains for 120 Adam updates (`fit_small`, step
    chosen on the validation chains' NLL); it writes the results into the chain's template
    (`chains.sample_values`), so its errors are wrong results. The short SFT leaves it
    imperfect (about 56% of its validation candidates right, 83% of their steps): with 400
    updates (and p = 10) 93% of the candidates were right in a first 1-seed run, leaving the
    reward models about 150 wrong solutions to learn from.
  - Candidates: 4 samples (temperature 1) of each of 500 training problems and 100 validation
    problems; 16 samples of each of 200 test problems (best-of-16), all written by one program
    (`step_labels.make_policy_sampler`, empty prefixes), the one that completes the rollouts.
  - Labellers, on the same candidates: `spare` (reference-guided, rule "first_error": 1 up to
    the first wrong step, 0 there, later steps unlabelled), `mc` (M = 8 policy rollouts per
    step, hard labels, every step labelled; the last step is labelled by the candidate's own
    answer), `mc_soft` (the same rollouts, soft labels) and `orm` (the outcome, final answer ==
    gold, at the EOS: an outcome reward model).
  - Reward models: easy_to_hard's reward transformer (2 layers, D 32, full attention,
    `ScalarRewardModel` read at each step's ';' or at the EOS), rows [BOS] + solution + [EOS];
    the same architecture, rows, initialisation, batch order (the seed's key), budget (800
    Adam updates, batch 64, learning rate 2e-3) and selection rule for all four: one
    `fit_small` program with 4S vmapped runs (labeller l of seed s is labelled seed
    `1000 l + s` in metrics.jsonl).
  - Annotation cost (generated tokens per labelled solution, `StepLabels.cost_tokens`): SPARE
    reads each candidate step once (6 k tokens); MC generates M (k - 1 - j) steps of 6 tokens
    plus 3 answer tokens for every prefix j < k - 1 (`completion_cost`).

Splits (`alignax.tasks.splits.split_seeds`): experiment seed s draws from data seed 3s the
generator's SFT chains and the training problems, from 3s + 1 the validation chains and
problems, from 3s + 2 the test problems; initialisation, batch order, sampling and rollouts
use s.

Selection on validation (the same procedure for every labeller, recorded in selection.json and
as `*_chosen_step`): the generator's SFT step has the lowest NLL of the validation chains' gold
results; each reward model's step (every 50 updates) has the lowest BCE on ITS OWN labels of
the validation candidates (each labeller labels the validation candidates as it labels the
training ones: the MC validation labels come from rollouts too, no gold labels are used by
`mc`/`orm`; SPARE's labels come from the reference solution, which the method assumes).

Claims (5 seeds, paired 95% t intervals over seeds, test problems):
(1, comparative, non-inferiority) SPARE-PRM best-of-16 accuracy is within 2 points of
MC-PRM's: BoN(spare) - BoN(mc) >= -0.02. The notes' "within 2 pts" is read one-sided: the
paper's claim is that SPARE loses nothing against rollout labels at lower cost, so being
better by more than 2 points does not contradict it; the two-sided equivalence (interval
inside [-0.02, +0.02]) is stated in the claim's detail. Pre-registered against the hard MC
labels (Math-Shepherd's PRM); `mc_soft` is reported beside it.
(2, comparative) SPARE-PRM best-of-16 >= ORM best-of-16 (difference >= 0).
Sanity (by construction, not counted): SPARE's annotation cost is <= 40% of MC's (6 k tokens
against M k (k - 1) / 2 rollout steps: below 40% for every k >= 2 with M = 8); SPARE's labels
equal the gold step labels (`reference_labels` with step alignment reproduces
`chains.step_labels`).
Also reported: PRM-weighted voting (`test_<l>_vote_accuracy`), majority voting, pass@16
(`test_coverage_accuracy`), each labeller's agreement with the gold labels on the training
and validation candidates (`<l>_label_agreement`: spare and mc against the gold labels of their
own rule on their own mask, i.e. "first_error" and "prefix"; orm's outcome labels are exact),
the tokens per labelled solution (`<l>_tokens_per_solution`) and the PRMs' step AUROC on the
validation and test candidates against the gold "first_error" labels
(`{val,test}_<l>_step_auroc`).

Reading the full run (5 seeds, test; mean over seeds): the generator writes 48.7% right
candidates (pass@16 98.2%, majority voting 65.4%). Best-of-16 with the SPARE-PRM 60.3%, MC-PRM
30.7% (soft labels 39.0%), ORM 25.1%; PRM-weighted voting 77.8% (SPARE), 66.4% (MC), 67.7%
(MC soft), 64.9% (ORM). Claim (1) PASSes far above its margin (+29.6 points, interval [16.4,
42.8]; so the two-sided equivalence, interval inside [-2, +2], does not hold: SPARE is better)
and (2) PASSes (+35.2 points, [19.9, 50.5]). The MC labels agree with the gold "prefix" labels
on 83.9% of the steps (rollouts recover a wrong prefix's answer when a later wrong result lands
on the gold value, 1 in 4 with p = 5: false positives), and the MC-PRM's test step AUROC is 0.68
against 0.94 for the SPARE-PRM, at 14x the annotation tokens (297 vs 21 per solution). The
comparison favours SPARE by design of the toy: its reference is the gold chain, so its labels
are the gold labels (privileged information MC does not get, as in the paper, where SPARE reads
the reference solutions and MC only the gold answer); best-of-16 is below majority voting for
every reward model (the tiny PRMs trained on 2000 candidates rank the best candidate less
reliably than they weigh votes). Wall time of the full run: 11 min 49 s on the shared 2-core
machine at load 6.5-8 (6 min 11 s user CPU); the policy's sampling and rollouts take about two
thirds of it.

Offline RL on the SPARE labels (the paper's second use) is not reproduced: the stored text of
the paper available here does not name its offline-RL objective, and the PRM claims do not
need it.

    alignax run experiments/spare.py            # full setting, 5 seeds
    alignax run experiments/spare.py:smoke      # seconds, for the tests

`:real` labels a user's candidate solutions with a rule-based SPARE annotator and trains a PRM
on a Hugging Face checkpoint with them (`alignax.algorithms.prm.train`, the recipe of
experiments/easy_to_hard.py:real). Rows: `prompt` (text or chat messages), `completions` (the
candidate's steps, a list of strings), `reference` (the reference solution's steps, a list of
strings, or one string split at `data.step_separator`), `answer`, and optionally gold `labels`
(one bool per step). The annotator (`annotate_steps`) aligns steps by the numbers they state:
a step's result is the last number it writes (commas dropped, compared as floats to 1e-6
relative); a candidate step is aligned to every reference step whose result equals its result,
and it is correct iff it has such a step (one or more) or states no number (nothing to refute);
`annotate.rule` "prefix" (default: 1 up to the first incorrect step, 0 from there on, every
step labelled, as the PRM rows label every step) or "local" (each step's own verdict). The PRM
is then trained on these labels exactly as easy_to_hard's (`prm.*`, `vote.*` keys); with gold
`labels` in the rows the run reports the annotator's agreement with them (`label_agreement`,
the fraction of steps labelled alike, over all rows, and `label_rows`) beside the PRM's
held-out metrics (computed against the annotator's labels). No claim is evaluated on a user's
data:

    alignax run experiments/spare.py:real --workdir runs/spare_real \
        --config.model.path=/ckpt/Qwen2.5-0.5B-Instruct --config.data.path=/data/gsm8k_steps \
        --config.vote.answer_marker='The answer is' --config.lora.rank=16
"""

from __future__ import annotations

import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import prm, real
from alignax.data.errors import DataError
from alignax.eval import voting
from alignax.eval.ranking import auroc
from alignax.models.transformer import TransformerConfig, make_lm, make_reward_model
from alignax.tasks import arithmetic
from alignax.tasks import chains as ch
from alignax.tasks import step_labels as sl
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small, minibatch_fn, stack_seeds

LABELLERS = ("spare", "mc", "mc_soft", "orm")
PRMS = ("spare", "mc", "mc_soft")
RUN_STRIDE = 1000  # labeller l of seed s is the fit_small run labelled seed_<1000 l + s>
DATA_TAG = 2506  # the numpy streams' second seed word (the paper's arXiv month)
masked_auroc = jax.jit(auroc)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.task = dict(modulus=5, num_steps_range=(2, 5))
    c.data = dict(num_sft=300 if not smoke else 32,    # gold chains: the generator's SFT
                  num_rm=500 if not smoke else 16,     # training problems
                  rm_samples=4 if not smoke else 2,    # candidates per training problem
                  num_val=100 if not smoke else 8,     # validation problems
                  val_samples=4 if not smoke else 2,
                  num_test=200 if not smoke else 8,    # test problems
                  test_samples=16 if not smoke else 4)  # N candidates per test problem
    c.generator = dict(d_model=32 if not smoke else 16, n_layers=1, n_heads=4 if not smoke else 2,
                       d_ff=64 if not smoke else 32, window=6)
    c.sft = dict(steps=120 if not smoke else 4, batch_size=64 if not smoke else 8,
                 learning_rate=3e-3, log_every=40 if not smoke else 2)
    c.temperature = 1.0
    # the labellers: SPARE's rule, MC rollouts (M per step, the policy at `temperature`)
    c.labels = dict(rule="first_error", num_rollouts=8 if not smoke else 2,
                    chunk_size=4096 if not smoke else 64)
    c.rm = dict(d_model=32 if not smoke else 16, n_layers=2 if not smoke else 1,
                n_heads=4 if not smoke else 2, d_ff=64 if not smoke else 32,
                steps=800 if not smoke else 4, batch_size=64 if not smoke else 8,
                learning_rate=2e-3, log_every=50 if not smoke else 2, aggregation="min")
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if real.is_real(config):
        prm.validate(config)
        if config.annotate.rule not in ANNOTATE_RULES:
            raise ValueError(f"annotate.rule={config.annotate.rule!r} must be one of "
                             f"{ANNOTATE_RULES}")
        return
    lo, hi = config.task.num_steps_range
    if not 2 <= lo <= hi:
        raise ValueError(f"task.num_steps_range={tuple(config.task.num_steps_range)} must be "
                         f"(lo, hi) with 2 <= lo <= hi (a one-step chain has no rollout)")
    if not 2 <= int(config.task.modulus) <= 10:
        raise ValueError(f"task.modulus={config.task.modulus} must be in [2, 10]")
    if config.labels.rule not in ch.LABEL_RULES:
        raise ValueError(f"labels.rule={config.labels.rule!r} must be one of {ch.LABEL_RULES}")
    if int(config.labels.num_rollouts) < 1:
        raise ValueError(f"labels.num_rollouts={config.labels.num_rollouts} must be >= 1")
    if config.rm.aggregation not in voting.AGGREGATIONS:
        raise ValueError(f"rm.aggregation={config.rm.aggregation!r} must be one of "
                         f"{voting.AGGREGATIONS}")
    if float(config.temperature) <= 0:
        raise ValueError(f"temperature={config.temperature} must be > 0")


# ----------------------------------------------------------------------------- data and models


def make_world(config, seed: int) -> dict[str, ch.Chains]:
    """From data seed 3s the SFT chains then the training problems, from 3s + 1 the validation
    chains then problems, from 3s + 2 the test problems (`split_seeds`)."""
    d = config.data
    kw = dict(num_steps=tuple(config.task.num_steps_range), modulus=int(config.task.modulus))
    train, val, test = (np.random.default_rng([x, DATA_TAG]) for x in split_seeds(seed))
    return {"sft": ch.sample_chains(int(d.num_sft), rng=train, **kw),
            "rm": ch.sample_chains(int(d.num_rm), rng=train, **kw),
            "val_sft": ch.sample_chains(int(d.num_val), rng=val, **kw),
            "val": ch.sample_chains(int(d.num_val), rng=val, **kw),
            "test": ch.sample_chains(int(d.num_test), rng=test, **kw)}


def generator_model(config):
    g = config.generator
    return make_lm(TransformerConfig(
        vocab_size=arithmetic.VOCAB_SIZE, d_model=int(g.d_model), n_layers=int(g.n_layers),
        n_heads=int(g.n_heads), d_ff=int(g.d_ff),
        max_len=ch.max_length(config.task.num_steps_range[1]), sliding_window=int(g.window)))


def reward_model(config):
    r = config.rm
    return make_reward_model(TransformerConfig(
        vocab_size=arithmetic.VOCAB_SIZE, d_model=int(r.d_model), n_layers=int(r.n_layers),
        n_heads=int(r.n_heads), d_ff=int(r.d_ff),
        max_len=ch.max_length(config.task.num_steps_range[1], with_prompt=False)))


def train_generator(config, workdir: str, worlds: list[dict]):
    """SFT of the generator on gold chains, every seed at once, step chosen on validation NLL."""
    lm, s = generator_model(config), config.sft

    def loss_fn(params, batch):
        nll = ch.result_nll(lm.apply, params, batch)
        return nll, {"nll": nll}

    return fit_small(workdir, loss_fn=loss_fn, init_params=lm.init,
                     tx=optax.adam(float(s.learning_rate)), num_steps=int(s.steps),
                     data=stack_seeds([ch.gold_rows(w["sft"]) for w in worlds]),
                     seeds=list(config.seeds), per_seed_data=True,
                     batch_fn=minibatch_fn(int(s.batch_size)), has_aux=True,
                     steps_per_log=int(s.log_every),
                     eval_fn=lambda p, v: {"val_nll": ch.result_nll(lm.apply, p, v)},
                     eval_data=stack_seeds([ch.gold_rows(w["val_sft"]) for w in worlds]),
                     select=("val_nll", "min"), desc="generator")


def sample(policy, chains: ch.Chains, seed: int) -> np.ndarray:
    """Results [B, K] written by a seed's generator (`policy`: `make_policy_sampler(...)(params)`)
    into the chains' templates: prefixes of length 0 (the program that also completes the MC
    rollouts), rng stream (seed, DATA_TAG, 1)."""
    zeros = np.zeros(chains.ops.shape, np.int32)
    return policy(sl.Prefixes(chains, zeros, zeros, np.zeros(chains.size, np.int32)),
                  np.random.default_rng([seed, DATA_TAG, 1]))


def label_sets(config, chains: ch.Chains, values, complete, seed: int
               ) -> dict[str, sl.StepLabels]:
    """Every labeller's `StepLabels` of the candidates (`values` [B, K] of `chains`): SPARE's
    reference labels, the MC rollout labels (hard; soft in `soft`) from `complete`, and the
    outcome labels (column 0; cost: the answer tokens read)."""
    lab = config.labels
    spare = sl.reference_labels(chains, values, rule=lab.rule)
    mc = sl.rollout_labels(chains, values, complete=complete,
                           num_rollouts=int(lab.num_rollouts),
                           rng=np.random.default_rng([seed, DATA_TAG, 7]))
    n, width = chains.ops.shape
    outcome = np.zeros((n, width), np.int32)
    outcome[:, 0] = ch.outcome_labels(chains, values)
    first = np.zeros((n, width), np.int32)
    first[:, 0] = 1
    answer_cost = np.full(n, sl.ANSWER_TOKENS, np.int64)
    orm = sl.StepLabels(outcome, first, outcome.astype(np.float32), np.zeros(n, np.int64),
                        answer_cost)
    return {"spare": spare, "mc": mc, "mc_soft": mc._replace(labels=mc.soft), "orm": orm}


def rm_rows(chains: ch.Chains, values, labels: sl.StepLabels, kind: str) -> dict[str, np.ndarray]:
    """A reward model's rows: ids, mask [B, T] ([BOS] + solution + [EOS]), read positions,
    labels (float32: hard or soft) and label mask [B, K]; PRMs read each step's ';', the ORM
    the EOS (column 0)."""
    ids, mask = ch.encode(chains, values, with_prompt=False)
    if kind == "orm":
        pos = np.full(chains.ops.shape, -1, np.int32)
        pos[:, 0] = ch.last_positions(chains, with_prompt=False)
    else:
        pos = ch.step_end_positions(chains, with_prompt=False)
    return {"ids": ids, "mask": mask, "pos": pos, "labels": labels.labels.astype(np.float32),
            "lmask": labels.mask.astype(np.int32)}


def train_rms(config, workdir: str, data: dict, val: dict, seeds):
    """Every labeller's reward model of every seed in one `fit_small` program (run l S + i is
    labeller l of seed i), each kept at its step with the lowest BCE on its own validation
    labels; the runs of one seed share init and batch order (the seed's key)."""
    rm, r = reward_model(config), config.rm
    loss = prm.step_loss_fn(rm.apply)
    keys = jnp.stack([jax.random.key(int(s)) for s in seeds] * len(LABELLERS))
    return fit_small(workdir, loss_fn=loss, init_params=rm.init,
                     tx=optax.adam(float(r.learning_rate)), num_steps=int(r.steps), data=data,
                     seeds=[RUN_STRIDE * i + int(s) for i in range(len(LABELLERS))
                            for s in seeds],
                     seed_keys=keys, per_seed_data=True,
                     batch_fn=minibatch_fn(int(r.batch_size)), steps_per_log=int(r.log_every),
                     eval_fn=lambda p, v: {"val_loss": loss(p, v)}, eval_data=val,
                     select=("val_loss", "min"), desc="reward models")


def score(config, params, rows: dict) -> np.ndarray:
    """Reward-model logits [R, B, K] at the rows' read positions, every run in one program."""
    rm = reward_model(config)

    @jax.jit
    @jax.vmap
    def logits(params, ids, mask, pos):
        return rm.apply(params, ids, mask, reward_positions=pos)

    return np.asarray(logits(params, *(jnp.asarray(rows[k]) for k in ("ids", "mask", "pos"))))


def selection(answers, correct, step_probs, step_mask, orm_probs, *, num_answers: int,
              aggregation: str) -> dict[str, jax.Array]:
    """Per-problem correctness [P] of every rule: answers, correct [P, N], step_probs [L, P, N,
    K] (the PRMs in PRMS order), step_mask [P, N, K], orm_probs [P, N]."""
    out = {}
    for i, name in enumerate(PRMS):
        acc = prm.vote_accuracies(answers, correct, step_probs[i], step_mask,
                                  num_answers=num_answers, aggregation=aggregation)
        out.update({"majority": acc["majority"], "coverage": acc["coverage"],
                    "sample": acc["sample"], f"{name}_vote": acc["prm_vote"],
                    f"{name}_best_of_n": acc["prm_best_of_n"]})
    right = prm.judge(answers, correct)
    out["orm_vote"] = right(voting.weighted_vote(answers, orm_probs, num_answers=num_answers))
    out["orm_best_of_n"] = right(voting.best_of_n_answer(answers, orm_probs))
    return out


# ----------------------------------------------------------------------------- run


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed at once: the generator, its candidates, the four label sets, the four reward
    models, the test selection rules (`:real`: one run per seed, `_run_real`)."""
    if real.is_real(config):
        return {int(s): _run_real(config, os.path.join(workdir, f"seed_{s}"), int(s))
                for s in config.seeds}
    seeds = [int(s) for s in config.seeds]
    d, p = config.data, int(config.task.modulus)
    n_rm, n_val = int(d.num_rm) * int(d.rm_samples), int(d.num_val) * int(d.val_samples)
    n, m = int(d.test_samples), int(d.num_test)
    worlds = [make_world(config, s) for s in seeds]

    # 1. the generator (the policy), step chosen on validation NLL
    gen = train_generator(config, os.path.join(workdir, "generator"), worlds)
    # 2. candidates: training, validation and test rows of each seed in one program
    # and 3. labels of the training and validation candidates, by every labeller; one
    # program writes the candidates (empty prefixes) and completes the MC rollouts
    cands = [ch.concatenate([w["rm"].repeat(int(d.rm_samples)), w["val"].repeat(
        int(d.val_samples)), w["test"].repeat(n)]) for w in worlds]
    policy = sl.make_policy_sampler(generator_model(config).apply,
                                    temperature=float(config.temperature),
                                    chunk_size=int(config.labels.chunk_size))
    labelled = np.arange(n_rm + n_val)
    values, labels, rows, gold = [], [], {k: [] for k in LABELLERS}, []
    for i, seed in enumerate(seeds):
        bound = policy(jax.tree.map(lambda x, i=i: x[i], gen.best_params))
        values.append(sample(bound, cands[i], seed))
        c, v = cands[i].take(labelled), values[i][labelled]
        labels.append(label_sets(config, c, v, sl.as_completer(bound), seed))
        gold.append({r: ch.step_labels(c, v, rule=r)
                     for r in {config.labels.rule, "prefix", "first_error"}})
        for k in LABELLERS:
            rows[k].append(rm_rows(c, v, labels[i][k], k))
    per_run = [r for k in LABELLERS for r in rows[k]]  # labeller-major: run l S + i

    def part(rows_slice):
        return stack_seeds([{k: x[rows_slice] for k, x in r.items()} for r in per_run])

    # 4. the reward models, then every run scores the test candidates
    fit = train_rms(config, os.path.join(workdir, "reward_models"), part(slice(0, n_rm)),
                    part(slice(n_rm, n_rm + n_val)), seeds)
    # the validation candidates (their step AUROC), then the test candidates
    test = np.arange(n_rm + n_val, n_rm + n_val + m * n)
    scored = np.arange(n_rm, n_rm + n_val + m * n)
    unlabelled = sl.StepLabels(*(np.zeros((scored.size,) + x.shape[1:], x.dtype)
                                 for x in labels[0]["spare"]))
    scored_rows = stack_seeds([rm_rows(cands[i].take(scored), values[i][scored], unlabelled, k)
                               for k in LABELLERS for i in range(len(seeds))])
    both = score(config, fit.best_params, scored_rows).reshape(len(LABELLERS), len(seeds),
                                                               scored.size, -1)
    val_logits, logits = both[:, :, :n_val], both[:, :, n_val:]
    # 5. the selection rules on the test problems
    select = jax.jit(jax.vmap(lambda *a: selection(*a, num_answers=p,
                                                   aggregation=config.rm.aggregation)))
    args = []
    for i in range(len(seeds)):
        c, v = cands[i].take(test), values[i][test]
        probs = np.asarray(jax.nn.sigmoid(logits[:len(PRMS), i])).reshape(len(PRMS), m, n, -1)
        args.append((ch.final_values(c, v).reshape(m, n),
                     (ch.outcome_labels(c, v) == 1).reshape(m, n), probs,
                     c.valid().reshape(m, n, -1),
                     np.asarray(jax.nn.sigmoid(logits[-1, i, :, 0])).reshape(m, n)))
    per_problem = jax.device_get(select(*(jnp.asarray(np.stack([a[j] for a in args]))
                                          for j in range(5))))
    out = {}
    for i, seed in enumerate(seeds):
        res = {f"test_{rule}_accuracy": float(x[i].mean()) for rule, x in per_problem.items()}
        for split, rows_, lg in (("val", np.arange(n_rm, n_rm + n_val), val_logits),
                                 ("test", test, logits)):
            g, gmask = ch.step_labels(cands[i].take(rows_), values[i][rows_], rule="first_error")
            for j, name in enumerate(PRMS):
                res[f"{split}_{name}_step_auroc"] = float(masked_auroc(
                    lg[j, i].ravel(), g.ravel(), gmask.astype(bool).ravel()))
        for j, name in enumerate(LABELLERS):
            lab = labels[i][name]
            res[f"{name}_tokens_per_solution"] = float(lab.cost_tokens.mean())
            res[f"{name}_chosen_step"] = float(fit.best_step[j * len(seeds) + i])
            res[f"val_{name}_loss"] = float(fit.best_score[j * len(seeds) + i])
        for name, rule in (("spare", config.labels.rule), ("mc", "prefix")):
            glab, gm = gold[i][rule]
            mine = labels[i][name]
            both = (mine.mask > 0) & (gm > 0)
            res[f"{name}_label_agreement"] = float((mine.labels == glab)[both].mean())
        mc, fe = labels[i]["mc"], gold[i]["first_error"]
        both = (mc.mask > 0) & (fe[1] > 0)
        res["mc_label_agreement_first_error"] = float((mc.labels == fe[0])[both].mean())
        res["spare_mc_cost_ratio"] = float(labels[i]["spare"].cost_tokens.sum()
                                           / max(labels[i]["mc"].cost_tokens.sum(), 1))
        res["candidate_outcome_rate"] = float(ch.outcome_labels(
            cands[i].take(labelled), values[i][labelled]).mean())
        res["generator_chosen_step"] = float(gen.best_step[i])
        res["val_generator_nll"] = float(gen.best_score[i])
        out[seed] = res
    _write_selection(workdir, seeds, gen, fit)
    return out


def _write_selection(workdir: str, seeds, gen, fit) -> None:
    """Every seed's validation choices (selection.json): the generator's SFT step (validation
    NLL) and each reward model's step (BCE on its own validation labels)."""
    if jax.process_index() != 0:
        return
    s = len(seeds)
    record = {"procedure": "fit_small select: the logged step with the best validation metric, "
                           "ties to the earlier",
              "generator": {"metric": "val_nll (min)",
                            "chosen_step": {str(x): int(y) for x, y in zip(seeds, gen.best_step)},
                            "score": {str(x): float(y) for x, y in zip(seeds, gen.best_score)}}}
    for j, name in enumerate(LABELLERS):
        record[name] = {"metric": "val_loss (min, own labels)",
                        "chosen_step": {str(x): int(fit.best_step[j * s + i])
                                        for i, x in enumerate(seeds)},
                        "score": {str(x): float(fit.best_score[j * s + i])
                                  for i, x in enumerate(seeds)}}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump(record, f, indent=1)


def claims(results) -> list[protocol.Claim]:
    r = "default"
    if "test_spare_best_of_n_accuracy" not in results[r]["metrics"]:  # :real: no claim
        return []
    mean = lambda k: protocol.seed_mean(results, r, k)  # noqa: E731
    rules = ("majority", "coverage", *[f"{x}_{y}" for x in LABELLERS
                                       for y in ("best_of_n", "vote")])
    diff = protocol.per_seed(results, r, "test_spare_best_of_n_accuracy")
    mc = protocol.per_seed(results, r, "test_mc_best_of_n_accuracy")
    iv = protocol.paired_interval([diff[s] for s in diff], [mc[s] for s in diff])
    detail = ("test problems, best-of-N / weighted voting accuracy: " + ", ".join(
        f"{x} {mean(f'test_{x}_accuracy'):.3f}" for x in rules)
        + "; label agreement with gold: " + ", ".join(
            f"{x} {mean(f'{x}_label_agreement'):.3f}" for x in ("spare", "mc"))
        + f"; tokens per labelled solution: spare {mean('spare_tokens_per_solution'):.1f}, "
        f"mc {mean('mc_tokens_per_solution'):.1f}; two-sided equivalence BoN(spare) - "
        f"BoN(mc) in [-0.02, 0.02]: interval [{iv.low:.3f}, {iv.high:.3f}] "
        f"({'inside' if -0.02 <= iv.low and iv.high <= 0.02 else 'not inside'})")
    ratio = protocol.per_seed(results, r, "spare_mc_cost_ratio")
    agree = protocol.per_seed(results, r, "spare_label_agreement")
    return [
        protocol.compare(
            "SPARE-PRM best-of-N accuracy is within 2 points of the MC-rollout PRM's "
            "(non-inferiority: difference >= -0.02)", results,
            (r, "test_spare_best_of_n_accuracy"), (r, "test_mc_best_of_n_accuracy"),
            at_least=-0.02, detail=detail),
        protocol.compare(
            "SPARE-PRM best-of-N accuracy >= the ORM's", results,
            (r, "test_spare_best_of_n_accuracy"), (r, "test_orm_best_of_n_accuracy"),
            at_least=0.0, detail=detail),
        protocol.sanity(
            "SPARE's annotation cost is <= 40% of the MC annotator's (generated tokens)",
            all(x <= 0.4 for x in ratio.values()), {"max_cost_ratio": max(ratio.values())},
            "by construction: 6 k tokens vs M k (k - 1) / 2 rollout steps"),
        protocol.sanity(
            "SPARE's reference-guided labels equal the gold step labels",
            all(x == 1.0 for x in agree.values()), {"min_agreement": min(agree.values())},
            "by construction: step alignment reproduces chains.step_labels"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Test accuracy of best-of-N and weighted voting per labeller (mean +- std over seeds)."""
    m = results["default"]["metrics"]
    if "test_spare_best_of_n_accuracy" not in m:
        return []
    series = {rule: ([m[f"test_{x}_{rule}_accuracy"]["mean"] for x in LABELLERS],
                     [m[f"test_{x}_{rule}_accuracy"]["std"] for x in LABELLERS])
              for rule in ("best_of_n", "vote")}
    return [plot_grouped_bars(list(LABELLERS), series,
                              os.path.join(workdir, "plots", "selection_accuracy.png"),
                              title="test problems: accuracy by labeller of the reward model",
                              ylabel="accuracy", ylim=(0.0, 1.0))]


# ----------------------------------------------------------------------------- :real

ANNOTATE_RULES = ("prefix", "local")
# a number not glued to a word ("w12", "x2" state none): digits with thousands commas, decimals
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")


def step_result(step: str) -> float | None:
    """The last number a text step states (commas dropped; not part of a word: "w12" states
    none), None without one."""
    found = _NUMBER.findall(step)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def annotate_steps(steps, reference, rule: str = "prefix") -> tuple[list[int], list[list[int]]]:
    """Rule-based SPARE annotation of text steps against a reference solution.

    Alignment: candidate step j states the result r_j (`step_result`: its last number); it is
    aligned to every reference step i with result r'_i = r_j (one or several, SPARE's
    "one or multiple steps"). Evaluation: ok_j = [aligned to some step] or [r_j is None] (a
    step that states no number has nothing to refute). Labels: "prefix" y_j = prod_{i <= j}
    ok_i (1 up to the first incorrect step, 0 from there on); "local" y_j = ok_j.

    Args:
      steps: the candidate's steps (strings).
      reference: the reference solution's steps (strings).
      rule: "prefix" or "local".

    Returns:
      (labels: one 0/1 per step, alignment: for each step the indices of its reference steps).
    """
    if rule not in ANNOTATE_RULES:
        raise ValueError(f"rule must be one of {ANNOTATE_RULES}, got {rule!r}")
    ref = [step_result(x) for x in reference]
    labels, alignment, ok_so_far = [], [], True
    for step in steps:
        r = step_result(step)
        aligned = [] if r is None else [i for i, x in enumerate(ref)
                                        if x is not None and _same(x, r)]
        ok = r is None or bool(aligned)
        ok_so_far = ok_so_far and ok
        labels.append(int(ok_so_far if rule == "prefix" else ok))
        alignment.append(aligned)
    return labels, alignment


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): SPARE labels of `data.path`'s candidates, then a PRM on
    `model.path` (`prm.add_prm_fields`)."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    prm.add_prm_fields(c, max_length=1024, max_steps=32, step_separator="\n",
                       answer_field="answer")
    c.annotate = dict(rule="prefix", reference_field="reference")
    return c


def _reference_steps(record, config) -> list[str]:
    field = config.annotate.reference_field
    ref = record.extras.get(field)
    if isinstance(ref, str):
        ref = [x for x in ref.split(config.data.step_separator) if x.strip()]
    if not isinstance(ref, (list, tuple)) or not all(isinstance(x, str) for x in ref):
        raise DataError(f"{field}: expected the reference steps (a list of strings or one "
                        f"string)", field=field)
    return list(ref)


def _annotated(record, config):
    """`record` with its `labels` set by `annotate_steps` (its gold labels, if any, kept
    under `gold_labels`)."""
    steps = record.extras.get("completions")
    if not isinstance(steps, (list, tuple)) or not all(isinstance(x, str) for x in steps):
        raise DataError("completions: expected a list of step strings", field="completions")
    labels, _ = annotate_steps(steps, _reference_steps(record, config), config.annotate.rule)
    out = prm.with_steps(record, steps, labels)
    out.extras["gold_labels"] = record.extras.get("labels")
    return out


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    """`:real` (module docstring): the annotator's agreement with the rows' gold labels (when
    they have them), then `prm.train` on the annotator's labels."""
    from alignax.data.hf_datasets import HFSource, PromptRecord

    d = config.data
    data = real.dataset(config)
    tok = real.tokenizer(config)
    source = HFSource(data, lambda r: r, kinds=(PromptRecord,))
    same = total = rows = 0
    for i in range(len(source)):
        rec = _annotated(source.record(i), config)
        gold = rec.extras["gold_labels"]
        if gold is None:
            continue
        if len(gold) != len(rec.extras["labels"]):
            raise DataError(f"{source.name}:{i}: field 'labels': expected one label per step",
                            path=source.name, line=i, field="labels")
        rows += 1
        total += len(gold)
        same += sum(int(bool(a)) == b for a, b in zip(gold, rec.extras["labels"]))

    def transform(record):
        return prm.step_rows(_annotated(record, config), tok, max_length=int(d.max_length),
                             max_steps=int(d.max_steps), separator=d.step_separator)

    out = prm.train(config, workdir, seed, tag=DATA_TAG, transform=transform, data=data)
    if rows:
        out["label_agreement"] = same / max(total, 1)
        out["label_rows"] = float(rows)
    return out
