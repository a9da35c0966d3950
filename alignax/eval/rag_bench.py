"""Reward models in retrieval-augmented generation: pairs with documents, per-scenario accuracy.

The harness of RAG-RewardBench (Jin et al. 2024, "RAG-RewardBench: Benchmarking Reward Models in
Retrieval Augmented Generation for Preference Alignment", arXiv 2412.13746). A pair holds a
query, the retrieved documents, a chosen and a rejected answer and the scenario (subset) it
tests; the paper's four scenarios are `SUBSETS`: multi-hop reasoning, fine-grained citation,
appropriate abstain and conflict robustness. A reward model scores each answer with the
documents in its input, r(x, D, y), and

    accuracy(subset) = (1 / N_s) sum_{i in s} 1[r(x_i, D_i, y_c,i) > r(x_i, D_i, y_r,i)]

with ties counted as wrong, as in the RewardBench harness (`alignax.eval.rewardbench`, whose
`pairwise_result` computes the accuracies and tie counts here). Reported: each subset's
accuracy with a percentile-bootstrap interval over its pairs (`bootstrap_interval`), the
accuracy over all pairs (every pair weighs the same) with its interval, and the mean of the
subset accuracies (every scenario weighs the same).

Documents in the input. A scalar reward model reads one sequence, so the documents are rendered
into the prompt: `render_prompt` fills `template` ("{documents}" and "{query}") with the
documents, each rendered by `document_template` ("{index}", 1-based, and "{document}"). With a
chat model's tokenizer the rendered prompt becomes the user turn of its chat template
(`alignax.data.tokenize.as_conversation`, as RewardBench scores chat models); every answer is
scored alone (`rewardbench.score_sequences`: fixed-shape batches, scores independent of the
batching).

Generative judges. A judge that compares two answers instead of scoring one (an LLM asked
"which answer is better, A or B?") enters through `judge_scores`: `verdict(query, documents,
answer_a, answer_b)` returns "A", "B" or "tie"; each pair is judged in both orders (chosen
first, then rejected first, so a judge that always says "A" is at chance) and the chosen answer
gets one point per order it wins, the rejected one point per order it wins. The pair is correct
when chosen's points exceed rejected's, so a judge that contradicts itself across the two orders
(or says "tie") scores a tie, which counts as wrong, like a scalar model's tie. The two point
arrays go to `rag_accuracy` like a scalar model's scores.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from alignax.data.errors import DataError
from alignax.data.readers import PreferenceRecord
from alignax.data.tokenize import (as_conversation, check_token_ids, check_truncation_mode,
                                   special_ids, tokenize_pair)
from alignax.eval.rewardbench import pairwise_result, score_sequences

SUBSETS = ("multi_hop", "fine_grained_citation", "appropriate_abstain", "conflict_robustness")
DEFAULT_TEMPLATE = "Documents:\n{documents}\n\nQuestion: {query}"
DEFAULT_DOCUMENT_TEMPLATE = "[{index}] {document}"
VERDICTS = ("A", "B", "tie")


@dataclasses.dataclass
class RagPair:
    """One RAG preference pair: `chosen` is a better answer than `rejected` to `query` given the
    retrieved `documents`; `subset` names the scenario."""

    query: str
    documents: list[str]
    chosen: str
    rejected: str
    subset: str = "default"


def render_prompt(query: str, documents: Sequence[str], *, template: str = DEFAULT_TEMPLATE,
                  document_template: str = DEFAULT_DOCUMENT_TEMPLATE) -> str:
    """The prompt a reward model reads: `template` with "{documents}" = the documents, each
    `document_template` ("{index}" 1-based, "{document}"), joined by newlines, and "{query}".

    Raises:
      ValueError: `template` lacks "{query}" (the documents may be left out on purpose, e.g.
        to score a model without them).
    """
    if "{query}" not in template:
        raise ValueError(f"template={template!r} must contain {{query}}")
    docs = "\n".join(document_template.format(index=i + 1, document=d)
                     for i, d in enumerate(documents))
    return template.replace("{documents}", docs).replace("{query}", query)


def bootstrap_interval(correct: np.ndarray, *, num_resamples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the accuracy mean(correct) over N pairs.

    The N pairs are resampled with replacement `num_resamples` times (numpy
    `default_rng(seed)`), and the interval is the (1 - level) / 2 and (1 + level) / 2 quantiles
    of the resampled accuracies.

    Args:
      correct: [N] 0/1 (or bool) per pair.
      num_resamples: R >= 1.
      level: in (0, 1).
      seed: the resampling seed (the interval is a function of it and `correct`).

    Returns:
      (low, high); (nan, nan) when N = 0.
    """
    correct = np.asarray(correct, np.float64)
    if correct.ndim != 1:
        raise ValueError(f"correct must be [N], got shape {correct.shape}")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = len(correct)
    if n == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, n, (int(num_resamples), n))
    means = correct[idx].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


@dataclasses.dataclass
class RagBenchResult:
    """Per-subset and overall accuracies with bootstrap intervals (see the module docstring).

    `subsets[name]` = {accuracy, num_pairs, ties, ci_low, ci_high}; `ci_low`/`ci_high` are the
    all-pairs accuracy's interval; `subset_mean` averages the subset accuracies.
    """

    accuracy: float
    num_pairs: int
    ci_low: float
    ci_high: float
    subset_mean: float
    subsets: dict[str, dict[str, float]]
    level: float
    chosen_scores: np.ndarray
    rejected_scores: np.ndarray

    def to_json(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "num_pairs": self.num_pairs, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "subset_mean": self.subset_mean,
                "subsets": self.subsets, "level": self.level}

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics: `<prefix>accuracy`, `_ci_low`, `_ci_high`, `<prefix>subset_mean`,
        `<prefix>acc_<subset>` (+ `_ci_low`, `_ci_high`, `_ties`, `_pairs`)."""
        out = {f"{prefix}accuracy": self.accuracy, f"{prefix}accuracy_ci_low": self.ci_low,
               f"{prefix}accuracy_ci_high": self.ci_high, f"{prefix}subset_mean": self.subset_mean,
               f"{prefix}num_pairs": float(self.num_pairs)}
        for name, row in self.subsets.items():
            key = f"{prefix}acc_{name}"
            out[key] = row["accuracy"]
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = row["ci_low"], row["ci_high"]
            out[f"{key}_ties"], out[f"{key}_pairs"] = float(row["ties"]), float(row["num_pairs"])
        return out

    def table(self) -> str:
        """Per-subset rows and the totals, as aligned text."""
        width = max([len(s) for s in self.subsets] + [len("mean over subsets")])
        pct = f"{round(100 * self.level)}% CI"
        lines = [f"{'subset':<{width}}  {'pairs':>6}  {'ties':>5}  {'accuracy':>8}  {pct:>15}"]
        for name, row in self.subsets.items():
            lines.append(f"{name:<{width}}  {int(row['num_pairs']):>6}  {int(row['ties']):>5}  "
                         f"{row['accuracy']:>8.4f}  [{row['ci_low']:.4f}, {row['ci_high']:.4f}]")
        lines.append(f"{'all pairs':<{width}}  {self.num_pairs:>6}  {'':>5}  "
                     f"{self.accuracy:>8.4f}  [{self.ci_low:.4f}, {self.ci_high:.4f}]")
        lines.append(f"{'mean over subsets':<{width}}  {'':>6}  {'':>5}  {self.subset_mean:>8.4f}")
        return "\n".join(lines)


def rag_accuracy(chosen_scores, rejected_scores, subsets: Sequence[str], *,
                 num_resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> RagBenchResult:
    """Accuracies of N scored pairs per subset and overall, with bootstrap intervals.

    accuracy(s) = mean_{i in s} 1[c_i > r_i] (ties wrong: `rewardbench.pairwise_result`); each
    subset's interval is `bootstrap_interval` over its pairs (seed `seed` + its position in
    sorted order), the all-pairs interval over all pairs (seed `seed`).

    Args:
      chosen_scores: [N] scores of the chosen answers (or a judge's points, `judge_scores`).
      rejected_scores: [N] those of the rejected answers.
      subsets: [N] subset names.
      num_resamples, level, seed: the bootstrap's (see `bootstrap_interval`).
    """
    base = pairwise_result(chosen_scores, rejected_scores, subsets)
    c = np.asarray(chosen_scores, np.float64)
    r = np.asarray(rejected_scores, np.float64)
    correct = c > r
    names = np.asarray(list(subsets), dtype=object)
    per = {}
    for k, (name, row) in enumerate(base.subsets.items()):
        low, high = bootstrap_interval(correct[names == name], num_resamples=num_resamples,
                                       level=level, seed=seed + 1 + k)
        per[name] = {**row, "ci_low": low, "ci_high": high}
    low, high = bootstrap_interval(correct, num_resamples=num_resamples, level=level, seed=seed)
    return RagBenchResult(accuracy=base.accuracy, num_pairs=base.num_pairs, ci_low=low,
                          ci_high=high,
                          subset_mean=float(np.mean([v["accuracy"] for v in per.values()])),
                          subsets=per, level=float(level), chosen_scores=base.chosen_scores,
                          rejected_scores=base.rejected_scores)


def _verdict_index(verdict: Any) -> int:
    """ "A" / 1 -> 0 (first wins), "B" / -1 -> 1 (second wins), "tie" / 0 -> 2."""
    table = {"A": 0, "B": 1, "tie": 2, 1: 0, -1: 1, 0: 2}
    key = verdict.strip() if isinstance(verdict, str) else verdict
    if isinstance(key, (bool, np.bool_)) or key not in table:
        raise ValueError(f"a verdict must be one of {VERDICTS} (or 1, -1, 0), got {verdict!r}")
    return table[key]


def judge_scores(verdict: Callable[[str, Sequence[str], str, str], Any],
                 pairs: Sequence[RagPair], *, both_orders: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A pairwise (generative) judge's points for the chosen and the rejected answers.

    For pair i the judge is asked `verdict(query, documents, first, second)` with (chosen,
    rejected) and, with `both_orders`, again with (rejected, chosen); each order the chosen
    answer wins gives it a point, each the rejected answer wins gives that one a point, a tie
    gives none. Fed to `rag_accuracy`, a pair is correct when chosen's points are more than
    rejected's: won in both orders, or in one order with a tie in the other.

    Args:
      verdict: "A" (the first answer is better), "B" or "tie" (or 1, -1, 0).
      pairs: N `RagPair`s.
      both_orders: also judge with the answers swapped (removes a position bias).

    Returns:
      (chosen_points [N], rejected_points [N]) float32.
    """
    chosen = np.zeros(len(pairs), np.float32)
    rejected = np.zeros(len(pairs), np.float32)
    for i, p in enumerate(pairs):
        v = _verdict_index(verdict(p.query, list(p.documents), p.chosen, p.rejected))
        chosen[i] += v == 0
        rejected[i] += v == 1
        if both_orders:
            v = _verdict_index(verdict(p.query, list(p.documents), p.rejected, p.chosen))
            rejected[i] += v == 0
            chosen[i] += v == 1
    return chosen, rejected


def _text(value: Any, field: str, where: str, *, role: str | None = None) -> str:
    """A string field, or the content of the last message (of `role` if given) of a chat list."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(m, Mapping) for m in value):
        messages = [m for m in value if role is None or m.get("role") == role] or list(value)
        content = messages[-1].get("content")
        if isinstance(content, str):
            return content
    raise DataError(f"{where}: field '{field}': expected a string or a list of chat messages, "
                    f"got {type(value).__name__}", field=field)


def read_rag_pairs(source: Any, *, split: str | None = "train", query_field: str = "prompt",
                   documents_field: str = "documents", chosen_field: str = "chosen",
                   rejected_field: str = "rejected", subset_field: str = "subset",
                   default_subset: str = "default") -> list[RagPair]:
    """The RAG pairs of a Hugging Face dataset (anything `alignax.data.load_hf_dataset` reads).

    Args:
      source: a `save_to_disk` folder, data file(s) or a `datasets.Dataset`.
      split: its split.
      query_field: the query: a string, or chat messages (the last user message's content).
      documents_field: a list of strings (a single string is one document); "" for none.
      chosen_field, rejected_field: the answers: strings, or chat messages (the last
        assistant message's content).
      subset_field: the scenario name; a row without it (or "" for the field) is
        `default_subset`.

    Raises:
      DataError: `<dataset>:<row>: field '<field>': <problem>` for a missing or ill-typed
        field.
    """
    import os

    from alignax.data import load_hf_dataset

    data = load_hf_dataset(source, split=split)
    name = (os.path.basename(os.path.normpath(os.fspath(source)))
            if isinstance(source, (str, os.PathLike)) else "dataset")
    out = []
    for i, row in enumerate(data):
        where = f"{name}:{i}"
        for field in (query_field, chosen_field, rejected_field, documents_field):
            if field and row.get(field) is None:
                raise DataError(f"{where}: field '{field}': missing", field=field)
        docs = row[documents_field] if documents_field else []
        if isinstance(docs, str):
            docs = [docs]
        if not isinstance(docs, (list, tuple)) or not all(isinstance(d, str) for d in docs):
            raise DataError(f"{where}: field '{documents_field}': expected a list of strings",
                            field=documents_field)
        subset = row.get(subset_field) if subset_field else None
        out.append(RagPair(query=_text(row[query_field], query_field, where, role="user"),
                           documents=list(docs),
                           chosen=_text(row[chosen_field], chosen_field, where,
                                        role="assistant"),
                           rejected=_text(row[rejected_field], rejected_field, where,
                                          role="assistant"),
                           subset=str(subset) if subset not in (None, "") else default_subset))
    if not out:
        raise DataError(f"no rows in {name}")
    return out


def tokenize_rag_pairs(pairs: Sequence[RagPair], tokenizer, *, max_length: int,
                       template: str = DEFAULT_TEMPLATE,
                       document_template: str = DEFAULT_DOCUMENT_TEMPLATE,
                       chat_template: bool | None = None, system: str | None = None,
                       truncation_mode: str = "error",
                       vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """The pairs as right-padded token rows: the rendered prompt (`render_prompt`) + each answer
    (`tokenize_pair`; with the chat template, the prompt is the user turn).

    Args:
      pairs: N pairs.
      tokenizer: an alignax tokenizer (`ByteTokenizer`, `HFTokenizer`).
      max_length: T.
      template, document_template: see `render_prompt`.
      chat_template: render with the tokenizer's chat template (None: when it has one).
      system: a system message (chat template only).
      truncation_mode: "error", "keep_end" or "keep_start" (`tokenize_pair`).
      vocab_size: the model's vocabulary: every id must be below it (None: not checked).

    Returns:
      {"chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask"}: [N, T] int32.

    Raises:
      DataError: `pair <i> (<subset>): <problem>` for a pair longer than T (with "error") or
        an id outside the vocabulary.
    """
    check_truncation_mode(truncation_mode)
    special_ids(tokenizer)
    has_template = bool(getattr(tokenizer, "has_chat_template", False))
    if chat_template is None:
        chat_template = has_template
    if chat_template and not has_template:
        raise ValueError("chat_template=True: the tokenizer has no chat template")
    if system is not None and not chat_template:
        raise ValueError("a system message needs the chat template")
    rows = []
    for i, p in enumerate(pairs):
        prompt = render_prompt(p.query, p.documents, template=template,
                               document_template=document_template)
        record = PreferenceRecord(prompt, p.chosen, p.rejected)
        if chat_template:
            record = as_conversation(record, system=system)
        try:
            row = tokenize_pair(record, tokenizer, max_length=max_length,
                                use_chat_template=bool(chat_template),
                                truncation_mode=truncation_mode)
        except DataError as e:
            raise DataError(f"pair {i} ({p.subset}): {e}", field=e.field) from None
        if vocab_size is not None:
            check_token_ids(row, vocab_size, where=f"pair {i} ({p.subset})")
        rows.append(row)
    keys = ("chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask")
    return {k: np.stack([r[k] for r in rows]).astype(np.int32) for k in keys}


def evaluate_rag_pairs(pairs: Sequence[RagPair], score_fn: Callable, tokenizer, *,
                       max_length: int, batch_size: int = 8, num_resamples: int = 1000,
                       level: float = 0.95, seed: int = 0, **render) -> RagBenchResult:
    """Scores every answer of `pairs` with a scalar reward model and returns the accuracies.

    Args:
      pairs: N `RagPair`s.
      score_fn: `(ids [b, T], mask [b, T]) -> [b]`, e.g. `rewardbench.reward_score_fn(model,
        params)`.
      tokenizer: see `tokenize_rag_pairs`.
      max_length: T.
      batch_size: sequences per `score_fn` call (the scores do not depend on it).
      num_resamples, level, seed: the bootstrap's (`rag_accuracy`).
      **render: `tokenize_rag_pairs` keywords (template, document_template, chat_template,
        system, truncation_mode, vocab_size).
    """
    rows = tokenize_rag_pairs(pairs, tokenizer, max_length=max_length, **render)
    ids = np.concatenate([rows["chosen_ids"], rows["rejected_ids"]])
    mask = np.concatenate([rows["chosen_mask"], rows["rejected_mask"]])
    scores = score_sequences(score_fn, ids, mask, batch_size=batch_size)
    n = len(pairs)
    return rag_accuracy(scores[:n], scores[n:], [p.subset for p in pairs],
                        num_resamples=num_resamples, level=level, seed=seed)
