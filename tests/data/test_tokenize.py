"""Text pairs -> fixed-length token arrays."""

import numpy as np
import pytest

from alignax.data import ByteTokenizer, DataError, PreferenceRecord, RatingRecord
from alignax.data.tokenize import check_token_ids, tokenize_pair, tokenize_pairs


def test_layout_of_a_tokenized_pair():
    tok = ByteTokenizer()
    out = tokenize_pair(PreferenceRecord("ab", "c", "de"), tok, max_length=8)
    a, b, c, d, e = (ord(ch) + 3 for ch in "abcde")
    np.testing.assert_array_equal(out["chosen_ids"], [1, a, b, c, 2, 0, 0, 0])
    np.testing.assert_array_equal(out["chosen_mask"], [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(out["chosen_response_mask"], [0, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(out["rejected_ids"], [1, a, b, d, e, 2, 0, 0])
    np.testing.assert_array_equal(out["rejected_response_mask"], [0, 0, 0, 1, 1, 1, 0, 0])


def test_too_long_and_wrong_record_type():
    tok = ByteTokenizer()
    with pytest.raises(DataError, match="rejected: 10 tokens"):
        tokenize_pair(PreferenceRecord("ab", "c", "defghi"), tok, max_length=8)
    with pytest.raises(DataError, match="record 0 is a RatingRecord"):
        tokenize_pairs([RatingRecord("p", "r", {"rating": 1.0})], tok, max_length=8)


class _NoBosTokenizer:
    """Like Qwen2's tokenizer: no bos (None), an eos, and (optionally) no pad."""

    def __init__(self, *, bos_id=None, eos_id=7, pad_id=None):
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id

    def encode(self, text):
        return [10 + ord(ch) - ord("a") for ch in text]


def test_tokenizer_without_bos_prepends_nothing_and_pads_with_eos():
    tok = _NoBosTokenizer()
    out = tokenize_pair(PreferenceRecord("ab", "c", "de"), tok, max_length=6)
    np.testing.assert_array_equal(out["chosen_ids"], [10, 11, 12, 7, 7, 7])  # pad: eos
    np.testing.assert_array_equal(out["chosen_mask"], [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out["chosen_response_mask"], [0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(out["rejected_ids"], [10, 11, 13, 14, 7, 7])
    np.testing.assert_array_equal(out["rejected_response_mask"], [0, 0, 1, 1, 1, 0])
    padded = tokenize_pair(PreferenceRecord("ab", "c", "de"), _NoBosTokenizer(pad_id=0),
                           max_length=6)
    np.testing.assert_array_equal(padded["chosen_ids"], [10, 11, 12, 7, 0, 0])
    with pytest.raises(DataError, match="rejected: 6 tokens with eos exceed max_length=5") as e:
        tokenize_pair(PreferenceRecord("ab", "c", "dfg"), tok, max_length=5)
    assert e.value.field == "rejected"


def test_tokenizer_without_eos_is_one_clear_error():
    with pytest.raises(DataError, match=r"tokenizer _NoBosTokenizer has no eos token \(eos_id is "
                                        r"None\)") as e:
        tokenize_pairs([PreferenceRecord("ab", "c", "de")], _NoBosTokenizer(eos_id=None),
                       max_length=8)
    assert len(str(e.value).splitlines()) == 1


def test_hf_tokenizer_without_bos_tokenizes_pairs(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from alignax.data import HFTokenizer

    vocab = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    raw.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok = HFTokenizer(raw, eos_token="<|endoftext|>")  # Qwen2-like: no bos_token
    assert tok.bos_id is None and tok.pad_id == tok.eos_id == 0
    out = tokenize_pair(PreferenceRecord("ab", "c", "a"), tok, max_length=5)
    np.testing.assert_array_equal(out["chosen_ids"], [1, 2, 3, 0, 0])
    np.testing.assert_array_equal(out["chosen_mask"], [1, 1, 1, 1, 0])


def test_check_token_ids_names_where_the_value_and_the_limit():
    row = tokenize_pair(PreferenceRecord("ab", "c", "de"), ByteTokenizer(), max_length=8)
    check_token_ids(row, 259, max_len=8, where="prefs.jsonl:3")  # in range: no error
    with pytest.raises(DataError) as e:
        check_token_ids(row, 100, where="prefs.jsonl:3")
    # chosen_ids come first; their largest id is 'c' (byte 99) -> 102
    assert str(e.value) == ("prefs.jsonl:3: token id 102 in chosen_ids is outside the model's "
                            "vocabulary [0, 100) (does the tokenizer match the model?)")
    with pytest.raises(DataError, match=r"^batch: token id -1 is outside the model's vocabulary "
                                        r"\[0, 10\)"):
        check_token_ids(np.array([[1, -1]]), 10, where="batch")
    with pytest.raises(DataError, match=r"^batch: sequence length 8 in chosen_ids exceeds the "
                                        r"model's max_len=4 \(its learned position table\)$"):
        check_token_ids(row, 259, max_len=4, where="batch")
    with pytest.raises(ValueError, match="must be integers"):
        check_token_ids(np.zeros((2, 3)), 10)
