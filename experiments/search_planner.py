"""AI-SearchPlanner: utility-cost Pareto RL for a planner that decides when to call search.

Paper: Mei, Yang, Chen 2025, "AI-SearchPlanner: Modular Agentic Search via Pareto-Optimal
Multi-Objective Reinforcement Learning" (arXiv 2508.20368).

The mechanism: a small trainable planner issues search calls and decides when to stop; a
frozen generator answers from what was retrieved; the planner is trained with
R = R_utility + alpha * R_cost, and sweeping alpha traces the front of answer utility against
search calls. The paper's planner is an LLM trained with PPO on real QA sets; this is the
notes' toy of that mechanism (notes-a.md, paper 5 (d)).

Setting (`alignax.tasks.search`): a key-value knowledge base kb[e, r] over E = 500 entities
and R = 7 keys (relations), drawn per experiment seed (the world). A question names an entity
and a chain of k in {1, 2, 3} keys (uniform k, uniform keys); it needs the k facts along the
chain. The planner emits T_max = 4 action tokens from {query(r) for the 7 keys, stop};
everything from the first stop on is ignored, and the number of calls before it is the
trajectory's turns T. query(r) asks for key r of the latest bridge entity: the chain's next
key retrieves the next needed fact, any other key a useless one. The frozen generator answers
correctly iff every needed fact was retrieved (`answer_correct`; it abstains otherwise).

Planner: a sequence-table policy (`alignax.models.sequence_table`, V = 8 tokens, L = 4, all
4096 action sequences enumerated) log-linear in the question's features (a constant and, per
hop position, a one-hot of the key asked there or "no such hop"; the entity is not a feature).
Two stages, both in `fit_small` with every seed vmapped:
  1. "pretraining", the same for every variant (`pretrain_steps` Adam updates): maximum
     likelihood on a generic searcher's demonstrations (`demonstration_plans`: the chain's
     keys, then a uniform number of extra random queries, then stop) on the training
     questions, a planner that can search but has no notion of what a call costs, as the
     paper's planner starts from a pretrained LLM;
  2. RL with the variant's reward (`steps` updates): GRPO-style group policy gradient
     (`alignax.algorithms.small_pg.group_pg_loss`: 32 training questions per update, 8
     sampled trajectories each, leave-one-out (RLOO) advantages, no KL; the paper uses PPO,
     whose clip is inactive with one update per fresh batch).
Why this design (single-seed pilots on seed 0, which the full run does not use; its seeds are
1-5): (a) GRPO's per-group std normalisation makes the cost's scale irrelevant in a group with
no correct answer (every reward is -alpha T, normalised to unit spread), and from a uniform
start the planner at alpha = .05 learned to stop before it had found a 2- or 3-hop chain
(validation accuracy .34 after 700 updates): the unnormalised leave-one-out advantage keeps the
price alpha per call, as PPO's value baseline does; (b) even so, from the uniform policy
alpha = .1 makes the planner lazy (validation accuracy .31, .48 calls): variant `a10_scratch`
(no stage 1) reports this in the full run, not claimed; (c) stage 1 as RL at alpha = 0 drove
the stop probabilities to ~0 and alpha = .1 then barely taught stopping (2.94 calls for 2.0
hops after 1000 updates): the demonstrations keep stopping explorable. The learning rate
(Adam .05) is fixed for every variant (.2 was unstable in pilot (c)).

Variants: alpha in {0, .05, .1, .2} (`a00`, `a05`, `a10`, `a20`), the utility-cost sweep.

Splits (`split_seeds`): the knowledge base is the world of experiment seed s; the 3000
training questions (also those of the demonstrations), 600 validation and 1500 test questions
are drawn from the data seeds 3s, 3s + 1 and 3s + 2, each split excluding the earlier
splits' questions (`check_disjoint` on (entity, chain) ids). The key chains recur across
splits (there are 7 + 49 + 343 of them); the entities make the questions distinct; a 3-hop
chain absent from training is a generalisation the prefix-tree policy can get wrong.

Selection (every variant the same): stage 1 is fixed; in stage 2 early stopping on
validation, `fit_small(select=("val_reward", "max"))` every `eval_every` updates, where
val_reward is the exact expected reward of the variant's own objective (its alpha) on the
validation questions. Test metrics are
those of the selected params; all expectations are exact sums over the 4096 action sequences
(no sampling noise): `test_accuracy` (the generator's accuracy), `test_turns` (mean calls),
`test_hops` (mean hops needed), by hop count, and the chosen step.

Claims (seeds 1-5, paired 95% t intervals; the notes' pass criterion restated):
  - mean turns strictly decrease along the sweep: test_turns(alpha') - test_turns(alpha) <= 0
    for each adjacent pair (three comparative claims; PASS needs the whole interval <= 0);
  - accuracy is non-increasing along the sweep: test_accuracy(alpha') - test_accuracy(alpha)
    <= +0.01 for each adjacent pair (three comparative claims). An interval cannot certify an
    exact "<= 0" when two accuracies are equal, so the claim is "does not rise by more than one
    point", a margin fixed before any run; the plain "<= 0" interval is in each detail;
  - at alpha = .1 mean turns <= hops + 0.3 (threshold on test_turns - test_hops per seed);
  - at alpha = .1 accuracy >= 90% of the alpha = 0 run (threshold on the per-seed ratio).
Sanity (by construction, not counted): the oracle plan (the chain, then stop) is always
answered with T = k, and the naive single-search baseline is right exactly on the 1-hop
questions. The per-seed utility-cost front over alpha (points on it, hypervolume against
(accuracy 0, T_max calls), `utility_cost_front`) is reported in the details.

    alignax run experiments/search_planner.py            # full setting, 5 seeds
    alignax run experiments/search_planner.py:smoke      # seconds, for the tests

`:real` runs the mechanism on a user's checkpoint: the planner is the checkpoint at
`model.path`, trained with GRPO (`policy_gradient.train`) through multi-turn rollouts with a
retrieval environment (`alignax.algorithms.tool_rollout`: up to `tool.max_tool_calls` calls
per trajectory, re-prefilled turns of at most `tool.turn_tokens` tokens, observations cut to
`tool.max_observation_tokens`; the observation tokens are attended to but masked out of the
loss and the KL).
  - Questions: a prompt-only dataset at `data.path` with an `answer` column (as
    grpo_arithmetic's `:real`), split by `real.held_out_split` (the last `data.eval_fraction`
    rows test, as many before them validation). The prompts should tell the planner the tool
    syntax below (e.g. Search-R1's instruction); nothing is added to them.
  - Tool syntax: the planner writes `<search>query</search>` (`tool.call_open`,
    `tool.call_close`; a turn is cut after the first `tool.call_close`); the environment
    answers `tool.result_open`, the top `corpus.top_k` documents and `tool.result_close`,
    one per line (`<result>`, `</result>`), appended as plain text to the planner's turn. A turn
    without a complete call (the last `call_open` followed by a `call_close`) ends the
    trajectory: that turn is the answer.
  - Environment: BM25 (k1 = 1.2, b = 0.75) over the lowercased word tokens (regex \\w+) of the
    `corpus.text_field` column of the dataset at `corpus.path` (rows {"text": ...}), built in
    memory once (`Bm25`, a lexical scorer for corpora that fit in host memory).
  - Answer: the planner's own text after its last observation (`tool_rollout.final_turn_mask`),
    read with `real.final_answer(text, reward.answer_marker)`. The paper's frozen generator
    (which answers from the retrieved documents) is dropped: the planner answers itself, as in
    Search-R1; the utility is therefore the planner's, not a separate generator's.
  - Reward = utility - alpha * calls: 1 when the answer equals the row's `answer` (both
    lowercased, whitespace collapsed), minus `reward.alpha` per tool call
    (`tool_rollout.tool_calls`), the toy's R_utility + alpha R_cost with R_cost = -T.
  - Evaluation: greedy tool rollouts of the validation and test questions before training and
    every `grpo.eval_every` iterations: accuracy, mean calls and reward per split; the
    iteration is chosen on validation reward (`real.choose_iteration`, selection.json); the
    test metrics of the chosen iteration are reported, with the checkpoint's (`test_ref_*`).
  - `grpo.max_new_tokens` is set to the tool budget's response length
    R = (K + 1) turn_tokens + K max_observation_tokens (`tool_response_length`).
The toy claims are not evaluated (a user's data has no sweep over alpha): claims == [].

    alignax run experiments/search_planner.py:real --workdir runs/search_real \
        --config.model.path=/ckpt/Qwen2.5-3B-Instruct --config.data.path=/data/nq_prompts \
        --config.corpus.path=/data/wiki_passages --config.reward.alpha=0.1 \
        --config.model.dtype=bfloat16 --config.model.logits_chunk=8192 --config.lora.rank=16
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import policy_gradient, pretrained, real, tool_rollout
from alignax.algorithms.small_pg import group_pg_loss, rl_batch
from alignax.experiment import is_smoke
from alignax.models import sequence_table as st
from alignax.protocol import seed_mean
from alignax.rewards.cost import plan_rationality, utility_cost_front, utility_cost_reward
from alignax.tasks import search
from alignax.tasks.splits import check_disjoint, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, stack_seeds
from alignax.train.writers import read_metrics

ALPHAS = {"a00": 0.0, "a05": 0.05, "a10": 0.1, "a20": 0.2}
SWEEP = tuple(ALPHAS)
QUESTION_KEYS = ("features", "chain", "hops", "naive_correct")
WEIGHT_KEYS = ("alpha", "process_weight")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg == "real":
        return _real_config()
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [1, 2, 3, 4, 5]  # seed 0 was the pilots' (module doc)
    c.alpha = 0.1
    c.process_weight = 0.0
    c.cost = "turns"  # R_cost = -T ("turns") or 1 - T / T_max ("fraction")
    # the smoke run trains two points of the sweep (seconds in the test suite)
    c.variants = {name: {"alpha": a} for name, a in ALPHAS.items()
                  if not smoke or name in ("a00", "a10")}
    if not smoke:  # reported, not claimed
        c.variants["a10_process"] = {"alpha": 0.1, "process_weight": 0.5}
        c.variants["a10_scratch"] = {"alpha": 0.1, "pretrain_steps": 0}
    c.task = dict(num_entities=500, num_keys=7, max_hops=3, max_turns=4)
    c.data = dict(num_train=3000 if not smoke else 200, num_val=600 if not smoke else 100,
                  num_test=1500 if not smoke else 100)
    # stage 1, shared by the variants: maximum likelihood on a generic searcher's demonstrations
    c.pretrain_steps = 300 if not smoke else 10
    c.pretrain_batch = 128 if not smoke else 16
    c.train = dict(steps=1000 if not smoke else 20, prompts=32 if not smoke else 8,
                   group_size=8 if not smoke else 4, learning_rate=0.05,
                   eval_every=50 if not smoke else 10, advantage="rloo")
    return c


def _real_config() -> ml_collections.ConfigDict:
    """`:real` (module docstring): GRPO through a retrieval environment from `model.path`."""
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    real.add_real_fields(c, max_length=256, answer_field="answer")  # max_length: the prompt's
    c.corpus = dict(path="", split="train", text_field="text", top_k=3)
    c.tool = dict(max_tool_calls=3, turn_tokens=128, max_observation_tokens=256,
                  call_open="<search>", call_close="</search>", result_open="<result>",
                  result_close="</result>")
    c.reward = dict(alpha=0.1, answer_marker="")
    c.grpo = policy_gradient.default_config(
        iterations=200, prompts_per_iteration=16, num_samples=8,
        max_new_tokens=_response_length(c.tool),  # set from tool.* by the run
        temperature=1.0, advantage="grpo", kl_coef=0.02, epochs=1, minibatches=1,
        checkpoint_every=20, log_every=1, eval_every=20, optimizer=real.optimizer(1e-6))
    c.grpo.stop_tokens = (-1,)  # -1: the tokenizer's eos
    return c


def _response_length(tool) -> int:
    return tool_rollout.tool_response_length(
        max_tool_calls=int(tool.max_tool_calls), turn_tokens=int(tool.turn_tokens),
        max_observation_tokens=int(tool.max_observation_tokens))


def _real_grpo_cfg(config, stops=None) -> dict:
    return real.online_config(config, "grpo", stops, max_new_tokens=_response_length(config.tool))


def validate(config: ml_collections.ConfigDict) -> None:
    """The `:real` config's keys (the toy config has nothing to check here)."""
    if not real.is_real(config):
        return
    real.require(config, "model.path", "data.path", "corpus.path",
                 what={"corpus.path": "an HF dataset folder or file of {\"text\": ...} rows"})
    tool = config.tool
    for key, low in (("max_tool_calls", 1), ("turn_tokens", 1), ("max_observation_tokens", 1)):
        value = tool[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"tool.{key}={value!r} must be an int >= {low}")
    for key in ("call_open", "call_close", "result_open", "result_close"):
        if not isinstance(tool[key], str) or (key.startswith("call") and not tool[key].strip()):
            raise ValueError(f"tool.{key}={tool[key]!r} must be a non-empty string")
    top_k = config.corpus.top_k
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"corpus.top_k={top_k!r} must be an int >= 1")
    if float(config.reward.alpha) < 0:
        raise ValueError(f"reward.alpha={config.reward.alpha} must be >= 0")
    policy_gradient.validate(_real_grpo_cfg(config))


class Bm25:
    """Okapi BM25 over a fixed corpus (Robertson and Zaragoza 2009):

        score(q, d) = sum_{t in q} idf(t) tf(t, d) (k1 + 1)
                      / (tf(t, d) + k1 (1 - b + b |d| / avgdl)),
        idf(t) = log(1 + (N - df(t) + 1/2) / (df(t) + 1/2)),

    over lowercased word tokens (regex \\w+; a query term counted once per occurrence). An
    inverted index in host memory (`search(query, k)` touches only the postings of the query's
    terms)."""

    def __init__(self, texts, *, k1: float = 1.2, b: float = 0.75):
        import collections
        import re

        self._words = re.compile(r"\w+")
        postings = collections.defaultdict(lambda: ([], []))
        lengths = []
        for i, text in enumerate(texts):
            counts = collections.Counter(self.tokens(text))
            lengths.append(sum(counts.values()))
            for term, tf in counts.items():
                postings[term][0].append(i)
                postings[term][1].append(tf)
        self.num_docs = len(lengths)
        if self.num_docs == 0:
            raise ValueError("corpus.path: the corpus has no rows")
        lengths = np.asarray(lengths, np.float64)
        norm = k1 * (1.0 - b + b * lengths / max(lengths.mean(), 1e-9))
        self._index = {}
        for term, (docs, tfs) in postings.items():
            docs, tfs = np.asarray(docs), np.asarray(tfs, np.float64)
            idf = np.log1p((self.num_docs - len(docs) + 0.5) / (len(docs) + 0.5))
            self._index[term] = (docs, idf * tfs * (k1 + 1.0) / (tfs + norm[docs]))

    def tokens(self, text: str) -> list[str]:
        return self._words.findall(str(text).lower())

    def search(self, query: str, k: int) -> list[int]:
        """Rows of the (at most) `k` best-scoring documents with a positive score, best first
        (ties to the lower row)."""
        scores = np.zeros(self.num_docs)
        for term in self.tokens(query):
            if term in self._index:
                docs, weights = self._index[term]
                scores[docs] += weights
        hit = np.flatnonzero(scores > 0)
        order = np.lexsort((hit, -scores[hit]))[:int(k)]
        return [int(i) for i in hit[order]]


def search_env(retriever: Bm25, texts, tool, top_k: int):
    """`env_fn(row, text) -> str | None` of `tool_rollout`: the query of the turn's last
    complete call `call_open query call_close` -> `result_open`, the `top_k` retrieved `texts`
    and `result_close`, one per line; None (no call: the trajectory ends) when the turn holds no
    complete call."""
    open_, close = str(tool.call_open), str(tool.call_close)

    def env_fn(row: int, text: str) -> str | None:
        del row
        start = text.rfind(open_)
        end = text.find(close, start + len(open_)) if start >= 0 else -1
        if end < 0:
            return None
        docs = [str(texts[i]) for i in retriever.search(text[start + len(open_):end], top_k)]
        return "\n".join([str(tool.result_open), *docs, str(tool.result_close)])

    return env_fn


def _normalize(text) -> str:
    return " ".join(str(text).lower().split())


def _run_real(config: ml_collections.ConfigDict, workdir: str, seed: int) -> dict[str, float]:
    """`:real` (module docstring): GRPO of the planner `model.path` through the retrieval
    environment; held-out accuracy, calls and reward at the validation-chosen iteration."""
    from alignax.data import load_hf_dataset

    tok = real.tokenizer(config)
    field, marker = config.data.answer_field, str(config.reward.answer_marker)
    alpha = float(config.reward.alpha)
    data = real.prompt_data(config, tok, int(config.data.max_length), fields=(field,))
    corpus = load_hf_dataset(config.corpus.path, split=config.corpus.split or None)
    if config.corpus.text_field not in corpus.column_names:
        raise ValueError(f"corpus.text_field={config.corpus.text_field!r} is not a column of "
                         f"corpus.path (columns: {corpus.column_names})")
    texts = [str(t) for t in corpus[config.corpus.text_field]]
    env_fn = search_env(Bm25(texts), texts, config.tool, int(config.corpus.top_k))
    model, params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    stops = real.stop_tokens(tok, config.grpo.stop_tokens)
    tool = config.tool
    budget = dict(max_tool_calls=int(tool.max_tool_calls), turn_tokens=int(tool.turn_tokens),
                  max_observation_tokens=int(tool.max_observation_tokens),
                  stop_strings=(str(tool.call_close),))

    def outcomes(rollout, answers):
        """(correct [N], calls [N], reward [N]) of a tool rollout against `answers` (by pool
        row)."""
        texts = real.decode_responses(tok, rollout.responses,
                                      tool_rollout.final_turn_mask(rollout))
        rows = np.asarray(rollout.prompt_index)
        found = [real.final_answer(t, marker) for t in texts]  # None: no marker, no answer
        correct = np.array([float(a is not None and _normalize(a) == _normalize(answers[i]))
                            for a, i in zip(found, rows)], np.float32)
        calls = np.asarray(tool_rollout.tool_calls(rollout), np.float32)
        return correct, calls, correct - alpha * calls

    answers = data["train"][field]

    def reward_fn(rollout):
        return outcomes(rollout, answers)[2]

    ids, pmask, n_val = real.held_out_prompts(data)
    held_answers = list(data["validation"][field]) + list(data["test"][field])
    greedy = tool_rollout.make_tool_rollout(
        model, env_fn, tok, num_samples=1, temperature=0.0, stop_tokens=stops,
        pad_id=tok.pad_id, **budget)

    def evaluate(policy_params):
        correct, calls, reward = outcomes(greedy(policy_params, ids, pmask, jax.random.key(0)),
                                          held_answers)
        out = {}
        for name, values in (("accuracy", correct), ("calls", calls), ("reward", reward)):
            out.update(real.split_means(values, n_val, name))
        return out

    before = evaluate(params)
    out = policy_gradient.train(
        _real_grpo_cfg(config, stops), os.path.join(workdir, "grpo"), model=model,
        init_params=params, ref_params=params, prompt_ids=data["train"]["prompt_ids"],
        prompt_mask=data["train"]["prompt_mask"], reward_fn=reward_fn, eval_fn=evaluate,
        seed=seed, rollout_fn=tool_rollout.tool_rollout_from_config(env_fn, tok, **budget))
    result = real.choose_iteration(out["history"], "eval/val_reward", workdir)
    result.update({f"test_ref_{k[len('test_'):]}": v for k, v in before.items()
                   if k.startswith("test_")})
    return result


def make_task(config) -> search.SearchTask:
    return search.SearchTask(**config.task.to_dict())


def question_arrays(task, questions) -> dict:
    """The arrays the planner's loss and evaluation read from a question set."""
    naive = search.naive_plan(task, questions["chain"])
    return {"features": search.question_features(task, questions["chain"]),
            "chain": questions["chain"], "hops": questions["hops"],
            "naive_correct": np.asarray(search.answer_correct(
                naive, questions["chain"], questions["hops"], task.stop), np.float32)}


def make_data(config, seed: int) -> dict:
    """Experiment seed `seed`: its knowledge base (the world, seeded by `seed`) and disjoint
    train / validation / test questions from the data seeds `split_seeds(seed)`."""
    task = make_task(config)
    kb = search.knowledge_base(task, np.random.default_rng([seed, 2105]))
    seeds = split_seeds(seed)
    splits, seen = {}, []
    for name, data_seed, n in (("train", seeds.train, config.data.num_train),
                               ("val", seeds.validation, config.data.num_val),
                               ("test", seeds.test, config.data.num_test)):
        q = search.draw_questions(task, kb, int(n), np.random.default_rng([data_seed, 2105]),
                                  exclude=seen)
        splits[name] = q
        seen = seen + search.question_ids(q)
    check_disjoint(**{k: search.question_ids(q) for k, q in splits.items()})
    train = splits["train"]
    demos = search.demonstration_plans(task, train["chain"], train["hops"],
                                       np.random.default_rng([seeds.train, 2106]))
    out = {"kb": kb, "questions": splits, "demo": task.space().index(demos)}
    for name, q in splits.items():
        prefix = "" if name == "train" else f"{name}_"
        out.update({prefix + k: v for k, v in question_arrays(task, q).items()})
    return out


def reward_terms(config, task, weights, chain, hops, naive_correct, actions):
    """The planner's reward of action sequences [..., L] and its parts (correct, turns,
    process), all [...]. `weights` = {"alpha", "process_weight"} (scalars, data rather than
    constants, so every variant compiles to the same program)."""
    got = search.retrieved_hops(actions, chain, hops, task.stop)
    correct = (got == hops).astype(jnp.float32)
    turns = search.turns(actions, task.stop)
    process = plan_rationality(got, turns, hops)
    reward = utility_cost_reward(correct, turns, alpha=weights["alpha"],
                                 max_turns=task.max_turns, cost=config.cost,
                                 baseline_correct=naive_correct, process=process,
                                 process_weight=weights["process_weight"])
    return reward, {"correct": correct, "turns": turns.astype(jnp.float32), "process": process}


def make_loss(config, task, space):
    """GRPO on the utility-cost reward: prompts are dicts of question arrays."""
    tr = config.train
    seqs = jnp.asarray(space.sequences)

    def prompt_fn(key, data):
        idx = jax.random.randint(key, (int(tr.prompts),), 0, data["features"].shape[0])
        return {k: data[k][idx] for k in QUESTION_KEYS}

    def sample_fn(params, key, prompts, n):
        return st.sample_paths(space, params, key, n, prompts["features"])

    def log_prob_fn(params, prompts, responses):
        phi = jnp.broadcast_to(prompts["features"][:, None, :],
                               responses.shape + prompts["features"].shape[-1:])
        return st.path_log_probs(space, params, responses, phi)

    def reward_fn(prompts, responses, data):
        actions = seqs[responses]  # [M, G, L]
        reward, parts = reward_terms(config, task, data, prompts["chain"][:, None],
                                     prompts["hops"][:, None],
                                     prompts["naive_correct"][:, None], actions)
        return reward, {"accuracy": parts["correct"].mean(), "turns": parts["turns"].mean()}

    return group_pg_loss(sample_fn, log_prob_fn, reward_fn, group_size=int(tr.group_size),
                         advantage=str(tr.advantage), prompt_fn=prompt_fn)


def expected_metrics(config, task, space, params, weights, features, chain, hops,
                     naive_correct):
    """Exact expectations over every action sequence of the policy for each question:
    dict of [Q] arrays (reward, accuracy, turns, process)."""
    p = jnp.exp(st.sequence_log_probs(space, params, features))  # [Q, N]
    seqs = jnp.asarray(space.sequences)[None]  # [1, N, L]
    reward, parts = reward_terms(config, task, weights, chain[:, None], hops[:, None],
                                 naive_correct[:, None], seqs)
    out = {"reward": (p * reward).sum(-1)}
    out.update({k: (p * v).sum(-1) for k, v in parts.items()})
    return out


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one alpha trained in one program, early-stopped on its validation reward;
    each seed's exact test metrics of the selected planner."""
    if real.is_real(config):
        return {int(s): _run_real(config, os.path.join(workdir, f"seed_{s}"), int(s))
                for s in config.seeds}
    task = make_task(config)
    space = task.space()
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    val_keys = tuple(f"val_{k}" for k in QUESTION_KEYS)
    test_keys = tuple(f"test_{k}" for k in QUESTION_KEYS)
    for d in per_seed:
        d.update(alpha=np.float32(config.alpha), process_weight=np.float32(config.process_weight))
    data = stack_seeds(per_seed, ("demo", *QUESTION_KEYS, *WEIGHT_KEYS, *val_keys, *test_keys))
    weights = {k: data[k] for k in WEIGHT_KEYS}
    tr = config.train

    def eval_fn(params, val):
        m = expected_metrics(config, task, space, params, val, *(val[k] for k in val_keys))
        names = {"correct": "accuracy"}
        return {f"val_{names.get(k, k)}": v.mean() for k, v in m.items()}

    loss_fn = make_loss(config, task, space)
    train_data = {k: data[k] for k in (*QUESTION_KEYS, *WEIGHT_KEYS)}
    init, per_seed_init = (lambda key: st.init_table(space, task.num_features)), False
    if int(config.pretrain_steps) > 0:
        # stage 1, the same for every variant: the "pretrained" planner, maximum likelihood on
        # a generic searcher's demonstrations (the chain, then a random number of extra calls)
        batch = int(config.pretrain_batch)

        def demo_batch(d, rng):
            idx = jax.random.randint(rng, (batch,), 0, d["demo"].shape[0])
            return {"demo": d["demo"][idx], "features": d["features"][idx]}

        def sft_loss(params, b):
            return -jnp.mean(st.path_log_probs(space, params, b["demo"], b["features"]))

        pre = fit_small(os.path.join(workdir, "pretrain"), loss_fn=sft_loss, init_params=init,
                        tx=optax.adam(float(tr.learning_rate)),
                        num_steps=int(config.pretrain_steps),
                        data={"demo": data["demo"], "features": data["features"]},
                        seeds=seeds, per_seed_data=True, batch_fn=demo_batch,
                        steps_per_log=int(tr.eval_every))
        init, per_seed_init = pre.params, True
    # stage 2: RL with the variant's alpha (and process weight), early-stopped on validation
    fit = fit_small(os.path.join(workdir, "planner"), loss_fn=loss_fn, init_params=init,
                    per_seed_init=per_seed_init, tx=optax.adam(float(tr.learning_rate)),
                    num_steps=int(tr.steps), data=train_data, seeds=seeds,
                    per_seed_data=True, batch_fn=rl_batch, has_aux=True,
                    steps_per_log=int(tr.eval_every), eval_fn=eval_fn,
                    eval_data={k: data[k] for k in (*val_keys, *WEIGHT_KEYS)},
                    select=("val_reward", "max"))

    @jax.jit
    def evaluate(params, w, *arrays):
        return jax.vmap(lambda p, w, *a: expected_metrics(config, task, space, p, w, *a))(
            params, w, *arrays)

    test = jax.device_get(evaluate(fit.best_params, weights, *(data[k] for k in test_keys)))
    val = jax.device_get(evaluate(fit.best_params, weights, *(data[k] for k in val_keys)))
    out = {}
    for i, (seed, d) in enumerate(zip(seeds, per_seed)):
        hops = np.asarray(d["test_hops"])
        res = {"test_accuracy": float(test["correct"][i].mean()),
               "test_turns": float(test["turns"][i].mean()),
               "test_reward": float(test["reward"][i].mean()),
               "test_process": float(test["process"][i].mean()),
               "test_hops": float(hops.mean()),
               "test_excess_turns": float(test["turns"][i].mean() - hops.mean()),
               "test_naive_accuracy": float(np.mean(d["test_naive_correct"])),
               "val_reward": float(val["reward"][i].mean()),
               "val_accuracy": float(val["correct"][i].mean()),
               "val_turns": float(val["turns"][i].mean()),
               "chosen_step": float(fit.best_step[i]),
               "chosen_val_reward": float(fit.best_score[i])}
        for k in range(1, task.max_hops + 1):
            sel = hops == k
            res[f"test_accuracy_h{k}"] = float(test["correct"][i][sel].mean())
            res[f"test_turns_h{k}"] = float(test["turns"][i][sel].mean())
        # by construction: the oracle plan and the naive baseline through the same environment
        q = d["questions"]["test"]
        oracle = search.oracle_plan(task, q["chain"])
        oracle_ans = np.asarray(search.generator_answer(d["kb"], q["entity"], q["chain"],
                                                        q["hops"], oracle, task.stop))
        res["test_oracle_accuracy"] = float(np.mean(oracle_ans == q["answer"]))
        res["test_oracle_excess_turns"] = float(np.mean(
            np.asarray(search.turns(oracle, task.stop)) - q["hops"]))
        res["test_one_hop_fraction"] = float(np.mean(q["hops"] == 1))
        out[seed] = res
    return out


def _front(results) -> dict:
    """Per seed: the utility-cost front of the sweep's (accuracy, turns) points."""
    present = [v for v in SWEEP if v in results]
    acc = {v: protocol.per_seed(results, v, "test_accuracy") for v in present}
    turns = {v: protocol.per_seed(results, v, "test_turns") for v in present}
    seeds = sorted(set.intersection(*(set(acc[v]) for v in present))) if present else []
    out = {}
    for s in seeds:
        f = utility_cost_front([acc[v][s] for v in present], [turns[v][s] for v in present],
                               reference=(0.0, 4.0))
        out[s] = f
    return out, present


def claims(results) -> list[protocol.Claim]:
    if "default" in results:  # :real: one alpha on a user's checkpoint, metrics only
        return []
    out = []
    summary = "; ".join(
        f"alpha={ALPHAS[v]}: accuracy {seed_mean(results, v, 'test_accuracy'):.3f}, turns "
        f"{seed_mean(results, v, 'test_turns'):.2f} (hops {seed_mean(results, v, 'test_hops'):.2f})"
        for v in SWEEP if v in results)
    front, present = _front(results)
    if front:
        on = {v: float(np.mean([f["on_front"][present.index(v)] for f in front.values()]))
              for v in present}
        hv = np.array([f["hypervolume"] for f in front.values()])
        front_text = (f"utility-cost front per seed: fraction of seeds on which each alpha is "
                      f"on the front {on}; hypervolume vs (acc 0, 4 calls) {hv.mean():.3f} "
                      f"+- {hv.std():.3f}")
    else:
        front_text = ""
    for extra in ("a10_process", "a10_scratch"):
        if extra not in results:
            continue
        label = ("with process weight .5" if extra == "a10_process"
                 else "from the uniform policy (no stage 1)")
        front_text += (f"; alpha=.1 {label} (not claimed): accuracy "
                       f"{seed_mean(results, extra, 'test_accuracy'):.3f}, turns "
                       f"{seed_mean(results, extra, 'test_turns'):.2f}")
    pairs = list(zip(present, present[1:]))
    for lo, hi in pairs:
        a_lo, a_hi = ALPHAS[lo], ALPHAS[hi]
        out.append(protocol.compare(
            f"mean search calls strictly fall from alpha={a_lo} to alpha={a_hi}", results,
            (hi, "test_turns"), (lo, "test_turns"), at_most=0.0,
            detail=f"test turns of the step chosen on validation reward; {summary}"))
    for lo, hi in pairs:
        a_lo, a_hi = ALPHAS[lo], ALPHAS[hi]
        strict = protocol.compare("strict", results, (hi, "test_accuracy"),
                                  (lo, "test_accuracy"), at_most=0.0)
        out.append(protocol.compare(
            f"accuracy does not rise from alpha={a_lo} to alpha={a_hi} (by more than 1 point)",
            results, (hi, "test_accuracy"), (lo, "test_accuracy"), at_most=0.01,
            detail=f"paired difference; the plain '<= 0' reading is {strict.status} "
                   f"(interval {strict.interval}); {front_text}"))
    if "a10" in results:
        out.append(protocol.threshold(
            "at alpha=.1 mean search calls <= mean hops + 0.3", results,
            ("a10", "test_excess_turns"), at_most=0.3,
            detail="test_turns - test_hops per seed (exact expectations over the policy); "
                   + "; ".join(f"alpha=.1, {k}-hop: turns "
                               f"{seed_mean(results, 'a10', f'test_turns_h{k}'):.2f}, accuracy "
                               f"{seed_mean(results, 'a10', f'test_accuracy_h{k}'):.3f}"
                               for k in (1, 2, 3))))
    if "a10" in results and "a00" in results:
        acc0 = protocol.per_seed(results, "a00", "test_accuracy")
        acc1 = protocol.per_seed(results, "a10", "test_accuracy")
        ratio = {s: acc1[s] / acc0[s] for s in acc1 if s in acc0 and acc0[s] > 0}
        out.append(protocol.decide(
            "at alpha=.1 accuracy >= 90% of the alpha=0 run", ratio, kind="threshold",
            at_least=0.9, detail=f"per-seed ratio of test accuracies; {summary}"))
    first = next(iter(results))
    oracle_acc = min(protocol.per_seed(results, first, "test_oracle_accuracy").values())
    oracle_excess = max(abs(v) for v in protocol.per_seed(
        results, first, "test_oracle_excess_turns").values())
    naive = protocol.per_seed(results, first, "test_naive_accuracy")
    one_hop = protocol.per_seed(results, first, "test_one_hop_fraction")
    gap = max(abs(naive[s] - one_hop[s]) for s in naive)
    out.append(protocol.sanity(
        "the frozen generator answers the oracle plan (the chain, then stop) with T = hops, "
        "and the single-search baseline exactly the 1-hop questions",
        oracle_acc == 1.0 and oracle_excess == 0.0 and gap < 1e-6,
        {"oracle_accuracy_min": oracle_acc, "oracle_excess_turns_max": oracle_excess,
         "naive_vs_one_hop_gap": gap}, "by construction of the environment"))
    return out


def plots(results, workdir: str) -> list[str]:
    """The utility-cost front (accuracy vs mean calls over alpha) and validation curves."""
    if "default" in results:  # :real
        return []
    present = [v for v in SWEEP if v in results]
    paths = []
    turns = [seed_mean(results, v, "test_turns") for v in present]
    acc = [seed_mean(results, v, "test_accuracy") for v in present]
    acc_std = [results[v]["metrics"]["test_accuracy"]["std"] for v in present]
    out = os.path.join(workdir, "plots", "search_planner_front.png")
    plot_curves({"alpha " + ", ".join(str(ALPHAS[v]) for v in present):
                 (turns, acc, acc_std)}, out,
                title="utility-cost front over alpha (test, mean over seeds)",
                xlabel="mean search calls", ylabel="generator accuracy")
    paths.append(out)
    for metric in ("val_accuracy", "val_turns"):
        curves = {}
        for variant, res in results.items():
            path = os.path.join(workdir, variant, "planner", "metrics.jsonl")
            if not os.path.exists(path):
                continue
            rows = read_metrics(path)
            ys = np.array([[row[f"seed_{s}/eval/{metric}"] for row in rows]
                           for s in res["per_seed"]])
            xs = np.array([row["step"] for row in rows], np.float64)
            curves[variant] = (xs, ys.mean(0), ys.std(0))
        out = os.path.join(workdir, "plots", f"search_planner_{metric}.png")
        plot_curves(curves, out, title=f"{metric} along training (stage 2)",
                    xlabel="logged step (eval_every updates each)", ylabel=metric)
        paths.append(out)
    return paths
