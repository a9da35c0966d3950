"""Compile the real training steps for pods without the hardware: per-device memory, collectives,
FLOPs and compile time of the RM, DPO and GRPO-update steps of Llama-3-shaped models.

    python -m benchmarks.aot --model 8b --step dpo --devices 8 --batch 64 --accum 8 \
        --remat full --scan --param-dtype bfloat16 --logits-chunk 8192    # one case, JSON
    python -m benchmarks.aot --table benchmarks/SCALE.md --results benchmarks/SCALE.jsonl
    python -m benchmarks.aot --table ... --no-licm       # the verdicts' third column
    python -m benchmarks.aot --table ... --render-only   # the table from the results file

Each case builds the library's own step (`make_train_step(..., mesh=)` over the loss of
`make_reward_loss`, `make_direct_loss("dpo")` with the frozen reference as the step's frozen
argument, or GRPO's `make_policy_loss` on rollout rows; the step is traced under the mesh, so
the decoder's `dense` pins its activations' rows to data x fsdp, `rows_on_batch_axes`) for a
real `TransformerConfig` (attention "auto", which is "xla" on XLA:CPU), with
abstract parameters (`jax.eval_shape`: nothing is allocated), lowers it with
`jax.ShapeDtypeStruct`s carrying the `NamedSharding`s of `alignax.train.sharding` on a mesh of
simulated CPU devices (`--xla_force_host_platform_device_count`; this module re-executes itself
with the flag when jax would otherwise see too few devices), compiles it with XLA:CPU and reads:

- `compiled.memory_analysis()` per device: argument, output, alias (donated inputs reused as
  outputs) and temp bytes; peak = argument + output - alias + temp (every live buffer of the
  step at once: its inputs, its outputs not written in place, and XLA's temporaries);
- fit / no fit of that peak on H100 80 GB, H200 141 GB, TPU v5e 16 GB and TPU v5p 95 GB, in
  decimal gigabytes (80e9 bytes, ...): a few GiB below each device's real capacity;
- collectives in the compiled HLO text (`compiled.as_text()`), counted statically: an op inside
  a loop body (scanned layers, accumulation) counts once, not once per iteration;
- FLOPs per device per step (`compiled.cost_analysis()["flops"]`) next to the analytic count
  (6 N per trained token + attention, plus 2 N per reference-forward token) per device;
- compile time (lowering and compiling);
- whether a [B, T, V] logits buffer exists (the chunked log-prob path has none), the largest
  buffer spanning the whole micro-batch's rows, and how many copies of the base weights the
  arguments hold (LoRA: one, the base is also the reference; full DPO: two).

Two what-ifs, labelled as such wherever they appear: `--no-row-constraint` lowers with
`alignax.models.transformer.rows_on_batch_axes` patched to the identity, i.e. the library
before commit f2fc2a0 (activations' rows not pinned; SCALE.md's Finding shows what that did),
and `--no-licm` compiles without XLA:CPU's while-loop-invariant code motion, which on CPU
hoists f32 copies of stacked bf16 weights out of the layer scan.

The table run compiles its cases in one process with 256 simulated devices (meshes over
subsets of them), appends each report to the results jsonl (a rerun skips the cases already
there with the same levers) and rewrites the table after every case. Levers the checkout lacks
are turned off and named in the row.

Shapes: B rows, T tokens, V vocab, D model width, N parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
from typing import Any

# no jax import in this module (the simulated device count must be set before jax starts)
from alignax._src.hlo import ITEMSIZE as _ITEMSIZE
from alignax._src.hlo import SHAPE_RE as _SHAPE_RE
from alignax._src.hlo import largest_array_with_dim

MAX_DEVICES = 256
_DEVICE_FLAG = "--xla_force_host_platform_device_count"

# Llama-3 shapes (the published configs: Llama-3.2-1B, Llama-3.1-8B, Llama-3.1-70B); "tiny" for
# tests of the tool itself.
MODELS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=176,
                 rope_theta=500000.0, norm_eps=1e-5, tie_embeddings=True),
    "1b": dict(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8,
               d_ff=8192, rope_theta=500000.0, norm_eps=1e-5, tie_embeddings=True),
    "8b": dict(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
               d_ff=14336, rope_theta=500000.0, norm_eps=1e-5, tie_embeddings=False),
    "70b": dict(vocab_size=128256, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                d_ff=28672, rope_theta=500000.0, norm_eps=1e-5, tie_embeddings=False),
}

# Per-device memory of each target, decimal bytes (the marketed GB).
TARGETS: dict[str, float] = {"H100": 80e9, "H200": 141e9, "v5e": 16e9, "v5p": 95e9}

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_COLLECTIVE_RE = re.compile(
    r"\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
STEPS = ("rm", "dpo", "grpo")
REMAT = ("none", "full", "dots", "offload")


@dataclasses.dataclass(frozen=True)
class Case:
    """One compiled step.

    Attributes:
      model: a key of MODELS.
      step: "rm" (Bradley-Terry reward model), "dpo" (sigmoid DPO, frozen reference forward in
        the step) or "grpo" (the PPO-clip/GRPO update on rollout rows, with per-token KL to
        precomputed reference log-probs in the batch).
      devices: mesh size (1 to 256 simulated devices).
      tensor: tensor-parallel ways; the rest of the mesh is fsdp (mesh data=1,
        fsdp=devices/tensor, tensor).
      batch: pairs (rm, dpo) or rollout rows (grpo) per optimizer step; None: one pair (two rows
        for grpo) per row shard per micro-batch, times `accum`.
      seq: T, tokens per sequence (grpo: prompt + response).
      response: R, grpo's response tokens (the LM head runs on those only); 0: seq // 2.
      accum: micro-batches per step (`make_train_step(accum_steps=)`), 1 = none.
      remat, scan, param_dtype, logits_chunk: TransformerConfig levers (1 = off/defaults).
      dtype: compute dtype.
      moment_dtype: Adam moment dtype (None: the optimizer's default, float32).
      lora_rank: 0 full-parameter training; r > 0 trains LoRA adapters of rank r on every
        projection, the frozen base (without adapters) is the reference.
      row_constraint: True (the library): the decoder pins its activations' rows to the batch
        axes. False: what-if reproducing the library before commit f2fc2a0
        (`no_row_constraint` while lowering); used for SCALE.md's Finding.
    """

    model: str
    step: str
    devices: int
    tensor: int = 1
    batch: int | None = None
    seq: int = 4096
    response: int = 0
    accum: int = 1
    remat: str = "none"
    scan: bool = False
    dtype: str = "bfloat16"
    param_dtype: str = "float32"
    moment_dtype: str | None = None
    logits_chunk: int = 0
    lora_rank: int = 0
    row_constraint: bool = True

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
        if self.step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}, got {self.step!r}")
        if not 1 <= self.devices <= MAX_DEVICES:
            raise ValueError(f"devices must be in [1, {MAX_DEVICES}], got {self.devices}")
        if self.tensor < 1 or self.devices % self.tensor:
            raise ValueError(f"tensor={self.tensor} does not divide devices={self.devices}")
        if self.remat not in REMAT:
            raise ValueError(f"remat must be one of {REMAT}, got {self.remat!r}")
        if self.accum < 1:
            raise ValueError(f"accum must be >= 1, got {self.accum}")
        if self.step == "rm" and self.lora_rank:
            raise ValueError("lora_rank applies to the LM steps (dpo, grpo), not rm")
        if self.batch is not None and (self.batch % self.accum
                                       or (self.batch // self.accum) % self.row_shards):
            raise ValueError(f"batch={self.batch} / accum={self.accum} does not split over "
                             f"{self.row_shards} row shards")

    @property
    def row_shards(self) -> int:
        return self.devices // self.tensor

    @property
    def pairs(self) -> int:
        """Pairs (rm, dpo) or rows (grpo) per optimizer step."""
        if self.batch is not None:
            return self.batch
        return self.row_shards * self.accum * (2 if self.step == "grpo" else 1)

    @property
    def response_len(self) -> int:
        return self.response or self.seq // 2

    @property
    def layout(self) -> str:
        return (f"fsdp={self.row_shards}" if self.tensor == 1
                else f"fsdp={self.row_shards} x tensor={self.tensor}")

    def label(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


# ----------------------------------------------------------------------------- levers


def available_levers() -> dict[str, bool]:
    """Which memory levers this checkout of alignax has (they landed separately)."""
    import inspect

    from alignax.models.transformer import TransformerConfig
    from alignax.train.step import make_train_step

    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    try:
        import alignax.models.lora  # noqa: F401
        lora = True
    except ImportError:
        lora = False
    from alignax.train import optim
    return {
        "remat": "remat" in fields,
        "scan": "scan_layers" in fields,
        "param_dtype": "param_dtype" in fields,
        "logits_chunk": "logits_chunk" in fields,
        "accum": "accum_steps" in inspect.signature(make_train_step).parameters,
        "moment_dtype": "moment_dtype" in inspect.getsource(optim),
        "lora": lora,
    }


def _requested_levers(case: Case) -> dict[str, bool]:
    return {"remat": case.remat != "none", "scan": case.scan,
            "param_dtype": case.param_dtype != "float32", "logits_chunk": bool(case.logits_chunk),
            "accum": case.accum > 1, "moment_dtype": case.moment_dtype is not None,
            "lora": bool(case.lora_rank)}


def missing_levers(case: Case) -> list[str]:
    have = available_levers()
    return [k for k, want in _requested_levers(case).items() if want and not have[k]]


def model_config(case: Case):
    from alignax.models.transformer import TransformerConfig

    kw = dict(MODELS[case.model], dtype=case.dtype, max_len=case.seq)
    if case.remat != "none":
        kw["remat"] = case.remat
    if case.scan:
        kw["scan_layers"] = True
    if case.param_dtype != "float32":
        kw["param_dtype"] = case.param_dtype
    if case.logits_chunk:
        kw["logits_chunk"] = case.logits_chunk
    return TransformerConfig(**kw)


# ----------------------------------------------------------------------------- the step


def _optimizer(case: Case):
    from alignax.train.optim import make_optimizer

    cfg = dict(name="adamw", learning_rate=1e-5, clip_norm=1.0, kwargs=dict(weight_decay=0.0))
    if case.moment_dtype is not None:
        cfg["moment_dtype"] = case.moment_dtype
    return make_optimizer(cfg, 1000)


def _batch_abstract(case: Case) -> dict:
    """ShapeDtypeStructs of one optimizer step's batch (no sharding yet)."""
    import jax
    import jax.numpy as jnp

    def s(shape, dtype):
        return jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))

    b, t = case.pairs, case.seq
    if case.step in ("rm", "dpo"):
        batch = {f"{side}_{k}": s((b, t), "int32" if k == "ids" else "bool")
                 for side in ("chosen", "rejected") for k in ("ids", "mask")}
        if case.step == "dpo":
            batch["chosen_response_mask"] = s((b, t), "bool")
            batch["rejected_response_mask"] = s((b, t), "bool")
        return batch
    r = case.response_len
    return {"ids": s((b, t), "int32"), "mask": s((b, t), "bool"),
            "response_mask": s((b, r), "bool"), "old_logps": s((b, r), "float32"),
            "advantages": s((b,), "float32"), "ref_logps": s((b, r), "float32")}


def build(case: Case, devices=None):
    """(jitted step, abstract args with shardings, info) of one case; nothing is allocated."""
    import jax
    import jax.numpy as jnp

    from alignax.algorithms.direct import make_direct_loss
    from alignax.algorithms.policy_gradient import make_policy_loss
    from alignax.algorithms.reward_model import make_reward_loss
    from alignax.train import sharding as shd
    from alignax.train.checkpoint import abstract_like
    from alignax.train.state import TrainState
    from alignax.train.step import make_train_step

    missing = missing_levers(case)
    if missing:
        raise ValueError(f"levers not in this checkout: {missing}")
    devices = jax.devices()[:case.devices] if devices is None else devices
    if len(devices) < case.devices:
        raise ValueError(f"{case.devices} devices requested, jax has {len(devices)}")
    mesh = shd.make_mesh(data=1, fsdp=case.row_shards, tensor=case.tensor, devices=devices)
    cfg = model_config(case)
    model, base_abs, base_axes = _abstract_model(case.step == "rm", cfg)
    chunk: dict = {}  # token log-probs from the model (chunked), not [B, T, V] logits
    if case.step == "rm":
        loss_fn = make_reward_loss(model.apply)
    elif case.step == "dpo":
        # with chunked log-probs the model returns token log-probs, never [2B, T, V] logits
        chunk = {"token_logps": True} if case.logits_chunk else {}
        loss_fn = make_direct_loss(model.apply, "dpo", dict(beta=0.1), **chunk)
    else:  # the KL coefficient as a constant (the recipe passes it as a scalar step argument)
        import inspect
        chunk = ({"token_logps": True} if case.logits_chunk and "token_logps" in
                 inspect.signature(make_policy_loss).parameters else {})
        policy_loss = make_policy_loss(model.apply, loss="ppo_clip", **chunk)

        def loss_fn(params, batch, rng, *frozen):
            return policy_loss(params, batch, rng, *frozen, kl_coef=0.04)
    if case.lora_rank:  # adapters trained; the base is the one frozen argument (and reference)
        from alignax.models import lora

        lcfg = lora.LoraConfig(rank=case.lora_rank, alpha=2.0 * case.lora_rank)
        params_abs = jax.eval_shape(lambda: lora.init_adapters(jax.random.key(1), base_abs, lcfg))
        axes = lora.adapter_logical_axes(params_abs, base_axes)
        loss_fn = lora.make_lora_loss(loss_fn, lcfg, reference=case.step == "dpo")
        frozen_abs, frozen_axes = [base_abs], [base_axes]
    else:
        params_abs, axes = base_abs, base_axes
        # dpo: the frozen reference, a second full copy
        frozen_abs, frozen_axes = ([base_abs], [base_axes]) if case.step == "dpo" else ([], [])

    tx = _optimizer(case)
    p_sh = shd.param_shardings(params_abs, axes, mesh)
    opt_abs = jax.eval_shape(tx.init, params_abs)
    repl = shd.replicated(mesh)
    state_sh = TrainState(params=p_sh,
                          opt_state=shd.tree_shardings_like(opt_abs, params_abs, p_sh, mesh),
                          step=repl, rng=repl, extra=())
    state_abs = TrainState(params_abs, opt_abs, jax.ShapeDtypeStruct((), jnp.int32),
                           jax.eval_shape(lambda: jax.random.key(0)), ())
    frozen_sh = [shd.param_shardings(fa, ax, mesh) for fa, ax in zip(frozen_abs, frozen_axes)]
    batch_sh = shd.batch_sharding(mesh)
    kwargs = {"accum_steps": case.accum} if case.accum > 1 else {}
    step = make_train_step(loss_fn, tx, mesh=mesh, state_sharding=state_sh,
                           batch_sharding=batch_sh, frozen_shardings=frozen_sh, **kwargs)
    batch_abs = _batch_abstract(case)
    args = (abstract_like(state_abs, state_sh),
            jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=batch_sh),
                         batch_abs),
            *[abstract_like(fa, fs) for fa, fs in zip(frozen_abs, frozen_sh)])
    base_sh = shd.param_shardings(base_abs, base_axes, mesh)
    info = dict(
        mesh=mesh, token_logps=bool(chunk), attention=_attention(cfg), params=_count(base_abs),
        trainable=_count(params_abs),
        base_bytes=_nbytes(base_abs), base_bytes_per_device=_shard_bytes(
            abstract_like(base_abs, base_sh)),
        args_bytes_per_device=_shard_bytes(args),
        state_bytes_per_device=_shard_bytes(args[0]),
        params_bytes_per_device=_shard_bytes(args[0].params),
        frozen_bytes_per_device=_shard_bytes(args[2:]),
        batch_bytes_per_device=_shard_bytes(args[1]),
    )
    return step, args, info


def _attention(cfg) -> str:
    """The attention implementation the model runs on this backend ("auto" resolved)."""
    from alignax.models.attention import resolve_implementation

    return resolve_implementation(getattr(cfg, "attention", "auto"))


_MODELS: dict = {}


def _abstract_model(reward: bool, cfg):
    """(model, abstract params, logical axes), built once per config: flax's abstract init of
    an 8B/70B model takes minutes on this CPU."""
    import jax

    from alignax.models.transformer import make_lm, make_reward_model

    key = (reward, cfg)
    if key not in _MODELS:
        model = (make_reward_model if reward else make_lm)(cfg)
        base_abs = jax.eval_shape(model.init, jax.random.key(0))
        _MODELS[key] = (model, base_abs, model.logical_axes(base_abs))
    return _MODELS[key]


@contextlib.contextmanager
def no_row_constraint(enabled: bool = True):
    """What-if: while active, `alignax.models.transformer.rows_on_batch_axes` is the identity, so
    the decoder's projections no longer pin their activations' rows to data x fsdp: the library
    before commit f2fc2a0. XLA's sharding propagation may then follow the fsdp-sharded embed dim
    of the weights into the activations and hold the whole global batch's activations (and
    logits) on every device (SCALE.md's Finding). `dense` looks the function up at call time,
    so patching the module attribute while lowering is enough."""
    if not enabled:
        yield
        return
    from alignax.models import transformer as tr

    pinned = tr.rows_on_batch_axes
    tr.rows_on_batch_axes = lambda x: x
    try:
        yield
    finally:
        tr.rows_on_batch_axes = pinned


def _count(tree) -> int:
    import jax
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def _nbytes(tree) -> int:
    import jax
    return int(sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def _shard_bytes(tree) -> int:
    """Bytes of one device's shards of a tree of ShapeDtypeStructs with shardings."""
    import jax
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
        total += math.prod(shape) * x.dtype.itemsize
    return int(total)


# ----------------------------------------------------------------------------- analysis


def count_collectives(hlo_text: str) -> dict[str, int]:
    """Collective ops in compiled HLO text, by kind (async -start ops count as their kind)."""
    counts = dict.fromkeys(COLLECTIVES, 0)
    for m in _COLLECTIVE_RE.finditer(hlo_text):
        counts[m.group(1)] += 1
    return counts


def vocab_buffers(hlo_text: str, vocab_local: int) -> tuple[str, int]:
    """The largest array in the HLO with a dimension of size `vocab_local`: (shape, bytes)."""
    return largest_array_with_dim(hlo_text, vocab_local)


def batch_buffers(hlo_text: str, rows: int, tokens: int) -> tuple[str, int]:
    """The largest array in the HLO with a dimension of `rows` x `tokens` (flattened rows) or
    the consecutive dims [rows, tokens]: (shape, bytes)."""
    best, best_bytes = "", 0
    for m in _SHAPE_RE.finditer(hlo_text):
        dims = [int(d) for d in m.group(2).split(",")]
        hit = rows * tokens in dims or any(
            a == rows and b == tokens for a, b in zip(dims, dims[1:]))
        n = math.prod(dims) * _ITEMSIZE[m.group(1)]
        if hit and n > best_bytes:
            best, best_bytes = f"{m.group(1)}[{m.group(2)}]", n
    return best, best_bytes


def analytic_flops(case: Case) -> float:
    """FLOPs of one step's work, whole mesh (remat's recomputation not counted, as in MFU).

    Per token of a forward: 2 N_mm (the matmul weights: attention q/k/v/o and SwiGLU per layer,
    plus the LM head on the positions that predict) and A = 4 L D T (QK^T and PV over the full
    context, no causal halving). Training: forward + backward = 3 (2 N_mm + A); with LoRA the
    base's weight gradients are not computed: 2 (2 N_mm) + 3 A (the adapters are negligible).
    DPO adds one reference forward; grpo's reference log-probs come with the batch."""
    m = MODELS[case.model]
    d, f, n_layers, v = m["d_model"], m["d_ff"], m["n_layers"], m["vocab_size"]
    kv = d // m["n_heads"] * m["n_kv_heads"]
    n_body = n_layers * (2 * d * d + 2 * d * kv + 3 * d * f)
    t = case.seq
    rows = case.pairs * (1 if case.step == "grpo" else 2)
    tokens = rows * t
    head_positions = (0 if case.step == "rm" else
                      rows * (case.response_len if case.step == "grpo" else t))
    mm = 2 * n_body * tokens + 2 * d * v * head_positions
    attn = 4 * n_layers * d * t * tokens
    train = (2 * mm if case.lora_rank else 3 * mm) + 3 * attn
    ref = mm + attn if case.step == "dpo" else 0
    return float(train + ref)


def compile_case(case: Case) -> dict:
    """Lower and compile one case; the report as a dict of plain values."""
    import jax

    t0 = time.perf_counter()
    step, args, info = build(case)
    with no_row_constraint(not case.row_constraint):
        lowered = step.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    text = compiled.as_text()
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
              "temp_size_in_bytes", "generated_code_size_in_bytes")
    m = {k.replace("_size_in_bytes", ""): int(getattr(mem, k)) for k in fields}
    peak = m["argument"] + m["output"] - m["alias"] + m["temp"]
    vocab_local = MODELS[case.model]["vocab_size"] // (case.tensor if MODELS[case.model][
        "vocab_size"] % case.tensor == 0 else 1)
    vshape, vbytes = vocab_buffers(text, vocab_local)
    rows_local = case.pairs // case.accum // case.row_shards * (1 if case.step == "grpo" else 2)
    head_t = case.response_len if case.step == "grpo" else case.seq
    full_btv = rows_local * head_t * vocab_local * 4
    # activations of the whole (micro-)batch on one device: a buffer with the global rows
    rows_global = rows_local * case.row_shards
    gshape, gbytes = (batch_buffers(text, rows_global, case.seq) if case.row_shards > 1
                      else ("", 0))
    report = dict(
        case=dataclasses.asdict(case), layout=case.layout, pairs=case.pairs,
        jax=jax.__version__, backend=jax.default_backend(),
        params=info["params"], trainable=info["trainable"], base_bytes=info["base_bytes"],
        expected_args_bytes=info["args_bytes_per_device"],
        expected_state_bytes=info["state_bytes_per_device"],
        expected_frozen_bytes=info["frozen_bytes_per_device"],
        expected_batch_bytes=info["batch_bytes_per_device"],
        memory=m, peak=peak,
        fits={k: bool(peak <= cap) for k, cap in TARGETS.items()},
        collectives=count_collectives(text),
        flops=float(cost.get("flops", -1.0)),
        analytic_flops_per_device=analytic_flops(case) / case.devices,
        # copies of the base model's weights among the arguments: the trained params (full
        # fine-tuning) plus the frozen ones (reference, or LoRA's base), from XLA's count
        base_copies_in_args=round(
            (m["argument"] - info["state_bytes_per_device"] - info["batch_bytes_per_device"]
             + (0 if case.lora_rank else info["params_bytes_per_device"]))
            / info["base_bytes_per_device"], 3),
        vocab_buffer=dict(shape=vshape, bytes=vbytes, full_btv_f32_bytes=full_btv,
                          has_btv=bool(vbytes >= full_btv)),
        global_batch_buffer=dict(shape=gshape, bytes=gbytes, rows=rows_global),
        token_logps=info["token_logps"], attention=info["attention"],
        lower_s=round(t1 - t0, 2), compile_s=round(t2 - t1, 2),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )
    return report


# ----------------------------------------------------------------------------- sweeps

# The issue's verdicts: (key, claim, target device, case). Every lever on: layers scanned and
# rematerialised, bf16 params (fp32 Adam moments: the optimizer's default), chunked log-probs,
# 4096 tokens, 64 pairs per optimizer step, accumulated over micro-batches of one pair per row
# shard. (c) is tried in two layouts.
_LEVERS = dict(remat="full", scan=True, param_dtype="bfloat16", logits_chunk=8192)
VERDICTS: tuple[tuple[str, str, str, Case], ...] = (
    ("a", "8B full-parameter DPO (policy + reference) fits 8 x H100 80 GB", "H100",
     Case("8b", "dpo", 8, batch=64, accum=8, **_LEVERS)),
    ("b", "8B LoRA DPO fits one H100 80 GB", "H100",
     Case("8b", "dpo", 1, batch=64, accum=64, lora_rank=16, **_LEVERS)),
    ("c", "70B LoRA DPO fits 64 x TPU v5p 95 GB (fsdp=64)", "v5p",
     Case("70b", "dpo", 64, batch=64, accum=1, lora_rank=16, **_LEVERS)),
    ("c'", "70B LoRA DPO fits 64 x TPU v5p 95 GB (fsdp=8 x tensor=8)", "v5p",
     Case("70b", "dpo", 64, tensor=8, batch=64, accum=8, lora_rank=16, **_LEVERS)),
)

# fsdp=256 alone compiles 3-4x slower than fsdp=32 x tensor=8 here; `--meshes 256x1` adds it
SWEEP_MESHES = ((8, 1), (64, 1), (64, 8), (256, 8))

# One lever at a time on verdict (a)'s step (8B full DPO, fsdp=8, 64 pairs x 4096 in 8
# micro-batches): each row adds one lever to the previous one.
ABLATION: tuple[tuple[str, dict], ...] = (
    ("layers scanned, 8 micro-batches", dict(scan=True, accum=8)),
    ("+ remat full", dict(scan=True, accum=8, remat="full")),
    ("+ bf16 params", dict(scan=True, accum=8, remat="full", param_dtype="bfloat16")),
    ("+ logits_chunk 8192", dict(scan=True, accum=8, remat="full", param_dtype="bfloat16",
                                 logits_chunk=8192)),
    ("+ bf16 Adam moments", dict(scan=True, accum=8, remat="full", param_dtype="bfloat16",
                                 logits_chunk=8192, moment_dtype="bfloat16")),
)


FINDING_NO_ROWS = "finding --no-row-constraint"


def finding_cases() -> list[tuple[str, Case]]:
    """Verdict (a)'s step with one micro-batch of 8 pairs, the library as it is and without the
    row constraint (the library before f2fc2a0): where the whole micro-batch's activations
    live."""
    case = Case("8b", "dpo", 8, batch=8, **_LEVERS)
    return [("finding", case),
            (FINDING_NO_ROWS, dataclasses.replace(case, row_constraint=False))]


def ablation_cases() -> list[tuple[str, Case]]:
    return [(f"ablation {i}", Case("8b", "dpo", 8, batch=64, **levers))
            for i, (_, levers) in enumerate(ABLATION)]


def with_available_levers(case: Case) -> tuple[Case, list[str]]:
    """`case` with the levers this checkout lacks turned off, and their names."""
    missing = missing_levers(case)
    off = dict(remat=dict(remat="none"), scan=dict(scan=False),
               param_dtype=dict(param_dtype="float32"), logits_chunk=dict(logits_chunk=0),
               accum=dict(accum=1), moment_dtype=dict(moment_dtype=None),
               lora=dict(lora_rank=0))
    changes: dict[str, Any] = {}
    for name in missing:
        changes.update(off[name])
    if "accum" in missing and case.batch is not None:  # one micro-batch: the whole batch
        changes["batch"] = case.batch
    return dataclasses.replace(case, **changes), missing


def sweep_cases(meshes=SWEEP_MESHES) -> list[tuple[str, Case]]:
    """RM, DPO, GRPO for 1B/8B/70B over `meshes` ((devices, tensor) pairs), one pair (two
    grpo rows) of 4096 tokens per row shard per step, the verdicts' levers without
    accumulation."""
    cases = []
    for model in ("1b", "8b", "70b"):
        for step in STEPS:
            for devices, tensor in meshes:
                cases.append(("sweep", Case(model, step, devices, tensor=tensor, **_LEVERS)))
    return cases


def run_cases(named: list[tuple[str, Case]], results: str, log=print,
              after_each=None) -> list[dict]:
    """Compiles each case not yet in the `results` jsonl, appending one line per case; levers
    missing from this checkout are turned off and recorded (`dropped_levers`), so a case is
    compiled again once they land. `after_each(results so far)` runs after every case."""
    done = {}
    if os.path.exists(results):
        with open(results) as f:
            for line in f:
                r = json.loads(line)
                done[(r["name"], json.dumps(r["case"], sort_keys=True))] = r
    out = []
    for name, requested in named:
        case, dropped = with_available_levers(requested)
        key = (name, case.label())
        if key in done:
            out.append(done[key])
            continue
        t0 = time.perf_counter()
        try:
            r = compile_case(case)
        except Exception as e:  # recorded in the table: a case that does not build or compile
            r = dict(case=dataclasses.asdict(case), layout=case.layout, pairs=case.pairs,
                     error=f"{type(e).__name__}: {e}"[:300])
        commit, dirty = _checkout()
        r.update(name=name, requested=requested.label(), dropped_levers=dropped, commit=commit,
                 uncommitted=dirty)
        log(f"[{time.strftime('%H:%M:%S')}] {name} {case.model} {case.step} {case.layout} "
            f"{time.perf_counter() - t0:.1f}s "
            + (r.get("error") or f"peak {r['peak'] / 2**30:.2f} GiB"), flush=True)
        with open(results, "a") as f:
            f.write(json.dumps(r) + "\n")
        out.append(r)
        if after_each is not None:
            after_each(out)
    return out


def select_results(named: list[tuple[str, Case]], results: str) -> list[dict]:
    """For each requested case, its result in the `results` jsonl: the one compiled with every
    lever this checkout has, else the latest one compiled for the same request."""
    by_request: dict = {}
    with open(results) as f:
        for line in f:
            r = json.loads(line)
            by_request.setdefault((r["name"], r["requested"]), []).append(r)
    out = []
    for name, requested in named:
        found = by_request.get((name, requested.label()), [])
        if not found:
            continue
        current = json.loads(with_available_levers(requested)[0].label())
        exact = [r for r in found if r["case"] == current]
        out.append((exact or found)[-1])
    return out


def calibration() -> dict:
    """Two facts about XLA:CPU's analysis, measured: the f32 temporaries of a bf16 matmul, and
    FLOPs of a loop (the tiny DPO step, layers scanned vs unrolled)."""
    import jax
    import jax.numpy as jnp

    a = jax.ShapeDtypeStruct((4096, 4096), jnp.bfloat16)
    out = {}
    for name, fn in (("bf16 x bf16 -> bf16", lambda x, y: x @ y),
                     ("bf16 x bf16 -> f32", lambda x, y: jnp.dot(
                         x, y, preferred_element_type=jnp.float32))):
        m = jax.jit(fn).lower(a, a).compile().memory_analysis()
        out[name] = dict(argument=m.argument_size_in_bytes, output=m.output_size_in_bytes,
                         temp=m.temp_size_in_bytes)
    if available_levers()["scan"]:
        flops = {}
        for scan in (False, True):
            case = Case("tiny", "dpo", 1, seq=64, scan=scan)
            step, args, _ = build(case)
            cost = step.lower(*args).compile().cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            flops["scan" if scan else "unrolled"] = float(cost["flops"])
        out["tiny dpo flops"] = flops
    return out


# ----------------------------------------------------------------------------- output


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def _fits(r: dict) -> str:
    return " ".join(k if ok else f"~~{k}~~" for k, ok in r["fits"].items())


def _coll(r: dict) -> str:
    return "/".join(str(r["collectives"][k]) for k in COLLECTIVES)


def _btv(r: dict) -> str:
    v = r["vocab_buffer"]
    return f"{'**yes**' if v['has_btv'] else 'no'} ({v['shape']})"


def sweep_row(r: dict) -> str:
    c = r["case"]
    head = (f"| {c['model']} | {c['step']} | {c['devices']} | {r['layout']} | "
            f"{r['pairs']}x{c['seq']} |")
    dropped = ", ".join(r.get("dropped_levers") or []) or "-"
    if "error" in r:
        return head + f" error: {r['error'][:150]} |" + " |" * 8 + f" {dropped} |"
    m = r["memory"]
    return (head + f" {gib(m['argument'])} | {gib(m['output'] - m['alias'])} | {gib(m['temp'])} | "
            f"**{gib(r['peak'])}** | {_fits(r)} | {_coll(r)} | "
            f"{r['flops'] / 1e12:.1f} / {r['analytic_flops_per_device'] / 1e12:.1f} | "
            f"{r['lower_s'] + r['compile_s']:.0f} | {_btv(r)} | {dropped} |")


SWEEP_HEADER = (
    "| model | step | devices | layout | pairs (grpo: rows) x T | args | out - alias | temp | "
    "peak | fits (struck: no) | AG/RS/AR/A2A/CP | TFLOP/device XLA / analytic | compile s | "
    "[B,T,V] logits | levers not in this run |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def levers_text(c: dict) -> str:
    return (f"compute {c['dtype']}, params {c['param_dtype']}, Adam moments "
            f"{c['moment_dtype'] or 'float32'}, remat {c['remat']}, scan_layers {c['scan']}, "
            f"logits_chunk {c['logits_chunk'] or 'off'}, accum {c['accum']}, "
            f"LoRA rank {c['lora_rank'] or 'off'}"
            + (", rows NOT pinned to the batch axes (what-if: the library before f2fc2a0)"
               if c.get("row_constraint") is False else ""))


def verdict_block(key: str, claim: str, target: str, r: dict) -> str:
    c = r["case"]
    lines = [f"### ({key}) {claim}"]
    if "error" in r:
        lines.append(f"Did not compile: `{r['error']}`.")
        return "\n".join(lines)
    m = r["memory"]
    cap = TARGETS[target]
    ok = r["fits"][target]
    dropped = r.get("dropped_levers") or []
    lines += [
        f"**{'FITS' if ok else 'NO FIT'}**: peak {gib(r['peak'])} GiB per device against "
        f"{target} {cap / 1e9:.0f} GB = {gib(cap)} GiB ({100 * r['peak'] / cap:.0f}%).",
        "",
        f"- settings: {r['layout']} on {c['devices']} device(s); {r['pairs']} pairs x "
        f"{c['seq']} tokens per step in {c['accum']} micro-batch(es); "
        f"{levers_text(c)}" + (f"; levers NOT in this run (not in the checkout): "
                               f"{', '.join(dropped)}" if dropped else ""),
        f"- per device: arguments {gib(m['argument'])} GiB (expected from the shardings "
        f"{gib(r['expected_args_bytes'])}: state {gib(r['expected_state_bytes'])}, "
        f"frozen {gib(r['expected_frozen_bytes'])}, batch {gib(r['expected_batch_bytes'])}), "
        f"output {gib(m['output'])}, alias {gib(m['alias'])}, temp {gib(m['temp'])} GiB",
        f"- parameters {r['params'] / 1e9:.2f} B, trained {r['trainable'] / 1e6:.1f} M; "
        f"copies of the base weights among the arguments: {r['base_copies_in_args']:g}",
        f"- [B,T,V] logits buffer in the compiled HLO: {_btv(r)}: the largest buffer with a "
        f"vocab dim, logits or a weight (on CPU e.g. the f32 copy of a bf16 [D, V] LM head), "
        f"is {r['vocab_buffer']['bytes'] / 2**20:.0f} MiB; a full f32 [B,T,V] of one "
        f"micro-batch would be {r['vocab_buffer']['full_btv_f32_bytes'] / 2**20:.0f} MiB",
        f"- collectives AG/RS/AR/A2A/CP: {_coll(r)}; TFLOP per device: XLA "
        f"{r['flops'] / 1e12:.1f}, analytic {r['analytic_flops_per_device'] / 1e12:.1f}; "
        f"lower + compile {r['lower_s'] + r['compile_s']:.0f} s",
    ]
    return "\n".join(lines)


def render(results: list[dict], header: str, calib: dict | None) -> str:
    by_name: dict[str, list[dict]] = {}
    for r in results:
        by_name.setdefault(r["name"], []).append(r)
    parts = [header, ANALYSIS_NOTES]
    if calib:
        parts.append(calibration_text(calib))
    parts.append("## Verdicts\n\n" + verdict_summary(by_name))
    parts.append(findings_text(by_name))
    for key, claim, target, _ in VERDICTS:
        for suffix in ("", f" {NO_LICM_TAG}"):
            for r in by_name.get(f"verdict {key}{suffix}", []):
                parts.append(verdict_block(key + suffix, claim, target, r))
    ablation = [by_name[f"ablation {i}"][-1] for i in range(len(ABLATION))
                if f"ablation {i}" in by_name]
    if ablation:
        parts.append(ablation_text(ablation))
    rows = by_name.get("sweep", [])
    if rows:
        parts.append("## Sweep\n\n"
                     f"Levers requested: {levers_text(json.loads(rows[0]['requested']))} "
                     "(the last column names those a row ran without: not yet in the "
                     "checkout when it was compiled). One pair (grpo: two rollout rows, "
                     "half prompt, half response) of 4096 tokens per row shard; GiB per "
                     "device." + _before_fix_note(rows) + "\n\n" + SWEEP_HEADER
                     + "\n" + "\n".join(sweep_row(r) for r in rows))
    return "\n\n".join(parts) + "\n"


def _peak_cell(r: dict | None, target: str) -> str:
    if r is None:
        return "not run"
    if "error" in r:
        return "did not compile"
    return f"{'FITS' if r['fits'][target] else '**NO FIT**'}, {gib(r['peak'])} GiB"


def verdict_summary(by_name: dict) -> str:
    lines = ["| verdict | target (GiB) | library now | library, XLA:CPU's loop-invariant "
             "code motion off |",
             "|---|---|---|---|"]
    for key, claim, target, _ in VERDICTS:
        cells = [_peak_cell((by_name.get(name) or [None])[-1], target)
                 for name in (f"verdict {key}", f"verdict {key} {NO_LICM_TAG}")]
        lines.append(f"| ({key}) {claim} | {target} ({gib(TARGETS[target])}) | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + (
        "\n\nThe last column compiles the same programs with "
        f"`XLA_FLAGS={NO_LICM_FLAG}` (`--no-licm`): XLA:CPU then no longer hoists f32 copies "
        "of the stacked bf16 weights out of the layer scan (see the notes above); a GPU or TPU, "
        "which multiplies bf16 natively, makes no such copies, so this column is the closer "
        "estimate for bf16 parameters, and the library column the conservative bound."
        + _before_fix_note([r for key, *_ in VERDICTS
                            for r in by_name.get(f"verdict {key} {NO_LICM_TAG}", [])]))


# Records compiled before the library pinned the activations' rows (commit f2fc2a0) with this
# module's former `--constrain` what-if, which patched `transformer.dense` with the same
# constraint from outside; SCALE.jsonl marks them with this field.
BEFORE_FIX = "compiled_as"


def _before_fix_note(rows: list[dict]) -> str:
    n = sum(BEFORE_FIX in r for r in rows)
    if not n:
        return ""
    return (f" {'These' if n == len(rows) else n} {'' if n == len(rows) else 'of these '}"
            f"{len(rows)} compiles ran before commit f2fc2a0, with this tool's former "
            "`--constrain` what-if, which patched `transformer.dense` with the constraint that "
            "the library's `rows_on_batch_axes` now applies by itself (SCALE.jsonl: their "
            "`compiled_as` field). Six cases were compiled both ways, with the what-if before "
            "the fix and with the library after it: the four verdicts and the Finding's pinned "
            "case gave byte-identical memory analyses and the same collectives and FLOPs (as "
            "did the Finding's unpinned case, by the old library and by "
            "`--no-row-constraint`), so these rows stand for the library now.")


def findings_text(by_name: dict) -> str:
    fixed = (by_name.get("finding") or [None])[-1]
    before = (by_name.get(FINDING_NO_ROWS) or [None])[-1]
    numbers = ""
    if before and fixed and "error" not in before and "error" not in fixed:
        g, h = before["global_batch_buffer"], fixed["global_batch_buffer"]
        numbers = (
            f" Measured on verdict (a)'s step with one micro-batch of 8 pairs (16 rows x 4096 "
            f"tokens, 2 rows per device): before (`--no-row-constraint`), the largest buffer "
            f"spanning all 16 rows is {g['shape'] or 'none'} ({g['bytes'] / 2**30:.2f} GiB), "
            f"temp {gib(before['memory']['temp'])} GiB and the peak {gib(before['peak'])} GiB; "
            f"the library now: the largest such buffer is {h['shape'] or 'none'} "
            f"({h['bytes'] / 2**30:.2f} GiB), temp {gib(fixed['memory']['temp'])} GiB and the "
            f"peak {gib(fixed['peak'])} GiB. Collectives AG/RS/AR/A2A/CP: {_coll(before)} "
            f"before, {_coll(fixed)} now (weights all-gathered instead of activations "
            "all-reduced).")
    return (
        "### Finding: the FSDP layout did not shard the activations by rows (fixed)\n\n"
        "Found with this tool, fixed in the library by commit f2fc2a0 (with "
        "`alignax/models/transformer.py`'s `rows_on_batch_axes`). Parameters are sharded on "
        "their embed (D) dimension over fsdp and the batch on its rows over data x fsdp; before "
        "the fix nothing inside the model said where activations go. For each projection x W, "
        "XLA's sharding propagation then picked between gathering W (ZeRO-3: each device keeps "
        "its own rows) and contracting over its local slice of D and all-reducing the output, "
        "and in these compiles it picked the second for every projection and the LM head: "
        "every device computed partial products over all rows of the global (micro-)batch and "
        "all-reduced them, so each projection's transient output ([all rows x T, F]) was "
        "full-batch on every device and the activations kept for the backward were split by D "
        "instead of by rows. The transients grew with the global batch instead of falling with "
        "the mesh (verdict (c), 64 pairs of 4096 tokens in one micro-batch: 403.89 GiB per "
        "device, NO FIT, in the superseded compile of SCALE.jsonl; it now fits). The fix: "
        "`dense` (every projection and the LM head) applies `rows_on_batch_axes` to its "
        "input and output, a `with_sharding_constraint` of "
        "the rows to data x fsdp (other dims left to XLA) whenever "
        "`jax.sharding.get_abstract_mesh()` has those axes and they divide the rows, and "
        "`make_train_step(..., mesh=)` traces its step under "
        "`jax.sharding.use_abstract_mesh(mesh.abstract_mesh)`, so the constraint is on in "
        "every step built on a mesh (this tool's steps included) and a no-op without one."
        + numbers + " `--no-row-constraint` (a what-if, used only for this pair) lowers with "
        "`rows_on_batch_axes` patched to the identity, which reproduces the library before the "
        "fix. The sweep compiled before the fix without any constraint (36 cases) is kept in "
        "SCALE.jsonl under 'superseded: sweep', e.g. 8B DPO on fsdp=64: 188.24 GiB per device "
        "then, 15.04 now.")


def ablation_text(rows: list[dict]) -> str:
    lines = ["## One lever at a time (verdict (a)'s step)",
             "",
             "8B full-parameter DPO, fsdp=8, 64 pairs x 4096 tokens per step in 8 micro-batches "
             "of 8 pairs (one per device); GiB per device." + _before_fix_note(rows), "",
             "| levers | args | temp | peak | H100 | [B,T,V] logits | levers not in this run |",
             "|---|---|---|---|---|---|---|"]
    for (label, _), r in zip(ABLATION, rows):
        dropped = ", ".join(r.get("dropped_levers") or []) or "-"
        if "error" in r:
            lines.append(f"| {label} | error: {r['error'][:120]} | | | | | {dropped} |")
            continue
        lines.append(f"| {label} | {gib(r['memory']['argument'])} | {gib(r['memory']['temp'])} "
                     f"| **{gib(r['peak'])}** | {'fits' if r['fits']['H100'] else 'no'} | "
                     f"{_btv(r)} | {dropped} |")
    return "\n".join(lines)


def calibration_text(calib: dict) -> str:
    lines = ["### Calibration (measured by this command)"]
    for name in ("bf16 x bf16 -> bf16", "bf16 x bf16 -> f32"):
        m = calib[name]
        lines.append(f"- one [4096, 4096] x [4096, 4096] matmul, {name}: arguments "
                     f"{m['argument'] / 2**20:.0f} MiB, output {m['output'] / 2**20:.0f} MiB, "
                     f"temp {m['temp'] / 2**20:.0f} MiB")
    if "tiny dpo flops" in calib:
        f = calib["tiny dpo flops"]
        lines.append(f"- cost_analysis FLOPs of the tiny DPO step (2 layers): unrolled "
                     f"{f['unrolled'] / 1e6:.0f} M, layers scanned {f['scan'] / 1e6:.0f} M")
    return "\n".join(lines)


ANALYSIS_NOTES = """## What the numbers are, and what they are not

Each number is XLA:CPU's own analysis of the SPMD-partitioned program one device runs
(`compiled.memory_analysis()` after buffer assignment): **arguments** (this device's shards of
the train state, the batch and the frozen weights), **output**, **alias** (outputs written into
donated inputs: the new train state), **temp** (every intermediate buffer, laid out by XLA's
heap simulator). **peak = arguments + output - alias + temp**: all of them live at once, an
upper bound of what the program holds at any instant under XLA:CPU's schedule. A target
*fits* when peak <= its memory in decimal GB (H100 80e9, H200 141e9, v5e 16e9, v5p 95e9
bytes), which leaves the GiB between the marketed GB and the device's real capacity (about
74.5 of 79.6 GiB on an H100) for the runtime (CUDA context, cuBLAS/NCCL workspaces,
allocator fragmentation): none of those are in the analysis.

How it differs from the GPU/TPU compilers' analysis of the same program:
- conservative (CPU counts more): XLA:CPU computes a bf16 x bf16 -> bf16 matmul in float32,
  with f32 copies of both operands and an f32 result as temporaries (calibration below: 192 MiB
  of temps for a matmul whose GPU version needs none); GPU/TPU fuse far more elementwise
  chains into their neighbours (fewer materialised temporaries); the attention here is
  `TransformerConfig.attention="auto"`, which on XLA:CPU is the CPU path "xla"
  (`alignax.models.attention`: a custom VJP whose causal form splits the queries into 8
  blocks), and it keeps the float32 probabilities [B, K, G, T, S] (the causal blocks: 9/16 of
  the T x S square) for the backward of the layer being recomputed: about 2 rows x 32 heads x
  4096^2 x 4 bytes x 9/16 = 2.25 GiB (twice that with 70B's 64 heads, an eighth with
  tensor=8), plus their gradient, per 2 rows of 4096 tokens here. On the hardware "auto"
  picks a flash kernel ("cudnn" on NVIDIA GPUs, "splash" on TPU), which keeps O(T)
  statistics instead; those kernels need their hardware and cannot be compiled by XLA:CPU;
- conservative, and large with bf16 parameters and scanned layers: XLA:CPU turns each bf16
  dot into an f32 dot with converts of its operands, and its while-loop-invariant code motion
  then hoists the convert of the whole stacked [L, ...] weights out of the layer scan: an f32
  copy of every layer's weights is live for the whole step. Measured while writing this tool
  on the 8B LoRA DPO step (one device, bf16 params, remat full, 1 pair x 1024 tokens per
  micro-batch): temp 34.2 GiB, with f32[32, 4096, 14336] buffers of 7 GiB each; with
  `XLA_FLAGS=--xla_disable_hlo_passes=while-loop-invariant-code-motion` the same program's
  temp is 5.8 GiB. A GPU/TPU computes bf16 dots natively and has no such convert to hoist, so
  the temp of rows with bf16 parameters and scanned layers is an overestimate, by up to 4 bytes
  per parameter whose stacked weights were converted (28 GiB in that example);
- not conservative (CPU counts less): the GPU/TPU latency-hiding schedulers overlap the next
  layer's FSDP all-gather with the current layer's compute, holding two layers' gathered
  weights at once, and async collectives keep their buffers live longer; backend kernels'
  workspaces (cuDNN, cuBLAS, NCCL) are not XLA buffers;
- the arguments are exact: they equal, to the byte, the sum of this device's shards computed
  from the NamedShardings (`expected_args_bytes`; tests/test_aot.py checks it);
- collectives are counted in the compiled HLO text, statically: an op inside a loop body (the
  scanned layers, the accumulation scan) counts once, not once per iteration. XLA:CPU lowers
  most of the gradient reductions as all-reduce (it does not form reduce-scatter);
- `cost_analysis()` FLOPs also count a loop body once, whatever its trip count (calibration
  below): with scanned layers or accumulation the XLA number is far below the step's work; the
  analytic column (6 N per trained token + 12 L D T attention per token, 2 N + 4 L D T per
  reference-forward token, LoRA: 4 N instead of 6 N, whole step / devices) is the step's work.

So the peak is an estimate within tens of percent, not a measurement; a verdict with a wide
margin (either way) is robust to it, one within ~20% of the capacity is not.
"""


# ----------------------------------------------------------------------------- CLI


# LLVM code generation at -O0 without its expensive passes: about a third less compile time
# here, and no effect on what is reported (buffer assignment, memory analysis, FLOPs and the
# HLO are fixed before LLVM runs; checked equal on the 1B DPO step).
NO_LICM_FLAG = "--xla_disable_hlo_passes=while-loop-invariant-code-motion"
NO_LICM_TAG = "[no LICM]"
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0",
                      "--xla_llvm_disable_expensive_passes=true")


def _xla_flags(n: int, flags: str, no_licm: bool = False) -> str:
    flags = re.sub(_DEVICE_FLAG + r"=\d+", "", flags)
    wanted = FAST_COMPILE_FLAGS + ((NO_LICM_FLAG,) if no_licm else ())
    extra = [f for f in wanted if f.split("=")[0] not in flags]
    return " ".join([flags.strip(), f"{_DEVICE_FLAG}={n}", *extra]).strip()


def _ensure_devices(n: int, argv, no_licm: bool = False) -> None:
    """Sets XLA_FLAGS (`n` simulated CPU devices, FAST_COMPILE_FLAGS) before jax is imported;
    re-executes this module with them when jax is already imported with fewer devices."""
    flags = os.environ.get("XLA_FLAGS", "")
    m = re.search(_DEVICE_FLAG + r"=(\d+)", flags)
    if "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = _xla_flags(max(n, int(m.group(1)) if m else 0), flags,
                                             no_licm)
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        return
    import jax
    if len(jax.devices()) >= n:
        return
    env = dict(os.environ, XLA_FLAGS=_xla_flags(n, flags, no_licm), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "benchmarks.aot", *argv]
    raise SystemExit(subprocess.call(cmd, env=env))  # noqa: S603 (this module, its own argv)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="1b")
    p.add_argument("--step", choices=STEPS, default="dpo")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--tensor", type=int, default=1)
    p.add_argument("--batch", type=int, default=None,
                   help="pairs (rm, dpo) or rows (grpo) per step; default 1 per row shard x accum")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--response", type=int, default=0, help="grpo response tokens (0: seq/2)")
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--remat", choices=REMAT, default="none")
    p.add_argument("--scan", action="store_true", help="scan over stacked layers")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    p.add_argument("--param-dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--moment-dtype", choices=("float32", "bfloat16"), default=None)
    p.add_argument("--logits-chunk", type=int, default=0)
    p.add_argument("--lora-rank", type=int, default=0)
    p.add_argument("--no-row-constraint", action="store_true",
                   help="what-if: rows_on_batch_axes patched to the identity while lowering, "
                        "the library before commit f2fc2a0 (see SCALE.md's Finding)")
    p.add_argument("--json", default=None, help="write the report of the one case here")
    p.add_argument("--table", default=None,
                   help="run the verdicts and the sweep and write this markdown file")
    p.add_argument("--results", default="benchmarks/SCALE.jsonl",
                   help="jsonl of compiled cases, one line each (a table run resumes from it)")
    p.add_argument("--no-licm", action="store_true",
                   help=f"compile with {NO_LICM_FLAG} (see SCALE.md); with --table: only the "
                        "verdicts, named '... [no LICM]'")
    p.add_argument("--render-only", action="store_true",
                   help="write the table from --results without compiling anything")
    p.add_argument("--only", choices=("verdicts", "sweep", "all"), default="all")
    p.add_argument("--meshes", nargs="+", default=[f"{d}x{t}" for d, t in SWEEP_MESHES],
                   help="meshes of the sweep, as DEVICESxTENSOR")
    return p.parse_args(argv)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    _ensure_devices(MAX_DEVICES if args.table else args.devices, argv, args.no_licm)
    if args.table:
        return write_table(args, argv)
    case = Case(args.model, args.step, args.devices, tensor=args.tensor, batch=args.batch,
                seq=args.seq, response=args.response, accum=args.accum, remat=args.remat,
                scan=args.scan, dtype=args.dtype, param_dtype=args.param_dtype,
                moment_dtype=args.moment_dtype, logits_chunk=args.logits_chunk,
                lora_rank=args.lora_rank, row_constraint=not args.no_row_constraint)
    report = compile_case(case)
    report["name"] = "cli"
    text = json.dumps(report, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    print(text)


def _git(*cmd: str) -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True,  # noqa: S603,S607
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def table_cases(args) -> list[tuple[str, Case]]:
    """The named cases of a table run (the verdicts, the finding's pair, the ablation, the
    sweeps), as the CLI arguments select them."""
    named: list[tuple[str, Case]] = []
    no_licm = [(f"verdict {key} {NO_LICM_TAG}", case) for key, _, _, case in VERDICTS]
    if args.no_licm:  # only these: the process runs with the pass disabled
        named = no_licm
    elif args.only in ("verdicts", "all"):
        named += [(f"verdict {key}", case) for key, _, _, case in VERDICTS]
        named += ablation_cases()
        if args.render_only:
            named += no_licm
    if not args.no_licm:
        named += finding_cases()
    if args.only in ("sweep", "all") and not args.no_licm:
        def parse(meshes):
            return tuple(tuple(int(v) for v in m.split("x")) for m in meshes)
        named += sweep_cases(parse(args.meshes))
    return named


def write_table(args, argv) -> None:
    """Compiles the verdicts and the sweep (resuming from `args.results`) and writes the table
    after every case."""
    named = table_cases(args)
    calib = calibration()

    def write(results):
        with open(args.table, "w") as f:
            f.write(render(results, _table_header(argv, results), calib))

    if args.render_only:
        results = select_results(named, args.results)
    else:
        results = run_cases(named, args.results, after_each=write)
    write(results)
    print(f"wrote {args.table} ({len(results)} cases)")


def _commit_range(results) -> str:
    """'oldest and newest' of the results' commits, in this checkout's history order."""
    commits = {r.get("commit", "?") for r in results}
    order = _git("log", "--format=%h", "-300").split()
    known = [c for c in order if c in commits]
    if not known:
        return ", ".join(sorted(commits))
    return f"{known[-1]} and {known[0]}"


def _checkout() -> tuple[str, list[str]]:
    """(short commit, files of alignax/ with uncommitted changes)."""
    dirty = sorted({line.split(maxsplit=1)[-1]
                    for line in _git("status", "--porcelain", "--", "alignax").splitlines()
                    if line.strip()})
    return _git("rev-parse", "--short", "HEAD"), dirty


def _table_header(argv, results=()) -> str:
    import jax

    commit, dirty = _checkout()
    levers = available_levers()
    return (
        "# Compiled memory at scale: 1B / 8B / 70B steps on simulated meshes\n\n"
        f"Generated by `python -m benchmarks.aot "
        f"{' '.join(a for a in argv if a != '--render-only')}`"
        + (" (this file rendered with `--render-only` from the results file it wrote; the "
           f"cases compiled between commits {_commit_range(results)} while the library's "
           "levers landed, each recorded with its commit and the alignax files then "
           "uncommitted; each row names the levers it ran without, if any; the verdicts and "
           "the Finding's pair were recompiled after commit f2fc2a0 pinned the activations' "
           "rows, the rows compiled before it with the same constraint applied from outside "
           "say so where they appear, and SCALE.jsonl keeps the superseded compiles under "
           "names starting 'superseded: ', which this file does not show)"
           if "--render-only" in argv else "") + " at commit "
        f"{commit}"
        + (f" (with uncommitted changes in: {', '.join(dirty)})" if dirty else "")
        + f", {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, jax {jax.__version__}, "
        f"XLA:CPU with {len(jax.devices())} simulated devices. Levers in this checkout: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in levers.items())
        + ".\n\nModels (Llama-3 shapes, vocab 128256, GQA with 8 kv heads, SwiGLU, RoPE theta "
        "500000): 1B = d 2048, 16 layers, 32 heads, d_ff 8192, tied embeddings (1.24 B "
        "params); 8B = d 4096, 32 layers, 32 heads, d_ff 14336, untied (8.03 B); 70B = d 8192, "
        "80 layers, 64 heads, d_ff 28672, untied (70.6 B). Steps: `make_train_step` (AdamW, "
        "`make_optimizer`) over `make_reward_loss` (rm), `make_direct_loss(\"dpo\")` with the "
        "frozen reference as the step's frozen argument (dpo), or `make_policy_loss` "
        "(ppo_clip, KL to reference log-probs precomputed in the batch; grpo); LoRA: "
        "`alignax.models.lora` adapters of rank 16 on every projection, the frozen base is the "
        "reference. Mesh axes (data=1, fsdp, tensor), shardings from `alignax.train.sharding`.")


if __name__ == "__main__":
    main()
