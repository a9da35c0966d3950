"""A synthetic retrieval testbed: queries, token documents, grounded answers and a gold oracle.

The toy of RAG-RewardBench (Jin et al. 2024, arXiv 2412.13746): its four scenarios (multi-hop
reasoning, fine-grained citation, appropriate abstain, conflict robustness;
`alignax.eval.rag_bench.SUBSETS`) built from token facts, so a tiny reward model can be trained
and scored with and without the documents in its input.

World. E entity tokens 0..E-1. A document is a fact (subject, object) of two entities; an item
has a query (a hop token ONE_HOP / TWO_HOP and the query entity q) and K documents in random
order. An answer is two tokens: (entity, CITE_j) = "the answer is this entity, supported by
document j", or (ABSTAIN, NOCITE). The entities of every item are drawn afresh, so no answer can
be known without reading the documents (there is no world knowledge to memorise).

Gold (`gold_answer`, the oracle): ONE_HOP: the documents whose subject is q; none -> abstain;
else the majority object among them (ties: the first in document order), and any document
that states it is a correct citation. TWO_HOP: the object b of the document (q, b), then the
object a of the document (b, a); the answer is a, cited by the document (b, a). Every pair's
chosen answer is the oracle's, with one of its citations, and no rejected answer is
(tests/tasks/test_rag.py checks it on every subset).

Subsets (chosen > rejected):
- multi_hop: documents (q, b), (b, a) and K - 2 distractors; chosen (a, cite (b, a)); rejected
  (b, cite (q, b)), the answer of stopping after the first hop;
- fine_grained_citation: documents (q, a) and K - 1 distractors; chosen (a, cite (q, a));
  rejected the same entity citing a distractor;
- appropriate_abstain: half the items have no document about q: chosen abstains, rejected
  answers with a distractor's object (cited); the other half have the supporting document
  (q, a): chosen answers, rejected abstains. Abstaining is right exactly when no document
  supports an answer, and a model that does not read the documents cannot beat chance;
- conflict_robustness: documents (q, a), (q, a), (q, a') and K - 3 distractors; chosen (a,
  cite a document (q, a)), rejected (a', cite (q, a')): the majority of the sources wins.
Distractors are facts (x, y) with x not in the item's query chain.

Rows (`token_rows`): [hop, q, answer, cite, SEP] and, with documents, (DOC, s_1, o_1), ...,
(DOC, s_K, o_K), SEP (T = 3 K + 6; without them T = 5: the same pairs with the documents
removed). The answer comes before the documents so that a causal model reads every document
after the query and the answer it must check (a reward model reads its score at the last
token, so it sees the whole row either way). No padding: every row of one layout has the same
length.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SUBSETS = ("multi_hop", "fine_grained_citation", "appropriate_abstain", "conflict_robustness")


@dataclasses.dataclass(frozen=True)
class RagTask:
    """The token world: `num_entities` E, `num_documents` K (>= 4) per item."""

    num_entities: int = 32
    num_documents: int = 4

    def __post_init__(self):
        if self.num_documents < 4:
            raise ValueError(f"num_documents={self.num_documents} must be >= 4 (the conflict "
                             f"subset needs 3 documents about the query and a distractor)")
        if self.num_entities < 2 * self.num_documents + 4:
            raise ValueError(f"num_entities={self.num_entities} must be >= 2 num_documents + 4 "
                             f"(distinct entities of one item)")

    # special tokens, after the entities
    @property
    def one_hop(self) -> int:
        return self.num_entities

    @property
    def two_hop(self) -> int:
        return self.num_entities + 1

    @property
    def sep(self) -> int:
        return self.num_entities + 2

    @property
    def doc(self) -> int:
        return self.num_entities + 3

    @property
    def abstain(self) -> int:
        return self.num_entities + 4

    @property
    def nocite(self) -> int:
        return self.num_entities + 5

    def cite(self, j):
        """The token citing document j (0-based)."""
        return self.num_entities + 6 + np.asarray(j)

    @property
    def vocab_size(self) -> int:
        return self.num_entities + 6 + self.num_documents

    def row_length(self, documents: bool) -> int:
        return 3 * self.num_documents + 6 if documents else 5


def _item(task: RagTask, subset: str, rng: np.random.Generator, answerable: bool):
    """One item: (query [2], docs [K, 2], chosen [2], rejected [2])."""
    k = task.num_documents
    ents = rng.permutation(task.num_entities)[: 2 * k + 4]
    q, b, a, a2 = ents[:4]
    others = ents[4:]  # distractor subjects/objects: never q or b
    facts, hop = [], task.one_hop
    if subset == "multi_hop":
        hop = task.two_hop
        facts = [(q, b, "hop1"), (b, a, "hop2")]
    elif subset == "fine_grained_citation" or (subset == "appropriate_abstain" and answerable):
        facts = [(q, a, "support")]
    elif subset == "conflict_robustness":
        facts = [(q, a, "support"), (q, a, "support"), (q, a2, "conflict")]
    elif subset != "appropriate_abstain":
        raise ValueError(f"unknown subset {subset!r}; one of {SUBSETS}")
    n_distract = k - len(facts)
    facts += [(others[2 * i], others[2 * i + 1], "distractor") for i in range(n_distract)]
    order = rng.permutation(k)
    facts = [facts[i] for i in order]
    docs = np.array([(s, o) for s, o, _ in facts], np.int32)
    where = {}
    for j, (_, _, role) in enumerate(facts):
        where.setdefault(role, j)
    distract = [j for j, f in enumerate(facts) if f[2] == "distractor"]
    abstain = (task.abstain, task.nocite)
    if subset == "multi_hop":
        chosen = (a, task.cite(where["hop2"]))
        rejected = (b, task.cite(where["hop1"]))
    elif subset == "fine_grained_citation":
        j = rng.choice(distract)
        chosen, rejected = (a, task.cite(where["support"])), (a, task.cite(j))
    elif subset == "appropriate_abstain" and answerable:
        chosen, rejected = (a, task.cite(where["support"])), abstain
    elif subset == "appropriate_abstain":
        j = rng.choice(distract)
        chosen, rejected = abstain, (docs[j, 1], task.cite(j))
    else:
        support = [j for j, f in enumerate(facts) if f[2] == "support"]
        chosen = (a, task.cite(rng.choice(support)))
        rejected = (a2, task.cite(where["conflict"]))
    return (np.array([hop, q], np.int32), docs, np.array(chosen, np.int32),
            np.array(rejected, np.int32))


def make_items(task: RagTask, per_subset: int, seed: int,
               subsets: tuple[str, ...] = SUBSETS) -> dict[str, np.ndarray]:
    """`per_subset` items of every subset, deterministic in `seed` (numpy `default_rng([seed,
    2412])`), subsets in order. appropriate_abstain alternates unanswerable / answerable items.

    Returns:
      {"query": [N, 2], "documents": [N, K, 2], "chosen": [N, 2], "rejected": [N, 2],
       "subset": [N] (index into `subsets`)} int32, N = per_subset x len(subsets).
    """
    rng = np.random.default_rng([int(seed), 2412])
    parts = []
    for si, name in enumerate(subsets):
        for i in range(int(per_subset)):
            parts.append((*_item(task, name, rng, answerable=bool(i % 2)), si))
    return {"query": np.stack([p[0] for p in parts]),
            "documents": np.stack([p[1] for p in parts]),
            "chosen": np.stack([p[2] for p in parts]),
            "rejected": np.stack([p[3] for p in parts]),
            "subset": np.array([p[4] for p in parts], np.int32)}


def gold_answer(task: RagTask, query: np.ndarray, documents: np.ndarray
                ) -> tuple[int, tuple[int, ...]]:
    """The oracle's answer to one item (module docstring): (entity or ABSTAIN, the tokens of
    every correct citation: (NOCITE,) for an abstention).

    Args:
      query: [2] (hop token, q).
      documents: [K, 2] (subject, object) facts.
    """
    hop, q = int(query[0]), int(query[1])
    subj, obj = documents[:, 0], documents[:, 1]
    abstain = (task.abstain, (task.nocite,))
    if hop == task.two_hop:
        first = np.flatnonzero(subj == q)
        if len(first) == 0:
            return abstain
        second = np.flatnonzero(subj == obj[first[0]])
        if len(second) == 0:
            return abstain
        return int(obj[second[0]]), (int(task.cite(second[0])),)
    about = np.flatnonzero(subj == q)
    if len(about) == 0:
        return abstain
    values, counts = np.unique(obj[about], return_counts=True)
    top = values[counts == counts.max()]
    best = next(int(obj[j]) for j in about if obj[j] in top)  # ties: first in document order
    return best, tuple(int(task.cite(j)) for j in about if obj[j] == best)


def is_gold(task: RagTask, query: np.ndarray, documents: np.ndarray,
            answer: np.ndarray) -> bool:
    """Whether answer [2] = (entity or ABSTAIN, cite) is the oracle's with a correct cite."""
    entity, cites = gold_answer(task, query, documents)
    return int(answer[0]) == entity and int(answer[1]) in cites


def token_rows(task: RagTask, items: dict[str, np.ndarray], *, documents: bool
               ) -> dict[str, np.ndarray]:
    """Chosen and rejected rows [N, T] int32 (module docstring): [hop, q, answer, cite, SEP]
    followed, with the documents, by (DOC, s_j, o_j) for each document and a final SEP
    (T = 3 K + 6); without them T = 5."""
    n = len(items["query"])
    sep = np.full((n, 1), task.sep, np.int32)
    out = {}
    for side in ("chosen", "rejected"):
        parts = [items["query"], items[side], sep]
        if documents:
            docs = items["documents"]
            tag = np.full(docs.shape[:2] + (1,), task.doc, np.int32)
            parts += [np.concatenate([tag, docs], -1).reshape(n, -1), sep]
        out[side] = np.concatenate(parts, -1).astype(np.int32)
    return out
