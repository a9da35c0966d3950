"""The PyTorch peer side of the benchmarks: TRL trainers and Hugging Face `generate` on the spec.

Every peer runs the shapes of `benchmarks.spec.workload(name, size)` on the input arrays of
`benchmarks.spec.inputs` (data seed 0, the same 4 batches that `benchmarks/ours.py` uses, cycled),
with a randomly initialised (`torch.manual_seed(seed)`) float32 Llama of `spec.SIZES[size]`
(`transformers.LlamaConfig`, untied LM head unless the size ties it, RMSNorm eps 1e-5, SDPA
attention) on the CPU, or on the GPU when torch sees one (`DEVICE`). `--dtype bfloat16` trains
with the Trainer's bf16 autocast over float32 parameters (alignax's bf16 compute, float32
parameters) and generates (W3) with bfloat16 weights.
A tiny word-level tokenizer (`<pad>` = 0, `<bos>` = 1, `<eos>` = 2, then "t3" .. "t{V-1}") is
built locally, so nothing is downloaded. What each peer times:

  w1      `trl_reward`: TRL `RewardTrainer`, one optimizer step per timed step (forward of the B
          chosen + B rejected sequences as one [2B, T] batch, Bradley-Terry loss, backward,
          gradient clipping, AdamW, LR schedule), timed from `on_step_begin` to `on_step_end`.
  w2      `trl_dpo`: TRL `DPOTrainer` (sigmoid loss, beta 0.1), one optimizer step per timed step;
          the frozen reference model (a separate copy) runs its forward inside the step.
  w2_pre  `trl_dpo(precompute_ref=True)`: the same, with the reference log-probs precomputed by
          TRL in the trainer's constructor, before (and outside) the timed steps.
  w3      `hf_generate`: one `model.generate` call (prefill + KV-cache decode of exactly
          `new_tokens` tokens, temperature 1, no top-k / top-p truncation) per timed step.
  w4      `trl_grpo`: TRL `GRPOTrainer` with transformers generation, one optimizer step per timed
          step = one rollout of B prompts x S samples, the reward, the reference log-probs
          (beta 0.04) and one update.

The first step (which includes PyTorch's lazy initialisation) is reported as `compile_s`; TRL runs
`warmup + steps` optimizer steps (`max_steps`) and the last `steps` are reported in `step_times`.
Data loading and collation happen before `on_step_begin` and are not timed. `flops_per_step` is
the spec's analytic count, so results compare equal work; deviations of what the peer actually
computes are stated in each result's `notes`.

    python -m benchmarks.peers --workload w1 --size tiny --steps 3 --warmup 1 --out r.json
"""

from __future__ import annotations

import os

# No network at run time: everything is built locally (set before transformers is imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference precompute loop uses tqdm

import copy  # noqa: E402
import dataclasses  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from benchmarks import spec  # noqa: E402

# The peers run on the GPU when torch sees one (benchmarks/gpu.sh), else on the CPU.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# The number of distinct input batches, cycled over the steps (as in benchmarks/ours.py).
NUM_BATCHES = 4
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
LEARNING_RATE = 1e-5


# --------------------------------------------------------------------------------------------
# Shared helpers: threads, tokenizer, models, trainer arguments, timing, result dict.
# --------------------------------------------------------------------------------------------

def _setup_torch() -> None:
    """Use every core, explicitly (the alignax side uses all of them through XLA)."""
    torch.set_num_threads(os.cpu_count() or 1)


def build_tokenizer(vocab_size: int) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over `vocab_size` ids: "<pad>", "<bos>", "<eos>", "t3" .. "t{V-1}".

    Text "t5 t17" encodes to [5, 17] (no BOS/EOS added). The special tokens have names that are
    not prefixes of the "t<i>" names, since added tokens are matched inside words.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    names = ["<pad>", "<bos>", "<eos>"] + [f"t{i}" for i in range(3, vocab_size)]
    tok = Tokenizer(models.WordLevel({n: i for i, n in enumerate(names)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    assert (out.pad_token_id, out.bos_token_id, out.eos_token_id) == (PAD_ID, BOS_ID, EOS_ID)
    return out


def ids_to_text(ids) -> str:
    """The text that `build_tokenizer` maps back to exactly `ids` (all ids >= 3)."""
    return " ".join(f"t{int(i)}" for i in ids)


def llama_config(size: str, max_len: int, **kwargs) -> transformers.LlamaConfig:
    m = spec.SIZES[size]
    if "rope_theta" in m:  # transformers 5 reads the RoPE base from rope_parameters
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": m["rope_theta"]}
    return transformers.LlamaConfig(
        vocab_size=m["vocab_size"], hidden_size=m["d_model"], intermediate_size=m["d_ff"],
        num_hidden_layers=m["n_layers"], num_attention_heads=m["n_heads"],
        num_key_value_heads=m.get("n_kv_heads", m["n_heads"]), max_position_embeddings=max_len,
        rms_norm_eps=1e-5, tie_word_embeddings=m.get("tie_embeddings", False),
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        attn_implementation="sdpa", **kwargs)


def build_causal_lm(size: str, max_len: int, seed: int) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    with torch.device(DEVICE):  # initialised where it runs (a 1B init on the host is slow)
        return transformers.LlamaForCausalLM(llama_config(size, max_len)).float()


def build_reward_model(size: str, max_len: int, seed: int):
    torch.manual_seed(seed)
    config = llama_config(size, max_len, num_labels=1)
    with torch.device(DEVICE):
        return transformers.LlamaForSequenceClassification(config).float()


def _common_args(output_dir: str, *, batch: int, max_steps: int, seed: int,
                 dtype: str = "float32") -> dict:
    """TrainingArguments shared by the TRL peers: no logging, no saving, on `DEVICE`; bfloat16
    `dtype` is the Trainer's bf16 autocast over float32 parameters."""
    return dict(
        output_dir=output_dir, per_device_train_batch_size=batch, max_steps=max_steps,
        learning_rate=LEARNING_RATE, optim="adamw_torch", logging_steps=10**9,
        save_strategy="no", report_to=[], dataloader_num_workers=0, use_cpu=DEVICE == "cpu",
        bf16=dtype == "bfloat16",
        disable_tqdm=True, seed=seed,
        # TRL defaults to gradient checkpointing (recomputing activations in the backward);
        # the alignax side does not checkpoint, so neither do we. (`activation_checkpointing`
        # is the name of recent transformers 5 releases, 5.25 here; it overrides TRL's
        # `gradient_checkpointing=True` default. 5.17, a GPU image's, knows only the latter.)
        **{_CHECKPOINTING_ARG: False},
    )


_CHECKPOINTING_ARG = ("activation_checkpointing" if "activation_checkpointing" in {
    f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    else "gradient_checkpointing")


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, from `on_step_begin` to `on_step_end` (on a GPU both
    ends synchronize, so a step's queued kernels are counted in its own time)."""

    def __init__(self):
        self.times: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.times.append(time.perf_counter() - self._t0)


def _where(dtype: str) -> str:
    """How a trainer ran, for the notes: "fp32 cpu" or "bf16 autocast, fp32 params, cuda"."""
    return f"fp32 {DEVICE}" if dtype == "float32" else f"bf16 autocast, fp32 params, {DEVICE}"


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _result(impl: str, workload: str, size: str, times: list[float], warmup: int, notes: str,
            *, flops_scale: float = 1.0) -> dict:
    """The JSON result; `times` holds every step, the first `warmup` of them are not reported."""
    base = workload.split("_")[0]
    return {
        "impl": impl, "workload": workload, "size": size, "compile_s": times[0],
        "step_times": times[warmup:], "tokens_per_step": spec.tokens_per_step(base, size),
        "flops_per_step": spec.step_flops(base, size) * flops_scale,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(), "notes": notes, "device": DEVICE,
    }


def _check_trained(trainer, timer: StepTimer, total: int) -> None:
    """The trainer ran `total` optimizer steps, without activation checkpointing."""
    if len(timer.times) != total:
        raise RuntimeError(f"expected {total} optimizer steps, the trainer ran {len(timer.times)}")
    model = trainer.model
    if trainer.args.gradient_checkpointing or getattr(
            model, "is_activation_checkpointing", getattr(model, "is_gradient_checkpointing", 0)):
        raise RuntimeError("activation checkpointing is on")


# --------------------------------------------------------------------------------------------
# W1: reward-model step (TRL RewardTrainer).
# --------------------------------------------------------------------------------------------

def trl_reward(size: str, *, steps: int, warmup: int, seed: int = 0,
               dtype: str = "float32") -> dict:
    """W1 with TRL `RewardTrainer`: one timed step = one optimizer step on B pairs."""
    from trl import RewardConfig, RewardTrainer

    _setup_torch()
    w = spec.workload("w1", size)
    data = spec.inputs("w1", size, num_batches=NUM_BATCHES)
    # Rows in batch order; the sequential sampler makes step i train on spec batch i % 4.
    dataset = Dataset.from_dict({
        "chosen_ids": data["chosen_ids"].reshape(-1, w.seq_len).tolist(),
        "rejected_ids": data["rejected_ids"].reshape(-1, w.seq_len).tolist(),
    })
    tokenizer = build_tokenizer(spec.SIZES[size]["vocab_size"])
    model = build_reward_model(size, w.seq_len, seed)
    out_dir = tempfile.mkdtemp(prefix="peers_w1_")
    timer = StepTimer()
    try:
        args = RewardConfig(
            **_common_args(out_dir, batch=w.batch, max_steps=warmup + steps, seed=seed,
                           dtype=dtype),
            max_length=w.seq_len, train_sampling_strategy="sequential")
        trainer = RewardTrainer(model=model, args=args, train_dataset=dataset,
                                processing_class=tokenizer, callbacks=[timer])
        # TRL skipped tokenisation (pre-tokenized columns) and collates B pairs into one
        # [2B, T] batch (chosen first, then rejected) with no padding.
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(w.batch)])
        assert tuple(batch["input_ids"].shape) == (2 * w.batch, w.seq_len), batch["input_ids"].shape
        assert bool(batch["attention_mask"].all()), "unexpected padding"
        assert batch["input_ids"][: w.batch].tolist() == data["chosen_ids"][0].tolist()
        trainer.train()
        _check_trained(trainer, timer, warmup + steps)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    notes = (
        f"TRL RewardTrainer, LlamaForSequenceClassification(num_labels=1), {_where(dtype)}. "
        "Timed: "
        "on_step_begin..on_step_end of each optimizer step = forward of the [2B, T] batch "
        "(chosen+rejected), -logsigmoid(r_c - r_r) loss, TRL's reward metrics (.item() syncs), "
        "backward, grad-norm clipping (max_grad_norm=1.0, Trainer default), AdamW (adamw_torch, "
        "lr 1e-5) and the linear LR schedule. Not timed: dataloader + collation (before "
        "on_step_begin). gradient_checkpointing=False (TRL's default is True). "
        f"max_steps={warmup + steps}: the first step is compile_s and is one of the {warmup} "
        "warmup steps.")
    return _result("trl", "w1", size, timer.times, warmup, notes)


# --------------------------------------------------------------------------------------------
# W2: DPO step (TRL DPOTrainer).
# --------------------------------------------------------------------------------------------

def _pretokenized_dpo_trainer():
    """`DPOTrainer` that takes the dataset's `prompt_ids`/`chosen_ids`/`rejected_ids` as given.

    TRL 1.16's `DPOTrainer._prepare_dataset` always extracts the prompt, appends EOS and
    tokenizes text columns (it has no skip path for pre-tokenized data, unlike RewardTrainer), so
    the only way to feed the spec's token ids unchanged is to skip that method.
    """
    from trl import DPOTrainer

    class PreTokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return PreTokenizedDPOTrainer


def trl_dpo(size: str, *, steps: int, warmup: int, precompute_ref: bool = False,
            seed: int = 0, dtype: str = "float32") -> dict:
    """W2 with TRL `DPOTrainer` (sigmoid, beta 0.1): one timed step = one optimizer step."""
    from trl import DPOConfig

    _setup_torch()
    w = spec.workload("w2", size)
    p = w.prompt_len
    data = spec.inputs("w2", size, num_batches=NUM_BATCHES)
    chosen = data["chosen_ids"].reshape(-1, w.seq_len)
    rejected = data["rejected_ids"].reshape(-1, w.seq_len)
    assert (chosen[:, :p] == rejected[:, :p]).all()
    dataset = Dataset.from_dict({
        "prompt_ids": chosen[:, :p].tolist(),
        "chosen_ids": chosen[:, p:].tolist(),
        "rejected_ids": rejected[:, p:].tolist(),
    })
    tokenizer = build_tokenizer(spec.SIZES[size]["vocab_size"])
    model = build_causal_lm(size, w.seq_len, seed)
    # The frozen reference: a separate model with the same weights. With precompute_ref, TRL
    # computes the reference log-probs with the (not yet trained) policy itself and keeps no
    # reference model, so none is passed.
    ref_model = None if precompute_ref else copy.deepcopy(model)
    out_dir = tempfile.mkdtemp(prefix="peers_w2_")
    timer = StepTimer()
    try:
        args = DPOConfig(
            **_common_args(out_dir, batch=w.batch, max_steps=warmup + steps, seed=seed,
                           dtype=dtype),
            loss_type=["sigmoid"], beta=0.1, precompute_ref_log_probs=precompute_ref,
            precompute_ref_batch_size=w.batch, max_length=w.seq_len,
            train_sampling_strategy="sequential")
        t0 = time.perf_counter()
        trainer = _pretokenized_dpo_trainer()(
            model=model, ref_model=ref_model, args=args, train_dataset=dataset,
            processing_class=tokenizer, callbacks=[timer])
        init_s = time.perf_counter() - t0  # includes the reference precompute, if any
        if precompute_ref:
            assert "ref_chosen_logps" in trainer.train_dataset.column_names
        # Full-length [2B, T] batches: prompt + response, no padding, no truncation.
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(w.batch)])
        assert tuple(batch["input_ids"].shape) == (2 * w.batch, w.seq_len), batch["input_ids"].shape
        assert bool(batch["attention_mask"].all()), "unexpected padding"
        assert int(batch["completion_mask"].sum()) == 2 * w.batch * (w.seq_len - p)
        assert batch["input_ids"][: w.batch].tolist() == data["chosen_ids"][0].tolist()
        trainer.train()
        _check_trained(trainer, timer, warmup + steps)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    if precompute_ref:
        ref_note = (
            "Reference log-probs precomputed by TRL (precompute_ref_log_probs=True, ref_model=None "
            "so the untrained policy serves as reference) inside the DPOTrainer constructor, "
            f"before training and NOT in the timed steps (constructor incl. precompute: "
            f"{init_s:.2f} s); flops_per_step is the spec's count x 3/4 (no reference forward), "
            "as in benchmarks/ours.py.")
    else:
        ref_note = ("The frozen reference (a deepcopy of the initial policy, passed as ref_model) "
                    "runs its no-grad forward inside each timed step.")
    notes = (
        f"TRL DPOTrainer (loss_type=['sigmoid'], beta=0.1), LlamaForCausalLM, {_where(dtype)}, "
        "on the "
        "spec's token ids (prompt_ids = first prompt_len tokens, chosen_ids/rejected_ids = the "
        "rest; TRL's _prepare_dataset is overridden to a no-op because 1.16 has no skip path for "
        "pre-tokenized data). Timed: on_step_begin..on_step_end of each optimizer step = policy "
        "forward + backward on the [2B, T] batch, reference forward, loss, TRL metrics (.item() "
        "syncs), grad-norm clipping (max_grad_norm=1.0), AdamW (lr 1e-5), LR schedule. "
        f"{ref_note} Deviation from the spec's FLOP count: TRL's fused LM head projects only the "
        "response positions (labels != -100) through the LM head, never the prompt positions. "
        "gradient_checkpointing=False (TRL's default is True). Not timed: dataloader + "
        f"collation. max_steps={warmup + steps}: the first step is compile_s and one of the "
        f"{warmup} warmup steps.")
    name = "w2_pre" if precompute_ref else "w2"
    return _result("trl", name, size, timer.times, warmup, notes,
                   flops_scale=0.75 if precompute_ref else 1.0)


# --------------------------------------------------------------------------------------------
# W3: sampling (transformers generate).
# --------------------------------------------------------------------------------------------

def hf_generate(size: str, *, steps: int, warmup: int, seed: int = 0,
                dtype: str = "float32") -> dict:
    """W3 with `model.generate`: one timed step = one full generate call on the B prompts."""
    _setup_torch()
    w = spec.workload("w3", size)
    model = build_causal_lm(size, w.prompt_len + w.new_tokens, seed).eval()
    model = model.to(getattr(torch, dtype))  # generation with weights in the compute dtype
    prompts = torch.from_numpy(spec.inputs("w3", size, num_batches=1)["prompt_ids"]).long()
    prompts = prompts.to(DEVICE)
    mask = torch.ones_like(prompts)
    times = []
    with torch.inference_mode():
        for _ in range(warmup + steps):
            _sync()
            t0 = time.perf_counter()
            out = model.generate(
                input_ids=prompts, attention_mask=mask, do_sample=True, temperature=1.0,
                top_p=1.0, top_k=0, max_new_tokens=w.new_tokens, min_new_tokens=w.new_tokens,
                use_cache=True, pad_token_id=PAD_ID)
            _sync()
            times.append(time.perf_counter() - t0)
            assert tuple(out.shape) == (w.batch, w.prompt_len + w.new_tokens), out.shape
    notes = (
        f"transformers LlamaForCausalLM.generate ({dtype} weights on {DEVICE}, SDPA, dynamic "
        "KV cache) under "
        "torch.inference_mode(): do_sample, temperature 1, top_k 0, top_p 1, "
        "min_new_tokens = max_new_tokens = new_tokens (EOS suppressed, so exactly new_tokens "
        "per row); each timed step is one full generate call (prefill + decode + sampling). "
        f"{warmup + steps} calls: the first is compile_s and one of the {warmup} warmup calls.")
    return _result("hf", "w3", size, times, warmup, notes)


# --------------------------------------------------------------------------------------------
# W4: GRPO iteration (TRL GRPOTrainer, transformers generation).
# --------------------------------------------------------------------------------------------

GRPO_BETA = 0.04


def trl_grpo(size: str, *, steps: int, warmup: int, seed: int = 0,
             dtype: str = "float32") -> dict:
    """W4 with TRL `GRPOTrainer`: one timed step = one rollout round + one optimizer step."""
    from trl import GRPOConfig, GRPOTrainer

    _setup_torch()
    w = spec.workload("w4", size)
    vocab = spec.SIZES[size]["vocab_size"]
    prompt_ids = spec.inputs("w4", size, num_batches=1)["prompt_ids"]
    tokenizer = build_tokenizer(vocab)
    # GRPOTrainer tokenizes text prompts itself (no pre-tokenized path without a custom
    # rollout_func), so the prompts are the token names, which map back to exactly the spec ids.
    texts = [ids_to_text(row) for row in prompt_ids]
    assert tokenizer(text=texts)["input_ids"] == prompt_ids.tolist(), "prompt round trip"
    dataset = Dataset.from_dict({"prompt": texts})

    lengths: list[int] = []  # completion lengths seen by the reward, checked after training

    def even_token_share(completions, completion_ids, **kwargs):
        """spec.w4_reward on the completion ids (the decoded text is ignored)."""
        lengths.extend(len(ids) for ids in completion_ids)
        return spec.w4_reward(np.asarray(completion_ids), vocab).tolist()

    out_dir = tempfile.mkdtemp(prefix="peers_w4_")
    timer = StepTimer()
    try:
        # GRPOTrainer builds its reference model from the policy's path (it takes no ref_model
        # argument), so the initial weights are saved locally and both are loaded from there.
        model_dir = os.path.join(out_dir, "init")
        build_causal_lm(size, w.prompt_len + w.new_tokens, seed).save_pretrained(model_dir)
        rows = w.batch * w.samples
        args = GRPOConfig(
            **_common_args(out_dir, batch=rows, max_steps=warmup + steps, seed=seed,
                           dtype=dtype),
            model_init_kwargs={"dtype": "float32", "attn_implementation": "sdpa"},
            # One optimizer step = one generation round of B prompts x S samples, used once.
            num_generations=w.samples, steps_per_generation=1, num_iterations=1,
            gradient_accumulation_steps=1, shuffle_dataset=False,
            max_completion_length=w.new_tokens, temperature=1.0, top_p=1.0, top_k=0,
            # No EOS before new_tokens tokens: every completion has exactly new_tokens tokens.
            generation_kwargs={"min_new_tokens": w.new_tokens},
            use_vllm=False, beta=GRPO_BETA)
        assert args.generation_batch_size == rows and args.steps_per_generation == 1
        trainer = GRPOTrainer(model=model_dir, reward_funcs=even_token_share, args=args,
                              train_dataset=dataset, processing_class=tokenizer,
                              callbacks=[timer])
        assert trainer.ref_model is not None
        trainer.train()
        _check_trained(trainer, timer, warmup + steps)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    assert len(lengths) == (warmup + steps) * rows, len(lengths)
    assert set(lengths) == {w.new_tokens}, sorted(set(lengths))
    notes = (
        f"TRL GRPOTrainer, transformers generation (use_vllm=False), {_where(dtype)}. Timed: "
        "on_step_begin..on_step_end of each optimizer step = generate B x S completions "
        "(per_device_train_batch_size = generation_batch_size = B*S, steps_per_generation=1, "
        "num_iterations=1; do_sample, temperature 1, top_p 1, top_k 0, "
        "generation_kwargs min_new_tokens = max_completion_length = new_tokens, so EOS is never "
        "sampled and every completion has exactly new_tokens tokens: checked), batch_decode of "
        "the completions (TRL always decodes), the reward (spec.w4_reward on completion_ids), "
        f"group-normalised advantages, the reference forward (beta={GRPO_BETA}, a separate "
        "model loaded from the same saved initial weights), the policy forward + backward with "
        "TRL's default loss (loss_type='dapo', epsilon 0.2), grad-norm clipping "
        "(max_grad_norm=1.0), AdamW (lr 1e-5), LR schedule. Deviations from the spec's FLOP "
        "count: TRL skips the old-policy forward (with one update per generation the old "
        "log-probs equal the detached current ones), so it runs 4 of the 5 counted full-sequence "
        "forwards; and its fused LM head projects only the completion positions. Prompts are "
        "given as text ('t5 t17 ...') that the word-level tokenizer maps back to exactly the "
        "spec's prompt ids (checked). gradient_checkpointing=False (TRL's default is True). "
        f"max_steps={warmup + steps}: the first step is compile_s and one of the {warmup} "
        "warmup steps.")
    return _result("trl", "w4", size, timer.times, warmup, notes)


# --------------------------------------------------------------------------------------------
# CLI.
# --------------------------------------------------------------------------------------------

WORKLOADS = {
    "w1": trl_reward,
    "w2": trl_dpo,
    "w2_pre": lambda size, **kw: trl_dpo(size, precompute_ref=True, **kw),
    "w3": hf_generate,
    "w4": trl_grpo,
}


def main(argv=None) -> None:
    # the first step is the warmup/compile: at least one warmup and one timed step
    spec.run_cli(WORKLOADS, __doc__.splitlines()[0], argv, min_steps=1, setup=_setup_torch,
                 with_seed=True, dtypes=("float32", "bfloat16"))


if __name__ == "__main__":
    main()
