"""Text pairs -> fixed-length token arrays."""

import types

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


# --- conversational pairs rendered with the model's chat template (TRL's layout) ---

EXPLICIT = {"prompt": [{"role": "system", "content": "You are a helpful assistant."},
                       {"role": "user", "content": "What is the capital of France?"}],
            "chosen": [{"role": "assistant", "content": "Paris is the capital."}],
            "rejected": [{"role": "assistant", "content": "the cat sat on the mat"}]}
IMPLICIT = {"chosen": EXPLICIT["prompt"] + EXPLICIT["chosen"],
            "rejected": EXPLICIT["prompt"] + EXPLICIT["rejected"]}


def _templated(template, specials):
    from tests.data import tiny_tokenizer

    from alignax.data import HFTokenizer

    return HFTokenizer(tiny_tokenizer(), chat_template=template, **specials)


def test_conversational_pair_is_the_rendered_conversation_without_added_specials():
    from alignax.data.readers import parse_row
    from tests.data import LLAMA32, LLAMA_SPECIALS, QWEN3, QWEN_SPECIALS

    for template, specials in ((LLAMA32, LLAMA_SPECIALS), (QWEN3, QWEN_SPECIALS)):
        tok = _templated(template, specials)
        explicit = tokenize_pair(parse_row(EXPLICIT), tok, max_length=96)
        implicit = tokenize_pair(parse_row(IMPLICIT), tok, max_length=96)
        for key in explicit:  # the two prompt formats give the same arrays
            np.testing.assert_array_equal(explicit[key], implicit[key], err_msg=key)
        prompt = tok.apply_chat_template(EXPLICIT["prompt"], add_generation_prompt=True,
                                         tokenize=True)
        for side in ("chosen", "rejected"):
            full = tok.apply_chat_template(EXPLICIT["prompt"] + EXPLICIT[side], tokenize=True)
            n = len(full)
            ids, mask = explicit[f"{side}_ids"], explicit[f"{side}_mask"]
            assert ids[:n].tolist() == full and mask.sum() == n  # no added bos/eos
            assert (ids[n:] == tok.pad_id).all()
            response = explicit[f"{side}_response_mask"]
            assert response[:len(prompt)].sum() == 0 and response[len(prompt):n].all()
            assert full[:len(prompt)] == prompt  # these templates: the prompt is a prefix
        bos = tok._tok.token_to_id("<|begin_of_text|>")
        assert explicit["chosen_ids"].tolist().count(bos) == (1 if tok.bos_id is not None else 0)
        # use_chat_template=False: the reader's minimal prompt string, [bos] + ... + [eos]
        plain = tokenize_pair(parse_row(EXPLICIT), tok, max_length=96, use_chat_template=False)
        assert plain["chosen_ids"][plain["chosen_mask"].sum() - 1] == tok.eos_id
    short = {**EXPLICIT, "chosen": [{"role": "assistant", "content": "a"}]}
    n = len(tok.apply_chat_template(short["prompt"] + short["chosen"], tokenize=True))
    with pytest.raises(DataError, match=f"rejected: .* tokens with the chat template exceed "
                                        f"max_length={n}") as e:
        tokenize_pair(parse_row(short), tok, max_length=n)
    assert e.value.field == "rejected"


def test_prompt_that_is_not_a_prefix_of_the_conversation():
    """A generation prompt the full conversation renders differently: the prompt is the common
    prefix of the prompt ids and both conversations (TRL's `common_prefix_length`)."""
    from alignax.data.readers import parse_row
    from alignax.data.tokenize import render_conversational_pair
    from tests.data import QWEN_SPECIALS

    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n"
                "{% endif %}")
    tok = _templated(template, QWEN_SPECIALS)
    prompt, chosen, rejected = render_conversational_pair(parse_row(EXPLICIT).extras["messages"],
                                                          tok)
    assert prompt.endswith("<|im_start|>assistant\n") and not prompt.endswith("<think>\n")
    assert chosen == "Paris is the capital.<|im_end|>\n"
    out = tokenize_pair(parse_row(EXPLICIT), tok, max_length=96)
    full = tok.apply_chat_template(EXPLICIT["prompt"] + EXPLICIT["chosen"], tokenize=True)
    assert out["chosen_ids"][:len(full)].tolist() == full
    assert tok.decode(out["chosen_ids"][out["chosen_response_mask"] == 1],
                      skip_special_tokens=False) == chosen


def test_same_texts_and_ids_as_trl():
    """TRL's maybe_extract_prompt + maybe_apply_chat_template (text), and DPOTrainer's and
    RewardTrainer's dataset preparation (ids) on the same records, explicit and implicit prompts,
    Llama-3.2 and Qwen3."""
    pytest.importorskip("trl")
    import transformers
    from datasets import Dataset
    from trl import DPOTrainer, RewardTrainer
    from trl.data_utils import maybe_apply_chat_template, maybe_extract_prompt

    from alignax.data.readers import parse_row
    from alignax.data.tokenize import render_conversational_pair
    from tests.data import (
        LLAMA32,
        LLAMA_SPECIALS,
        QWEN3,
        QWEN_SPECIALS,
        tiny_tokenizer,
    )

    multi_turn = {"chosen": [{"role": "user", "content": "Tell me a joke."},
                             {"role": "assistant", "content": "the cat sat on the mat"},
                             {"role": "user", "content": "about dogs?"},
                             {"role": "assistant", "content": "a dog sat on a log"}],
                  "rejected": [{"role": "user", "content": "Tell me a joke."},
                               {"role": "assistant", "content": "the cat sat on the mat"},
                               {"role": "user", "content": "about dogs?"},
                               {"role": "assistant", "content": "No."}]}
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=None,
                                 truncation_mode="keep_start")
    for template, specials in ((LLAMA32, LLAMA_SPECIALS), (QWEN3, QWEN_SPECIALS)):
        ours = _templated(template, specials)
        ref = transformers.PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer(),
                                                   chat_template=template, **specials)
        for example in (EXPLICIT, IMPLICIT, multi_turn):
            record = parse_row(example)
            want = maybe_apply_chat_template(maybe_extract_prompt(example), ref)
            got = render_conversational_pair(record.extras["messages"], ours)
            assert got == (want["prompt"], want["chosen"], want["rejected"])
            trl = DPOTrainer._prepare_dataset(types.SimpleNamespace(_tokenizer=ref),
                                              Dataset.from_list([example]), ref, args, "t")[0]
            rm = RewardTrainer._prepare_dataset(None, Dataset.from_list([example]), ref, args,
                                                "t")[0]
            out = tokenize_pair(record, ours, max_length=128)
            n_prompt = len(trl["prompt_ids"])
            for side in ("chosen", "rejected"):
                n = out[f"{side}_mask"].sum()
                assert out[f"{side}_ids"][:n].tolist() == trl["prompt_ids"] + trl[f"{side}_ids"]
                assert out[f"{side}_ids"][:n].tolist() == rm[f"{side}_ids"]  # the RM's sequence
                assert out[f"{side}_response_mask"][:n_prompt].sum() == 0
                assert out[f"{side}_response_mask"][n_prompt:n].all()


def test_prompts_for_sampling_are_left_padded_and_use_the_template():
    from alignax.data.hf_datasets import parse_hf_row
    from alignax.data.tokenize import tokenize_prompt
    from tests.data import QWEN3, QWEN_SPECIALS

    tok = _templated(QWEN3, QWEN_SPECIALS)
    record = parse_hf_row({"prompt": EXPLICIT["prompt"]})
    out = tokenize_prompt(record, tok, max_length=48)
    ids = tok.apply_chat_template(EXPLICIT["prompt"], add_generation_prompt=True, tokenize=True)
    n = len(ids)
    assert out["prompt_ids"][-n:].tolist() == ids and out["prompt_mask"].sum() == n
    assert (out["prompt_ids"][:-n] == tok.pad_id).all() and not out["prompt_mask"][:-n].any()
    # the same prompt from a conversational pair; a string prompt: [bos] + prompt
    pair = tokenize_prompt(parse_hf_row(EXPLICIT), tok, max_length=48)
    np.testing.assert_array_equal(pair["prompt_ids"], out["prompt_ids"])
    plain = tokenize_prompt(parse_hf_row({"prompt": "ab"}), ByteTokenizer(), max_length=4)
    np.testing.assert_array_equal(plain["prompt_ids"], [0, 1, ord("a") + 3, ord("b") + 3])
    np.testing.assert_array_equal(plain["prompt_mask"], [0, 1, 1, 1])
    with pytest.raises(DataError, match="prompt: 3 tokens with bos exceed max_length=2"):
        tokenize_prompt(parse_hf_row({"prompt": "ab"}), ByteTokenizer(), max_length=2)
    # chat_template_kwargs reach the template (Qwen3's enable_thinking=False adds an empty
    # think block after the generation prompt), as TRL's GRPOConfig.chat_template_kwargs
    off = tokenize_prompt(record, tok, max_length=48,
                          chat_template_kwargs={"enable_thinking": False})
    ids_off = tok.apply_chat_template(EXPLICIT["prompt"], add_generation_prompt=True,
                                      tokenize=True, enable_thinking=False)
    assert len(ids_off) > n
    assert off["prompt_ids"][-len(ids_off):].tolist() == ids_off


def test_standard_pairs_bos_as_the_tokenizer_and_trl_add_it():
    """String pairs: `[bos] + prompt + response + [eos]` with the bos only when the tokenizer's
    post-processor prepends it (Llama-like), as TRL's DPOTrainer tokenises them
    (`tokenizer(prompt + response + eos_token)`); none for a Qwen-like tokenizer.json."""
    from tokenizers import Tokenizer, processors

    from alignax.data import HFTokenizer
    from alignax.data.hf_datasets import parse_hf_row
    from tests.data import LLAMA_SPECIALS, QWEN_SPECIALS, tiny_tokenizer

    llama = tiny_tokenizer()  # its post-processor prepends <|begin_of_text|>
    qwen = Tokenizer.from_str(llama.to_str())
    qwen.post_processor = processors.ByteLevel(trim_offsets=False)  # adds nothing
    record = parse_hf_row({"prompt": "What is the capital of France?",
                           "chosen": " Paris is the capital.", "rejected": " the cat sat"})
    bos = llama.token_to_id("<|begin_of_text|>")
    for raw, specials, adds in ((llama, LLAMA_SPECIALS, True), (qwen, LLAMA_SPECIALS, False),
                                (qwen, QWEN_SPECIALS, False)):
        tok = HFTokenizer(raw, **specials)
        assert tok.add_bos is adds
        out = tokenize_pair(record, tok, max_length=40)
        n = out["chosen_mask"].sum()
        # transformers' tokenizer(text) on the joined text, eos token appended as text
        want = raw.encode(record.prompt + record.chosen + specials["eos_token"]).ids
        assert out["chosen_ids"][:n].tolist() == want
        assert bool(out["chosen_ids"][0] == bos) is adds


def test_as_conversation_renders_a_string_pair_with_the_template():
    from alignax.data.readers import parse_row
    from alignax.data.tokenize import as_conversation
    from tests.data import LLAMA32, LLAMA_SPECIALS

    tok = _templated(LLAMA32, LLAMA_SPECIALS)
    pair = PreferenceRecord("What is the capital of France?", "Paris is the capital.",
                            "the cat sat on the mat")
    converted = as_conversation(pair, system="You are a helpful assistant.")
    assert as_conversation(converted) is converted
    want = tokenize_pair(parse_row(EXPLICIT), tok, max_length=96)
    got = tokenize_pair(converted, tok, max_length=96)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_truncation_modes_cut_each_side_and_its_masks():
    tok = ByteTokenizer()
    record = PreferenceRecord("abc", "d", "efghi")  # chosen 6 tokens, rejected 10 with bos/eos
    a, b, c, d, e, f, g, h, i = (ord(ch) + 3 for ch in "abcdefghi")
    start = tokenize_pair(record, tok, max_length=7, truncation_mode="keep_start")
    np.testing.assert_array_equal(start["chosen_ids"], [1, a, b, c, d, 2, 0])  # fits: as before
    np.testing.assert_array_equal(start["rejected_ids"], [1, a, b, c, e, f, g])
    np.testing.assert_array_equal(start["rejected_mask"], [1] * 7)
    np.testing.assert_array_equal(start["rejected_response_mask"], [0, 0, 0, 0, 1, 1, 1])
    end = tokenize_pair(record, tok, max_length=7, truncation_mode="keep_end")
    np.testing.assert_array_equal(end["chosen_ids"], [1, a, b, c, d, 2, 0])
    np.testing.assert_array_equal(end["rejected_ids"], [c, e, f, g, h, i, 2])
    np.testing.assert_array_equal(end["rejected_response_mask"], [0, 1, 1, 1, 1, 1, 1])
    fits = tokenize_pair(PreferenceRecord("ab", "c", "de"), tok, max_length=8)
    for mode in ("keep_start", "keep_end"):  # nothing to cut: the default layout
        same = tokenize_pair(PreferenceRecord("ab", "c", "de"), tok, max_length=8,
                             truncation_mode=mode)
        assert all(np.array_equal(same[k], fits[k]) for k in fits)
    with pytest.raises(DataError, match="rejected: 10 tokens with bos/eos exceed max_length=7"):
        tokenize_pair(record, tok, max_length=7)  # the default mode: "error"


def test_keep_start_refuses_a_prompt_that_fills_max_length_and_modes_are_checked():
    tok = ByteTokenizer()
    with pytest.raises(DataError, match=r"prompt: 4 tokens with bos/eos leave no response token "
                                        r"within max_length=4") as e:
        tokenize_pair(PreferenceRecord("abc", "d", "e"), tok, max_length=4,
                      truncation_mode="keep_start")
    assert e.value.field == "prompt"
    end = tokenize_pair(PreferenceRecord("abc", "d", "e"), tok, max_length=4,
                        truncation_mode="keep_end")
    np.testing.assert_array_equal(end["chosen_response_mask"], [0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"truncation_mode must be one of \('error', "
                                         r"'keep_start', 'keep_end'\), got 'left'"):
        tokenize_pair(PreferenceRecord("a", "b", "c"), tok, max_length=8, truncation_mode="left")
    with pytest.raises(ValueError, match="truncation_mode"):
        tokenize_pairs([], tok, max_length=8, truncation_mode="keep_middle")
