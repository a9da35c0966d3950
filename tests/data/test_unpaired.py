"""Unpaired (KTO) records -> fixed-length rows, and TRL's mismatched KL rows."""

import numpy as np
import pytest

from alignax.data import ByteTokenizer, DataError, PreferenceRecord, UnpairedRecord
from alignax.data.unpaired import kl_donors, mismatched_rows, tokenize_unpaired, tokenize_unpaireds

MESSAGES = {"prompt": [{"role": "system", "content": "You are a helpful assistant."},
                       {"role": "user", "content": "What is the capital of France?"}],
            "completion": [{"role": "assistant", "content": "Paris is the capital."}],
            "label": True}


def test_layout_of_a_standard_row():
    out = tokenize_unpaired(UnpairedRecord("ab", "c", False), ByteTokenizer(), max_length=7)
    a, b, c = (ord(ch) + 3 for ch in "abc")
    np.testing.assert_array_equal(out["ids"], [1, a, b, c, 2, 0, 0])
    np.testing.assert_array_equal(out["mask"], [1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out["response_mask"], [0, 0, 0, 1, 1, 0, 0])
    assert out["label"].dtype == bool and not out["label"]
    with pytest.raises(DataError, match="completion: 7 tokens with bos/eos exceed "
                                        "max_length=5") as e:
        tokenize_unpaired(UnpairedRecord("ab", "cde", True), ByteTokenizer(), max_length=5)
    assert e.value.field == "completion"
    with pytest.raises(DataError, match="record 0 is a PreferenceRecord"):
        tokenize_unpaireds([PreferenceRecord("p", "a", "b")], ByteTokenizer(), max_length=8)


def test_conversational_row_is_the_rendered_conversation():
    from alignax.data.hf_datasets import parse_hf_row
    from tests.data import LLAMA32, LLAMA_SPECIALS, QWEN3, QWEN_SPECIALS
    from tests.data import templated as _templated

    record = parse_hf_row(MESSAGES)
    assert isinstance(record, UnpairedRecord) and record.label
    for template, specials in ((LLAMA32, LLAMA_SPECIALS), (QWEN3, QWEN_SPECIALS)):
        tok = _templated(template, specials)
        out = tokenize_unpaired(record, tok, max_length=96)
        prompt = tok.apply_chat_template(MESSAGES["prompt"], add_generation_prompt=True,
                                         tokenize=True)
        full = tok.apply_chat_template(MESSAGES["prompt"] + MESSAGES["completion"],
                                       tokenize=True)
        n = len(full)
        assert out["ids"][:n].tolist() == full and out["mask"].sum() == n  # nothing added
        assert (out["ids"][n:] == tok.pad_id).all()
        assert full[:len(prompt)] == prompt
        assert out["response_mask"][:len(prompt)].sum() == 0
        assert out["response_mask"][len(prompt):n].all()
        assert out["response_mask"].sum() == n - len(prompt)
        plain = tokenize_unpaired(record, tok, max_length=96, use_chat_template=False)
        assert plain["ids"][plain["mask"].sum() - 1] == tok.eos_id


def _rows(rng, b=6, t=10):
    ids = np.zeros((b, t), np.int32)
    mask, resp = np.zeros_like(ids), np.zeros_like(ids)
    for i in range(b):
        p, c = rng.integers(1, 5), rng.integers(1, 6)
        ids[i, :p + c] = rng.integers(3, 30, p + c)
        mask[i, :p + c] = 1
        resp[i, p:p + c] = 1
    return ids, mask, resp


def _by_hand(ids, mask, resp, donors):
    """Each prompt + its donor's completion, cut to T (TRL's collator with max_length=T)."""
    t = ids.shape[1]
    out = []
    for i, j in enumerate(donors):
        prompt = ids[i][(mask[i] == 1) & (resp[i] == 0)].tolist()
        comp = ids[j][resp[j] == 1].tolist()
        out.append(((prompt + comp)[:t], ([0] * len(prompt) + [1] * len(comp))[:t]))
    return out


def test_mismatched_rows_rotate_completions_by_one():
    ids, mask, resp = _rows(np.random.default_rng(0))
    np.testing.assert_array_equal(kl_donors(6), [5, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(kl_donors(6, 3), [2, 0, 1, 5, 3, 4])
    for group in (None, 2, 3):
        kl_ids, kl_mask, kl_resp = map(np.asarray, mismatched_rows(ids, mask, resp,
                                                                   group_size=group))
        for i, (row, comp) in enumerate(_by_hand(ids, mask, resp, kl_donors(6, group))):
            n = len(row)
            assert kl_ids[i, :n].tolist() == row, (group, i)
            assert kl_mask[i].tolist() == [1] * n + [0] * (10 - n)
            assert kl_resp[i, :n].tolist() == comp and kl_resp[i, n:].sum() == 0
    # a prompt + donor completion longer than T is cut to T (the donor's start is kept)
    ids2 = np.array([[5, 6, 7, 8, 9, 0], [10, 11, 12, 13, 14, 15]], np.int32)
    mask2 = np.array([[1, 1, 1, 1, 1, 0], [1] * 6], np.int32)
    resp2 = np.array([[0, 0, 0, 1, 1, 0], [0, 1, 1, 1, 1, 1]], np.int32)
    kl_ids, kl_mask, kl_resp = map(np.asarray, mismatched_rows(ids2, mask2, resp2))
    np.testing.assert_array_equal(kl_ids[0], [5, 6, 7, 11, 12, 13])
    np.testing.assert_array_equal(kl_resp[0], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(kl_ids[1, :3], [10, 8, 9])
    np.testing.assert_array_equal(kl_mask[1], [1, 1, 1, 0, 0, 0])
    for b, g in ((1, None), (6, 4), (6, 1)):
        with pytest.raises(ValueError, match="need a divisor of the batch of at least 2"):
            kl_donors(b, g)


def test_mismatched_rows_equal_trl_collator():
    pytest.importorskip("trl")
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

    ids, mask, resp = _rows(np.random.default_rng(1), b=4, t=8)
    examples = []
    for i in range(4):
        p = int(((mask[i] == 1) & (resp[i] == 0)).sum())
        examples.append({"prompt_ids": ids[i, :p].tolist(),
                         "completion_ids": ids[i][resp[i] == 1].tolist(), "label": True})
    completions = [e["completion_ids"] for e in examples]
    for e, kl in zip(examples, [completions[-1]] + completions[:-1]):  # TRL's add_kl_completion_ids
        e["KL_completion_ids"] = kl
    out = DataCollatorForUnpairedPreference(pad_token_id=0, max_length=8)(examples)
    kl_ids, kl_mask, kl_resp = map(np.asarray, mismatched_rows(ids, mask, resp))
    w = out["KL_input_ids"].shape[1]
    trl_mask = out["KL_attention_mask"].numpy()
    np.testing.assert_array_equal(kl_mask[:, :w], trl_mask)
    assert kl_mask[:, w:].sum() == 0
    np.testing.assert_array_equal(kl_resp[:, :w], out["KL_completion_mask"].numpy())
    np.testing.assert_array_equal(np.where(trl_mask == 1, kl_ids[:, :w], 0),
                                  out["KL_input_ids"].numpy())
    np.testing.assert_array_equal(np.where(out["attention_mask"].numpy() == 1,
                                           ids[:, :out["input_ids"].shape[1]], 0),
                                  out["input_ids"].numpy())


def test_hf_dataset_of_unpaired_rows_streams_tokenized_rows():
    datasets = pytest.importorskip("datasets")
    import functools

    from alignax.data import HFSource

    ds = datasets.Dataset.from_list([{"prompt": "ab", "completion": "c", "label": True},
                                     {"prompt": "ab", "completion": "cdefgh", "label": False}])
    source = HFSource(ds, functools.partial(tokenize_unpaired, tokenizer=ByteTokenizer(),
                                            max_length=8),
                      name="kto", kinds=(UnpairedRecord,))
    row = source[0]
    expected = tokenize_unpaired(UnpairedRecord("ab", "c", True), ByteTokenizer(), max_length=8)
    for key in expected:
        np.testing.assert_array_equal(row[key], expected[key], err_msg=key)
    with pytest.raises(DataError, match="kto:1: field 'completion': 10 tokens with bos/eos "
                                        "exceed max_length=8"):
        source[1]
