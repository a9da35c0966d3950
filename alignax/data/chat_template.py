r"""A model's own jinja chat template, rendered as transformers' `apply_chat_template` renders it.

A Hugging Face tokenizer folder carries its chat template in one of three places (the same order
of precedence as transformers' loader):

1. `chat_template.jinja` (the default template) and `additional_chat_templates/<name>.jinja`
   (named templates), written by transformers >= 4.50;
2. `tokenizer_config.json["chat_template"]`: a string, or a list of `{"name", "template"}`
   (named templates, e.g. "default" and "tool_use").

`load_chat_template` reads them into a string or a dict name -> string; `select_chat_template`
picks one (a name, else "tool_use" when tools are given and it exists, else "default"), and
`render_chat_template` renders a conversation.

Rendering semantics (those of `transformers.utils.chat_template_utils`, re-implemented here so
that the library needs no transformers at run time; tests compare string-for-string):

- `jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with the
  `loopcontrols` extension (`{% break %}`/`{% continue %}`) and a `{% generation %}` block tag
  that renders its body unchanged (transformers uses it to track assistant tokens;
  `render_generation_spans` renders the same text and returns the character spans of those
  blocks, as `return_assistant_tokens_mask` does, and `has_generation_markers` tells whether a
  template has them);
- globals `raise_exception(msg)` (raises `jinja2.TemplateError`, which `render_chat_template`
  turns into a one-line `ValueError`), `strftime_now(fmt)` (the local time now), a `dict` that
  can only build dicts, and a `namespace` that refuses underscore-prefixed attributes;
- the `tojson` filter is `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
  sort_keys=False)`: no HTML escaping (jinja's own filter escapes `<`, `>`, `&`, `'`);
- template variables: `messages` (message keys whose value is None dropped; a message's
  `reasoning_content`, `thinking` or `reasoning` is copied under `reasoning_content` and
  `thinking`), `add_generation_prompt`, `tools` (None when absent: some templates render tool
  boilerplate for `tools=[]`), `documents`, the tokenizer's special tokens as strings
  (`bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`, `cls_token`, `mask_token`,
  only those it has), and any extra keyword (e.g. Qwen3's `enable_thinking`), which overrides a
  special token of the same name. Everything is rebuilt from plain JSON types first, so the
  sandboxed template never sees a caller's object.
- `continue_final_message=True` renders the conversation so that it ends inside the final
  message's content (for prefilling an assistant answer): transformers' tag-and-cut.

BOS: a template that starts with `{{ bos_token }}` (Llama-3, Gemma, Mistral) writes the BOS
itself; the rendered text must therefore be tokenised WITHOUT the tokenizer's own special tokens
(`add_special_tokens=False`), which is what `HFTokenizer.apply_chat_template(tokenize=True)`
and transformers do. Qwen's templates write no BOS, and Qwen has none.

jinja2 (>= 3.1.6: earlier versions have sandbox escapes, and a template from the Hub is
untrusted code) is imported lazily, only when a template is compiled.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import functools
import json
import os
import re
from typing import Any, Mapping, Sequence

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                       "mask_token")
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
_MIN_JINJA = (3, 1, 6)


def load_chat_template(folder: str | os.PathLike) -> str | dict[str, str] | None:
    """The chat template(s) of a tokenizer folder (see the module docstring for where they live).

    Args:
      folder: a folder holding tokenizer files.

    Returns:
      One template string, a dict name -> template when there are several (named ones), or None
      when the folder has none.

    Raises:
      ValueError: a malformed `chat_template` entry in tokenizer_config.json.
    """
    folder = os.fspath(folder)
    templates: dict[str, str] = {}
    file = os.path.join(folder, CHAT_TEMPLATE_FILE)
    if os.path.isfile(file):
        with open(file, encoding="utf-8") as f:
            templates["default"] = f.read()
    extra = os.path.join(folder, CHAT_TEMPLATE_DIR)
    if os.path.isdir(extra):
        for name in sorted(os.listdir(extra)):
            if name.endswith(".jinja"):
                with open(os.path.join(extra, name), encoding="utf-8") as f:
                    templates[name.removesuffix(".jinja")] = f.read()
    if templates:  # template files take priority over tokenizer_config.json
        return templates["default"] if list(templates) == ["default"] else templates
    config = os.path.join(folder, "tokenizer_config.json")
    if not os.path.isfile(config):
        return None
    with open(config, encoding="utf-8") as f:
        value = json.load(f).get("chat_template")
    return _template_value(value, config)


def _template_value(value: Any, where: str) -> str | dict[str, str] | None:
    """A `chat_template` value (string, list of {"name", "template"}, or dict) -> str | dict."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = []
        for entry in value:
            if not (isinstance(entry, Mapping) and isinstance(entry.get("name"), str)
                    and isinstance(entry.get("template"), str)):
                raise ValueError(f"{where}: chat_template list entries must be "
                                 f"{{'name': str, 'template': str}}, got {entry!r}")
            items.append((entry["name"], entry["template"]))
    else:
        raise ValueError(f"{where}: chat_template must be a string or a list of named templates, "
                         f"got {type(value).__name__}")
    for name, template in items:
        if not isinstance(name, str) or not isinstance(template, str):
            raise ValueError(f"{where}: chat template {name!r} is not a string")
    return dict(items)


def select_chat_template(templates: str | Mapping[str, str] | None, name: str | None = None, *,
                         tools: Sequence[Any] | None = None) -> str:
    """Picks the template to render, as transformers' `get_chat_template` does.

    Args:
      templates: what `load_chat_template` returned (or a tokenizer's `chat_template`).
      name: a template name among several, or a whole template string (used as is); None: the
        tokenizer's default.
      tools: when given and the tokenizer has a "tool_use" template, that one is the default.

    Returns:
      The template string.

    Raises:
      ValueError: no template at all, or several without a "default" and no name.
    """
    if isinstance(templates, Mapping):
        if name is not None:
            return templates.get(name, name)
        if tools is not None and "tool_use" in templates:
            return templates["tool_use"]
        if "default" in templates:
            return templates["default"]
        raise ValueError(f"this tokenizer has several chat templates and none named 'default': "
                         f"pass one of {sorted(templates)} by name")
    if name is not None:
        return name
    if templates is None:
        raise ValueError("this tokenizer has no chat template (no chat_template.jinja and no "
                         "chat_template in tokenizer_config.json): pass chat_template=... or use a "
                         "tokenizer folder that has one")
    return templates


def _plain(value: Any) -> Any:
    """Rebuilds `value` from plain JSON types (anything else becomes "<TypeName>")."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return _plain(value.item())  # numpy scalars
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return f"<{type(value).__name__}>"


def _normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Plain dict messages, None-valued keys dropped, reasoning fields aliased."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError("cannot render an empty conversation: give at least one message")
    out = []
    for m in messages:
        if not isinstance(m, Mapping):
            raise TypeError(f"chat messages must be dicts, got {m!r}")
        m = _plain({k: v for k, v in m.items() if v is not None})
        reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


@functools.lru_cache(maxsize=32)
def compile_chat_template(template: str):
    """The compiled (sandboxed) jinja template; cached per template string.

    Raises:
      ImportError: jinja2 is missing or older than 3.1.6.
      ValueError: the template does not parse (one line, with the jinja message and line).
    """
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    version = tuple(int(p) for p in jinja2.__version__.split(".")[:3] if p.isdigit())
    if version < _MIN_JINJA:
        raise ImportError(f"chat templates need jinja2>=3.1.6 (older versions have sandbox "
                          f"escapes), found {jinja2.__version__}")

    class _Generation(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}`: renders the body unchanged."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(
                lineno)

        def _body(self, caller):
            return caller()

    class _Namespace(jinja2.utils.Namespace):
        """jinja's `namespace`, refusing underscore-prefixed attributes (CPython internals)."""

        def __init__(*args, **kwargs):  # same signature trick as jinja's, so `self=` works
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for key in attrs:
                _Namespace._check(key)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, key, value):
            _Namespace._check(key)
            jinja2.utils.Namespace.__setitem__(self, key, value)

        @staticmethod
        def _check(key):
            if isinstance(key, str) and key.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates cannot set underscore-prefixed namespace attribute {key!r}")

    class _Dict:
        """`dict(...)` in a template builds a dict; the builtin class itself stays out of reach."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now, dict=_Dict(),
                       namespace=_Namespace)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ValueError(f"chat template does not parse: {e.message} (template line "
                         f"{e.lineno})") from None


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    special_tokens: Mapping[str, str] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    **kwargs: Any,
) -> str:
    r"""Renders one conversation with a jinja chat template (semantics in the module docstring).

    Args:
      template: the jinja source (see `select_chat_template`).
      messages: a list of `{"role": str, "content": ..., ...}` (other keys, e.g. `tool_calls`
        or `reasoning_content`, reach the template too).
      add_generation_prompt: end with the header that opens an assistant turn (e.g. Llama-3's
        `<|start_header_id|>assistant<|end_header_id|>\n\n`, Qwen's `<|im_start|>assistant\n`):
        use it for a prompt the model answers.
      continue_final_message: end inside the final message's content instead of closing it
        (for prefilling); exclusive with `add_generation_prompt`.
      special_tokens: the tokenizer's special tokens as strings (`bos_token`, ...).
      tools: JSON-schema tool descriptions, or None (passed as given: `[]` is not None, and
        some templates render tool boilerplate for it).
      documents: `{"title", "text"}` dicts for retrieval templates, or None.
      **kwargs: extra template variables (e.g. `enable_thinking=False`); they override a special
        token of the same name.

    Returns:
      The rendered text.

    Raises:
      ValueError: an empty conversation; the template raised (`raise_exception`) or failed;
        `continue_final_message` with `add_generation_prompt`, or on a template that drops the
        final message.
    """
    import jinja2

    if continue_final_message and add_generation_prompt:
        raise ValueError("continue_final_message and add_generation_prompt are exclusive: the "
                         "first continues the final message, the second opens an assistant turn")
    compiled = compile_chat_template(template)
    chat = _normalize_messages(messages)
    final = None
    if continue_final_message:
        final = chat[-1].get("content")
        if not isinstance(final, str):
            raise ValueError("continue_final_message needs a final message with string content")
        if "content" not in template:
            raise ValueError("continue_final_message: this chat template never reads 'content'")
        chat[-1]["content"] = final + _CONTINUE_TAG
    variables = {**dict(special_tokens or {}), **kwargs}
    try:
        text = compiled.render(messages=chat, tools=None if tools is None else _plain(list(tools)),
                               documents=_plain(documents),
                               add_generation_prompt=bool(add_generation_prompt),
                               **_plain(variables))
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"chat template error: {e}") from None
    if continue_final_message:
        tag = _CONTINUE_TAG.strip()
        if final.strip() not in text or tag not in text:
            raise ValueError("continue_final_message: the rendered chat does not contain the final "
                             "message (the template changes it)")
        cut = text.rindex(tag)
        text = text[:cut] if text[cut:cut + len(_CONTINUE_TAG)] == _CONTINUE_TAG else (
            text[:cut].rstrip())
    return text


# --- assistant spans: which characters the {% generation %} blocks rendered ---------------------

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_SPANS: contextvars.ContextVar = contextvars.ContextVar("alignax_generation_spans", default=None)


def has_generation_markers(template: str) -> bool:
    """Whether a chat template marks the assistant turns with `{% generation %}` blocks (the
    whitespace-trim variants `{%- generation -%}` included; TRL's `has_generation_markers`)."""
    return _GENERATION_TAG.search(template) is not None


@functools.lru_cache(maxsize=32)
def _tracking_template(template: str):
    """`template` compiled in `compile_chat_template`'s sandbox (same globals and filters), its
    `{% generation %}` tag replaced by one that records the character span each block renders
    (transformers' `AssistantTracker`)."""
    import jinja2
    import jinja2.ext

    class _Tracker(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_track"), [], [], body).set_lineno(
                lineno)

        def _track(self, caller):
            text = caller()
            state = _SPANS.get()
            if state is not None:  # the text rendered so far is what `generate` yielded
                blocks, spans = state
                start = sum(len(b) for b in blocks)
                spans.append((start, start + len(text)))
            return text

    env = compile_chat_template(template).environment.overlay()
    for key in [k for k, ext in env.extensions.items() if "generation" in ext.tags]:
        del env.extensions[key]  # the overlay's own copy: the cached template is untouched
    env.add_extension(_Tracker)
    return env.from_string(template)


def render_generation_spans(template: str, messages: Sequence[Mapping[str, Any]], *,
                            special_tokens: Mapping[str, str] | None = None,
                            tools: Sequence[Mapping[str, Any]] | None = None,
                            **kwargs: Any) -> tuple[str, list[tuple[int, int]]]:
    """A conversation rendered as `render_chat_template` renders it, with the character spans
    of its `{% generation %}` blocks (transformers' `return_assistant_tokens_mask` rendering).

    Args:
      template: the jinja source; it should have generation markers (`has_generation_markers`).
      messages: the conversation (rendered without the generation prompt).
      special_tokens: the tokenizer's special tokens as strings.
      tools: tool schemas, or None.
      **kwargs: extra template variables.

    Returns:
      (text, spans): `text[a:b]` for each (a, b) in spans is one block's output, in render
      order.

    Raises:
      ValueError: the template raised or failed (one line).
    """
    import jinja2

    compiled = _tracking_template(template)
    variables = {**dict(special_tokens or {}), **kwargs}
    blocks: list[str] = []
    spans: list[tuple[int, int]] = []
    token = _SPANS.set((blocks, spans))
    try:
        for block in compiled.generate(
                messages=_normalize_messages(messages),
                tools=None if tools is None else _plain(list(tools)), documents=None,
                add_generation_prompt=False, **_plain(variables)):
            blocks.append(block)
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"chat template error: {e}") from None
    finally:
        _SPANS.reset(token)
    return "".join(blocks), spans
