"""The `:real` configs of the experiment modules: the same module on a user's Hugging Face
checkpoint and dataset (docs/byom.md, ":real configs").

`alignax run experiments/<paper>.py:real --config.model.path=/ckpt --config.data.path=/data`
runs a paper's mechanism with the recipes' `model.path` (alignax.algorithms.pretrained) and an
HF dataset in one of TRL's formats (alignax.data.hf_datasets) instead of its toy world. The
pieces every such config shares live here, so that each module adds only its own keys:

- `config_mode(arg)`: "" (the full toy run), "smoke" or "real" (`get_config`'s argument);
- `add_real_fields(c, max_length)`: the keys of a real run, with the memory levers as fields:

      model = {path, dtype, param_dtype, remat, scan_layers, logits_chunk, attention}
      tokenizer = ""                      # a folder with tokenizer.json; "" = model.path
      data = {path, split, max_length, eval_fraction, max_eval_rows, eval_batch_size}
      lora = {rank, alpha}                # rank 0: full fine-tuning
      mesh = {data, fsdp, tensor}         # data -1: the rest of the devices

- `is_real(config)`: whether a config is a `:real` one (it has `model.path`);
- `require(config, *keys)`: the required path keys, one-line ValueError naming the flag;
- `model_config`, `lora_config`, `mesh_config`: the recipe mappings of those fields;
- `held_out_split(n, eval_fraction, max_rows)`: train / validation / test rows of a dataset
  (the last `eval_fraction` rows, at most `data.max_eval_rows`, are test, as many before them
  validation: the toy protocol's three disjoint splits, taken from the user's one file);
- `pair_data` / `prompt_data`: the dataset's rows tokenised with the checkpoint's tokenizer and
  chat template (`tokenize_pair`, `tokenize_prompt`), as a lazy grain source (train pairs) or
  stacked arrays (held-out pairs, prompts);
- `pair_embeddings`: the pairs as frozen checkpoint embeddings (and their user ids), the
  input of the embedding-level reward models (pal, micro);
- `map_in_chunks`: an offline held-out evaluation in row chunks (bounded memory);
- `decode_responses`, `stop_tokens`, `final_answer`: rollout text, stop ids (-1: the eos) and a
  completion's final answer;
- `held_out_prompts`, `split_means`, `choose_iteration`: the online runs' held-out evaluation
  and their validation choice of the iteration (selection.json).

A `:real` run reports metrics; the toy claims are not evaluated on it unless a module says so
(a user's data has no gold reward).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

MODES = ("", "smoke", "real")

# the runtime fields of a checkpoint model (alignax.models.hf.RUNTIME_FIELDS) and the path
MODEL_DEFAULTS = dict(path="", dtype="float32", param_dtype="float32", remat="none",
                      scan_layers=False, logits_chunk=0, attention="auto")


def config_mode(arg: str | None) -> str:
    """`get_config`'s argument -> "" (the full toy setting), "smoke" or "real".

    Raises:
      ValueError: any other argument.
    """
    mode = arg or ""
    if mode not in MODES:
        raise ValueError(f"unknown argument {arg!r}; use nothing, 'smoke' or 'real'")
    return mode


def is_real(config) -> bool:
    """Whether an experiment config is a `:real` one (it has `model.path`)."""
    model = config.get("model") if hasattr(config, "get") else None
    return model is not None and hasattr(model, "keys") and "path" in model


def add_real_fields(c, *, max_length: int = 1024, eval_fraction: float = 0.1,
                    max_eval_rows: int = 256, eval_batch_size: int = 16,
                    **data_extra) -> None:
    """Adds the `:real` keys (see the module docstring) to ConfigDict `c` (unlocked).

    Args:
      c: the experiment's config.
      max_length: `data.max_length`, T of the tokenised rows (prompt + response).
      eval_fraction: `data.eval_fraction`, the share of the rows held out for each of
        validation and test.
      max_eval_rows: `data.max_eval_rows`, at most this many rows in each held-out split (the
        held-out evaluations run as one program; this bounds their memory).
      eval_batch_size: `data.eval_batch_size`, rows per chunk of an offline held-out
        evaluation (`map_in_chunks`; 0: all rows at once).
      **data_extra: more `data` keys of the module (e.g. `answer_field`).
    """
    c.model = dict(MODEL_DEFAULTS)
    c.tokenizer = ""
    # truncation_mode: "error" (an over-long pair is a bad row), "keep_start" (TRL's DPOTrainer)
    # or "keep_end" (RewardBench), alignax.data.tokenize.tokenize_pair
    c.data = dict(path="", split="train", max_length=int(max_length), truncation_mode="error",
                  eval_fraction=float(eval_fraction), max_eval_rows=int(max_eval_rows),
                  eval_batch_size=int(eval_batch_size), **data_extra)
    c.lora = dict(rank=0, alpha=16.0)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)


def _get(config, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def require(config, *keys: str, what: Mapping[str, str] | None = None) -> None:
    """Raises a one-line ValueError for the first of the dotted `keys` that is empty.

    Args:
      config: the experiment config.
      keys: dotted keys that a `:real` run needs (e.g. "model.path", "data.path").
      what: optional description of each key's value for the message.
    """
    what = dict(what or {})
    default = {"model.path": "an HF checkpoint folder", "data.path": "an HF dataset folder or "
               "file in a TRL format"}
    for key in keys:
        if not _get(config, key):
            desc = what.get(key, default.get(key, "a path"))
            raise ValueError(f"{key} is required by the :real config ({desc}); pass "
                             f"--config.{key}=...")
    fraction = float(config.data.eval_fraction)
    if not 0 < fraction < 0.5:
        raise ValueError(f"data.eval_fraction={fraction} must be in (0, 0.5)")
    for key in ("max_eval_rows", "eval_batch_size"):
        value = config.data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (
                1 if key == "max_eval_rows" else 0):
            raise ValueError(f"data.{key}={value!r} must be an int >= "
                             f"{1 if key == 'max_eval_rows' else 0}")


def model_config(config, path: str | None = None) -> dict:
    """The recipe `model` mapping of a `:real` config: `model.*` (with `path` replaced by
    `path` when given, e.g. a reward model's checkpoint sharing the runtime fields)."""
    out = config.model.to_dict()
    if path is not None:
        out["path"] = path
    return out


def lora_config(config) -> dict | None:
    """The recipes' `lora` mapping (None when `lora.rank` is 0: full fine-tuning)."""
    rank = int(config.lora.rank)
    if rank < 0:
        raise ValueError(f"lora.rank={rank} must be >= 0 (0: full fine-tuning)")
    return dict(rank=rank, alpha=float(config.lora.alpha)) if rank else None


def mesh_config(config) -> dict:
    """The recipes' `mesh` mapping ({data, fsdp, tensor} sizes)."""
    return config.mesh.to_dict()


def levers(config) -> dict:
    """The recipe keys every stage of a `:real` run shares: model, mesh and lora."""
    return {"model": model_config(config), "mesh": mesh_config(config),
            "lora": lora_config(config)}


def held_out_split(n: int, eval_fraction: float, max_rows: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (train, validation, test) of a dataset of `n` rows: the last
    k = max(1, round(eval_fraction n)) rows (at most `max_rows`) are test, the k before them
    validation, the rest train.

    Raises:
      ValueError: fewer than one training row would remain.
    """
    k = max(1, int(round(float(eval_fraction) * n)))
    if max_rows is not None:
        k = min(k, int(max_rows))
    if n - 2 * k < 1:
        raise ValueError(f"{n} rows are too few to hold out {k} for validation and {k} for test")
    rows = np.arange(n)
    return rows[:n - 2 * k], rows[n - 2 * k:n - k], rows[n - k:]


def tokenizer(config):
    """The HFTokenizer of `tokenizer` (or `model.path`), with its chat template."""
    from alignax.data import HFTokenizer

    return HFTokenizer.from_file(config.tokenizer or config.model.path)


def dataset(config):
    """The `datasets.Dataset` at `data.path` (split `data.split`)."""
    from alignax.data import load_hf_dataset

    return load_hf_dataset(config.data.path, split=config.data.split or None)


def stack(rows: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A list of same-keyed records -> one dict of stacked arrays."""
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def pair_data(config, tok, data=None) -> dict[str, Any]:
    """The paired rows of `data.path`, tokenised (`tokenize_pair`, the chat template for
    conversational rows) to `data.max_length`, split by `held_out_split`.

    Returns:
      {"train": an HFSource of the training pairs (lazy, resumable), "validation" and "test":
      stacked pair arrays [N, T] (chosen/rejected ids, masks, response masks)}.
    """
    import functools

    from alignax.data import HFSource, PreferenceRecord
    from alignax.data.tokenize import tokenize_pair

    data = dataset(config) if data is None else data
    transform = functools.partial(tokenize_pair, tokenizer=tok,
                                  max_length=int(config.data.max_length),
                                  truncation_mode=config.data.truncation_mode)
    train, val, test = held_out_split(len(data), config.data.eval_fraction,
                                      config.data.max_eval_rows)

    def source(rows):
        return HFSource(data, transform, indices=rows, kinds=(PreferenceRecord,))

    return {"train": source(train),
            "validation": stack([source(val)[i] for i in range(len(val))]),
            "test": stack([source(test)[i] for i in range(len(test))])}


def pair_embeddings(config, *, user_field: str | None = None, prompt: bool = False) -> dict:
    """The dataset's pairs (`data.path`) as frozen embeddings of the checkpoint `model.path`:
    each side tokenised with its chat template (`tokenize_pair`, `data.max_length`,
    `data.truncation_mode`) and pooled at its last token (`alignax.eval.embeddings.
    sequence_embeddings`, in chunks of `data.eval_batch_size` rows; 0: all at once).

    Returns {"chosen", "rejected": [N, D] float32 (prompt + response), "name": the dataset's
    name in messages}; with `prompt`, "prompt": [N, D] (the prompt's tokens of the same rows:
    a causal model's state at the prompt's last token); with `user_field`, "users": [N] int32
    user index in first-seen order and "names": the U user names
    (`alignax.data.hf_datasets.user_ids`).

    Raises:
      DataError: a bad row, a row without `user_field`, an over-long pair (with
        `data.truncation_mode` "error"), each naming the row.
    """
    import functools

    import jax

    from alignax.algorithms import pretrained
    from alignax.data import HFSource, PreferenceRecord
    from alignax.data.hf_datasets import user_ids
    from alignax.data.tokenize import tokenize_pair
    from alignax.eval.embeddings import sequence_embeddings

    source = HFSource(dataset(config), functools.partial(
        tokenize_pair, tokenizer=tokenizer(config), max_length=int(config.data.max_length),
        truncation_mode=config.data.truncation_mode), kinds=(PreferenceRecord,))
    out = {"name": source.name}
    if user_field is not None:
        out["users"], out["names"] = user_ids(
            [source.record(i) for i in range(len(source))], name=source.name, field=user_field)
    tokens = stack([source[i] for i in range(len(source))])
    model, params = pretrained.load_pretrained(model_config(config), "lm")
    params = jax.device_put(params)  # once, not at every chunk
    batch = int(config.data.eval_batch_size) or len(source)
    rows = {side: (tokens[f"{side}_ids"], tokens[f"{side}_mask"])
            for side in ("chosen", "rejected")}
    if prompt:
        rows["prompt"] = (tokens["chosen_ids"],
                          tokens["chosen_mask"] * (1 - tokens["chosen_response_mask"]))
    for k, (ids, mask) in rows.items():
        out[k] = sequence_embeddings(model, params, ids, mask, pool="last", batch_size=batch)
    return out


def prompt_data(config, tok, max_prompt_length: int, data=None,
                fields: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """The prompts of `data.path` (prompt-only rows, or the prompts of any TRL format),
    left-padded for sampling (`tokenize_prompt`), split by `held_out_split`.

    Args:
      config: the `:real` config.
      tok: its tokenizer.
      max_prompt_length: P.
      data: the dataset (default: `dataset(config)`).
      fields: extra columns each row must have (e.g. the reference answer), returned per split.

    Returns:
      {split: {"prompt_ids" [N, P] int32, "prompt_mask" [N, P] bool, "records": [N] records,
      <field>: [N] values}} for split in train / validation / test.

    Raises:
      DataError: a row without one of `fields` (dataset:index: field '<field>': missing).
    """
    from alignax.data import (DataError, HFSource, PreferenceRecord, PromptRecord,
                              UnpairedRecord)
    from alignax.data.tokenize import tokenize_prompt

    data = dataset(config) if data is None else data
    # rows with a prompt (an SFT `text` / `messages` row has none: a DataError naming it)
    source = HFSource(data, lambda r: r, kinds=(PromptRecord, PreferenceRecord, UnpairedRecord))
    splits = dict(zip(("train", "validation", "test"),
                      held_out_split(len(data), config.data.eval_fraction,
                                     config.data.max_eval_rows)))
    out = {}
    for name, rows in splits.items():
        records, tokens = [], []
        for i in rows:
            record = source.record(int(i))
            for field in fields:
                if record.extras.get(field) is None:
                    raise DataError(f"{source.name}:{int(i)}: field '{field}': missing (the "
                                    f":real config reads it)", path=source.name, line=int(i),
                                    field=field)
            records.append(record)
            tokens.append(tokenize_prompt(record, tok, max_length=int(max_prompt_length)))
        arrays = stack(tokens)
        out[name] = {"prompt_ids": arrays["prompt_ids"],
                     "prompt_mask": arrays["prompt_mask"].astype(bool), "records": records,
                     **{f: [r.extras[f] for r in records] for f in fields}}
    return out


def decode_responses(tok, responses, response_mask) -> list[str]:
    """Generated tokens [N, R] with their valid mask [N, R] -> N strings (special tokens
    skipped)."""
    responses, response_mask = np.asarray(responses), np.asarray(response_mask, bool)
    return [tok.decode([int(t) for t in row[m]]) for row, m in zip(responses, response_mask)]


def stop_tokens(tok, configured: Sequence[int] = (-1,)) -> tuple[int, ...]:
    """Stop token ids: -1 stands for the tokenizer's eos."""
    out = []
    for t in configured:
        t = int(t)
        if t == -1:
            if tok.eos_id is None:
                raise ValueError("stop token -1 (the tokenizer's eos) but the tokenizer has no "
                                 "eos token")
            out.append(int(tok.eos_id))
        else:
            out.append(t)
    return tuple(out)


def final_answer(text: str, marker: str = "") -> str | None:
    """The answer a completion ends with: the stripped text after the last `marker` (e.g.
    GSM8K's "####"), or the whole stripped completion when `marker` is ""; None when the
    marker does not occur (no answer given)."""
    if not marker:
        return text.strip()
    head, sep, tail = text.rpartition(marker)
    return tail.strip() if sep else None


def held_out_prompts(data: Mapping[str, Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, int]:
    """The validation then test prompts of `prompt_data` as one batch: ids [N, P], mask [N, P]
    and the number of validation rows (the rest are test), for one compiled eval program."""
    held = [data["validation"], data["test"]]
    return (np.concatenate([d["prompt_ids"] for d in held]),
            np.concatenate([d["prompt_mask"] for d in held]), len(held[0]["prompt_ids"]))


def split_means(values, n_val: int, name: str) -> dict[str, float]:
    """{"val_<name>", "test_<name>"}: the means of `values` [N] over the first `n_val` rows
    and over the rest."""
    values = np.asarray(values, np.float64)
    return {f"val_{name}": float(values[:n_val].mean()),
            f"test_{name}": float(values[n_val:].mean())}


def choose_iteration(history: Sequence[Mapping[str, Any]], signal: str, workdir: str
                     ) -> dict[str, float]:
    """The evaluated row of an online recipe's history with the best validation `signal`
    (e.g. "eval/val_rm"; max, ties to the earliest, `choose_on_validation`), recorded in
    `<workdir>/selection.json` (process 0): its eval metrics without the "eval/" prefix, and
    "chosen_iteration"."""
    import json
    import os

    import jax

    from alignax.tasks.splits import choose_on_validation

    rows = {f"iteration={r['step']}": r for r in history if signal in r}
    if not rows:
        raise ValueError(f"no evaluated iteration has {signal!r}: set eval_every > 0")
    name, record = choose_on_validation(rows, lambda r: r[signal])
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "selection.json"), "w") as f:
            json.dump({**record, "metric": signal}, f, indent=1)
    chosen = rows[name]
    out = {k[len("eval/"):]: float(v) for k, v in chosen.items() if k.startswith("eval/")}
    out["chosen_iteration"] = float(chosen["step"])
    return out


def map_in_chunks(fn, inputs: Mapping[str, Any], chunk: int):
    """`fn` over row chunks of `inputs` (inside jit: `jax.lax.map`, one chunk's activations
    live at a time): `fn(dict of [C, ...]) -> pytree of [C, ...]` applied to chunks of `chunk`
    rows of the [N, ...] arrays (the last chunk padded by repeating the last row, padding
    dropped from the result) -> pytree of [N, ...]. chunk 0 or >= N: `fn(inputs)`, one call."""
    import jax
    import jax.numpy as jnp

    n = next(iter(inputs.values())).shape[0]
    if chunk <= 0 or chunk >= n:
        return fn(dict(inputs))
    m = -(-n // chunk)

    def split(v):
        v = jnp.asarray(v)
        v = jnp.concatenate([v, jnp.repeat(v[-1:], m * chunk - n, 0)])
        return v.reshape(m, chunk, *v.shape[1:])

    out = jax.lax.map(fn, {k: split(v) for k, v in inputs.items()})
    return jax.tree.map(lambda o: o.reshape(m * chunk, *o.shape[2:])[:n], out)


def optimizer(learning_rate: float = 1e-6) -> dict:
    """The online `:real` recipes' optimizer: AdamW, constant `learning_rate`, no weight decay,
    gradient norm clipped at 1."""
    return dict(name="adamw", learning_rate=float(learning_rate), warmup_steps=0,
                schedule="constant", clip_norm=1.0, kwargs=dict(weight_decay=0.0))


def online_config(config, group: str, stops: Sequence[int] | None = None, *,
                  lora: bool = True, **extra) -> dict:
    """An online recipe's config from the `:real` config's group `group` (e.g. "rl"), with
    the run's mesh, its LoRA (`lora=False` for a recipe without adapters), the resolved stop
    tokens (None: keep the group's, e.g. -1 before the tokenizer is read) and `extra` keys."""
    cfg = {**config[group].to_dict(), "mesh": mesh_config(config), **extra}
    if lora:
        cfg["lora"] = lora_config(config)
    if stops is not None:
        cfg["stop_tokens"] = tuple(stops)
    return cfg
