# ruff: noqa: E501  (the templates keep the published templates' long lines)
"""Model chat templates, rendered as transformers renders them (string for string, id for id).

The templates below are modelled on the published ones of Llama-3 / 3.2, Qwen2.5 and Qwen3 (same
constructs: bos_token, strftime_now, namespace, messages[::-1], tojson, reasoning_content,
enable_thinking, raise_exception); the tokenizer is a tiny byte-level BPE trained in the test.
"""

import functools
import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from alignax.data.chat_template import (
    load_chat_template,
    render_chat_template,
    select_chat_template,
)
from alignax.data.tokenizers import ByteTokenizer, HFTokenizer

transformers = pytest.importorskip("transformers")

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
    "<|end_header_id|>\n\n' }}{% endif %}")

LLAMA32 = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {{- message.content | tojson }}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

QWEN3 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {{- '<|im_start|>user\\n<tool_response>\\n' + content + '\\n</tool_response><|im_end|>\\n' }}
    {%- elif message.role != "system" %}
        {{- raise_exception('Unexpected message role: ' + message.role) }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

LLAMA_SPECIALS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
QWEN_SPECIALS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
CORPUS = ["You are a helpful assistant.", "What is the capital of France?", "Paris is the capital.",
          "the cat sat on the mat", "Tell me a joke about dogs.", "system user assistant",
          "<think>let me think</think> Cutting Knowledge Date: December 2023"] * 20

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CHATS = {
    "one_turn": [{"role": "user", "content": "What is the capital of France?"}],
    "system_multi_turn": [SYSTEM, {"role": "user", "content": "Tell me a joke."},
                          {"role": "assistant", "content": " The cat sat on the mat. "},
                          {"role": "user", "content": "Another, about dogs?"}],
    "ends_with_assistant": [SYSTEM, {"role": "user", "content": "Capital of France?"},
                            {"role": "assistant", "content": "Paris."}],
}


@functools.lru_cache(maxsize=1)
def tiny_tokenizer() -> Tokenizer:
    """A byte-level BPE (vocab 420) with Llama-3's and Qwen's special tokens."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    # Like Llama-3's tokenizer.json: the post-processor prepends <|begin_of_text|>, so encoding the
    # rendered text WITH special tokens would give two BOS.
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
        special_tokens=[("<|begin_of_text|>", bos)])
    return tok


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
