"""Process reward models on a checkpoint: step-labelled rows -> a PRM, its held-out step metrics
and its weighted voting over the checkpoint's own sampled solutions.

A process reward model (PRM; Lightman et al. 2023, "Let's Verify Step by Step", arXiv
2305.20050) scores every step of a solution. Here it is a Hugging Face checkpoint's backbone
with a new score head (`pretrained.recipe_model(..., "reward")`) read at each step's last token
(`reward_positions`), trained with the step BCE (`alignax.losses.reward.prm_step_loss`)

    L = (1 / |S|) sum_{j in S} BCE(sigmoid(s_j), y_j)      (S: the labelled steps of a row)

through the library's trainer (`common.fit_recipe`: mesh, LoRA with the head in full, resume,
logging). The rows are TRL's stepwise-supervision format: `prompt` (text or chat messages),
`completions` (the steps, a list of strings), `labels` (one bool per step); a row is the prompt
(tokenised as for sampling: the chat template with the generation prompt) followed by each
step + `data.step_separator`, the PRM reading step j at its last token, as TRL's PRMTrainer
does (`step_rows`). Where the labels come from is the caller's: the rows' own (easy-to-hard),
or an annotator applied to each row (`train(transform=...)`, e.g. SPARE's reference-guided
labels).

Evaluation (`make_eval`), every `prm.train.eval_every` steps on the held-out rows
(`real.held_out_split`: the last `data.eval_fraction` of the rows are test, as many before
them validation): `val_/test_loss` (the step BCE on the rows' labels) and `step_accuracy`
(sign of the logit against the label, over labelled steps); with `vote.num_samples` N > 0 the
checkpoint samples N solutions per held-out prompt before training (`sampled_solutions`: split
into steps at the separator; the answer is the text after the last `vote.answer_marker`, the
whole completion when it is "") and the PRM's selection rules are scored on them
(`vote_accuracies`: majority, PRM-weighted voting a* = argmax_a sum_{i: ans_i = a} score_i with
the solution score = `vote.aggregation` of the step probabilities, best-of-N, coverage =
pass@N; exact match with the row's `data.answer_field`). The step with the lowest validation
loss is chosen (`selection.json`) and its metrics reported (`train`).

Used by experiments/easy_to_hard.py:real and experiments/spare.py:real (`add_prm_fields` adds
the shared config keys, `validate` checks them).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from alignax import protocol
from alignax.algorithms import common, online, pretrained, real
from alignax.data.errors import DataError
from alignax.eval import voting
from alignax.losses.reward import prm_step_loss


def add_prm_fields(c, *, max_length: int = 1024, max_steps: int = 32,
                   step_separator: str = "\n", answer_field: str = "answer") -> None:
    """Adds the `:real` keys of a PRM run to ConfigDict `c` (unlocked): `real.add_real_fields`
    plus data.{step_separator, max_steps, answer_field}, `prm` (optimizer, train: the offline
    recipe's schedule) and `vote` (the sampled solutions and their selection rules).

    data.max_length: T of a PRM row (prompt + steps); data.max_steps: S labelled steps at most;
    data.step_separator: appended to each step (TRL's PRMConfig.step_separator).
    """
    real.add_real_fields(c, max_length=max_length, step_separator=step_separator,
                         max_steps=max_steps, answer_field=answer_field)
    c.prm = dict(optimizer=real.optimizer(1e-5),
                 train=dict(steps=200, batch_size=16, grad_accum_steps=1, checkpoint_every=50,
                            eval_every=50, log_every=1, progress=True))
    # vote.num_samples N > 0: N solutions per held-out prompt from the checkpoint (the
    # generator), split into steps at the separator, weighted-voted with the PRM (needs the
    # rows' `data.answer_field`); 0: PRM training and held-out step metrics only
    c.vote = dict(num_samples=8, max_new_tokens=256, temperature=1.0, max_prompt_length=512,
                  answer_marker="", aggregation="min", stop_tokens=(-1,))


def recipe_config(config) -> dict:
    """The PRM's offline recipe config: `prm.*` with the run's model, mesh and LoRA (the new
    score head trains in full beside the adapters)."""
    levers = real.levers(config)
    if levers["lora"]:
        levers["lora"] = {**levers["lora"], "full": "score/"}
    return {**config.prm.to_dict(), **levers}


def validate(config) -> None:
    """One-line ValueErrors for the keys of `add_prm_fields` (and the recipe's)."""
    real.require(config, "model.path", "data.path")
    d, v = config.data, config.vote
    if not str(d.step_separator):
        raise ValueError("data.step_separator must be a non-empty string")
    if int(d.max_steps) < 1:
        raise ValueError(f"data.max_steps={d.max_steps} must be >= 1")
    if int(v.num_samples) < 0 or float(v.temperature) < 0:
        raise ValueError(f"vote.num_samples={v.num_samples} and vote.temperature="
                         f"{v.temperature} must be >= 0")
    if v.aggregation not in voting.AGGREGATIONS:
        raise ValueError(f"vote.aggregation={v.aggregation!r} must be one of "
                         f"{voting.AGGREGATIONS}")
    common.validate_offline(common.OFFLINE_DEFAULTS, recipe_config(config), "prm config")


# ----------------------------------------------------------------------------- rows


def step_rows(record, tokenizer, *, max_length: int, max_steps: int, separator: str
              ) -> dict[str, np.ndarray]:
    """A stepwise-supervision row (TRL's format: `prompt`, `completions` = the steps, `labels`
    = one bool per step) -> a PRM row.

    The prompt is tokenised as for sampling (`tokenize_prompt`: the chat template with the
    generation prompt for conversational rows, else bos + prompt), then each step + `separator`
    is appended; the PRM reads step j at its last token, as TRL's PRMTrainer does. Steps beyond
    `max_steps` or past `max_length` tokens are dropped (unlabelled).

    Returns:
      ids [T] int32 (right-padded with the pad id), mask [T] bool, pos [S] int32 (the read
      positions, -1 where no step), labels [S] int32, lmask [S] int32 (the labelled steps).
    """
    from alignax.data.tokenize import special_ids, tokenize_prompt

    steps, labels = record.extras.get("completions"), record.extras.get("labels")
    if not isinstance(steps, (list, tuple)) or not all(isinstance(x, str) for x in steps):
        raise DataError("completions: expected a list of step strings", field="completions")
    if (not isinstance(labels, (list, tuple)) or len(labels) != len(steps)
            or not all(isinstance(x, (bool, int, np.integer)) and x in (0, 1) for x in labels)):
        raise DataError(f"labels: expected one 0/1 label per step ({len(steps)})",
                        field="labels")
    prompt = tokenize_prompt(record, tokenizer, max_length=max_length)
    ids = [int(t) for t in prompt["prompt_ids"][prompt["prompt_mask"] > 0]]
    pos = np.full(max_steps, -1, np.int32)
    out_labels = np.zeros(max_steps, np.int32)
    for j, (step, label) in enumerate(zip(steps[:max_steps], labels)):
        toks = tokenizer.encode(step + separator)
        if not toks or len(ids) + len(toks) > max_length:
            break
        ids += toks
        pos[j], out_labels[j] = len(ids) - 1, int(label)
    out = np.full(max_length, special_ids(tokenizer)[2], np.int32)
    out[:len(ids)] = ids
    return {"ids": out, "mask": np.arange(max_length) < len(ids), "pos": pos,
            "labels": out_labels, "lmask": (pos >= 0).astype(np.int32)}


def with_steps(record, steps, labels=None):
    """`record` with its `completions` replaced by `steps` and its `labels` by `labels`
    (default all 0: unlabelled samples, e.g. the sampled solutions scored by `make_eval`)."""
    labels = [0] * len(steps) if labels is None else [int(x) for x in labels]
    return dataclasses.replace(record, extras={**record.extras, "completions": list(steps),
                                               "labels": labels})


def step_loss_fn(apply_fn) -> Callable:
    """`(params, rows) -> mean BCE at the read positions` (`prm_step_loss`: the PRM's step
    BCE; with one labelled position per row, the ORM's outcome BCE). rows: ids, mask [B, T],
    pos, labels, lmask [B, S]."""

    def loss_fn(params, rows):
        logits = apply_fn(params, rows["ids"], rows["mask"], reward_positions=rows["pos"])
        return prm_step_loss(logits, rows["labels"], rows["lmask"]).mean()

    return loss_fn


# ----------------------------------------------------------------------------- selection


def judge(answers, correct) -> Callable[[jax.Array], jax.Array]:
    """`chosen [P] -> [P] float32`: 1 where the chosen answer is the gold one (read off
    `correct` [P, N]: a correct sample's answer; no correct sample: nothing is right).
    answers [P, N] int."""
    gold = jnp.argmax(correct.astype(jnp.int32), axis=-1)
    gold_answer = jnp.take_along_axis(answers, gold[:, None], -1)[:, 0]
    has_gold = correct.any(-1)
    return lambda chosen: (has_gold & (chosen == gold_answer)).astype(jnp.float32)


def vote_accuracies(answers, correct, step_probs, step_mask, *, num_answers: int,
                    aggregation: str) -> dict[str, jax.Array]:
    """Per-problem correctness [P] of the PRM's selection rules and their baselines.

    answers [P, N] int (in [0, A), -1: none), correct [P, N] bool, step_probs and step_mask
    [P, N, K] (the PRM's sigmoid step scores, the real steps). Rules: "majority"; "prm_vote"
    (weighted voting with the `aggregation` of the step scores) and "prm_best_of_n";
    "prm_vote_<m>" for m in min / product / last; "sample" (mean per-sample accuracy) and
    "coverage" (pass@N, the ceiling of every rule)."""
    right = judge(answers, correct)
    prm = {m: voting.aggregate_step_scores(step_probs, step_mask, m)
           for m in ("min", "product", "last")}
    valid = answers >= 0
    out = {"sample": correct.astype(jnp.float32).mean(-1),
           "coverage": voting.coverage(correct),
           "majority": right(voting.majority_vote(answers, valid, num_answers=num_answers)),
           "prm_vote": right(voting.weighted_vote(answers, prm[aggregation], valid,
                                                  num_answers=num_answers)),
           "prm_best_of_n": right(voting.best_of_n_answer(answers, prm[aggregation], valid))}
    for m, x in prm.items():
        out[f"prm_vote_{m}"] = right(voting.weighted_vote(answers, x, valid,
                                                          num_answers=num_answers))
    return out


# ----------------------------------------------------------------------------- the run


def sampled_solutions(config, tok, records, answers, seed: int, tag: int
                      ) -> dict[str, np.ndarray]:
    """N = `vote.num_samples` solutions per held-out prompt from the checkpoint (the
    generator), as PRM rows ids, mask [P, N, T], pos, lmask [P, N, S], with each sample's
    answer id answer_ids [P, N] (its first occurrence among the problem's N answers, -1: no
    answer) and correct [P, N] (its `real.final_answer` equals the row's answer, stripped).
    The rollout key is `fold_in(key(seed), tag)`."""
    from alignax.data.tokenize import tokenize_prompt

    v, d = config.vote, config.data
    n = int(v.num_samples)
    prompts = real.stack([tokenize_prompt(r, tok, max_length=int(v.max_prompt_length))
                          for r in records])
    lm, params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    rollout = jax.jit(online.make_rollout(
        lm, num_samples=n, max_new_tokens=int(v.max_new_tokens),
        temperature=float(v.temperature), stop_tokens=real.stop_tokens(tok, v.stop_tokens),
        pad_id=tok.pad_id))
    out = rollout(params, prompts["prompt_ids"], prompts["prompt_mask"].astype(bool),
                  jax.random.fold_in(jax.random.key(seed), tag))
    texts = real.decode_responses(tok, out.responses, out.response_mask)
    index = np.asarray(out.prompt_index)
    rows, answer_ids, correct = [], [], []
    for i, record in enumerate(records):
        mine = [t for t, j in zip(texts, index) if j == i]
        finals = [real.final_answer(t, v.answer_marker) for t in mine]
        seen = {}
        answer_ids.append([-1 if a is None else seen.setdefault(a, len(seen)) for a in finals])
        correct.append([a is not None and a == str(answers[i]).strip() for a in finals])
        for t in mine:
            steps = [x for x in t.split(d.step_separator) if x.strip()]
            rows.append(step_rows(with_steps(record, steps), tok,
                                  max_length=int(d.max_length), max_steps=int(d.max_steps),
                                  separator=d.step_separator))
    arrays = real.stack(rows)
    return {**{k: arrays[k].reshape(len(records), n, *arrays[k].shape[1:])
               for k in ("ids", "mask", "pos", "lmask")},
            "answer_ids": np.array(answer_ids, np.int32), "correct": np.array(correct, bool)}


def make_eval(apply_fn, held: dict, n_val: int, samples: dict | None, chunk: int,
              aggregation: str) -> Callable:
    """Jitted `params -> metrics` of the PRM on the held-out labelled rows `held` (ids, mask
    [H, T], pos, labels, lmask [H, S]; the first `n_val` rows validation, the rest test:
    "val_" / "test_" loss and step_accuracy) and, with `samples` (`sampled_solutions`, the
    same H prompts), its selection rules on the sampled solutions ("<split>_<rule>_accuracy",
    `vote_accuracies`). Forward passes in row chunks of `chunk` (`real.map_in_chunks`)."""
    rows = {k: np.asarray(held[k]) for k in ("ids", "mask", "pos", "labels", "lmask")}
    if samples is not None:
        p, n = samples["answer_ids"].shape
        flat = {k: samples[k].reshape(p * n, *samples[k].shape[2:])
                for k in ("ids", "mask", "pos")}

    def logits_of(params, r):
        return real.map_in_chunks(lambda x: apply_fn(params, x["ids"], x["mask"],
                                                     reward_positions=x["pos"]), r, chunk)

    @jax.jit
    def evaluate(params):
        logits = logits_of(params, {k: rows[k] for k in ("ids", "mask", "pos")})
        loss = prm_step_loss(logits, rows["labels"], rows["lmask"])
        m = rows["lmask"].astype(jnp.float32)
        right = ((logits > 0) == (rows["labels"] > 0)).astype(jnp.float32) * m
        labelled = m.sum(-1) > 0
        out = {}
        for name, part in (("val", slice(0, n_val)), ("test", slice(n_val, None))):
            lab = labelled[part].astype(jnp.float32)
            out[f"{name}_loss"] = (loss[part] * lab).sum() / jnp.maximum(lab.sum(), 1.0)
            out[f"{name}_step_accuracy"] = right[part].sum() / jnp.maximum(m[part].sum(), 1.0)
        if samples is None:
            return out
        probs = jax.nn.sigmoid(logits_of(params, flat)).reshape(p, n, -1)
        acc = vote_accuracies(jnp.asarray(samples["answer_ids"]),
                              jnp.asarray(samples["correct"]), probs,
                              jnp.asarray(samples["lmask"]) > 0, num_answers=n,
                              aggregation=aggregation)
        for name, part in (("val", slice(0, n_val)), ("test", slice(n_val, None))):
            for rule, x in acc.items():
                out[f"{name}_{rule}_accuracy"] = x[part].mean()
        return out

    return evaluate


def train(config, workdir: str, seed: int, *, tag: int, transform: Callable | None = None,
          data=None) -> dict[str, float]:
    """A PRM on the training rows of `data.path` (config from `add_prm_fields`), its held-out
    step metrics and (vote.num_samples > 0) its weighted voting over the checkpoint's sampled
    solutions, at the step chosen on validation loss (`selection.json` in `workdir`).

    Args:
      config: the `:real` config.
      workdir: the run folder (the PRM's run in workdir/prm).
      seed: init, batch order and sampling.
      tag: folded into the sampling key (`sampled_solutions`).
      transform: `record -> PRM row` (default `step_rows` with the data keys: the rows' own
        labels); e.g. an annotator that sets each record's labels, then `step_rows`.
      data: the dataset (default `real.dataset(config)`).

    Returns:
      {metric: value}: the chosen step's "val_/test_" metrics (`make_eval`), prm_chosen_step
      and test_loss_last_step.
    """
    from alignax.data.hf_datasets import HFSource, PromptRecord

    tok = real.tokenizer(config)
    data = real.dataset(config) if data is None else data
    d = config.data
    rows_of = functools.partial(step_rows, tokenizer=tok, max_length=int(d.max_length),
                                max_steps=int(d.max_steps), separator=d.step_separator)
    transform = rows_of if transform is None else transform
    train_rows, val, test = real.held_out_split(len(data), d.eval_fraction, d.max_eval_rows)
    held_rows = np.concatenate([val, test])
    held_source = HFSource(data, transform, indices=held_rows, kinds=(PromptRecord,))
    held = real.stack([held_source[i] for i in range(len(held_rows))])
    samples = None
    if int(config.vote.num_samples) > 0:
        records = [held_source.record(i) for i in range(len(held_rows))]
        field = d.answer_field
        for i, r in zip(held_rows, records):
            if r.extras.get(field) is None:
                raise DataError(f"{held_source.name}:{int(i)}: field '{field}': missing (vote."
                                f"num_samples > 0 reads it)", path=held_source.name,
                                line=int(i), field=field)
        samples = sampled_solutions(config, tok, records, [r.extras[field] for r in records],
                                    seed, tag)
    cfg = common.validate_offline(common.OFFLINE_DEFAULTS, recipe_config(config), "prm config")
    model, init = pretrained.recipe_model(cfg, "reward", seed=seed)
    loss = step_loss_fn(model.apply)

    def loss_fn(params, batch, rng):
        del rng
        return loss(params, batch), {"labelled_steps": batch["lmask"].sum().astype(jnp.float32)}

    fit = common.fit_recipe(
        cfg, os.path.join(workdir, "prm"), model=model, init_params=init, loss_fn=loss_fn,
        train_source=HFSource(data, transform, indices=train_rows, kinds=(PromptRecord,)),
        seed=seed, desc="process reward model",
        eval_fn=make_eval(model.apply, held, len(val), samples, int(d.eval_batch_size),
                          config.vote.aggregation))
    rows = {f"step={r['step']}": r for r in fit["fit"].history if "eval/val_loss" in r}
    name, record = protocol.choose_on_validation(rows, lambda r: r["eval/val_loss"],
                                                 maximize=False)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "selection.json"), "w") as f:
            json.dump({**record, "metric": "eval/val_loss"}, f, indent=1)
    chosen, last = rows[name], list(rows.values())[-1]
    out = {k[len("eval/"):]: float(v) for k, v in chosen.items() if k.startswith("eval/")}
    out["prm_chosen_step"] = float(chosen["step"])
    out["test_loss_last_step"] = float(last["eval/test_loss"])
    return out
