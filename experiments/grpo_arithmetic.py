"""GRPO with an exact-match reward on verifiable modular-arithmetic chains.

Papers: Shao et al. 2024, "DeepSeekMath" (arXiv 2402.03300), GRPO: group-normalised advantages
of a verifiable reward, the clipped surrogate and a k3 KL to the reference in the loss; DeepSeek-R1
(arXiv 2501.12948) for RL from exact-match rewards.

Setting: chains like "3+4*2-1?" (operations applied left to right mod 10, 1 to 4 steps;
alignax.tasks.arithmetic) with step-by-step solutions "3+4=7;7*2=4;4-1=3;>3". Per seed: (1) SFT
a tiny Llama-style LM on a few thousand solved chains (the reference policy), (2) GRPO from it on
training prompts with reward 1 for a correct final answer, (3) greedy exact-match accuracy of both
policies on held-out chains, overall and per number of steps.

Splits (docs/protocol.md): experiment seed s draws the SFT chains and then the GRPO training
prompts from data seed 3s (one stream, so they differ), the validation chains from 3s + 1 and the
test chains from 3s + 2 (`alignax.tasks.splits.split_seeds`). Model initialisation, batch order
and sampling use s. The problem space is small (300 distinct 1-step chains), so short chains recur
across splits: the splits are disjoint in seeds, not in problems.

Selection on validation, the same procedure for both policies (argmax of greedy validation
accuracy, ties to the earliest; recorded in each seed's `selection.json` and as
`sft_chosen_steps` / `grpo_chosen_iteration`):
- SFT: the number of steps, from `sft_steps_grid` (separate runs from the same seed; a shorter
  run is a prefix of a longer one). This replaces the first version's hand-picked 200 steps,
  which stopped SFT early so that RL had room (that SFT was right on about half of the chains);
  the SFT baseline is now as good as validation can make it.
- GRPO: the iteration, among the evaluated ones (every `eval_every`, and the last), of a run of
  `grpo.iterations` from the chosen SFT policy (iteration 0, the SFT policy itself, is not a
  candidate).
Every evaluated checkpoint is also scored on test; the test accuracy of the chosen one is reported
(`test_*`), the choice never sees it. GRPO's learning rate, KL coefficient, group size and
iterations are those of the first version (chosen then on the claim's own numbers), not re-tuned.

Claim (comparative, 5 seeds, 95% Student t interval over seeds): GRPO's test exact-match accuracy
minus the SFT policy's (each at its validation-chosen checkpoint) is >= 0 (the whole interval).

    alignax run experiments/grpo_arithmetic.py            # full setting, 5 seeds
    alignax run experiments/grpo_arithmetic.py:smoke      # seconds, for the tests

`:real` runs the same GRPO and the same validation choice of the iteration on a Hugging Face
checkpoint and a prompt-only dataset with a reference answer column (TRL's prompt-only format
plus `data.answer_field`, e.g. GSM8K as {"prompt", "answer"}): the reward is 1 when the
completion's final answer (the text after the last `reward.answer_marker`, e.g. "####"; the
whole completion when it is "") equals the row's answer after stripping whitespace
(`alignax.algorithms.real.final_answer`), the verifiable exact-match reward of the toy. The
checkpoint is the starting policy and the reference (the toy's SFT stage and its step grid
exist to teach a random LM the chain format; a pretrained model is the SFT policy here). The
last `data.eval_fraction` of the rows are test, the fraction before them validation; greedy
exact-match accuracy on both is measured before training and every `grpo.eval_every`
iterations. The claim is evaluated on the user's data too (exact match is verifiable): GRPO's
test accuracy at the validation-chosen iteration minus the checkpoint's, over the seeds.

    alignax run experiments/grpo_arithmetic.py:real --workdir runs/grpo_real \
        --config.model.path=/ckpt/Qwen2.5-0.5B-Instruct --config.data.path=/data/gsm8k \
        --config.reward.answer_marker='####' --config.model.dtype=bfloat16 \
        --config.model.logits_chunk=8192 --config.lora.rank=16
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from alignax import protocol
from alignax.algorithms import online, policy_gradient, pretrained, real, sft
from alignax.experiment import Claim
from alignax.tasks import arithmetic
from alignax.tasks.splits import choose_on_validation, split_seeds


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.task = dict(modulus=10, min_steps=1, max_steps=4, seed=0)
    # train (SFT chains, then GRPO prompts) / validation / test chains: split_seeds
    c.data = dict(num_sft=2000 if not smoke else 64, num_prompts=2000 if not smoke else 32,
                  num_val=400 if not smoke else 16, num_test=400 if not smoke else 16)
    # the smoke test is compile-bound: a one-layer model makes every program smaller
    c.model = (dict(d_model=64, n_layers=2, n_heads=4, d_ff=176) if not smoke else
               dict(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    # SFT's number of steps is chosen on validation among these (each overrides train.steps)
    c.sft_steps_grid = [200, 400, 800] if not smoke else [4, 6]
    c.sft = dict(
        optimizer=dict(name="adamw", learning_rate=3e-3, warmup_steps=0, schedule="constant",
                       clip_norm=1.0, kwargs=dict(weight_decay=0.0)),
        train=dict(steps=max(c.sft_steps_grid), batch_size=64 if not smoke else 8,
                   checkpoint_every=10_000, log_every=25, eval_every=0, progress=False),
    )
    c.grpo = policy_gradient.default_config(
        iterations=200 if not smoke else 2, prompts_per_iteration=32 if not smoke else 4,
        num_samples=8 if not smoke else 2, temperature=1.0, advantage="grpo", kl_coef=0.02,
        epochs=1, minibatches=2 if not smoke else 1, checkpoint_every=20, log_every=1,
        # the candidates of the validation choice of the GRPO iteration
        eval_every=40 if not smoke else 1,
        optimizer=dict(name="adamw", learning_rate=3e-4, warmup_steps=0, schedule="constant",
                       clip_norm=1.0, kwargs=dict(weight_decay=0.0)))
    c.grpo.stop_tokens = (arithmetic.EOS_ID,)
    return c


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): GRPO from `model.path` on the prompts of `data.path`."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real.add_real_fields(c, max_length=512, answer_field="answer")  # max_length: the prompt's
    c.reward = dict(answer_marker="")
    c.grpo = policy_gradient.default_config(
        iterations=200, prompts_per_iteration=16, num_samples=8, max_new_tokens=512,
        temperature=1.0, advantage="grpo", kl_coef=0.02, epochs=1, minibatches=1,
        checkpoint_every=20, log_every=1, eval_every=20,
        optimizer=real.optimizer(1e-6))
    c.grpo.stop_tokens = (-1,)  # -1: the tokenizer's eos
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if real.is_real(config):  # :real
        real.require(config, "model.path", "data.path")
        policy_gradient.validate(real.online_config(config, "grpo"))
        return
    grid = list(config.sft_steps_grid)
    if not grid or any(int(s) <= 0 for s in grid) or len(set(grid)) != len(grid):
        raise ValueError(f"sft_steps_grid={grid} must be distinct positive step counts")


def _model(config, task):
    from alignax.algorithms.common import make_model

    max_len = task.max_prompt_len() + task.max_solution_len()
    return make_model({**config.model.to_dict(), "vocab_size": arithmetic.VOCAB_SIZE,
                       "max_len": max_len}, "lm")


def make_accuracy_eval(model, task, splits: dict):
    """`params -> metrics`: greedy exact-match accuracy on each split's problems, overall and
    per number of steps k, named "<split>_accuracy" and "<split>_accuracy_steps_<k>".

    All splits go through one greedy rollout (one compiled program) of their concatenation.
    """
    names = list(splits)
    problems = [p for name in names for p in splits[name]]
    ids, mask = arithmetic.prompt_ids(problems, max_len=task.max_prompt_len())
    return greedy_accuracy_eval(
        model, ids, mask, [len(splits[name]) for name in names], names,
        lambda rollout: arithmetic.exact_match_reward(problems, np.asarray(rollout.responses)),
        max_new_tokens=task.max_solution_len(), stop_tokens=(arithmetic.EOS_ID,),
        steps=np.array([p.num_steps for p in problems]))


def greedy_accuracy_eval(model, ids, mask, sizes, names, correct_fn, *, max_new_tokens: int,
                         stop_tokens, steps=None, pad_id: int = 0):
    """`params -> metrics`: greedy exact-match accuracy of the prompts ids / mask [N, P]
    (the splits `names` of `sizes` rows, concatenated), "<split>_accuracy", and with `steps`
    [N] per number of steps k, "<split>_accuracy_steps_<k>". `correct_fn(rollout) -> [N]`
    scores the greedy rollout; one compiled program for all splits."""
    which = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    greedy = jax.jit(online.make_rollout(model, num_samples=1, temperature=0.0,
                                         max_new_tokens=max_new_tokens,
                                         stop_tokens=tuple(stop_tokens), pad_id=pad_id))

    def evaluate(params):
        rollout = greedy(params, ids, mask.astype(bool), jax.random.key(0))
        correct = np.asarray(correct_fn(rollout))
        out = {}
        for i, name in enumerate(names):
            part = which == i
            out[f"{name}_accuracy"] = float(correct[part].mean())
            for k in [] if steps is None else np.unique(steps[part]):
                out[f"{name}_accuracy_steps_{k}"] = float(correct[part & (steps == k)].mean())
        return out

    return evaluate


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    if real.is_real(config):
        return _run_real(config, workdir)
    seed = int(config.seed)
    data_seeds = split_seeds(seed)
    task = arithmetic.ArithmeticTask(**config.task)
    model = _model(config, task)
    max_len = task.max_prompt_len() + task.max_solution_len()
    train_rng = task.rng(data_seeds.train)  # SFT chains first, then the GRPO prompts
    sft_problems = task.sample_problems(config.data.num_sft, rng=train_rng)
    train_problems = task.sample_problems(config.data.num_prompts, rng=train_rng)
    evaluate = make_accuracy_eval(model, task, {
        "val": task.sample_problems(config.data.num_val, seed=data_seeds.validation),
        "test": task.sample_problems(config.data.num_test, seed=data_seeds.test)})

    # SFT: the number of steps chosen on validation (one run per candidate, same seed)
    sft_source = arithmetic.sft_examples(sft_problems, max_len=max_len)
    candidates = {}
    for steps in config.sft_steps_grid:
        cfg = config.sft.to_dict()
        cfg["train"] = {**cfg["train"], "steps": int(steps)}
        cfg["model"] = {**config.model.to_dict(), "vocab_size": arithmetic.VOCAB_SIZE,
                        "max_len": max_len}
        params = sft.train(cfg, os.path.join(workdir, f"sft_steps_{steps}"),
                           train_source=sft_source, seed=seed)["params"]
        candidates[f"steps={steps}"] = (int(steps), params, evaluate(params))
    sft_name, sft_record = choose_on_validation(candidates, lambda c: c[2]["val_accuracy"])
    sft_steps, ref_params, before = candidates[sft_name]
    _write_selection(workdir, {"sft": sft_record})

    prompt_ids, prompt_mask = arithmetic.prompt_ids(train_problems,
                                                    max_len=task.max_prompt_len())

    def reward_fn(rollout):
        problems = [train_problems[i] for i in np.asarray(rollout.prompt_index)]
        return arithmetic.exact_match_reward(problems, np.asarray(rollout.responses))

    cfg = config.grpo.to_dict()
    cfg["max_new_tokens"] = task.max_solution_len()
    out = policy_gradient.train(cfg, os.path.join(workdir, "grpo"), model=model,
                                init_params=ref_params, ref_params=ref_params,
                                prompt_ids=prompt_ids, prompt_mask=prompt_mask.astype(bool),
                                reward_fn=reward_fn, eval_fn=evaluate, seed=seed)
    result = _grpo_results(workdir, out["history"], before, "sft", {"sft": sft_record})
    result["sft_chosen_steps"] = float(sft_steps)
    return result


def _grpo_results(workdir: str, history, before: dict, start: str, records: dict) -> dict:
    """GRPO's evaluated iteration with the best validation accuracy (selection.json) and the
    metrics: the starting policy's (`before`, named "<split>_<start>_*"), GRPO's at the chosen
    iteration ("<split>_grpo_*") and at the last, and the training curve's ends."""
    rows = {f"iteration={r['step']}": r for r in history if "eval/val_accuracy" in r}
    grpo_name, grpo_record = choose_on_validation(rows, lambda r: r["eval/val_accuracy"])
    chosen, last = rows[grpo_name], history[-1]
    _write_selection(workdir, {**records, "grpo": grpo_record})

    result = {"grpo_chosen_iteration": chosen["step"]}
    result.update({f"{k.split('_', 1)[0]}_{start}_{k.split('_', 1)[1]}": v
                   for k, v in before.items()})
    result.update({f"{k.split('_', 1)[0]}_grpo_{k.split('_', 1)[1]}": v
                   for k, v in ((k[len("eval/"):], v) for k, v in chosen.items()
                                if k.startswith("eval/"))})
    result.update({
        "test_grpo_accuracy_last_iteration": last["eval/test_accuracy"],
        "train_reward_first": float(np.mean([m["reward"] for m in history[:5]])),
        "train_reward_last": float(np.mean([m["reward"] for m in history[-5:]])),
        "kl_ref_seq_last": last.get("kl_ref_seq", float("nan")),
        "response_length_last": last["response_length"],
    })
    return result


def _run_real(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """`:real`: GRPO from `model.path` with the exact-match reward of `data.answer_field`
    (module docstring); the checkpoint is the starting policy ("ref") and the reference."""
    seed = int(config.seed)
    tok = real.tokenizer(config)
    field, marker = config.data.answer_field, config.reward.answer_marker
    data = real.prompt_data(config, tok, int(config.data.max_length), fields=(field,))
    model, params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    stops = real.stop_tokens(tok, config.grpo.stop_tokens)

    def matches(answers):
        def correct(rollout):
            texts = real.decode_responses(tok, rollout.responses, rollout.response_mask)
            rows = np.asarray(rollout.prompt_index)
            return np.array([float(real.final_answer(t, marker) == str(answers[i]).strip())
                             for t, i in zip(texts, rows)], np.float32)
        return correct

    held = [data["validation"], data["test"]]
    evaluate = greedy_accuracy_eval(
        model, np.concatenate([d["prompt_ids"] for d in held]),
        np.concatenate([d["prompt_mask"] for d in held]), [len(d[field]) for d in held],
        ["val", "test"], matches([a for d in held for a in d[field]]),
        max_new_tokens=int(config.grpo.max_new_tokens), stop_tokens=stops, pad_id=tok.pad_id)
    before = evaluate(params)
    cfg = real.online_config(config, "grpo", stops)
    train = data["train"]
    out = policy_gradient.train(cfg, os.path.join(workdir, "grpo"), model=model,
                                init_params=params, ref_params=params,
                                prompt_ids=train["prompt_ids"], prompt_mask=train["prompt_mask"],
                                reward_fn=matches(train[field]), eval_fn=evaluate, seed=seed)
    return _grpo_results(workdir, out["history"], before, "ref", {})


def _write_selection(workdir: str, records: dict) -> None:
    """The validation choices of a seed, with every candidate's score (selection.json)."""
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "selection.json"), "w") as f:
            json.dump(records, f, indent=1)


def claims(results) -> list[Claim]:
    m = {k: v["mean"] for k, v in results["default"]["metrics"].items()}
    if "test_ref_accuracy" in m:  # :real, on the user's held-out problems
        return [protocol.compare(
            "GRPO raises test exact-match accuracy above the checkpoint it starts from",
            results, ("default", "test_grpo_accuracy"), ("default", "test_ref_accuracy"),
            at_least=0.0,
            detail="greedy exact match of the final answer on the held-out test rows of the "
                   "user's dataset; GRPO at the evaluated iteration with the best validation "
                   f"accuracy (mean {m['grpo_chosen_iteration']:.0f}; at the last iteration "
                   f"{m['test_grpo_accuracy_last_iteration']:.3f}); baseline: the checkpoint "
                   "(the reference)")]
    return [protocol.compare(
        "GRPO raises test exact-match accuracy above the SFT policy it starts from", results,
        ("default", "test_grpo_accuracy"), ("default", "test_sft_accuracy"), at_least=0.0,
        detail="greedy accuracy on held-out test chains; both policies at the checkpoint with "
               "the best validation accuracy (SFT: steps from the grid, mean "
               f"{m['sft_chosen_steps']:.0f}; GRPO: evaluated iteration, mean "
               f"{m['grpo_chosen_iteration']:.0f}; at the last iteration GRPO's test accuracy "
               f"is {m['test_grpo_accuracy_last_iteration']:.3f}); 4-step chains: SFT "
               f"{m.get('test_sft_accuracy_steps_4', float('nan')):.3f}, GRPO "
               f"{m.get('test_grpo_accuracy_steps_4', float('nan')):.3f}; baseline: the SFT "
               "policy (the reference)")]


def plots(results, workdir: str) -> list[str]:
    """Training reward per iteration, one curve per seed."""
    from alignax.train.plots import plot_curves
    from alignax.train.writers import read_metrics

    curves = {}
    for variant, res in results.items():
        for s in res["per_seed"]:
            path = os.path.join(workdir, variant, f"seed_{s}", "grpo", "metrics.jsonl")
            if os.path.exists(path):
                rows = read_metrics(path)
                curves[f"seed {s}"] = ([r["step"] for r in rows], [r["reward"] for r in rows])
    if not curves:
        return []
    out = os.path.join(workdir, "plots", "grpo_reward.png")
    plot_curves(curves, out, xlabel="GRPO iteration", ylabel="exact-match reward (train)",
                title="GRPO on arithmetic chains")
    return [out]

