r"""Easy-to-Hard Generalization (Sun et al. 2024): a PRM trained on easy chains re-ranks hard ones.

Paper: Sun et al. 2024, "Easy-to-Hard Generalization: Scalable Alignment Beyond Human
Supervision" (arXiv 2403.09472).

Mechanism: an evaluator trained with supervision on EASY problems only scores candidate
solutions of HARD problems, and re-ranking N sampled solutions with it (weighted voting,
a* = argmax_a sum_{i: ans_i = a} score_i, `alignax.eval.voting`) lifts the generator on the hard
problems; a process reward model (PRM: binary cross-entropy per step, `prm_step_loss`;
solution score = min_k sigmoid(s_k)) generalises from easy to hard better than an outcome
reward model (ORM: the same BCE on the final-answer label).

Setting (`alignax.tasks.chains`): modular-arithmetic chains "3+4*2?3+4=7;7*2=4;>4" (mod 10,
left to right); difficulty = the number of steps k: easy k in [1, 3], hard k in [5, 6].
  - Generator: a tiny Llama-style LM (1 layer, D 32) trained by SFT (next-token NLL of the
    result tokens) on 300 easy gold chains, every seed at once (`fit_small`). It writes a
    solution one result at a time into the chain's template (`chains.sample_values`: left
    operands, operations and operands are the format's, so its only errors are wrong results).
    Its attention window is one step (6 tokens): in exploratory runs a full-attention tiny LM
    trained on k <= 3 fell to about 2% greedy accuracy at k = 6 (it cannot find an operand past
    the lengths it saw), while with the window its per-step accuracy is the same at every k, so
    hard chains are hard because their k errors compound, as the paper's policy still solves
    part of the hard problems. 300 chains leave it imperfect (about 80% greedy accuracy on easy
    validation chains).
  - PRM and ORM: the same reward-model transformer (2 layers, D 32, full attention:
    `ScalarRewardModel` read at `reward_positions`), trained on the generator's samples
    (temperature 1, 4 per problem) of 4000 easy problems with gold labels: the PRM on each
    step's label at its ';' (`chains.step_labels`, rule "first_error": 1 up to the first wrong
    step, 0 there, later steps unlabelled, PRM800K's convention), the ORM on the outcome
    (final answer == gold) at the EOS. Same architecture, rows, budget (2400 Adam updates,
    batch 64), initialisation and batch order (the seed's key), selection rule; only the
    supervision and the read positions differ. Their rows are [BOS] + solution + [EOS]
    (`rm.with_prompt` False): the solution restates a_0 and every operation and operand, so it
    alone determines every label, and the prompt, whose length grows with k, was the largest
    easy-to-hard confound on the hard validation split (below).
  - Test: 200 hard problems per seed, N = 16 samples each (temperature 1) plus one greedy
    decode; the selection rules on the same samples: `greedy` (the generator alone),
    `majority` (self-consistency), `prm_vote` (weighted voting with the PRM's min step score;
    product and last reported as `prm_vote_product` / `prm_vote_last`), `orm_vote`,
    `prm_best_of_n`, `orm_best_of_n`, and `coverage` (pass@N, the ceiling of every rule).

Splits (`alignax.tasks.splits.split_seeds`): experiment seed s draws from data seed 3s the
generator's SFT chains and then the RMs' problems, from 3s + 1 the easy validation problems and
then 100 hard validation problems, from 3s + 2 the hard test problems; initialisation, batch
order and sampling use s. Disjoint in seeds, not in problems: short easy chains recur (there are
only 270 one-step chains), hard ones hardly. The hard validation problems are never used for
training or for the claims: their metrics (`val_hard_*`, the same rules and AUROCs as on test)
served the one architecture check below.

Selection on validation (the same procedure for both RMs, recorded in `selection.json` and as
`*_chosen_step`): the generator's SFT step has the lowest NLL of the easy validation chains'
gold results; each RM's step (every 200 updates) has the lowest BCE on its own labels of the
generator's samples of the easy validation problems. Easy, not hard, validation: the paper's
premise is that no hard problem is supervised. The toy's sizes (4000 RM problems, 2400 updates,
learning rate 2e-3) were set in 2-seed exploratory runs on the easy-validation loss and AUROC,
after a first full run with 1000 problems and 600 updates left both RMs weak (PRM validation
loss 0.45) and every voting rule within a point of majority voting. Two input choices, the
same for both RMs, were then made on the hard validation split (2 seeds), after a second full
run with the prompt in the RM rows had PRM-weighted voting within a point of majority voting
(0.556 vs 0.553 on test) and the PRM's hard step AUROC at 0.77 against 0.93 on easy: (a) an
attention window as long as the longest training row (`rm.window` 30, full attention on easy
rows) gave PRM step AUROC 0.79 vs 0.77 and weighted voting 0.555 vs 0.535, within noise, so the
RMs keep full attention (`rm.window` 0); (b) without the prompt the PRM's hard step AUROC rose
from 0.77 to 0.85 (its first step from 0.83 to 0.996: the longer prompt had disturbed even the
step it verifies best), its solution AUROC from 0.66 to 0.73 and the ORM's from 0.61 to 0.67,
so the RM rows hold the solution only (`rm.with_prompt` False).

Claims (5 seeds, paired 95% t intervals over seeds, hard test problems): (1, comparative)
PRM-weighted voting beats majority voting by >= 5 points (the notes' criterion); (2,
comparative) PRM-weighted voting beats the generator alone (greedy), difference >= 0;
(3, comparative) the easy-trained ORM gains less than the PRM: PRM-weighted minus ORM-weighted
voting >= 0 (both gains are over the same majority vote, so this is gain(PRM) - gain(ORM)).
Sanity: no voting rule beats pass@N. Also reported: AUROC of each evaluator on easy validation
samples and on hard samples (`{val,val_hard,test}_prm_step_auroc` against the step labels,
`*_orm_auroc` against the outcome, and `*_prm_solution_auroc`: the PRM's aggregated solution
score against the same outcome, the like-for-like comparison with the ORM), and every accuracy
per k (`*_steps_5`, `*_steps_6`).

Reading the full run (5 seeds, hard test; easy validation -> hard test AUROC): the generator
answers 56.1% of hard chains greedily (pass@16 78.3%); majority voting 55.3%, ORM-weighted
55.4%, PRM-weighted 57.6% (min; product 56.3%, last 54.5%), best-of-16 PRM 45.0%, ORM 38.0%.
The PRM generalises better than the ORM (step AUROC 0.95 -> 0.87; as a solution verifier
0.93 -> 0.72, the ORM 0.88 -> 0.65), so every claim points the paper's way, but too weakly:
claim (1) FAILs (+2.3 points, interval [-0.2, 4.8]), (2) and (3) are INCONCLUSIVE (+1.5 and
+2.2 points, intervals containing 0). The tiny PRM verifies late steps of long chains worse
(on hard validation its step AUROC falls from 0.996 at step 1 to 0.65 at step 6), which a
pretrained evaluator, the paper's, does not have to learn from easy data alone.

    alignax run experiments/easy_to_hard.py            # full setting, 5 seeds
    alignax run experiments/easy_to_hard.py:smoke      # seconds, for the tests

`:real` trains a PRM on a Hugging Face checkpoint from a user's step-labelled dataset and
re-ranks the checkpoint's own sampled solutions with it. Rows are TRL's stepwise-supervision
format: `prompt` (text or chat messages), `completions` (the steps, a list of strings) and
`labels` (one bool per step), plus `data.answer_field` (default "answer") for the voting. A row
is the prompt (tokenised as for sampling: the chat template with the generation prompt) followed
by each step + `data.step_separator` (default "\n", TRL's PRMConfig default); the PRM is the
checkpoint's backbone with a new score head (`pretrained.recipe_model(..., "reward")`) read at
each step's last token (`reward_positions`), trained with `prm_step_loss` on the labelled steps
through the library's trainer (`common.fit_recipe`: mesh, LoRA with the head in full, resume,
logging; all of it `alignax.algorithms.prm.train`). The last `data.eval_fraction` of the rows
are test, as many before them validation (to reproduce easy-to-hard, order the rows from easy to
hard: the held-out rows are then the hardest). Every `prm.train.eval_every` steps the held-out
rows give `val_/test_loss` and `step_accuracy`; with `vote.num_samples` N > 0 the checkpoint
samples N solutions per held-out prompt (before training; split into steps at the separator; the
answer is the text after the last `vote.answer_marker`, the whole completion when it is "") and
the PRM's selection rules are scored on them (`*_majority_accuracy`, `*_prm_vote_accuracy`,
`*_prm_best_of_n_accuracy`, `*_coverage_accuracy`, exact match with the row's answer). The step
with the lowest validation loss is chosen (selection.json) and its metrics reported. No claim is
evaluated on a user's data (one seed; the toy's claims need five):

    alignax run experiments/easy_to_hard.py:real --workdir runs/e2h_real \
        --config.model.path=/ckpt/Qwen2.5-0.5B-Instruct --config.data.path=/data/prm800k_trl \
        --config.vote.answer_marker='The answer is' --config.model.dtype=bfloat16 \
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
from alignax.algorithms import prm, real
from alignax.algorithms.prm import step_rows  # noqa: F401  (the :real PRM rows, re-exported)
from alignax.eval import voting
from alignax.eval.ranking import auroc
from alignax.models.transformer import TransformerConfig, make_lm, make_reward_model
from alignax.tasks import arithmetic
from alignax.tasks import chains as ch
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_grouped_bars
from alignax.train.small import fit_small, minibatch_fn, stack_seeds

RMS = ("prm", "orm")
ORM_RUN = 1000  # the ORM of seed s is the run labelled seed_<1000 + s> (`train_rms`)
masked_auroc = jax.jit(auroc)
# the selection rules compared on the hard problems (metrics "<split>_<rule>_accuracy")
RULES = ("greedy", "majority", "orm_vote", "prm_vote", "orm_best_of_n", "prm_best_of_n")
DATA_TAG = 2403  # the numpy streams' second seed word (the paper's arXiv month)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    # difficulty = number of steps: easy k in [1, 3] (all supervision), hard k in [5, 6] (test)
    c.task = dict(modulus=10, easy_steps=(1, 3), hard_steps=(5, 6))
    c.data = dict(num_sft=300 if not smoke else 32,      # easy gold chains: the generator's SFT
                  num_rm=4000 if not smoke else 32,      # easy problems: the RMs' samples
                  rm_samples=4 if not smoke else 2,      # generator samples per RM problem
                  num_val=200 if not smoke else 16,      # easy validation problems
                  val_samples=4 if not smoke else 2,
                  num_val_hard=100 if not smoke else 4,  # hard validation problems
                  num_test=200 if not smoke else 8,      # hard test problems
                  test_samples=16 if not smoke else 4)   # N samples per hard problem
    # the generator: a tiny Llama-style LM whose attention window is one step (see docstring)
    c.generator = dict(d_model=32 if not smoke else 16, n_layers=1, n_heads=4 if not smoke else 2,
                       d_ff=64 if not smoke else 32, window=6)
    c.sft = dict(steps=400 if not smoke else 4, batch_size=64 if not smoke else 8,
                 learning_rate=3e-3, log_every=50 if not smoke else 2)
    c.temperature = 1.0
    # PRM and ORM: the same reward-model architecture (full attention), budget and selection
    c.rm = dict(d_model=32 if not smoke else 16, n_layers=2 if not smoke else 1,
                n_heads=4 if not smoke else 2, d_ff=64 if not smoke else 32,
                steps=2400 if not smoke else 4, batch_size=64 if not smoke else 8,
                learning_rate=2e-3, log_every=200 if not smoke else 2,
                window=0, with_prompt=False, label_rule="first_error", aggregation="min")
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if real.is_real(config):
        _validate_real(config)
        return
    t = config.task
    (elo, ehi), (hlo, hhi) = t.easy_steps, t.hard_steps
    if not 1 <= elo <= ehi < hlo <= hhi:
        raise ValueError(f"task.easy_steps={tuple(t.easy_steps)} and task.hard_steps="
                         f"{tuple(t.hard_steps)} must be ranges with every easy k < every hard k")
    if not 2 <= int(t.modulus) <= 10:
        raise ValueError(f"task.modulus={t.modulus} must be in [2, 10]")
    if config.rm.label_rule not in ch.LABEL_RULES:
        raise ValueError(f"rm.label_rule={config.rm.label_rule!r} must be one of "
                         f"{ch.LABEL_RULES}")
    if config.rm.aggregation not in voting.AGGREGATIONS:
        raise ValueError(f"rm.aggregation={config.rm.aggregation!r} must be one of "
                         f"{voting.AGGREGATIONS}")
    if float(config.temperature) <= 0:
        raise ValueError(f"temperature={config.temperature} must be > 0")


# ----------------------------------------------------------------------------- data


def make_world(config, seed: int) -> dict[str, ch.Chains]:
    """The problems of experiment seed `seed`: from data seed 3s the generator's SFT chains,
    then the RMs' problems (easy); from 3s + 1 the easy validation problems, then the hard
    validation problems; from 3s + 2 the hard test problems (`split_seeds`)."""
    t, d = config.task, config.data
    s = split_seeds(seed)
    train, val, test = (np.random.default_rng([x, DATA_TAG]) for x in s)
    easy = dict(num_steps=tuple(t.easy_steps), modulus=int(t.modulus))
    hard = dict(num_steps=tuple(t.hard_steps), modulus=int(t.modulus))
    return {"sft": ch.sample_chains(int(d.num_sft), rng=train, **easy),
            "rm": ch.sample_chains(int(d.num_rm), rng=train, **easy),
            "val": ch.sample_chains(int(d.num_val), rng=val, **easy),
            "val_hard": ch.sample_chains(int(d.num_val_hard), rng=val, **hard),
            "test": ch.sample_chains(int(d.num_test), rng=test, **hard)}


def generator_model(config):
    g, t = config.generator, config.task
    return make_lm(TransformerConfig(
        vocab_size=arithmetic.VOCAB_SIZE, d_model=int(g.d_model), n_layers=int(g.n_layers),
        n_heads=int(g.n_heads), d_ff=int(g.d_ff), max_len=ch.max_length(t.hard_steps[1]),
        sliding_window=int(g.window)))


def reward_model(config):
    r, t = config.rm, config.task
    return make_reward_model(TransformerConfig(
        vocab_size=arithmetic.VOCAB_SIZE, d_model=int(r.d_model), n_layers=int(r.n_layers),
        n_heads=int(r.n_heads), d_ff=int(r.d_ff), max_len=ch.max_length(t.hard_steps[1]),
        sliding_window=int(r.window)))


def template_rows(chains: ch.Chains, temperature) -> dict[str, np.ndarray]:
    """Rows for `chains.sample_values`: template ids, mask, result positions, k, temperature."""
    ids, mask = ch.encode(chains, np.zeros(chains.ops.shape, np.int32))
    return {"ids": ids, "mask": mask, "rpos": ch.result_positions(chains),
            "k": np.asarray(chains.num_steps, np.int32),
            "temp": np.broadcast_to(np.asarray(temperature, np.float32), (chains.size,))}


def rm_rows(chains: ch.Chains, values, kind: str, rule: str, with_prompt: bool
            ) -> dict[str, np.ndarray]:
    """Labelled rows of one reward model: ids, mask [N, T], read positions, labels and label
    mask [N, K]. PRM: each step's ';' with its gold step label (`rule`); ORM: the EOS (column
    0) with the outcome label (final answer == gold). `with_prompt`: the rows hold the prompt
    (else [BOS] + solution + [EOS], `chains.encode`)."""
    ids, mask = ch.encode(chains, values, with_prompt=with_prompt)
    if kind == "prm":
        labels, lmask = ch.step_labels(chains, values, rule=rule)
        pos = ch.step_end_positions(chains, with_prompt=with_prompt)
    else:
        shape = chains.ops.shape
        pos, labels, lmask = (np.full(shape, -1, np.int32), np.zeros(shape, np.int32),
                              np.zeros(shape, np.int32))
        pos[:, 0], labels[:, 0], lmask[:, 0] = (ch.last_positions(chains,
                                                                  with_prompt=with_prompt),
                                                ch.outcome_labels(chains, values), 1)
    return {"ids": ids, "mask": mask, "pos": pos, "labels": labels, "lmask": lmask}


# ----------------------------------------------------------------------------- models


def train_generator(config, workdir: str, worlds: list[dict]):
    """SFT of the generator on the easy gold chains (result tokens), every seed at once; the
    step is chosen on the easy validation chains' NLL (`select`)."""
    lm, s = generator_model(config), config.sft

    def loss_fn(params, batch):
        nll = ch.result_nll(lm.apply, params, batch)
        return nll, {"nll": nll}

    def eval_fn(params, val):
        return {"val_nll": ch.result_nll(lm.apply, params, val)}

    return fit_small(workdir, loss_fn=loss_fn, init_params=lm.init,
                     tx=optax.adam(float(s.learning_rate)), num_steps=int(s.steps),
                     data=stack_seeds([ch.gold_rows(w["sft"]) for w in worlds]),
                     seeds=list(config.seeds), per_seed_data=True,
                     batch_fn=minibatch_fn(int(s.batch_size)), has_aux=True,
                     steps_per_log=int(s.log_every), eval_fn=eval_fn,
                     eval_data=stack_seeds([ch.gold_rows(w["val"]) for w in worlds]),
                     select=("val_nll", "min"), desc="generator")


def sample(config, params, rows: dict, seeds, stream: int) -> np.ndarray:
    """Results [S, B, K] written by each seed's generator (params [S, ...]) in its template
    rows (leaves [S, B, ...]), one program for every seed; the keys are the seeds' keys folded
    with `stream`."""
    lm, p = generator_model(config), int(config.task.modulus)

    @jax.jit
    @jax.vmap
    def draw(params, r, key):
        return ch.sample_values(lambda ids: lm.apply(params, ids, r["mask"]), r["ids"],
                                r["rpos"], r["k"], key, modulus=p, temperature=r["temp"])[0]

    keys = jnp.stack([jax.random.fold_in(jax.random.key(int(s)), stream) for s in seeds])
    return np.asarray(draw(params, {k: jnp.asarray(v) for k, v in rows.items()}, keys))


def rm_loss(apply_fn):
    """`(params, rows) -> mean BCE at the read positions` (`prm.step_loss_fn`: the PRM's step
    BCE; with one labelled position per row, the ORM's outcome BCE)."""
    return prm.step_loss_fn(apply_fn)


def train_rms(config, workdir: str, data: dict, val: dict, seeds):
    """The PRM and the ORM of every seed in one program (`fit_small`'s vmapped runs: run i < S
    is seed i's PRM, run S + i its ORM, labelled `seed_<ORM_RUN + s>` in metrics.jsonl), each
    run kept at its step with the lowest BCE on its own labels of the easy validation samples
    (`select`). Both RMs of seed s start from the same init and draw the same minibatch rows
    (the seed's key).

    data, val: leaves [2S, ...], the PRMs' rows then the ORMs' (`rm_rows`).
    Returns the SmallFit (leaves [2S, ...])."""
    rm, r = reward_model(config), config.rm
    loss = rm_loss(rm.apply)
    keys = jnp.stack([jax.random.key(int(s)) for s in seeds] * 2)
    return fit_small(workdir, loss_fn=loss, init_params=rm.init,
                     tx=optax.adam(float(r.learning_rate)), num_steps=int(r.steps), data=data,
                     seeds=[int(s) for s in seeds] + [ORM_RUN + int(s) for s in seeds],
                     seed_keys=keys, per_seed_data=True,
                     batch_fn=minibatch_fn(int(r.batch_size)), steps_per_log=int(r.log_every),
                     eval_fn=lambda p, v: {"val_loss": loss(p, v)}, eval_data=val,
                     select=("val_loss", "min"), desc="reward models")


def score(config, params, rows: dict) -> np.ndarray:
    """Reward-model logits [R, B, K] at the rows' read positions, every run (params and rows
    with leaves [R, ...]) in one program."""
    rm = reward_model(config)

    @jax.jit
    @jax.vmap
    def logits(params, ids, mask, pos):
        return rm.apply(params, ids, mask, reward_positions=pos)

    return np.asarray(logits(params, *(jnp.asarray(rows[k]) for k in ("ids", "mask", "pos"))))


# ----------------------------------------------------------------------------- selection


_judge = prm.judge  # chosen answers -> correctness (alignax.algorithms.prm.judge)
vote_accuracies = prm.vote_accuracies  # the PRM's selection rules (alignax.algorithms.prm)


def selection_accuracies(answers, correct, greedy_correct, prm_probs, step_mask, orm_probs, *,
                         num_answers: int, aggregation: str) -> dict[str, jax.Array]:
    """`vote_accuracies` plus the generator alone ("greedy", greedy_correct [P]) and the ORM's
    rules ("orm_vote", "orm_best_of_n"; orm_probs [P, N])."""
    right = _judge(answers, correct)
    out = vote_accuracies(answers, correct, prm_probs, step_mask, num_answers=num_answers,
                          aggregation=aggregation)
    out.update(greedy=greedy_correct.astype(jnp.float32),
               orm_vote=right(voting.weighted_vote(answers, orm_probs,
                                                   num_answers=num_answers)),
               orm_best_of_n=right(voting.best_of_n_answer(answers, orm_probs)))
    return out


# ----------------------------------------------------------------------------- run


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed at once: the generator, its samples, the PRM and ORM, the hard-test
    selection rules (`:real`: one run per seed, `_run_real`)."""
    if real.is_real(config):
        return {int(s): _run_real(config, os.path.join(workdir, f"seed_{s}"), int(s))
                for s in config.seeds}
    seeds = [int(s) for s in config.seeds]
    d, rule, p = config.data, config.rm.label_rule, int(config.task.modulus)
    with_prompt = bool(config.rm.with_prompt)
    temp, n, m = float(config.temperature), int(d.test_samples), int(d.num_test)
    n_rm, n_val = int(d.num_rm) * int(d.rm_samples), int(d.num_val) * int(d.val_samples)
    worlds = [make_world(config, s) for s in seeds]

    # 1. the generator: SFT on easy gold chains, step chosen on easy validation NLL
    gen = train_generator(config, os.path.join(workdir, "generator"), worlds)

    # 2. samples, every seed in one program per shape: easy (the RMs' training samples, the
    # validation samples, one greedy row per validation problem); hard (N samples and one
    # greedy row per hard validation problem, then per test problem)
    easy = [ch.concatenate([w["rm"].repeat(int(d.rm_samples)),
                            w["val"].repeat(int(d.val_samples)), w["val"]]) for w in worlds]
    hard = [ch.concatenate([w["val_hard"], w["test"]]) for w in worlds]
    m_val, m = int(d.num_val_hard), int(d.num_val_hard) + int(d.num_test)
    hard_rows = [c.repeat(n + 1) for c in hard]
    easy_temps = np.r_[np.full(n_rm + n_val, temp), np.zeros(int(d.num_val))]
    hard_temps = np.tile(np.r_[np.full(n, temp), 0.0], m)
    easy_values = sample(config, gen.best_params,
                         stack_seeds([template_rows(c, easy_temps) for c in easy]), seeds, 1)
    hard_values = sample(config, gen.best_params,
                         stack_seeds([template_rows(c, hard_temps) for c in hard_rows]), seeds, 2)

    # 3. PRM and ORM on the easy samples (gold labels): the same architecture, budget, init
    # and batch order (the seed's key), each at its step with the best easy-validation loss;
    # then scored on the easy validation samples and all hard rows in one program
    width = hard[0].max_steps
    scored = [ch.concatenate([c.take(np.arange(n_rm, n_rm + n_val)), h], max_steps=width)
              for c, h in zip(easy, hard_rows)]
    scored_values = [np.concatenate([np.pad(e[n_rm:n_rm + n_val],
                                            ((0, 0), (0, width - e.shape[1]))), h])
                     for e, h in zip(easy_values, hard_values)]
    def rows_of(chains, values, part=slice(None)):
        out = []
        for kind in RMS:  # the PRMs' rows of every seed, then the ORMs'
            for c, v in zip(chains, values):
                out.append({k: x[part] for k, x in rm_rows(c, v, kind, rule,
                                                          with_prompt).items()})
        return stack_seeds(out)

    fit = train_rms(config, os.path.join(workdir, "reward_models"),
                    rows_of(easy, easy_values, slice(0, n_rm)),
                    rows_of(easy, easy_values, slice(n_rm, n_rm + n_val)), seeds)
    both = score(config, fit.best_params, rows_of(scored, scored_values))  # [2S, R, K]
    logits = {"prm": both[:len(seeds)], "orm": both[len(seeds):]}
    chosen = {"prm": (fit.best_step[:len(seeds)], fit.best_score[:len(seeds)]),
              "orm": (fit.best_step[len(seeds):], fit.best_score[len(seeds):])}

    # 4. the selection rules on the hard problems (validation, then test)
    select = jax.jit(jax.vmap(lambda *a: selection_accuracies(
        *a, num_answers=p, aggregation=config.rm.aggregation)))
    args = []
    for i, (c, v) in enumerate(zip(hard_rows, hard_values)):
        final = ch.final_values(c, v).reshape(m, n + 1)
        correct = (ch.outcome_labels(c, v) == 1).reshape(m, n + 1)
        prm = np.asarray(jax.nn.sigmoid(logits["prm"][i, n_val:])).reshape(m, n + 1, -1)
        orm = np.asarray(jax.nn.sigmoid(logits["orm"][i, n_val:, 0])).reshape(m, n + 1)
        valid = c.valid().reshape(m, n + 1, -1)
        args.append((final[:, :n], correct[:, :n], correct[:, n], prm[:, :n], valid[:, :n],
                     orm[:, :n]))
    per_problem = jax.device_get(select(*(jnp.asarray(np.stack([a[j] for a in args]))
                                          for j in range(6))))
    # rows of `scored`: easy validation samples, then the hard rows (N samples + greedy)
    sampled = np.r_[np.ones(n_val, bool), np.tile(np.r_[np.ones(n, bool), False], m)]
    row_split = np.r_[np.zeros(n_val, int), np.repeat(np.r_[np.ones(m_val, int),
                                                            np.full(m - m_val, 2)], n + 1)]
    out = {}
    for i, (seed, w) in enumerate(zip(seeds, worlds)):
        k = np.asarray(hard[i].num_steps)
        res = {}
        for split, part in (("val_hard", np.arange(m) < m_val), ("test", np.arange(m) >= m_val)):
            for name, x in per_problem.items():
                res[f"{split}_{name}_accuracy"] = float(x[i][part].mean())
                for steps in np.unique(k[part]):
                    res[f"{split}_{name}_accuracy_steps_{steps}"] = float(
                        x[i][part & (k == steps)].mean())
        c, v = scored[i], scored_values[i]
        labels, lmask = ch.step_labels(c, v, rule=rule)
        outcome = ch.outcome_labels(c, v)
        prm_logits, orm_logits = logits["prm"][i], logits["orm"][i][:, 0]
        # the PRM as a solution verifier: its aggregated score against the same outcome
        solution = voting.aggregate_step_scores(jax.nn.sigmoid(prm_logits), c.valid(),
                                                config.rm.aggregation)
        for j, split in enumerate(("val", "val_hard", "test")):
            rows = sampled & (row_split == j)
            steps = (lmask.astype(bool) & rows[:, None]).ravel()
            # masked, fixed shapes: one compiled program per shape for every split and seed
            res[f"{split}_prm_step_auroc"] = float(masked_auroc(prm_logits.ravel(),
                                                                labels.ravel(), steps))
            res[f"{split}_orm_auroc"] = float(masked_auroc(orm_logits, outcome, rows))
            res[f"{split}_prm_solution_auroc"] = float(masked_auroc(solution, outcome, rows))
            res[f"{split}_sample_outcome_rate"] = float(outcome[rows].mean())
        ev = easy_values[i]
        res["val_greedy_accuracy"] = float(ch.outcome_labels(w["val"], ev[n_rm + n_val:]).mean())
        res["rm_train_outcome_rate"] = float(ch.outcome_labels(
            easy[i].take(np.arange(n_rm)), ev[:n_rm]).mean())
        res["generator_chosen_step"] = float(gen.best_step[i])
        res["val_generator_nll"] = float(gen.best_score[i])
        for kind in RMS:
            res[f"{kind}_chosen_step"] = float(chosen[kind][0][i])
            res[f"val_{kind}_loss"] = float(chosen[kind][1][i])
        out[seed] = res
    _write_selection(workdir, seeds, gen, chosen)
    return out


def _write_selection(workdir: str, seeds, gen, chosen: dict) -> None:
    """Every seed's validation choices (selection.json): the generator's SFT step (easy
    validation NLL) and each RM's step (its easy validation BCE), with the chosen scores."""
    if jax.process_index() != 0:
        return
    record = {"procedure": "fit_small select: the logged step with the best easy-validation "
                           "metric, ties to the earlier",
              "generator": {"metric": "val_nll (min)",
                            "chosen_step": {str(s): int(x) for s, x in zip(seeds, gen.best_step)},
                            "score": {str(s): float(x) for s, x in zip(seeds, gen.best_score)}}}
    for kind, (steps, scores) in chosen.items():
        record[kind] = {"metric": "val_loss (min)",
                        "chosen_step": {str(s): int(x) for s, x in zip(seeds, steps)},
                        "score": {str(s): float(x) for s, x in zip(seeds, scores)}}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump(record, f, indent=1)


def claims(results) -> list[protocol.Claim]:
    r = "default"
    if "test_greedy_accuracy" not in results[r]["metrics"]:  # :real: a user's data, no claim
        return []
    mean = {m: protocol.seed_mean(results, r, f"test_{m}_accuracy")
            for m in (*RULES, "coverage", "sample", "prm_vote_min", "prm_vote_product",
                      "prm_vote_last")}
    detail = ("hard test chains (k = 5-6), N samples each, mean accuracy: " + ", ".join(
        f"{m} {v:.3f}" for m, v in mean.items()) + "; evaluators trained on easy chains only "
        "(k = 1-3); AUROC easy validation -> hard test: PRM steps " + " -> ".join(
            f"{protocol.seed_mean(results, r, f'{x}_prm_step_auroc'):.3f}"
            for x in ("val", "test")) + ", ORM outcomes " + " -> ".join(
            f"{protocol.seed_mean(results, r, f'{x}_orm_auroc'):.3f}" for x in ("val", "test"))
        + ", PRM solution score vs outcome " + " -> ".join(
            f"{protocol.seed_mean(results, r, f'{x}_prm_solution_auroc'):.3f}"
            for x in ("val", "test")))
    vote_gain = {s: results[r]["per_seed"][s]["test_prm_vote_accuracy"]
                 - results[r]["per_seed"][s]["test_coverage_accuracy"]
                 for s in results[r]["per_seed"]}
    return [
        protocol.compare(
            "on hard chains PRM-weighted voting beats majority voting by >= 5 points", results,
            (r, "test_prm_vote_accuracy"), (r, "test_majority_accuracy"), at_least=0.05,
            detail=detail),
        protocol.compare(
            "on hard chains PRM-weighted voting beats the easy-SFT generator alone (greedy)",
            results, (r, "test_prm_vote_accuracy"), (r, "test_greedy_accuracy"), at_least=0.0,
            detail=detail),
        protocol.compare(
            "the easy-trained ORM gains less than the easy-trained PRM (ORM-weighted voting "
            "below PRM-weighted voting on hard chains)", results,
            (r, "test_prm_vote_accuracy"), (r, "test_orm_vote_accuracy"), at_least=0.0,
            detail=detail),
        protocol.sanity(
            "weighted voting never beats pass@N (it answers with a sampled answer)",
            all(v <= 1e-9 for v in vote_gain.values()),
            {"max_vote_minus_coverage": max(vote_gain.values())}, "by construction"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Hard-test accuracy of every selection rule, per number of steps (mean +- std over
    seeds)."""
    m = results["default"]["metrics"]
    names = (*RULES, "coverage")
    if "test_greedy_accuracy" not in m:  # :real: the runs' own metrics.jsonl
        return []
    head = "test_greedy_accuracy_steps_"
    steps = sorted({int(k[len(head):]) for k in m if k.startswith(head)})
    series = {f"k = {k}": ([m[f"test_{x}_accuracy_steps_{k}"]["mean"] for x in names],
                           [m[f"test_{x}_accuracy_steps_{k}"]["std"] for x in names])
              for k in steps}
    return [plot_grouped_bars(list(names), series, os.path.join(workdir, "plots",
                                                                "hard_accuracy.png"),
                              title="hard chains: answer accuracy by selection rule",
                              ylabel="accuracy", ylim=(0.0, 1.0))]


# ----------------------------------------------------------------------------- :real


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): a PRM on `model.path` from the step-labelled `data.path`
    (`prm.add_prm_fields`)."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    prm.add_prm_fields(c, max_length=1024, max_steps=32, step_separator="\n",
                       answer_field="answer")
    return c


def _validate_real(config) -> None:
    prm.validate(config)


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    """`:real` (module docstring): `prm.train` on the rows' own step labels, its held-out step
    metrics and (vote.num_samples > 0) its weighted voting over the checkpoint's sampled
    solutions, at the step chosen on validation loss."""
    return prm.train(config, workdir, seed, tag=DATA_TAG)
