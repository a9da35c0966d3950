"""Bring your own model (docs/byom.md): SFT, a reward model, DPO or GRPO from a Hugging Face
checkpoint folder and a Hugging Face dataset, with the memory levers as config fields.

    alignax run examples/byom.py:dpo --workdir runs/dpo \
        --config.model.path=/ckpt/Qwen2.5-0.5B-Instruct --config.data.path=/data/prefs

`:sft` trains on a dataset in one of TRL's SFT formats (`{"text"}`, `{"messages"}`, `{"prompt",
"completion"}` as strings or messages; `alignax.data.tokenize.tokenize_sft`, TRL's
`completion_only_loss` / `assistant_only_loss` as `data.*` fields), or on the chosen responses
of preference rows (completion-only loss; the format is read from the first row), `:rm` a
Bradley-Terry reward model (the checkpoint's backbone and a new score head, or a
sequence-classification checkpoint's own), `:dpo` DPO with policy and reference from the
checkpoint, `:grpo` GRPO on the dataset's prompts rewarded by the reward model at
`grpo.reward_model` (on one process or several: each process scores its own rollouts with its
copy of the reward model; alignax.algorithms.online.rewards_where_sampled). Rows are rendered
with the tokenizer's own chat template when they are conversational (`alignax.data.tokenize`).

Data (`data.*`): the rows are tokenised once into an on-disk cache (`data.cache`, in
`data.cache_dir`, default `<workdir>/token_cache`; `alignax.data.token_cache`), keyed by the
dataset, the tokenizer and its chat template, and `data.max_length`: a restarted or repeated run
reads the tokens instead of tokenising again, and a killed tokenisation resumes at its last
finished chunk. `data.packing=True` (:sft, :rm and :dpo) packs several examples per row of
`data.pack_length` tokens (0: max_length for :sft, 2 * max_length for :rm and :dpo) with integer
segment ids (`alignax.data.packing`, best-fit decreasing as TRL's packing=True; for :dpo TRL's
padding_free, the log-probs summed per segment); `train.batch_size` then counts packed rows.
"""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alignax.algorithms import direct, policy_gradient, pretrained, reward_model, sft
from alignax.data import (HFSource, HFTokenizer, PreferenceRecord, PromptRecord, UnpairedRecord,
                          load_hf_dataset)
from alignax.data.chat_template import has_generation_markers, select_chat_template
from alignax.data.errors import DataError
from alignax.data.hf_datasets import SFTRecord
from alignax.data.packing import PaddedSource, unpad_pair, unpad_sequence
from alignax.data.token_cache import build_token_cache, cache_key
from alignax.data.tokenize import (
    special_ids,
    tokenize_pair,
    tokenize_prompt,
    tokenize_sft,
)

RECIPES = {"sft": sft, "rm": reward_model, "dpo": direct}


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    c.recipe = arg or "dpo"
    # model: an HF folder plus the runtime fields (the architecture comes from its config.json)
    c.model = dict(path="", dtype="float32", param_dtype="float32", remat="none",
                   scan_layers=False, logits_chunk=0, attention="auto")
    c.tokenizer = ""  # a folder with tokenizer.json (and its chat template); "" = model.path
    # cache: tokenise once into cache_dir ("" = <workdir>/token_cache); packing (sft, rm, dpo):
    # rows of pack_length tokens (0 = max_length for sft, 2 * max_length for rm and dpo); an
    # over-long pair (truncation_mode) is an error, or cut as TRL ("keep_start") / RewardBench
    # ("keep_end") cut it. sft only: TRL's completion_only_loss (None: True for prompt-completion
    # rows) and assistant_only_loss (conversational rows, a template with {% generation %}
    # markers), and chat_template: a .jinja file rendering the SFT conversations in place of the
    # tokenizer's template ("": the tokenizer's own)
    c.data = dict(path="", split="train", max_length=1024, cache=True, cache_dir="",
                  cache_chunk_size=1000, packing=False, pack_length=0, truncation_mode="error",
                  completion_only_loss=None, assistant_only_loss=False, chat_template="")
    c.train = dict(steps=1000, batch_size=64, grad_accum_steps=1, checkpoint_every=200,
                   eval_every=0, log_every=10, progress=True)
    c.optimizer = dict(name="adamw", learning_rate=5e-7, warmup_steps=0, schedule="constant",
                       clip_norm=1.0, kwargs={}, moment_dtype="float32")
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.lora = dict(rank=0, alpha=16.0)  # rank 0 = full fine-tuning
    c.beta = 0.1  # DPO's beta
    c.grpo = dict(reward_model="", iterations=100, prompts_per_iteration=8, num_samples=8,
                  max_prompt_length=256, max_new_tokens=256, temperature=1.0, kl_coef=0.04,
                  stop_tokens=[-1])  # -1: the tokenizer's eos
    return c


class _ChosenSequences:
    """SFT examples from pair examples: the chosen sequence, loss on its response (TRL's
    completion-only loss) or, with `completion_only=False`, on all of it."""

    def __init__(self, pairs, completion_only: bool = True):
        self._pairs = pairs
        self._completion_only = completion_only

    def __len__(self):
        return len(self._pairs)

    def __getitem__(self, i):
        pair = self._pairs[i]
        loss_mask = (pair["chosen_response_mask"] if self._completion_only
                     else np.ones_like(pair["chosen_ids"]))
        return {"input_ids": pair["chosen_ids"], "loss_mask": loss_mask}


def _chat_template(config):
    """The :sft-only data fields checked without data (unset for the other recipes, the
    `data.chat_template` file readable); returns that template's text (None: the
    tokenizer's)."""
    d = config.data
    if config.recipe != "sft":
        for key, unset in (("completion_only_loss", d.completion_only_loss is None),
                           ("assistant_only_loss", not d.assistant_only_loss),
                           ("chat_template", not d.chat_template)):
            if not unset:
                raise ValueError(f"data.{key} applies to the sft recipe, not {config.recipe!r}")
        return None
    if not d.chat_template:
        return None
    if not os.path.isfile(d.chat_template):
        raise ValueError(f"data.chat_template: no such file {d.chat_template!r}")
    with open(d.chat_template) as f:
        return f.read()


def validate(config):
    """Checks the :sft data fields before any work (`alignax run` calls it): see
    `_chat_template`, and with `data.assistant_only_loss` the template that renders the
    conversations marks the assistant turns with `{% generation %}` blocks."""
    template = _chat_template(config)
    path = config.tokenizer or config.model.path
    if config.recipe == "sft" and config.data.assistant_only_loss and path:
        tokenizer = HFTokenizer.from_file(path)
        if template is None and tokenizer.chat_template is None:
            raise ValueError(f"data.assistant_only_loss needs a chat template with "
                             f"{{% generation %}} markers; the tokenizer at {path} has none: set "
                             f"data.chat_template")
        if not has_generation_markers(select_chat_template(tokenizer.chat_template, template)):
            raise ValueError(f"data.assistant_only_loss needs a chat template that marks the "
                             f"assistant turns with {{% generation %}}...{{% endgeneration %}}; "
                             f"the one of {path} has none: set data.chat_template to a training "
                             f"template that does (TRL's get_training_chat_template gives one "
                             f"for several models)")


def _sft_options(config, dataset):
    """Whether the :sft dataset is in an SFT format (from its first row, as TRL reads a
    dataset's type), and the chat template text of `data.chat_template` (None: the
    tokenizer's)."""
    d = config.data
    template = _chat_template(config)
    if config.recipe != "sft":
        return False, None
    if not len(dataset):
        raise DataError(f"{d.path}: the dataset has no rows", path=str(d.path))
    is_sft = isinstance(HFSource(dataset, lambda r: r).record(0), SFTRecord)
    if not is_sft and (d.assistant_only_loss or d.chat_template):
        key = "assistant_only_loss" if d.assistant_only_loss else "chat_template"
        raise ValueError(f"data.{key} applies to SFT-format rows (text, messages, "
                         f"prompt/completion); this dataset holds preference pairs")
    return is_sft, template


def train_data(config, workdir, tokenizer, dataset):
    """(train_source, recipe overrides) of :sft, :rm or :dpo: the dataset's pairs (or, for :sft,
    its SFT rows: `tokenize_sft`) tokenised (through the token cache unless data.cache is
    False), as padded rows or, with data.packing, unpadded examples the recipe packs."""
    d, recipe = config.data, config.recipe
    t = int(d.max_length)
    if d.packing and recipe not in ("sft", "rm", "dpo"):
        raise ValueError(f"data.packing applies to the sft, rm and dpo recipes, not {recipe!r}")
    is_sft, template = _sft_options(config, dataset)
    root = d.cache_dir or os.path.join(workdir, "token_cache")
    if is_sft:
        def transform(record):  # an SFTRecord -> its valid tokens and their loss mask
            return unpad_sequence(tokenize_sft(
                record, tokenizer, max_length=t, completion_only_loss=d.completion_only_loss,
                assistant_only_loss=bool(d.assistant_only_loss),
                truncation_mode=d.truncation_mode, chat_template=template))

        examples = HFSource(dataset, transform, kinds=(SFTRecord,))
        if d.cache:
            key = cache_key(source=dataset, tokenizer=tokenizer, format="sft", max_length=t,
                            use_chat_template=True, truncation_mode=d.truncation_mode,
                            completion_only_loss=d.completion_only_loss,
                            assistant_only_loss=bool(d.assistant_only_loss),
                            chat_template=template, transform="tokenize_sft+unpad_sequence")
            examples = build_token_cache(examples, root, key, chunk_size=int(d.cache_chunk_size))
        if not d.packing:
            return PaddedSource(examples, t, pad_id=special_ids(tokenizer)[2]), {}
        return examples, {"packing": dict(enabled=True, length=int(d.pack_length) or t)}

    def transform(record):  # the valid tokens only: what the cache stores and packing reads
        return unpad_pair(tokenize_pair(record, tokenizer, max_length=t,
                                        truncation_mode=d.truncation_mode))

    pairs = HFSource(dataset, transform, kinds=(PreferenceRecord,))
    if d.cache:
        key = cache_key(source=dataset, tokenizer=tokenizer, format="pair", max_length=t,
                        use_chat_template=True, truncation_mode=d.truncation_mode,
                        transform="tokenize_pair+unpad_pair")
        pairs = build_token_cache(pairs, root, key, chunk_size=int(d.cache_chunk_size))
    examples = (_ChosenSequences(pairs, d.completion_only_loss is not False) if recipe == "sft"
                else pairs)
    if not d.packing:
        return PaddedSource(examples, t, pad_id=special_ids(tokenizer)[2]), {}
    length = int(d.pack_length) or (t if recipe == "sft" else 2 * t)
    return examples, {"packing": dict(enabled=True, length=length)}


def _grpo(config, workdir, tokenizer, dataset):
    g = config.grpo
    records = HFSource(dataset, lambda r: r,
                       kinds=(PromptRecord, PreferenceRecord, UnpairedRecord))  # has a prompt
    rows = [tokenize_prompt(records.record(i), tokenizer, max_length=int(g.max_prompt_length))
            for i in range(len(records))]
    prompt_ids = np.stack([r["prompt_ids"] for r in rows])
    prompt_mask = np.stack([r["prompt_mask"] for r in rows])
    model, params = pretrained.model_and_params(config.model.to_dict(), "lm")
    rm_cfg = {**config.model.to_dict(), "path": g.reward_model or config.model.path}
    rm, rm_params = pretrained.model_and_params(rm_cfg, "reward", seed=int(config.seed))
    score = jax.jit(rm.apply)

    def reward_fn(rollout):  # the reward model reads the last valid token of prompt + response
        return score(rm_params, rollout.ids, rollout.mask.astype(bool))

    stops = [tokenizer.eos_id if s == -1 else int(s) for s in g.stop_tokens]
    pg = policy_gradient.default_config(
        iterations=int(g.iterations), prompts_per_iteration=int(g.prompts_per_iteration),
        num_samples=int(g.num_samples), max_new_tokens=int(g.max_new_tokens),
        temperature=float(g.temperature), kl_coef=float(g.kl_coef), stop_tokens=tuple(stops),
        grad_accum_steps=int(config.train.grad_accum_steps),
        optimizer={k: v for k, v in config.optimizer.to_dict().items() if k != "moment_dtype"},
        mesh=config.mesh.to_dict(),
        checkpoint_every=int(config.train.checkpoint_every),
        log_every=int(config.train.log_every), progress=bool(config.train.progress),
        lora=(dict(rank=int(config.lora.rank), alpha=float(config.lora.alpha))
              if config.lora.rank > 0 else None))
    out = policy_gradient.train(pg, workdir, model=model, init_params=params, ref_params=params,
                                prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                                reward_fn=reward_fn, seed=int(config.seed))
    return {k: float(jnp.asarray(v)) for k, v in out["metrics"].items()
            if np.ndim(v) == 0}


def run(config, workdir):
    tokenizer = HFTokenizer.from_file(config.tokenizer or config.model.path)
    dataset = load_hf_dataset(config.data.path, split=config.data.split)
    if config.recipe == "grpo":
        return _grpo(config, workdir, tokenizer, dataset)
    source, data_overrides = train_data(config, workdir, tokenizer, dataset)
    recipe = RECIPES[config.recipe]
    overrides = dict(model=config.model.to_dict(), train=config.train.to_dict(),
                     optimizer=config.optimizer.to_dict(), mesh=config.mesh.to_dict(),
                     **data_overrides)
    if config.lora.rank > 0:
        overrides["lora"] = dict(rank=int(config.lora.rank), alpha=float(config.lora.alpha))
    if config.recipe == "dpo":
        overrides["loss_kwargs"] = dict(beta=float(config.beta))
    out = recipe.train(recipe.default_config(**overrides), workdir, train_source=source,
                       seed=int(config.seed))
    return {k: float(v) for k, v in out["metrics"].items()}
