"""The RAG reward-model harness (alignax.eval.rag_bench) against hand computations."""

import numpy as np
import pytest

from alignax.data.errors import DataError
from alignax.data.tokenizers import ByteTokenizer
from alignax.eval import rag_bench
from alignax.eval.rag_bench import RagPair


def test_render_prompt():
    text = rag_bench.render_prompt("who?", ["d one", "d two"])
    assert text == "Documents:\n[1] d one\n[2] d two\n\nQuestion: who?"
    assert rag_bench.render_prompt("q", ["x"], template="{query}",
                                   document_template="{document}") == "q"
    assert rag_bench.render_prompt("q", ["x", "y"], template="{documents} | {query}",
                                   document_template="<{index}:{document}>") == "<1:x>\n<2:y> | q"
    with pytest.raises(ValueError, match="must contain"):
        rag_bench.render_prompt("q", [], template="{documents}")


def test_rag_accuracy_by_hand():
    # subset a: win, tie (wrong), loss -> 1/3 with one tie; subset b: two wins -> 1
    chosen = [1.0, 2.0, 3.0, 1.0, 5.0]
    rejected = [0.0, 2.0, 4.0, 0.0, 1.0]
    res = rag_bench.rag_accuracy(chosen, rejected, ["a", "a", "a", "b", "b"], num_resamples=50)
    assert res.subsets["a"]["accuracy"] == pytest.approx(1 / 3)
    assert res.subsets["a"]["ties"] == 1 and res.subsets["a"]["num_pairs"] == 3
    assert res.subsets["b"]["accuracy"] == 1.0 and res.subsets["b"]["ties"] == 0
    # a subset with only correct pairs: every resample is 1
    assert (res.subsets["b"]["ci_low"], res.subsets["b"]["ci_high"]) == (1.0, 1.0)
    assert res.accuracy == pytest.approx(3 / 5) and res.num_pairs == 5
    assert res.subset_mean == pytest.approx((1 / 3 + 1) / 2)
    assert res.ci_low <= res.accuracy <= res.ci_high
    m = res.metrics("test_")
    assert m["test_acc_a"] == pytest.approx(1 / 3) and m["test_acc_b_ties"] == 0.0
    assert m["test_accuracy"] == pytest.approx(0.6) and m["test_acc_a_pairs"] == 3.0
    assert "all pairs" in res.table() and res.to_json()["subsets"]["b"]["accuracy"] == 1.0


def test_bootstrap_interval_by_hand():
    # N = 2 pairs, one right: resampled accuracies 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4
    low, high = rag_bench.bootstrap_interval(np.array([1, 0]), num_resamples=4000, level=0.95)
    assert (low, high) == (0.0, 1.0)
    low, high = rag_bench.bootstrap_interval(np.array([1, 0]), num_resamples=4000, level=0.4)
    assert (low, high) == (0.5, 0.5)  # the 30% and 70% quantiles both fall on 1/2
    # deterministic in the seed; wider with fewer pairs
    x = np.random.default_rng(0).random(200) < 0.7
    assert rag_bench.bootstrap_interval(x, seed=3) == rag_bench.bootstrap_interval(x, seed=3)
    lo_all, hi_all = rag_bench.bootstrap_interval(x)
    lo_few, hi_few = rag_bench.bootstrap_interval(x[:20])
    assert hi_all - lo_all < hi_few - lo_few
    assert lo_all < x.mean() < hi_all
    assert np.isnan(rag_bench.bootstrap_interval(np.zeros(0))[0])
    with pytest.raises(ValueError, match="level"):
        rag_bench.bootstrap_interval(x, level=1.0)


PAIRS = [RagPair("q1", ["doc a"], "good", "bad", "multi_hop"),
         RagPair("q2", ["doc b", "doc c"], "good", "bad", "appropriate_abstain"),
         RagPair("q3", [], "good", "bad", "appropriate_abstain")]


def test_generative_judge_adapter():
    def oracle(query, documents, first, second):
        return "A" if first == "good" else "B"

    def always_a(query, documents, first, second):
        return "A"

    seen = []

    def records(query, documents, first, second):
        seen.append((query, tuple(documents), first, second))
        return 0

    names = [p.subset for p in PAIRS]
    c, r = rag_bench.judge_scores(oracle, PAIRS)
    np.testing.assert_array_equal(c, [2, 2, 2])
    np.testing.assert_array_equal(r, [0, 0, 0])
    assert rag_bench.rag_accuracy(c, r, names).accuracy == 1.0
    # a position-biased judge wins one order and loses the other: a tie, counted wrong
    c, r = rag_bench.judge_scores(always_a, PAIRS)
    np.testing.assert_array_equal(c, [1, 1, 1])
    res = rag_bench.rag_accuracy(c, r, names)
    assert res.accuracy == 0.0 and res.subsets["appropriate_abstain"]["ties"] == 2
    # asked in one order only, the same judge looks perfect
    c, r = rag_bench.judge_scores(always_a, PAIRS, both_orders=False)
    assert rag_bench.rag_accuracy(c, r, names).accuracy == 1.0
    # the judge sees the query, the documents and both orders; 0 (tie) gives no point
    c, r = rag_bench.judge_scores(records, PAIRS[:1])
    assert seen == [("q1", ("doc a",), "good", "bad"), ("q1", ("doc a",), "bad", "good")]
    assert c[0] == r[0] == 0
    with pytest.raises(ValueError, match="verdict"):
        rag_bench.judge_scores(lambda *a: "C", PAIRS)


def _length_score(ids, mask):
    return np.asarray(mask).sum(-1).astype(np.float32)


def test_evaluate_rag_pairs_reads_documents_and_is_batch_independent():
    pairs = [RagPair("q", ["aaaa"], "longer answer", "short", "conflict_robustness"),
             RagPair("q", ["b"], "x", "yy", "conflict_robustness"),
             RagPair("qq", ["c", "d"], "same", "same", "multi_hop")]
    tok = ByteTokenizer()
    rows = rag_bench.tokenize_rag_pairs(pairs, tok, max_length=64)
    prompt = "Documents:\n[1] aaaa\n\nQuestion: q"
    # [bos] + prompt + response + [eos]
    assert rows["chosen_mask"][0].sum() == 1 + len(prompt) + len("longer answer") + 1
    assert rows["rejected_mask"][1].sum() == 1 + len("Documents:\n[1] b\n\nQuestion: q") + 3
    one = rag_bench.evaluate_rag_pairs(pairs, _length_score, tok, max_length=64, batch_size=1)
    three = rag_bench.evaluate_rag_pairs(pairs, _length_score, tok, max_length=64, batch_size=4)
    np.testing.assert_array_equal(one.chosen_scores, three.chosen_scores)
    assert one.subsets["conflict_robustness"]["accuracy"] == 0.5  # longer wins once of two
    assert one.subsets["multi_hop"]["ties"] == 1 and one.subsets["multi_hop"]["accuracy"] == 0.0
    with pytest.raises(DataError, match="pair 0 .conflict_robustness.*max_length"):
        rag_bench.tokenize_rag_pairs(pairs, tok, max_length=8)
    with pytest.raises(DataError, match="outside"):
        rag_bench.tokenize_rag_pairs(pairs, tok, max_length=64, vocab_size=10)
    with pytest.raises(ValueError, match="chat template"):
        rag_bench.tokenize_rag_pairs(pairs, tok, max_length=64, chat_template=True)


def test_read_rag_pairs(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"question": "q1", "ctx": ["d1", "d2"], "chosen": "c1", "rejected": "r1",
             "subset": "multi_hop"},
            {"question": "q2", "ctx": ["d3"], "chosen": "c2", "rejected": "r2", "subset": ""}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "rag"))
    pairs = rag_bench.read_rag_pairs(str(tmp_path / "rag"), query_field="question",
                                     documents_field="ctx")
    assert pairs[0] == RagPair("q1", ["d1", "d2"], "c1", "r1", "multi_hop")
    assert pairs[1].subset == "default" and pairs[1].documents == ["d3"]
    chat = [{"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
             "documents": ["d"], "chosen": [{"role": "assistant", "content": "c"}],
             "rejected": [{"role": "assistant", "content": "r"}]}]
    datasets.Dataset.from_list(chat).save_to_disk(str(tmp_path / "chat"))
    (p,) = rag_bench.read_rag_pairs(str(tmp_path / "chat"))
    assert (p.query, p.chosen, p.rejected, p.subset) == ("q", "c", "r", "default")
    with pytest.raises(DataError, match="rag:0: field 'documents': missing"):
        rag_bench.read_rag_pairs(str(tmp_path / "rag"), query_field="question")
