"""The synthetic retrieval testbed (alignax.tasks.rag): gold oracle, subsets, rows, determinism."""

import numpy as np
import pytest

from alignax.eval import rag_bench
from alignax.tasks import rag

TASK = rag.RagTask(num_entities=16, num_documents=4)


def test_tokens_and_config_errors():
    assert TASK.vocab_size == 16 + 6 + 4
    assert len({TASK.one_hop, TASK.two_hop, TASK.sep, TASK.doc, TASK.abstain, TASK.nocite,
                *map(int, TASK.cite(np.arange(4)))}) == 10
    assert rag.SUBSETS == rag_bench.SUBSETS
    with pytest.raises(ValueError, match="num_documents"):
        rag.RagTask(num_documents=3)
    with pytest.raises(ValueError, match="num_entities"):
        rag.RagTask(num_entities=11, num_documents=4)


def test_gold_oracle_by_hand():
    t = TASK
    one, two = t.one_hop, t.two_hop
    docs = np.array([[5, 6], [1, 2], [1, 2], [1, 3]])
    # one hop about 1: objects 2, 2, 3 -> majority 2, cited by documents 1 or 2
    assert rag.gold_answer(t, np.array([one, 1]), docs) == (2, (int(t.cite(1)), int(t.cite(2))))
    assert rag.is_gold(t, np.array([one, 1]), docs, np.array([2, t.cite(2)]))
    assert not rag.is_gold(t, np.array([one, 1]), docs, np.array([2, t.cite(3)]))
    assert not rag.is_gold(t, np.array([one, 1]), docs, np.array([3, t.cite(3)]))
    # nothing about 9: abstain
    assert rag.gold_answer(t, np.array([one, 9]), docs) == (t.abstain, (t.nocite,))
    # two hops from 5: 5 -> 6, no document about 6: abstain; from 7: 7 -> 1 -> 2 (document 1)
    assert rag.gold_answer(t, np.array([two, 5]), docs) == (t.abstain, (t.nocite,))
    chain = np.array([[7, 1], [1, 2], [8, 9], [10, 11]])
    assert rag.gold_answer(t, np.array([two, 7]), chain) == (2, (int(t.cite(1)),))
    # a tie between two objects: the first in document order
    assert rag.gold_answer(t, np.array([one, 1]), np.array([[1, 4], [1, 3], [0, 0], [2, 2]]))[0] \
        == 4


def test_every_chosen_answer_is_gold_and_no_rejected_one():
    items = rag.make_items(TASK, 40, seed=3)
    assert items["query"].shape == (160, 2) and items["documents"].shape == (160, 4, 2)
    np.testing.assert_array_equal(np.bincount(items["subset"]), [40] * 4)
    for i in range(160):
        q, d = items["query"][i], items["documents"][i]
        assert rag.is_gold(TASK, q, d, items["chosen"][i]), i
        assert not rag.is_gold(TASK, q, d, items["rejected"][i]), i


def test_subset_structure():
    items = rag.make_items(TASK, 20, seed=1)
    sub = {name: items["subset"] == k for k, name in enumerate(rag.SUBSETS)}
    q, docs = items["query"][:, 1], items["documents"]
    about = (docs[..., 0] == q[:, None]).sum(-1)  # documents whose subject is the query
    assert (items["query"][sub["multi_hop"], 0] == TASK.two_hop).all()
    assert (about[sub["multi_hop"]] == 1).all()
    assert (about[sub["conflict_robustness"]] == 3).all()
    assert (about[sub["fine_grained_citation"]] == 1).all()
    # citation pairs differ only in the cited document
    c, r = items["chosen"][sub["fine_grained_citation"]], items["rejected"][
        sub["fine_grained_citation"]]
    assert (c[:, 0] == r[:, 0]).all() and (c[:, 1] != r[:, 1]).all()
    # the abstain subset is balanced: abstention is chosen in half the items, rejected in half
    ab = sub["appropriate_abstain"]
    chosen_abstains = items["chosen"][ab, 0] == TASK.abstain
    assert chosen_abstains.sum() == 10 and (items["rejected"][ab, 0] == TASK.abstain).sum() == 10
    np.testing.assert_array_equal(about[ab] == 0, chosen_abstains)


def test_rows_and_determinism():
    a = rag.make_items(TASK, 8, seed=5)
    b = rag.make_items(TASK, 8, seed=5)
    c = rag.make_items(TASK, 8, seed=6)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["documents"], c["documents"])
    with_docs = rag.token_rows(TASK, a, documents=True)
    without = rag.token_rows(TASK, a, documents=False)
    assert with_docs["chosen"].shape == (32, TASK.row_length(True)) == (32, 18)
    assert without["rejected"].shape == (32, 5)
    row = with_docs["chosen"][0]
    np.testing.assert_array_equal(row[:5], [*a["query"][0], *a["chosen"][0], TASK.sep])
    np.testing.assert_array_equal(row[5:8], [TASK.doc, *a["documents"][0, 0]])
    assert row[-1] == TASK.sep
    # the rows without documents are those with the documents cut out
    np.testing.assert_array_equal(without["chosen"], with_docs["chosen"][:, :5])
    assert with_docs["chosen"].max() < TASK.vocab_size and with_docs["chosen"].dtype == np.int32
