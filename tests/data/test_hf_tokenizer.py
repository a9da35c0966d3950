"""The tokenizer.json wrapper, on a tiny BPE trained inside the test (no files shipped)."""

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders

from alignax.data import HFTokenizer

CORPUS = ["the cat sat on the mat", "a dog sat on a log", "the dog and the cat"] * 50


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    path = tmp_path_factory.mktemp("tok")
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "pad_token": "<pad>"}))
    return path


def test_specials_from_tokenizer_config_and_round_trip(folder):
    tok = HFTokenizer.from_file(str(folder))
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    # this tokenizer.json has no post-processor: its bos is never prepended to plain text
    assert not tok.add_bos and HFTokenizer.from_file(str(folder), add_bos=True).add_bos
    ids = tok.encode("the cat sat", add_bos=True, add_eos=True)
    assert ids[0] == 1 and ids[-1] == 2 and max(ids) < tok.vocab_size == len(tok)
    assert tok.decode(ids) == "the cat sat"
    assert tok.encode("the cat") == tok.encode("the cat")  # deterministic
    assert len(tok.encode("the cat sat on the mat")) < len("the cat sat on the mat")  # merges


def test_overrides_errors_and_chat_template(folder):
    tok = HFTokenizer.from_file(str(folder / "tokenizer.json"), eos_token="<unk>")
    # the sibling tokenizer_config.json still gives bos and pad; the override replaces eos
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 3, 0)
    bare = HFTokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")))
    assert bare.bos_id is None and bare.pad_id == 0
    with pytest.raises(ValueError, match="no bos_token"):
        bare.encode("x", add_bos=True)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        HFTokenizer.from_file(str(folder), bos_token="<nope>")
    # no chat template in the folder: alignax's minimal one (transformers' default: no cue)
    assert tok.chat_template is None
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}],
                                     add_generation_prompt=True)
    assert prompt == "<|user|>\nhi\n<|assistant|>\n"
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "<|user|>\nhi\n"
