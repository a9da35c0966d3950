"""Text preference records -> fixed-length token arrays in the pair format the recipes read.

A sequence is `[bos] + prompt + response + [eos]`, right-padded with pad ids to `max_length`:

- `*_ids` [T] int32, `*_mask` [T] (1 on real tokens), `*_response_mask` [T] (1 on the response
  tokens and the eos: the tokens whose log-probs a policy objective counts).

Special tokens come from the tokenizer's `bos_id`, `eos_id` and `pad_id` attributes (see
`special_ids`); any of them may be None (e.g. Qwen2's tokenizer has no bos token):

- no bos (`bos_id` None, or a tokenizer that does not prepend its bos itself: `add_bos` False,
  e.g. an `HFTokenizer` whose tokenizer.json post-processor adds none, like GPT-2's, whose
  bos_token is never added by transformers or TRL): nothing is prepended, the sequence starts
  with the prompt;
- no eos (`eos_id` None): a `DataError`, since a reward head reads, and a policy learns to stop
  at, the eos; give the tokenizer one (e.g. `HFTokenizer.from_file(path, eos_token=...)`);
- no pad (`pad_id` None, or no such attribute): padding uses the eos id (padding is masked out,
  so its id only has to be a valid token).

Conversational records (read from chat messages: `record.extras["messages"]`, see
`alignax.data.readers`) tokenised with a tokenizer that has its own chat template
(`tokenizer.chat_template` not None, e.g. an `HFTokenizer` of an instruct model) are rendered with
that template the way TRL's DPOTrainer does (trl 1.16, `DPOTrainer._prepare_dataset`):

- prompt ids: the prompt messages rendered with `add_generation_prompt=True` and tokenised
  without the tokenizer's own specials (the template writes its BOS, e.g. Llama-3's
  `<|begin_of_text|>`; Qwen has none);
- full ids: prompt + response messages rendered without the generation prompt, tokenised the
  same way;
- the prompt is the longest common prefix of the prompt ids and BOTH full sequences (Qwen3's
  template renders an empty `<think>` block into the final turn only, DeepSeek-R1's inserts a
  token after the generation prompt: the prompt alone is then not a prefix), and each response is
  its full sequence after that prefix;
- no bos is prepended and no eos appended: the template closes the turn itself (`<|eot_id|>`,
  `<|im_end|>\n`), so the sequence is exactly the rendered conversation.

Explicit prompts (`prompt` + one-message `chosen`/`rejected`) and implicit ones (two full
conversations) give the same ids. `render_conversational_pair` gives the same split as text (TRL's
`maybe_apply_chat_template`). With `use_chat_template=False`, or a tokenizer without a template
(`ByteTokenizer`, an `HFTokenizer` whose folder has none), a conversational record is tokenised
like any other: its prompt string in alignax's minimal template, `[bos] + prompt + response +
[eos]`.

Over-long pairs (`truncation_mode`). A side longer than `max_length` is refused by default
(`"error"`: a `DataError` naming the side, which a reader's `skip_invalid` turns into a skipped
row, as TRL's RewardTrainer drops such pairs). TRL's DPOTrainer (trl 1.16,
`DataCollatorForPreference`) truncates instead, each side's whole sequence s = prompt + response
on its own, after tokenisation: `"keep_start"` keeps s[:max_length] (TRL's default; a pair whose
prompt alone has >= max_length tokens is still a `DataError` on field "prompt": TRL drops it,
`DPOTrainer._prepare_dataset`, since no response token would be left), `"keep_end"` keeps
s[-max_length:] (TRL's deprecated mode, and RewardBench's: its pipeline tokenizer truncates on the
left). The masks are cut with the ids. trl 1.16 has no `max_prompt_length` /
`max_completion_length` (older TRL truncated the prompt and the completion first); `max_length`
is its only length key.

`as_conversation` turns a string pair into a one-turn conversation (user prompt, assistant
responses), so that it too is rendered with the model's template (RewardBench's scoring of chat
models). `tokenize_prompt` gives the left-padded prompt arrays online sampling starts from,
with the same template rule (TRL's GRPOTrainer: prompt rendered with the generation prompt).

`check_token_ids` checks token arrays against a model (ids inside its vocabulary, sequences no
longer than its learned position table) before they reach it: out-of-range ids are not an error
inside jit, the embedding lookup returns NaN or a clamped row instead.

SFT examples (`tokenize_sft`: an `alignax.data.hf_datasets.SFTRecord` -> `input_ids`, `mask`,
`loss_mask` [T]) follow TRL's SFTTrainer (trl 1.16, `SFTTrainer._prepare_dataset`):

- language modeling, standard (`{"text"}`): `[bos] + text + [eos]` (bos as above: only where
  the tokenizer prepends it, as `tokenizer(text)` does); the eos is not appended again when the
  text already ends with it (TRL appends `eos_token` unless the text ends with it; the ids end
  with the eos id exactly when the text ends with its special-token string). Loss on every
  token: `completion_only_loss` does not apply.
- prompt-completion, standard (`{"prompt", "completion"}`): the ids of `prompt + completion`
  tokenised as ONE text (`[bos] + ... + [eos]`, as TRL tokenises the joined strings, so tokens
  may merge across the boundary), the prompt being their longest common prefix with the ids of
  `[bos] + prompt` (TRL's `common_prefix_length`). `completion_only_loss` None (TRL's default)
  or True: loss on the tokens after that prefix (the completion and the eos); False: on every
  token.
- conversational (`{"messages"}`, or `prompt` / `completion` lists of messages) with the
  tokenizer's chat template: the conversation rendered and tokenised as transformers'
  `apply_chat_template(..., tokenize=True)` (no bos or eos added: the template writes its own
  and closes each turn); for prompt-completion the prompt is the common prefix of these ids with
  those of the prompt rendered with `add_generation_prompt=True`. A row's `tools` and
  `chat_template_kwargs` reach the template, as in TRL. `assistant_only_loss=True`: loss only on
  the tokens inside the template's `{% generation %}...{% endgeneration %}` blocks (the
  assistant turns; transformers' `return_assistant_tokens_mask`: a token overlapping a block's
  characters counts), intersected with the completion mask where that applies. A template
  without those markers is a ValueError (TRL swaps in a training template of its own for a few
  known models; here pass one, `chat_template=`); a standard row is a DataError, as in TRL.
  Without a template (or `use_chat_template=False`) a conversational record is tokenised like a
  standard one from its minimal-template strings (with bos/eos), and `assistant_only_loss` is a
  ValueError: the minimal template marks no turns.
- over-long examples (`truncation_mode`): "error" (a DataError on the row's field), or cut after
  tokenisation with the loss mask, "keep_start" (TRL's SFT default) or "keep_end"; an example
  left with no loss token is a DataError (TRL drops it).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

from alignax.data.chat_template import (
    has_generation_markers,
    render_generation_spans,
    select_chat_template,
)
from alignax.data.errors import DataError
from alignax.data.hf_datasets import SFTRecord
from alignax.data.readers import PreferenceRecord


def special_ids(tokenizer) -> tuple[int | None, int, int]:
    """The (bos, eos, pad) ids `tokenize_pair` uses (see the module docstring).

    Returns:
      bos (None: no bos is prepended), eos, and pad (the tokenizer's `pad_id`, else eos).

    Raises:
      DataError: the tokenizer has no eos (`eos_id` None or missing).
    """
    bos = getattr(tokenizer, "bos_id", None) if getattr(tokenizer, "add_bos", True) else None
    eos = getattr(tokenizer, "eos_id", None)
    if eos is None:
        raise DataError(f"tokenizer {type(tokenizer).__name__} has no eos token (eos_id is None): "
                        f"every sequence ends with eos; set eos_token in the tokenizer's "
                        f"tokenizer_config.json or pass HFTokenizer.from_file(path, "
                        f"eos_token=...)")
    pad = getattr(tokenizer, "pad_id", None)
    return bos, eos, eos if pad is None else pad


def _conversation(messages: Mapping[str, Any]) -> tuple[list, list, list]:
    """(prompt, full chosen, full rejected) messages of a record's `extras["messages"]`.

    Explicit prompt: `chosen`/`rejected` hold the response message(s) only; implicit: they hold
    the whole conversations, which start with the prompt messages.
    """
    prompt = list(messages["prompt"])
    sides = []
    for side in ("chosen", "rejected"):
        conversation = list(messages[side])
        if not (len(conversation) > len(prompt) and conversation[:len(prompt)] == prompt):
            conversation = prompt + conversation
        sides.append(conversation)
    return prompt, sides[0], sides[1]


def _uses_template(record, tokenizer, use_chat_template: bool) -> bool:
    return (use_chat_template and isinstance(getattr(record, "extras", None), Mapping)
            and isinstance(record.extras.get("messages"), Mapping)
            and getattr(tokenizer, "chat_template", None) is not None)


def _common_prefix(a: Sequence, b: Sequence) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def render_conversational_pair(messages: Mapping[str, Any], tokenizer) -> tuple[str, str, str]:
    """A conversational pair as (prompt, chosen, rejected) text with the tokenizer's template.

    TRL's `maybe_apply_chat_template` (after `maybe_extract_prompt` for implicit prompts): the
    prompt rendered with the generation prompt, cut to its longest common prefix with both
    rendered full conversations; each response is its full conversation after that prefix.

    Args:
      messages: `{"prompt": [...], "chosen": [...], "rejected": [...]}` as the reader stores it
        in `extras["messages"]` (explicit or implicit prompt).
      tokenizer: has `apply_chat_template(messages, add_generation_prompt=..., tokenize=...)`.

    Returns:
      (prompt, chosen, rejected) strings; `prompt + chosen` is the rendered chosen conversation.
    """
    prompt, chosen, rejected = _conversation(messages)
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)
    full = [tokenizer.apply_chat_template(c) for c in (chosen, rejected)]
    n = min(_common_prefix(prompt_text, f) for f in full)
    return prompt_text[:n], full[0][n:], full[1][n:]


def as_conversation(record: PreferenceRecord, *, system: str | None = None) -> PreferenceRecord:
    """A string pair as a one-turn conversation, so that `tokenize_pair` renders it with the
    model's chat template (RewardBench's scoring of chat models: the prompt as a user message,
    each response as the assistant's answer).

    Args:
      record: a pair; one that already holds messages is returned unchanged.
      system: an optional system message placed before the user message.

    Returns:
      A `PreferenceRecord` with the same strings and `extras["messages"]` =
      `{"prompt": [system?, user], "chosen": [assistant], "rejected": [assistant]}`.
    """
    if isinstance(record.extras.get("messages"), Mapping):
        return record
    prompt = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": record.prompt}]
    messages = {"prompt": prompt,
                "chosen": [{"role": "assistant", "content": record.chosen}],
                "rejected": [{"role": "assistant", "content": record.rejected}]}
    return PreferenceRecord(record.prompt, record.chosen, record.rejected,
                            {**record.extras, "messages": messages})


def _template_ids(record: PreferenceRecord, tokenizer) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen response, rejected response) ids of a conversational record (TRL's way)."""
    prompt, chosen, rejected = _conversation(record.extras["messages"])
    prompt_ids = list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True,
                                                    tokenize=True))
    full = [list(tokenizer.apply_chat_template(c, tokenize=True)) for c in (chosen, rejected)]
    n = min(_common_prefix(prompt_ids, f) for f in full)
    return prompt_ids[:n], full[0][n:], full[1][n:]


TRUNCATION_MODES = ("error", "keep_start", "keep_end")


def check_truncation_mode(truncation_mode: str) -> str:
    """`truncation_mode` if it is one of `TRUNCATION_MODES`, else a one-line ValueError."""
    if truncation_mode not in TRUNCATION_MODES:
        raise ValueError(f"truncation_mode must be one of {TRUNCATION_MODES}, got "
                         f"{truncation_mode!r}")
    return truncation_mode


def tokenize_pair(record: PreferenceRecord, tokenizer, *, max_length: int,
                  use_chat_template: bool = True,
                  truncation_mode: str = "error") -> dict[str, np.ndarray]:
    """One PreferenceRecord -> dict of [max_length] arrays (see module docstring).

    Args:
      record: the pair.
      tokenizer: `encode`, `bos_id`/`eos_id`/`pad_id`, and for conversational records
        `chat_template`/`apply_chat_template`.
      max_length: T, the padded length.
      use_chat_template: render a conversational record with the tokenizer's own chat template
        (TRL's layout: no added bos/eos) when it has one; False: always `[bos] + prompt +
        response + [eos]` with the record's prompt string.
      truncation_mode: what a side s = prompt + response longer than T becomes (TRL's
        DPOConfig.truncation_mode, trl 1.16): "error" (the default: a DataError), "keep_start"
        (s[:T], TRL's default; use it to tokenise like TRL's DPOTrainer) or "keep_end" (s[-T:],
        the end of the prompt and the whole response when it fits; RewardBench's left
        truncation). The masks are cut like the ids.

    Raises:
      DataError: the tokenizer has no eos; with "error", a side is longer than `max_length` (its
        `field` is "chosen" or "rejected"); with "keep_start", the prompt alone has
        >= `max_length` tokens (field "prompt": no response token would be left; TRL drops
        such pairs).
      ValueError: an unknown `truncation_mode`.
    """
    check_truncation_mode(truncation_mode)
    bos, eos, pad = special_ids(tokenizer)
    if _uses_template(record, tokenizer, use_chat_template):
        prompt, chosen, rejected = _template_ids(record, tokenizer)
        responses = (("chosen", chosen), ("rejected", rejected))
        specials = "the chat template"
    else:
        prompt = ([] if bos is None else [bos]) + list(tokenizer.encode(record.prompt))
        responses = tuple((side, list(tokenizer.encode(text)) + [eos]) for side, text in
                          (("chosen", record.chosen), ("rejected", record.rejected)))
        specials = "eos" if bos is None else "bos/eos"
    if truncation_mode == "keep_start" and len(prompt) >= max_length:
        raise DataError(f"prompt: {len(prompt)} tokens with {specials} leave no response token "
                        f"within max_length={max_length} (truncation_mode='keep_start')",
                        field="prompt")
    out = {}
    for side, response in responses:
        seq = prompt + response
        is_response = [0] * len(prompt) + [1] * len(response)
        if len(seq) > max_length:
            if truncation_mode == "error":
                raise DataError(f"{side}: {len(seq)} tokens with {specials} exceed "
                                f"max_length={max_length}", field=side)
            cut = slice(None, max_length) if truncation_mode == "keep_start" else slice(
                len(seq) - max_length, None)
            seq, is_response = seq[cut], is_response[cut]
        n = len(seq)
        ids = np.full(max_length, pad, np.int32)
        ids[:n] = seq
        mask = np.zeros(max_length, np.int32)
        mask[:n] = 1
        response_mask = np.zeros(max_length, np.int32)
        response_mask[:n] = is_response
        out[f"{side}_ids"], out[f"{side}_mask"] = ids, mask
        out[f"{side}_response_mask"] = response_mask
    return out


def tokenize_prompt(record, tokenizer, *, max_length: int, use_chat_template: bool = True,
                    chat_template_kwargs: Mapping[str, Any] | None = None
                    ) -> dict[str, np.ndarray]:
    """A prompt -> left-padded [max_length] arrays for online sampling (GRPO, RLOO, PPO, ...).

    Conversational prompts (`record.extras["messages"]["prompt"]`, e.g. a
    `hf_datasets.PromptRecord` or a conversational `PreferenceRecord`) with a tokenizer that has
    its own chat template are rendered with `add_generation_prompt=True` and tokenised without
    added specials, as TRL's GRPOTrainer does; otherwise the ids are `[bos] + prompt` (no bos
    when the tokenizer has none). Left padding puts every prompt's last token in the last
    column, where sampling continues (`alignax.algorithms.online`).

    Args:
      record: has `prompt` (str) and `extras` (a dict).
      tokenizer: as for `tokenize_pair`.
      max_length: P, the padded prompt length.
      use_chat_template: as for `tokenize_pair`.
      chat_template_kwargs: extra variables of the chat template (TRL's GRPOConfig
        `chat_template_kwargs`, e.g. `{"enable_thinking": False}` for Qwen3's template).

    Returns:
      `prompt_ids` [P] int32 (pad id on the left), `prompt_mask` [P] int32 (1 on real tokens).

    Raises:
      DataError: the tokenizer has no eos (its id pads); the prompt is longer than
        `max_length` (field "prompt").
    """
    bos, _, pad = special_ids(tokenizer)
    messages = getattr(record, "extras", {}).get("messages")
    if (use_chat_template and isinstance(messages, Mapping) and "prompt" in messages
            and getattr(tokenizer, "chat_template", None) is not None):
        ids = list(tokenizer.apply_chat_template(messages["prompt"], add_generation_prompt=True,
                                                 tokenize=True, **(chat_template_kwargs or {})))
        specials = "the chat template"
    else:
        ids = ([] if bos is None else [bos]) + list(tokenizer.encode(record.prompt))
        specials = "bos" if bos is not None else "no specials"
    n = len(ids)
    if n > max_length:
        raise DataError(f"prompt: {n} tokens with {specials} exceed max_length={max_length}",
                        field="prompt")
    out_ids = np.full(max_length, pad, np.int32)
    mask = np.zeros(max_length, np.int32)
    if n:
        out_ids[-n:] = ids
        mask[-n:] = 1
    return {"prompt_ids": out_ids, "prompt_mask": mask}


def tokenize_pairs(records: Sequence[PreferenceRecord], tokenizer, *, max_length: int,
                   use_chat_template: bool = True,
                   truncation_mode: str = "error") -> list[dict[str, np.ndarray]]:
    """`tokenize_pair` over records; only PreferenceRecords are accepted."""
    check_truncation_mode(truncation_mode)
    special_ids(tokenizer)  # a tokenizer without eos fails once, before any record
    out = []
    for i, record in enumerate(records):
        if not isinstance(record, PreferenceRecord):
            raise DataError(f"record {i} is a {type(record).__name__}, expected a preference pair")
        out.append(tokenize_pair(record, tokenizer, max_length=max_length,
                                 use_chat_template=use_chat_template,
                                 truncation_mode=truncation_mode))
    return out


def _assistant_ids(tokenizer, messages, *, chat_template, tools, kwargs
                   ) -> tuple[list[int], list[int]]:
    """(ids, assistant mask) of a conversation: transformers' `apply_chat_template(...,
    tokenize=True, return_assistant_tokens_mask=True)`."""
    backend = getattr(tokenizer, "backend", None)
    if backend is None or not hasattr(tokenizer, "special_tokens"):
        raise ValueError(f"assistant_only_loss=True needs an HFTokenizer (token offsets map the "
                         f"template's generation blocks to tokens), got "
                         f"{type(tokenizer).__name__}")
    template = select_chat_template(tokenizer.chat_template, chat_template, tools=tools)
    if not has_generation_markers(template):
        raise ValueError("assistant_only_loss=True needs a chat template that marks the "
                         "assistant turns with {% generation %}...{% endgeneration %}; this one "
                         "has none: pass chat_template= a training template that does (TRL's "
                         "trl.chat_template_utils.get_training_chat_template gives one for "
                         "several models)")
    text, spans = render_generation_spans(template, messages,
                                          special_tokens=tokenizer.special_tokens, tools=tools,
                                          **kwargs)
    encoding = backend.encode(text, add_special_tokens=False)  # = HFTokenizer.encode(text)
    mask = [0] * len(encoding.ids)
    k = 0
    for i, (start, end) in enumerate(encoding.offsets):  # a token overlapping a span counts
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        if k == len(spans):
            break
        if end > spans[k][0]:
            mask[i] = 1
    return list(encoding.ids), mask


def _template_inputs(record) -> tuple[Any, dict[str, Any]]:
    """A row's `tools` (a list, or its JSON string) and `chat_template_kwargs`, as TRL reads
    them."""
    tools = record.extras.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as e:
            raise DataError(f"tools: not valid JSON ({e.msg})", field="tools") from None
    if tools is not None and not isinstance(tools, (list, tuple)):
        raise DataError(f"tools: expected a list of tool schemas, got {type(tools).__name__}",
                        field="tools")
    kwargs = record.extras.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise DataError(f"chat_template_kwargs: expected a mapping, got {type(kwargs).__name__}",
                        field="chat_template_kwargs")
    return tools, dict(kwargs)


def tokenize_sft(record: SFTRecord, tokenizer, *, max_length: int,
                 completion_only_loss: bool | None = None, assistant_only_loss: bool = False,
                 truncation_mode: str = "error", use_chat_template: bool = True,
                 chat_template: str | None = None) -> dict[str, np.ndarray]:
    """One SFT example -> [max_length] arrays, tokenised as TRL's SFTTrainer (module docstring).

    The loss mask marks the tokens whose next-token log-probs the SFT loss counts (TRL's labels
    other than -100; `alignax.algorithms.sft.make_sft_loss` reads token t + 1 as the target of
    position t):

        loss_mask = valid * completion (prompt-completion, completion_only_loss not False)
                          * assistant (assistant_only_loss)

    Args:
      record: an `SFTRecord` (`alignax.data.hf_datasets.parse_hf_row` of a TRL SFT row).
      tokenizer: as for `tokenize_pair`; `assistant_only_loss` needs an `HFTokenizer`.
      max_length: T, the padded length.
      completion_only_loss: TRL's SFTConfig key: None (default) or True trains a
        prompt-completion example on its completion only, False on every token; language
        modeling examples train on every token whatever it is.
      assistant_only_loss: train only on the assistant turns the chat template marks with
        `{% generation %}` blocks (conversational rows only).
      truncation_mode: "error" (default), "keep_start" (TRL's default) or "keep_end".
      use_chat_template: render conversational records with the tokenizer's template (False:
        their minimal-template strings with bos/eos).
      chat_template: a template (string, or a name among the tokenizer's) used in place of the
        tokenizer's own, e.g. a training template with generation markers.

    Returns:
      `input_ids` [T] int32 (pad id after the n real tokens), `mask` [T] int32 (1 on them),
      `loss_mask` [T] int32.

    Raises:
      DataError: the tokenizer has no eos; a record that is not an SFT row; with
        `assistant_only_loss`, a standard row or a conversation without assistant tokens;
        "error" mode and an example longer than T; no loss token (left); bad `tools`. The
        `field` is the row's column (`text`, `messages`, `completion`, ...).
      ValueError: an unknown `truncation_mode`; `assistant_only_loss` without a chat template
        with generation markers.
    """
    check_truncation_mode(truncation_mode)
    bos, eos, pad = special_ids(tokenizer)
    if not isinstance(record, SFTRecord):
        raise DataError(f"expected an SFT row (text, messages or prompt/completion), got a "
                        f"{type(record).__name__}")
    field = record.target_field
    messages = record.extras.get("messages")
    conversational = isinstance(messages, Mapping) and (
        "messages" in messages or "completion" in messages)
    prompt_completion = record.prompt is not None
    if assistant_only_loss and not conversational:
        raise DataError(f"{field}: assistant_only_loss=True needs conversational rows (lists "
                        f"of messages); this row is standard text", field=field)
    templated = use_chat_template and conversational and (
        chat_template is not None or getattr(tokenizer, "chat_template", None) is not None)
    if assistant_only_loss and not templated:
        raise ValueError("assistant_only_loss=True needs the tokenizer's chat template (with "
                         "{% generation %} markers); the minimal template used here marks no "
                         "turns")
    assistant = None
    if templated:
        conversation = (list(messages["prompt"]) + list(messages["completion"])
                        if prompt_completion else list(messages["messages"]))
        tools, kwargs = _template_inputs(record)
        options = dict(kwargs)
        if tools is not None:
            options["tools"] = tools
        if chat_template is not None:
            options["chat_template"] = chat_template
        if assistant_only_loss:
            ids, assistant = _assistant_ids(tokenizer, conversation, chat_template=chat_template,
                                            tools=tools, kwargs=kwargs)
        else:
            ids = list(tokenizer.apply_chat_template(conversation, tokenize=True, **options))
        prompt_ids = list(tokenizer.apply_chat_template(
            messages["prompt"], add_generation_prompt=True, tokenize=True,
            **options)) if prompt_completion else []
        specials = "the chat template"
    else:
        start = [] if bos is None else [bos]
        text = record.completion if not prompt_completion else record.prompt + record.completion
        ids = start + list(tokenizer.encode(text))
        if not ids or ids[-1] != eos:
            ids.append(eos)
        prompt_ids = start + list(tokenizer.encode(record.prompt)) if prompt_completion else []
        specials = "eos" if bos is None else "bos/eos"
    loss = [1] * len(ids)
    if prompt_completion and completion_only_loss is not False:
        n = _common_prefix(prompt_ids, ids)
        loss = [0] * n + [1] * (len(ids) - n)
    if assistant is not None:
        if not any(assistant):
            raise DataError(f"{field}: no assistant tokens: the chat template's generation "
                            f"blocks mark nothing in this conversation", field=field)
        loss = [a * b for a, b in zip(loss, assistant)]
    if not any(loss):
        raise DataError(f"{field}: no token to train on (the loss mask is empty)", field=field)
    if len(ids) > max_length:
        if truncation_mode == "error":
            raise DataError(f"{field}: {len(ids)} tokens with {specials} exceed "
                            f"max_length={max_length}", field=field)
        cut = slice(None, max_length) if truncation_mode == "keep_start" else slice(
            len(ids) - max_length, None)
        ids, loss = ids[cut], loss[cut]
        if not any(loss):
            raise DataError(f"{field}: no token to train on is left within "
                            f"max_length={max_length} (truncation_mode={truncation_mode!r}; "
                            f"TRL drops such rows)", field=field)
    n = len(ids)
    out = {"input_ids": np.full(max_length, pad, np.int32),
           "mask": np.zeros(max_length, np.int32), "loss_mask": np.zeros(max_length, np.int32)}
    out["input_ids"][:n] = ids
    out["mask"][:n] = 1
    out["loss_mask"][:n] = loss
    return out


def check_token_ids(ids, vocab_size: int, max_len: int | None = None, *,
                    where: str = "token ids") -> None:
    """Checks token ids against a model before they are fed to it (outside jit: numpy only).

    Args:
      ids: an int array [..., T], or a dict (e.g. one `tokenize_pair` row or a batch) whose keys
        ending in "_ids" hold such arrays (other keys are ignored).
      vocab_size: the model's vocabulary size; every id must lie in [0, vocab_size).
      max_len: the model's learned position table (None for RoPE models, which have none); the
        sequence length T (the last axis, padding included) must be <= max_len.
      where: what the ids are, to start the message (e.g. "prefs.jsonl:7" or a file name).

    Raises:
      DataError: one line, `<where>: token id 300 in chosen_ids is outside the model's
        vocabulary [0, 259) ...` or `<where>: sequence length 128 exceeds the model's
        max_len=96 ...`.
    """
    if isinstance(ids, Mapping):
        arrays = {k: v for k, v in ids.items() if str(k).endswith("_ids")}
        if not arrays:
            raise ValueError(f"{where}: no '*_ids' entries to check among {sorted(ids)}")
    else:
        arrays = {"": ids}
    for key, value in arrays.items():
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.integer):
            raise ValueError(f"{where}: token ids{' ' + key if key else ''} must be integers, "
                             f"got {value.dtype}")
        name = f" in {key}" if key else ""
        if max_len is not None and value.ndim and value.shape[-1] > max_len:
            raise DataError(f"{where}: sequence length {value.shape[-1]}{name} exceeds the "
                            f"model's max_len={max_len} (its learned position table)")
        if value.size and (value.max() >= vocab_size or value.min() < 0):
            bad = int(value.max()) if value.max() >= vocab_size else int(value.min())
            raise DataError(f"{where}: token id {bad}{name} is outside the model's vocabulary "
                            f"[0, {vocab_size}) (does the tokenizer match the model?)")
