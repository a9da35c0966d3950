"""TRL's SFT dataset formats: detection (`parse_hf_row`), tokenisation as TRL's SFTTrainer
(`tokenize_sft`: ids, completion-only and assistant-only loss masks, truncation, errors) and
`examples/byom.py:sft` on an SFT dataset."""

import json
import os
import types

import numpy as np
import pytest

from alignax.data import (ByteTokenizer, DataError, HFSource, UnpairedRecord, load_hf_dataset,
                          read_hf_dataset)
from alignax.data.hf_datasets import SFTRecord, parse_hf_row
from alignax.data.chat_template import has_generation_markers, render_generation_spans
from alignax.data.tokenize import tokenize_sft

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
USER = {"role": "user", "content": "What is the capital of France?"}
ANSWER = {"role": "assistant", "content": "Paris is the capital."}
MESSAGES = [SYSTEM, USER, ANSWER, {"role": "user", "content": "the cat"},
            {"role": "assistant", "content": "sat on the mat"}]
ROWS = {"messages": {"messages": MESSAGES},
        "conversational_prompt_completion": {"prompt": [SYSTEM, USER], "completion": [ANSWER]},
        "text": {"text": "the cat sat on the mat"},
        "prompt_completion": {"prompt": "What is the capital", "completion": " of France? Paris."}}
# ChatML with the assistant turns inside generation blocks (the whitespace-trim variant too)
MARKED = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}"
          "{%- generation -%}{{ m['content'] }}<|im_end|>{% endgeneration %}\n{% else %}"
          "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
          "<|im_start|>assistant\n{% endif %}")


def _valid(out, key):
    return out[key][:out["mask"].sum()].tolist()


def _hf_ids(ref, messages, **kwargs):
    """transformers' `apply_chat_template` ids (a dict by default in transformers 5)."""
    return list(ref.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        **kwargs)["input_ids"])


def _save(tmp_path, name, rows):
    import datasets

    path = str(tmp_path / name)
    datasets.Dataset.from_list(rows).save_to_disk(path)
    return path


def test_sft_rows_are_detected_beside_the_other_formats():
    lm = parse_hf_row({"text": "the cat", "id": 3})
    assert lm == SFTRecord(None, "the cat", {"id": 3}) and lm.target_field == "text"
    pc = parse_hf_row(ROWS["prompt_completion"])
    assert (pc.prompt, pc.completion, pc.target_field) == (
        "What is the capital", " of France? Paris.", "completion")
    # prompt + completion + label is KTO's unpaired preference; a null label counts as absent
    assert isinstance(parse_hf_row({**ROWS["prompt_completion"], "label": True}), UnpairedRecord)
    assert isinstance(parse_hf_row({**ROWS["prompt_completion"], "label": None}), SFTRecord)
    chat = parse_hf_row({"messages": MESSAGES, "text": "kept"})  # messages wins, as in TRL
    assert chat.prompt is None and chat.target_field == "messages"
    assert chat.extras == {"text": "kept", "messages": {"messages": MESSAGES}}
    assert chat.completion.startswith("<|system|>\nYou are") and chat.completion.endswith(
        "<|assistant|>\nsat on the mat\n")  # the minimal template, no generation cue
    conv = parse_hf_row(ROWS["conversational_prompt_completion"])
    assert conv.extras["messages"] == ROWS["conversational_prompt_completion"]
    assert conv.prompt.endswith("<|assistant|>\n") and conv.completion == "Paris is the capital.\n"
    tool_turn = parse_hf_row({"prompt": [USER], "completion": [
        {"role": "tool", "content": "42"}, ANSWER]})  # no cue: the completion opens with a tool
    assert tool_turn.prompt == "<|user|>\nWhat is the capital of France?\n"
    assert tool_turn.completion == "<|tool|>\n42\n<|assistant|>\nParis is the capital.\n"


def test_bad_sft_rows_name_dataset_index_and_field(tmp_path):
    cases = [
        ("text", [{"text": "fine"}, {"text": "  "}],
         "text:1: field 'text': empty (or whitespace-only) string"),
        ("chat", [{"messages": [{"role": "user"}]}],
         "chat:0: field 'messages[0].content': missing"),
        ("mixed", [{"prompt": "p", "completion": [ANSWER]}],
         "mixed:0: field 'completion': expected a string like the other field, got list"),
        ("noprompt", [{"completion": "c"}], "noprompt:0: field 'prompt': missing (a "
                                            "prompt-completion row needs 'prompt' and "
                                            "'completion'; add 'label' for an unpaired "
                                            "preference)"),
        ("reserved", [{"prompt": [USER], "completion": [ANSWER], "messages": "x"}],
         "reserved:0: field 'messages': reserved in chat rows"),
    ]
    for name, rows, message in cases:
        with pytest.raises(DataError) as e:
            read_hf_dataset(_save(tmp_path, name, rows))
        assert str(e.value).startswith(message), (name, str(e.value))
        assert e.value.path == name
    with pytest.raises(DataError, match=r"^long:0: field 'text': too long: 7 characters > "
                                        r"max_length=3$"):
        read_hf_dataset(_save(tmp_path, "long", [{"text": "the cat"}]), max_length=3)
    # tokenisation errors through HFSource carry the same prefix
    source = HFSource(load_hf_dataset(str(tmp_path / "long")),
                      lambda r: tokenize_sft(r, ByteTokenizer(), max_length=4))
    with pytest.raises(DataError, match=r"^long:0: field 'text': 9 tokens with bos/eos exceed "
                                        r"max_length=4$"):
        source[0]


class _NoBos:
    """Qwen2-like: no bos, eos 7; letters a.. -> 10.."""

    bos_id, eos_id, pad_id = None, 7, None

    def encode(self, text):
        return [10 + ord(ch) - ord("a") for ch in text]


def test_standard_formats_by_hand():
    tok = ByteTokenizer()  # pad 0, bos 1, eos 2, byte b -> b + 3
    a, b, c = (ord(ch) + 3 for ch in "abc")
    lm = tokenize_sft(parse_hf_row({"text": "ab"}), tok, max_length=6)
    assert _valid(lm, "input_ids") == [1, a, b, 2] and lm["input_ids"][4:].tolist() == [0, 0]
    assert lm["mask"].tolist() == [1, 1, 1, 1, 0, 0]
    assert lm["loss_mask"].tolist() == [1, 1, 1, 1, 0, 0]  # every token
    # completion_only_loss does not apply to language modeling
    only = tokenize_sft(parse_hf_row({"text": "ab"}), tok, max_length=6, completion_only_loss=True)
    np.testing.assert_array_equal(only["loss_mask"], lm["loss_mask"])
    pc = parse_hf_row({"prompt": "ab", "completion": "c"})
    out = tokenize_sft(pc, tok, max_length=6)  # None: completion only (TRL's default)
    assert _valid(out, "input_ids") == [1, a, b, c, 2]
    assert out["loss_mask"].tolist() == [0, 0, 0, 1, 1, 0]
    np.testing.assert_array_equal(
        tokenize_sft(pc, tok, max_length=6, completion_only_loss=True)["loss_mask"],
        out["loss_mask"])
    full = tokenize_sft(pc, tok, max_length=6, completion_only_loss=False)
    assert full["loss_mask"].tolist() == [1, 1, 1, 1, 1, 0]
    # no bos: nothing prepended; no pad: eos pads
    nobos = tokenize_sft(pc, _NoBos(), max_length=6)
    assert nobos["input_ids"].tolist() == [10, 11, 12, 7, 7, 7]
    assert nobos["loss_mask"].tolist() == [0, 0, 1, 1, 0, 0]


def test_eos_is_not_appended_twice():
    from alignax.data import HFTokenizer
    from tests.data import QWEN_SPECIALS, tiny_tokenizer

    tok = HFTokenizer(tiny_tokenizer(), **QWEN_SPECIALS)  # no bos; eos <|im_end|>
    plain = tokenize_sft(parse_hf_row({"text": "the cat"}), tok, max_length=16)
    ended = tokenize_sft(parse_hf_row({"text": "the cat<|im_end|>"}), tok, max_length=16)
    np.testing.assert_array_equal(plain["input_ids"], ended["input_ids"])
    n = plain["mask"].sum()
    assert _valid(plain, "input_ids") == tok.encode("the cat") + [tok.eos_id]
    assert plain["input_ids"][n - 2] != tok.eos_id


def test_conversational_rows_equal_apply_chat_template():
    transformers = pytest.importorskip("transformers")
    from tests.data import LLAMA32, LLAMA_SPECIALS, QWEN3, QWEN_SPECIALS, templated, tiny_tokenizer

    for template, specials in ((LLAMA32, LLAMA_SPECIALS), (QWEN3, QWEN_SPECIALS)):
        ours = templated(template, specials)
        ref = transformers.PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer(),
                                                   chat_template=template, **specials)
        lm = tokenize_sft(parse_hf_row({"messages": MESSAGES}), ours, max_length=160)
        assert _valid(lm, "input_ids") == _hf_ids(ref, MESSAGES)
        assert all(_valid(lm, "loss_mask"))  # every token; no bos/eos added
        row = ROWS["conversational_prompt_completion"]
        pc = tokenize_sft(parse_hf_row(row), ours, max_length=160)
        full = _hf_ids(ref, row["prompt"] + row["completion"])
        prompt = _hf_ids(ref, row["prompt"], add_generation_prompt=True)
        assert _valid(pc, "input_ids") == full and full[:len(prompt)] == prompt
        assert _valid(pc, "loss_mask") == [0] * len(prompt) + [1] * (len(full) - len(prompt))
        assert ours.decode(pc["input_ids"][pc["loss_mask"] == 1], skip_special_tokens=False) == (
            ref.decode(full[len(prompt):], skip_special_tokens=False))
        whole = tokenize_sft(parse_hf_row(row), ours, max_length=160, completion_only_loss=False)
        assert _valid(whole, "loss_mask") == [1] * len(full)
    # a row's tools and chat_template_kwargs reach the template, as in TRL
    tool = {"type": "function", "function": {"name": "capital", "parameters": {}}}
    with_tools = tokenize_sft(parse_hf_row({"messages": MESSAGES[1:3], "tools": json.dumps([tool]),
                                            "chat_template_kwargs": {"enable_thinking": False}}),
                              ours, max_length=160)
    assert _valid(with_tools, "input_ids") == _hf_ids(ref, MESSAGES[1:3], tools=[tool],
                                                      enable_thinking=False)
    bare = tokenize_sft(parse_hf_row({"messages": MESSAGES[1:3]}), ours, max_length=160)
    assert with_tools["mask"].sum() > bare["mask"].sum()  # the tool schema was rendered
    # without a template: the minimal template's strings, with bos/eos
    byte = tokenize_sft(parse_hf_row(row), ByteTokenizer(), max_length=160)
    record = parse_hf_row(row)
    assert _valid(byte, "input_ids") == [1] + ByteTokenizer().encode(
        record.prompt + record.completion) + [2]


def test_assistant_only_loss_masks_the_generation_blocks():
    transformers = pytest.importorskip("transformers")
    from tests.data import QWEN25, QWEN_SPECIALS, templated, tiny_tokenizer

    assert has_generation_markers(MARKED) and not has_generation_markers(QWEN25)
    ours = templated(MARKED, QWEN_SPECIALS)
    ref = transformers.PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer(),
                                               chat_template=MARKED, **QWEN_SPECIALS)
    text, spans = render_generation_spans(MARKED, MESSAGES)
    assert text == ours.apply_chat_template(MESSAGES)
    assert [text[i:j] for i, j in spans] == ["Paris is the capital.<|im_end|>",
                                            "sat on the mat<|im_end|>"]
    want = ref.apply_chat_template(MESSAGES, tokenize=True, return_dict=True,
                                   return_assistant_tokens_mask=True)
    out = tokenize_sft(parse_hf_row({"messages": MESSAGES}), ours, max_length=160,
                       assistant_only_loss=True)
    assert _valid(out, "input_ids") == want["input_ids"]
    assert _valid(out, "loss_mask") == want["assistant_masks"]
    assert ours.decode(out["input_ids"][out["loss_mask"] == 1], skip_special_tokens=False) == (
        "Paris is the capital.<|im_end|>sat on the mat<|im_end|>")
    # prompt-completion: the completion mask times the assistant mask
    row = {"prompt": MESSAGES[:3] + MESSAGES[3:4], "completion": MESSAGES[4:]}
    pc = tokenize_sft(parse_hf_row(row), ours, max_length=160, assistant_only_loss=True)
    assert ours.decode(pc["input_ids"][pc["loss_mask"] == 1], skip_special_tokens=False) == (
        "sat on the mat<|im_end|>")
    # the same conversation with a template override (a training template for the model)
    plain = templated(QWEN25, QWEN_SPECIALS)
    over = tokenize_sft(parse_hf_row({"messages": MESSAGES}), plain, max_length=160,
                        assistant_only_loss=True, chat_template=MARKED)
    np.testing.assert_array_equal(over["loss_mask"], out["loss_mask"])
    # errors: no markers, no template, standard rows, no assistant turn
    with pytest.raises(ValueError, match=r"needs a chat template that marks the assistant turns "
                                         r"with \{% generation %\}"):
        tokenize_sft(parse_hf_row({"messages": MESSAGES}), plain, max_length=160,
                     assistant_only_loss=True)
    with pytest.raises(ValueError, match="the minimal template used here marks no turns"):
        tokenize_sft(parse_hf_row({"messages": MESSAGES}), ByteTokenizer(), max_length=400,
                     assistant_only_loss=True)
    with pytest.raises(DataError, match="text: assistant_only_loss=True needs conversational"):
        tokenize_sft(parse_hf_row({"text": "ab"}), ours, max_length=16, assistant_only_loss=True)
    with pytest.raises(DataError, match="messages: no assistant tokens") as e:
        tokenize_sft(parse_hf_row({"messages": [USER]}), ours, max_length=64,
                     assistant_only_loss=True)
    assert e.value.field == "messages"


def test_truncation_modes_cut_ids_and_loss_mask():
    tok = ByteTokenizer()
    record = parse_hf_row({"prompt": "abcd", "completion": "ef"})  # [1 a b c d e f 2]
    ids = [1] + tok.encode("abcdef") + [2]
    with pytest.raises(DataError, match=r"^completion: 8 tokens with bos/eos exceed "
                                        r"max_length=6$") as e:
        tokenize_sft(record, tok, max_length=6)
    assert e.value.field == "completion"
    start = tokenize_sft(record, tok, max_length=6, truncation_mode="keep_start")
    assert start["input_ids"].tolist() == ids[:6]
    assert start["loss_mask"].tolist() == [0, 0, 0, 0, 0, 1]
    end = tokenize_sft(record, tok, max_length=6, truncation_mode="keep_end")
    assert end["input_ids"].tolist() == ids[2:]
    assert end["loss_mask"].tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(DataError, match=r"no token to train on is left within max_length=5 "
                                        r"\(truncation_mode='keep_start'; TRL drops such rows\)"):
        tokenize_sft(record, tok, max_length=5, truncation_mode="keep_start")
    with pytest.raises(ValueError, match="truncation_mode must be one of"):
        tokenize_sft(record, tok, max_length=6, truncation_mode="left")


def test_same_ids_and_labels_as_trl_sft_trainer():
    """TRL's SFTTrainer._prepare_dataset (trl 1.16: eos, tokenisation, completion and assistant
    masks) on the four formats; loss_mask == (labels != -100)."""
    pytest.importorskip("trl")
    import transformers
    from datasets import Dataset
    from tokenizers import Tokenizer, processors
    from trl import SFTTrainer

    from alignax.data import HFTokenizer
    from tests.data import LLAMA32, LLAMA_SPECIALS, QWEN_SPECIALS, tiny_tokenizer

    qwen = Tokenizer.from_str(tiny_tokenizer().to_str())  # Qwen-like: its tokenizer adds no bos
    qwen.post_processor = processors.ByteLevel(trim_offsets=False)
    for raw, template, specials, assistant_only in (
            (tiny_tokenizer(), LLAMA32, LLAMA_SPECIALS, False),
            (qwen, MARKED, QWEN_SPECIALS, False), (qwen, MARKED, QWEN_SPECIALS, True)):
        ours = HFTokenizer(raw, chat_template=template, **specials)
        ref = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, chat_template=template,
                                                   **specials)
        for name, row in ROWS.items():
            if assistant_only and name in ("text", "prompt_completion"):
                continue  # standard rows: TRL refuses assistant_only_loss, so do we (above)
            args = types.SimpleNamespace(
                dataset_num_proc=None, dataset_text_field="text", max_length=None,
                assistant_only_loss=assistant_only, truncation_mode="keep_start",
                shuffle_dataset=False, seed=0)
            trainer = types.SimpleNamespace(_tokenizer=ref, chat_template=None,
                                            completion_only_loss="prompt" in row)
            want = SFTTrainer._prepare_dataset(trainer, Dataset.from_list([row]), ref, args,
                                               False, None, "t")[0]
            out = tokenize_sft(parse_hf_row(row), ours, max_length=160,
                               assistant_only_loss=assistant_only)
            assert _valid(out, "input_ids") == want["input_ids"], (name, template[:10])
            assert _valid(out, "loss_mask") == [int(x != -100) for x in want["labels"]], name


def test_byom_sft_trains_on_sft_rows(tmp_path):
    """examples/byom.py:sft on a conversational SFT dataset (2 steps, packed, assistant-only loss
    through a training template file), and its data path for prompt-completion rows."""
    import datasets

    from alignax import cli, experiment
    from alignax.data import HFTokenizer
    from tests.experiments import REPO, write_real_world

    world = write_real_world(tmp_path / "world")
    turns = [{"role": "user", "content": "w1 w2 w3"}, {"role": "assistant", "content": "w4 w5"},
             {"role": "user", "content": "w6"}, {"role": "assistant", "content": "w7 w8 w9"}]
    data = _save(tmp_path, "chats", [{"messages": turns}] * 8)
    (tmp_path / "train.jinja").write_text(MARKED)
    workdir = tmp_path / "run"
    assert cli.main(["run", os.path.join(REPO, "examples", "byom.py:sft"), "--workdir",
                     str(workdir), f"--config.model.path={world['lm']}",
                     f"--config.data.path={data}", "--config.data.max_length=24",
                     "--config.data.packing=True", "--config.data.assistant_only_loss=True",
                     f"--config.data.chat_template={tmp_path / 'train.jinja'}",
                     "--config.train.steps=2", "--config.train.batch_size=4",
                     "--config.train.progress=False"]) == 0
    with open(workdir / "summary.json") as f:
        metrics = json.load(f)["results"]["default"]["per_seed"]["0"]
    # 21 tokens a conversation, one per packed row of 24; the loss counts the targets inside
    # the two generation blocks: "w4 w5<|im_end|>" and "w7 w8 w9<|im_end|>"
    assert metrics["tokens"] == 4 * 7 and np.isfinite(metrics["loss"])
    # the data path on prompt-completion rows: tokenize_sft's padded rows, completion-only
    tok = HFTokenizer.from_file(world["lm"])
    rows = [{"prompt": [turns[0]], "completion": [turns[1]]},
            {"prompt": "w1 w2", "completion": "w3"}]
    module = experiment.load_module(os.path.join(REPO, "examples", "byom.py"))
    for row in rows:
        dataset = datasets.Dataset.from_list([row])
        config = experiment.load_config(module, "sft")
        experiment.apply_overrides(config, ["data.max_length=16", "data.cache=False"])
        source, overrides = module.train_data(config, str(tmp_path), tok, dataset)
        want = tokenize_sft(parse_hf_row(row), tok, max_length=16)
        assert overrides == {} and sorted(source[0]) == sorted(want)
        for key, value in want.items():
            np.testing.assert_array_equal(source[0][key], value, err_msg=key)
        assert 0 < want["loss_mask"].sum() < want["mask"].sum()
    # checked before any work (alignax run calls validate): the checkpoint's ChatML has no
    # generation markers, the training template file has
    config = experiment.load_config(module, "sft")
    experiment.apply_overrides(config, [f"model.path={world['lm']}",
                                        "data.assistant_only_loss=True"])
    with pytest.raises(ValueError, match="data.assistant_only_loss needs a chat template that "
                                         "marks the assistant turns"):
        module.validate(config)
    experiment.apply_overrides(config, [f"data.chat_template={tmp_path / 'train.jinja'}"])
    module.validate(config)
    pairs = load_hf_dataset(world["pairs"])
    config = experiment.load_config(module, "sft")
    experiment.apply_overrides(config, ["data.assistant_only_loss=True"])
    with pytest.raises(ValueError, match="data.assistant_only_loss applies to SFT-format rows"):
        module.train_data(config, str(tmp_path), tok, pairs)
    config = experiment.load_config(module, "dpo")
    experiment.apply_overrides(config, ["data.completion_only_loss=False"])
    with pytest.raises(ValueError, match="data.completion_only_loss applies to the sft recipe"):
        module.train_data(config, str(tmp_path), tok, pairs)
