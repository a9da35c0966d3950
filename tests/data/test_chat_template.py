# ruff: noqa: E501  (the templates keep the published templates' long lines)
"""Model chat templates, rendered as transformers renders them (string for string, id for id).

The templates below are modelled on the published ones of Llama-3 / 3.2, Qwen2.5 and Qwen3 (same
constructs: bos_token, strftime_now, namespace, messages[::-1], tojson, reasoning_content,
enable_thinking, raise_exception); the tokenizer is a tiny byte-level BPE trained in the test.
"""

import json

import pytest

from alignax.data.chat_template import (
    load_chat_template,
    render_chat_template,
    select_chat_template,
)
from alignax.data.tokenizers import ByteTokenizer, HFTokenizer
from tests.data import (  # noqa: F401  (shared with test_tokenize / test_unpaired)
    CHATS,
    CORPUS,
    LLAMA3,
    LLAMA32,
    LLAMA_SPECIALS,
    QWEN3,
    QWEN25,
    QWEN_SPECIALS,
    SPECIALS,
    SYSTEM,
    tiny_tokenizer,
)

transformers = pytest.importorskip("transformers")

@pytest.fixture(scope="module")
def raw_tokenizer():
    return tiny_tokenizer()


def _pair(raw, template, specials):
    ref = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, chat_template=template,
                                               **specials)
    ours = HFTokenizer(raw, chat_template=template, **specials)
    return ours, ref


@pytest.mark.parametrize("family,template,specials", [
    ("llama3", LLAMA3, LLAMA_SPECIALS), ("llama3.2", LLAMA32, LLAMA_SPECIALS),
    ("qwen2.5", QWEN25, QWEN_SPECIALS), ("qwen3", QWEN3, QWEN_SPECIALS)])
def test_matches_transformers_text_and_ids(raw_tokenizer, family, template, specials):
    ours, ref = _pair(raw_tokenizer, template, specials)
    for name, chat in CHATS.items():
        for gen in (False, True):
            text = ours.apply_chat_template(chat, add_generation_prompt=gen)
            assert text == ref.apply_chat_template(chat, add_generation_prompt=gen,
                                                   tokenize=False), (family, name, gen)
            ids = ours.apply_chat_template(chat, add_generation_prompt=gen, tokenize=True)
            expected = ref.apply_chat_template(chat, add_generation_prompt=gen, tokenize=True,
                                               return_dict=False)
            assert ids == list(expected), (family, name, gen)
    one = ours.apply_chat_template(CHATS["one_turn"], add_generation_prompt=True, tokenize=True)
    bos = raw_tokenizer.token_to_id("<|begin_of_text|>")
    if family.startswith("llama"):  # the template writes the BOS: exactly one, first
        assert one[0] == bos and one.count(bos) == 1
        assert ours.bos_id == bos
        # the BOS trap the template avoids: the tokenizer's own specials would add a second one
        assert ref(ours.apply_chat_template(CHATS["one_turn"]))["input_ids"][:2] == [bos, bos]
    else:  # Qwen: no BOS token at all
        assert ours.bos_id is None and bos not in one
        assert ours.eos_id == raw_tokenizer.token_to_id("<|im_end|>")


def test_qwen3_reasoning_thinking_switch_and_tools(raw_tokenizer):
    ours, ref = _pair(raw_tokenizer, QWEN3, QWEN_SPECIALS)
    chat = [{"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris.", "reasoning_content": "It is Paris."},
            {"role": "user", "content": "And Italy?"},
            {"role": "assistant", "content": "<think>\nRome, surely.\n</think>\n\nRome."}]
    tools = [{"type": "function", "function": {"name": "café_lookup", "description": "a <b> & 'c'",
                                               "parameters": {"type": "object"}}}]
    cases = [dict(add_generation_prompt=False), dict(add_generation_prompt=True,
                                                     enable_thinking=False),
             dict(tools=tools)]
    for kwargs in cases:
        got = ours.apply_chat_template(chat[:3] if kwargs.get("add_generation_prompt") else chat,
                                       **kwargs)
        want = ref.apply_chat_template(chat[:3] if kwargs.get("add_generation_prompt") else chat,
                                       tokenize=False, **kwargs)
        assert got == want, kwargs
    text = ours.apply_chat_template(chat, tools=tools)
    assert '"name": "café_lookup"' in text and "a <b> & 'c'" in text  # tojson: no escaping
    # transformers' continue_final_message: the text stops inside the final assistant message
    prefill = [{"role": "user", "content": "Capital?"}, {"role": "assistant", "content": "It is"}]
    got = ours.apply_chat_template(prefill, continue_final_message=True)
    assert got == ref.apply_chat_template(prefill, continue_final_message=True, tokenize=False)
    assert got.endswith("It is")


def test_loading_forms_match_transformers(raw_tokenizer, tmp_path):
    raw_tokenizer.save(str(tmp_path / "tokenizer.json"))
    eos = {"__type": "AddedToken", "content": "<|eot_id|>", "special": True}
    config = {"bos_token": "<|begin_of_text|>", "eos_token": eos,
              "unk_token": "<unk>", "tokenizer_class": "PreTrainedTokenizerFast"}
    chat = CHATS["system_multi_turn"]
    forms = {
        "config_string": ({**config, "chat_template": LLAMA3}, None),
        "config_list": ({**config, "chat_template": [{"name": "default", "template": LLAMA3},
                                                     {"name": "tool_use", "template": QWEN25}]},
                        None),
        "jinja_file": (config, LLAMA3),
    }
    for form, (cfg, jinja) in forms.items():
        folder = tmp_path / form
        folder.mkdir()
        (folder / "tokenizer.json").write_bytes((tmp_path / "tokenizer.json").read_bytes())
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
        if jinja is not None:
            (folder / "chat_template.jinja").write_text(jinja)
        ours = HFTokenizer.from_file(str(folder))
        ref = transformers.PreTrainedTokenizerFast.from_pretrained(str(folder))
        assert ours.chat_template == ref.chat_template, form
        assert ours.special_tokens == ref.special_tokens_map, form
        for gen in (False, True):
            assert ours.apply_chat_template(chat, add_generation_prompt=gen, tokenize=True) == list(
                ref.apply_chat_template(chat, add_generation_prompt=gen, return_dict=False)), form
        if form == "config_list":  # named templates: "tool_use" is picked when tools are given
            tools = [{"type": "function", "function": {"name": "f"}}]
            assert ours.apply_chat_template(chat, tools=tools) == ref.apply_chat_template(
                chat, tools=tools, tokenize=False)
            assert ours.apply_chat_template(chat, chat_template="tool_use") == (
                ref.apply_chat_template(chat, chat_template="tool_use", tokenize=False))
    assert load_chat_template(tmp_path / "jinja_file") == LLAMA3
    assert set(load_chat_template(tmp_path / "config_list")) == {"default", "tool_use"}


def test_errors_sandbox_and_fallback(raw_tokenizer):
    with pytest.raises(ValueError, match="this tokenizer has no chat template"):
        select_chat_template(None)
    with pytest.raises(ValueError, match="several chat templates and none named 'default'"):
        select_chat_template({"a": "x", "b": "y"})
    # raise_exception inside the template: one line naming the template's message
    with pytest.raises(ValueError, match="chat template error: Unexpected message role: robot"):
        render_chat_template(QWEN3, [{"role": "robot", "content": "beep"}])
    with pytest.raises(ValueError, match="does not parse"):
        render_chat_template("{% for m in messages %}", [{"role": "user", "content": "x"}])
    # sandboxed and immutable: no mutation of lists, no dunder escape routes
    with pytest.raises(ValueError, match="chat template error"):
        render_chat_template("{{ messages.append(1) }}", [{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="chat template error"):
        render_chat_template("{% set ns = namespace() %}{% set ns._x = 1 %}",
                             [{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="empty conversation"):
        render_chat_template(LLAMA3, [])
    # no model template: alignax's minimal one (also the ByteTokenizer's)
    bare = HFTokenizer(raw_tokenizer, eos_token="<|im_end|>")
    assert not bare.has_chat_template
    chat = CHATS["one_turn"]
    text = "<|user|>\nWhat is the capital of France?\n"
    assert bare.apply_chat_template(chat) == text
    assert bare.apply_chat_template(chat, add_generation_prompt=True) == text + "<|assistant|>\n"
    assert ByteTokenizer().apply_chat_template(chat, add_generation_prompt=True,
                                               tokenize=True) == ByteTokenizer().encode(
        text + "<|assistant|>\n")
    with pytest.raises(ValueError, match="need a model chat template"):
        bare.apply_chat_template(chat, enable_thinking=False)
