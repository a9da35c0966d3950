"""A simulated multi-hop retrieval environment: a key-value knowledge base, k-hop questions, a
search tool the planner calls by key, and a frozen generator that answers from what it retrieved.

The toy of AI-SearchPlanner (arXiv 2508.20368; notes-a.md, paper 5): a small planner decides which
sub-queries to send to a search tool and when to stop; a frozen generator then answers from the
retrieved facts. Here:

- the knowledge base is a table `kb[e, r]` (`knowledge_base`): entity e's value under key
  (relation) r is another entity ("the capital of x", "the mayor of the capital of x");
- a k-hop question (`draw_questions`) names a start entity x and a chain of k keys
  (r_0, ..., r_{k-1}); its gold answer is kb[...kb[kb[x, r_0], r_1]..., r_{k-1}], and the k
  facts (e_t, r_t) -> e_{t+1} along the chain are the facts it needs;
- the planner's trajectory is a sequence of `max_turns` action tokens: token r < num_keys is
  query(r), token `num_keys` is stop, and everything from the first stop on is ignored
  (`turns`: the number of search calls made). query(r) asks the search tool for key r of the
  latest bridge entity found: when r is the chain's next key it retrieves the next needed fact
  and the bridge advances; any other key retrieves a fact off the chain, which leaves the
  bridge where it was (`retrieved_hops`: how many needed facts, in order, a trajectory got);
- the frozen generator (`generator_answer`) follows the retrieved facts from x and answers
  iff it holds the whole chain (else it abstains, -1): it is correct iff every needed fact was
  retrieved, as in the notes' toy;
- `demonstration_plans`: a generic searcher's trajectories (the chain, then a random number
  of extra queries, then stop), the demonstrations a "pretrained" planner imitates;
- the naive single-retrieval baseline (`naive_plan`: one search with the question, which
  resolves only its first hop) is the no-planning reference of R_outcome.

`question_features` encodes a question for a log-linear policy
(`alignax.models.sequence_table`): a constant 1 and, for each hop position t < max_hops, a
one-hot of the key asked at that position or "no hop t" (so the hop count is readable). The
entity is not a feature: the plan depends only on the keys. Every function on actions is pure
jax, vectorised, and broadcasts its leading dimensions (e.g. actions [1, N, L] of every
sequence against chains [Q, 1, H] of every question).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from alignax.models.sequence_table import SequenceSpace


@dataclasses.dataclass(frozen=True)
class SearchTask:
    """The sizes of a search-planning toy.

    Attributes:
      num_entities: E, entities of the knowledge base.
      num_keys: R, keys (relations); the planner's vocabulary is R + 1 (the stop token = R).
      max_hops: H, the longest chain a question asks for.
      max_turns: T_max, the planner's action tokens (>= H so every question is answerable).
    """

    num_entities: int
    num_keys: int
    max_hops: int = 3
    max_turns: int = 4

    def __post_init__(self):
        if self.num_entities < 2 or self.num_keys < 1 or self.max_hops < 1:
            raise ValueError(f"SearchTask needs num_entities >= 2, num_keys >= 1, max_hops >= 1, "
                             f"got {self}")
        if self.max_turns < self.max_hops:
            raise ValueError(f"max_turns {self.max_turns} < max_hops {self.max_hops}: some "
                             f"questions could never be answered")

    @property
    def stop(self) -> int:
        """The stop token (the last of the vocabulary)."""
        return self.num_keys

    @property
    def vocab_size(self) -> int:
        """R + 1: query(r) for every key, and stop."""
        return self.num_keys + 1

    @property
    def num_features(self) -> int:
        """F of `question_features`: 1 + H (R + 1)."""
        return 1 + self.max_hops * (self.num_keys + 1)

    def space(self) -> SequenceSpace:
        """The planner's sequence space: (R + 1)^T_max action sequences."""
        return SequenceSpace(self.vocab_size, self.max_turns)


def knowledge_base(task: SearchTask, rng: np.random.Generator) -> np.ndarray:
    """[E, R] int32: kb[e, r] = the entity stored under key r of entity e (uniform at random)."""
    return rng.integers(0, task.num_entities, (task.num_entities, task.num_keys)
                        ).astype(np.int32)


def gold_answer(kb, entity, chain, hops):
    """[...] the answer of questions (entity [...], chain [..., H], hops [...]): the chain's keys
    followed from the entity through `kb` for `hops` steps."""
    kb, chain = jnp.asarray(kb), jnp.asarray(chain)
    e = jnp.asarray(entity)
    for h in range(chain.shape[-1]):
        nxt = kb[e, jnp.maximum(chain[..., h], 0)]
        e = jnp.where(h < hops, nxt, e)
    return e


def draw_questions(task: SearchTask, kb, n: int, rng: np.random.Generator, *,
                   hop_probs=None, exclude=()) -> dict:
    """n distinct questions, none of them in `exclude` (ids from `question_ids`).

    Each question: a start entity uniform over E, a hop count k from `hop_probs` (default
    uniform over 1..H) and k keys uniform over R (repeats allowed), padded with -1 to H.

    Returns:
      {"entity": [n] int32, "chain": [n, H] int32, "hops": [n] int32, "answer": [n] int32}.
    """
    hop_probs = (np.full(task.max_hops, 1.0 / task.max_hops) if hop_probs is None
                 else np.asarray(hop_probs, np.float64))
    if hop_probs.shape != (task.max_hops,) or abs(hop_probs.sum() - 1.0) > 1e-6:
        raise ValueError(f"hop_probs must be {task.max_hops} probabilities, got {hop_probs}")
    seen = set(exclude)
    rows = []
    tries = 0
    while len(rows) < n:
        tries += 1
        if tries > 100 * n + 1000:
            raise ValueError(f"could not draw {n} distinct new questions; enlarge the task")
        k = int(rng.choice(task.max_hops, p=hop_probs)) + 1
        keys = rng.integers(0, task.num_keys, k)
        entity = int(rng.integers(0, task.num_entities))
        chain = tuple(int(r) for r in keys) + (-1,) * (task.max_hops - k)
        qid = (entity, chain)
        if qid in seen:
            continue
        seen.add(qid)
        rows.append((entity, chain, k))
    entity = np.array([r[0] for r in rows], np.int32).reshape(n)
    chain = np.array([r[1] for r in rows], np.int32).reshape(n, task.max_hops)
    hops = np.array([r[2] for r in rows], np.int32).reshape(n)
    answer = np.asarray(gold_answer(kb, entity, chain, hops), np.int32)
    return {"entity": entity, "chain": chain, "hops": hops, "answer": answer}


def question_ids(questions: dict) -> list[tuple]:
    """Hashable ids (entity, chain) of questions, for `alignax.tasks.splits.check_disjoint`."""
    return [(int(e), tuple(int(r) for r in c))
            for e, c in zip(questions["entity"], questions["chain"])]


def question_features(task: SearchTask, chain) -> np.ndarray:
    """[n, F] float32 features: 1, then for each hop position t a one-hot over R + 1 (the key
    asked at hop t, or index R when the question has no hop t)."""
    chain = np.asarray(chain)
    slot = np.where(chain >= 0, chain, task.num_keys)  # [n, H]
    onehot = np.eye(task.num_keys + 1, dtype=np.float32)[slot]  # [n, H, R + 1]
    const = np.ones((chain.shape[0], 1), np.float32)
    return np.concatenate([const, onehot.reshape(chain.shape[0], -1)], axis=1)


def turns(actions, stop: int):
    """[...] the number of search calls of action sequences [..., L]: the tokens before the
    first stop (L when there is none)."""
    actions = jnp.asarray(actions)
    return jnp.sum(jnp.cumprod(actions != stop, axis=-1), axis=-1).astype(jnp.int32)


def retrieved_hops(actions, chain, hops, stop: int):
    """[...] how many of the needed facts, in chain order, a trajectory retrieved.

    Args:
      actions: [..., L] action tokens (query(r) = r, stop = `stop`).
      chain: [..., H] the questions' keys (-1 padded).
      hops: [...] their hop counts.
      stop: the stop token.

    The leading dimensions broadcast. A query retrieves the next needed fact when its key is
    the chain's next key (the bridge then advances); other queries retrieve facts off the chain.
    """
    actions, chain, hops = jnp.asarray(actions), jnp.asarray(chain), jnp.asarray(hops)
    live = jnp.ones(actions.shape[:-1], bool)
    got = jnp.zeros(jnp.broadcast_shapes(actions.shape[:-1], chain.shape[:-1], hops.shape),
                    jnp.int32)
    positions = jnp.arange(chain.shape[-1])
    for t in range(actions.shape[-1]):
        a = actions[..., t]
        live = live & (a != stop)
        need = jnp.sum(jnp.where(positions == got[..., None], chain, 0), -1)
        hit = live & (got < hops) & (a == need)
        got = got + hit.astype(jnp.int32)
    return got


def generator_answer(kb, entity, chain, hops, actions, stop: int):
    """[...] the frozen generator's answer: the entity reached by following the retrieved facts
    from the question's entity when every needed fact was retrieved, else -1 (it abstains)."""
    complete = retrieved_hops(actions, chain, hops, stop) == jnp.asarray(hops)
    return jnp.where(complete, gold_answer(kb, entity, chain, hops), -1)


def answer_correct(actions, chain, hops, stop: int):
    """[...] float 1.0 where the frozen generator answers correctly (every needed fact was
    retrieved), else 0.0: `generator_answer == gold_answer`, without the table lookups."""
    return (retrieved_hops(actions, chain, hops, stop) == jnp.asarray(hops)).astype(jnp.float32)


def naive_plan(task: SearchTask, chain) -> np.ndarray:
    """[n, T_max] the no-planning baseline's actions: one search with the question (it
    resolves the first hop's key), then stop."""
    chain = np.asarray(chain)
    out = np.full((chain.shape[0], task.max_turns), task.stop, np.int32)
    out[:, 0] = chain[:, 0]
    return out


def oracle_plan(task: SearchTask, chain) -> np.ndarray:
    """[n, T_max] the shortest correct plan: the chain's keys in order, then stop."""
    chain = np.asarray(chain)
    out = np.full((chain.shape[0], task.max_turns), task.stop, np.int32)
    out[:, :chain.shape[1]] = np.where(chain >= 0, chain, task.stop)
    return out


def demonstration_plans(task: SearchTask, chain, hops, rng: np.random.Generator) -> np.ndarray:
    """[n, T_max] trajectories of a generic searcher (the demonstrations a planner is
    pretrained on): the chain's keys in order, then e uniform in {0, ..., T_max - k} extra
    queries of random keys, then stop (when turns remain). It always finds the facts but has
    no notion of when to stop, as a pretrained LLM that can search but was never charged for
    it."""
    chain, hops = np.asarray(chain), np.asarray(hops)
    n = chain.shape[0]
    out = np.full((n, task.max_turns), task.stop, np.int32)
    for i in range(n):
        k = int(hops[i])
        extra = int(rng.integers(0, task.max_turns - k + 1))
        out[i, :k] = chain[i, :k]
        out[i, k:k + extra] = rng.integers(0, task.num_keys, extra)
    return out
