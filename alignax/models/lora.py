"""LoRA: low-rank adapters on any projection of a frozen base model, as pure functions over
param trees.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv:2106.09685). A
targeted projection with kernel W [I, O] computes

    y = x W + (alpha / r) (x A) B,        A [I, r] (random),  B [r, O] (zeros at init),

so the adapted model starts equal to the base, and only A and B (r (I + O) numbers per
projection) are trained. The base stays one frozen array tree that is BOTH the adapted policy's
weights and, without adapters, the reference policy of DPO-style losses: no second copy of the
model exists anywhere.

    cfg = LoraConfig(rank=16, alpha=32.0, targets=r"attn/(q|k|v|o)|mlp/(gate|up|down)")
    adapters = init_adapters(rng, base_params, cfg)   # {... "attn": {"q": {"a", "b"}} ...}
    apply = make_lora_apply(model, cfg)
    logits = apply(adapters, base_params, input_ids, mask)          # adapted policy
    ref_logits = model.apply(base_params, input_ids, mask)          # reference: the base
    merged = merge(base_params, adapters, cfg)                      # W + (alpha/r) A B
    export_merged(model, base_params, adapters, cfg, "out/")        # for transformers

Training (any loss built on `model.apply`, e.g. `make_direct_loss(model.apply, "dpo")`):
`step = make_train_step(make_lora_loss(loss_fn, cfg), tx)` trains `TrainState(params=adapters)`
with `step(state, batch, base_params)`: the base is a frozen argument (neither donated nor
differentiated) and is passed again as the loss's `ref_params`.

Paths. A projection is a parameter leaf named "kernel" of rank >= 2 (every nnx.Linear); its
path is the module path, e.g. "decoder/layers/3/attn/q" (or "decoder/layers/attn/q" with
`scan_layers`, whose kernels are [L, I, O]: the adapters then get the leading L too, [L, I, r]
and [L, r, O], and ride through the layer scan with the kernels). `LoraConfig.targets` is a
regex searched (`re.search`) in these paths.

How the factored forward is computed (no W + AB is ever formed). `lora_params` replaces each
targeted kernel leaf by a `LowRankKernel` (a pytree of W, A, B and a dropout key), which flows
unchanged through the model's param plumbing (`nnx.replace_by_pure_dict`/`nnx.merge`, the
`scan_layers` scan slices its leaves per layer, remat). While an adapted function runs
(`intercept()`, applied by `make_lora_apply` and `make_lora_loss`), `nnx.Linear.__call__` is
swapped for one that computes a `LowRankKernel` kernel's projection in factored form: the
dot with W exactly as nnx.Linear (its dtype promotion, `dot_general`, precision, bias), plus
(alpha/r) (dropout(x) A) B. Kernels that are plain arrays (the reference forward, untargeted
projections) take nnx.Linear's own code, so the swap changes nothing else; it is undone on exit
(and only ever active while a function is being traced or run eagerly). The backward then needs
only x^T (dy B^T) and (x A)^T dy: dW (full size) is never computed because W is not an argument
of the gradient. The alternative, merging W' = W + (alpha/r) A B inside the step and calling the
plain model (`merge` + `model.apply`), forms a full-size W' per projection per step, keeps them
for the backward and produces a full-size dW'; tests/models/test_lora.py checks that the
factored gradient has no dot of a kernel's shape at all.

Why not qwix (0.1.8, tried here with jax 0.10.2 / flax 0.12.8). `qwix.LoraProvider(module_path=
regex, rank, alpha)` + `apply_lora_to_model(module, provider, *inputs, rngs=...)` works on an nnx
Module *instance*: it clones it, swaps its class for one whose `__call__` patches jax's
dot_general/einsum while it runs and finds each weight by walking Python frames for `self`, and
runs the model once eagerly to create `nnx.LoRAParam` variables `kernel_lora_a`/`kernel_lora_b`
in the matched modules (10 s for a 2-layer d=32 CausalLM on this CPU). Its forward is factored
like ours and, on the unscanned CausalLM, `nnx.split(m, nnx.LoRAParam, ...)` + `jax.jit` +
`jax.grad` gave gradients for the adapters only. What it lacks here: (1) alignax models are
pure (init, apply) pairs over dicts whose graphdef is fixed by `make_from_module`; LoRAParam
subclasses Param, so the adapters land inside the model's own Param tree and the base tree,
the reference forward and every `model.apply` user would need a second, qwix-modified
graphdef; (2) with `scan_layers=True` `apply_lora_to_model` fails (IndexError in `lax.scan`:
it attaches an `nnx.Rngs` to every submodule, whose scalar state becomes part of the stacked
layers the scan slices); (3) its creation call needs concrete inputs and runs eagerly (an
abstract 8B/70B AOT plan would have to wrap it in eval_shape); (4) adapter shardings are
derived from the concrete base array's NamedSharding, not from logical axis names; (5) it has
no merge, unmerge or export. The mechanism needed here is a few dozen lines over our own param
trees, so it is written here; no qwix code is copied and qwix is not a dependency.

Compiled memory (XLA:CPU `memory_analysis()` temp bytes, fp32, gradient of the summed
log-probs w.r.t. the trained params, d_model 1024, d_ff 4096, 4 layers, vocab 2048, 8 x 512
tokens, rank 16 on every projection; factored (this module) / merged in the step / full
fine-tuning, MiB): scanned layers 3604 / 4055 / 3706; scanned with remat="full" 1045 / 1359 /
882; unrolled 3272 / 2984 / 2640; unrolled with remat="full" 3080 / 2760 / 2445. The saved
residuals are those of full fine-tuning plus (x A) [N, r] per projection (checked with
`print_saved_residuals`); the extra temp is transient: XLA:CPU keeps both dot outputs x W and
(x A) B [N, O] of a projection before adding them (a GPU GEMM can take the addend in its
epilogue; not measured here). The merged form instead keeps a full-size W' per projection for
the backward. Beyond temps, LoRA's arguments are the base once plus the adapters and their Adam
moments, instead of params, reference, gradients and two moments of the whole model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import re
import threading
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

Params = dict[str, Any]

DEFAULT_TARGETS = r"attn/(q|k|v|o)$|mlp/(gate|up|down|fc|proj)$"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Which projections get adapters and how they are scaled.

    Attributes:
      rank: r, the adapters' inner width (A [I, r], B [r, O]); memory and capacity grow with it.
      alpha: the update is scaled by alpha / r (so changing r at fixed alpha keeps the initial
        learning dynamics comparable; Hu et al. 2021, section 4.1).
      targets: regex searched in each projection's module path ("decoder/layers/0/attn/q", the
        kernel's path without "/kernel"); the default targets every attention and MLP
        projection (Llama and GPT-2 names). Matching no projection is a ValueError listing them.
      dropout: dropout rate on the adapter branch's input, (alpha/r) (dropout(x) A) B, applied
        only when the adapted function gets an rng (training); 0 disables it.
      full: regex searched in parameter paths ("score/kernel") of base parameters trained in
        full beside the adapters (e.g. "score/" for a reward model's new head); empty: none.
      dtype: dtype of the adapters ("float32" or "bfloat16"); the branch is computed in the
        projection's compute dtype.
    """

    rank: int = 8
    alpha: float = 16.0
    targets: str = DEFAULT_TARGETS
    dropout: float = 0.0
    full: str = ""
    dtype: str = "float32"

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be a positive int, got {self.rank!r}")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)
                and self.alpha > 0):
            raise ValueError(f"LoRA alpha must be a positive number, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"LoRA dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        for name in ("targets", "full"):
            try:
                re.compile(getattr(self, name))
            except re.error as e:
                raise ValueError(f"LoRA {name} {getattr(self, name)!r} is not a regex: {e}") \
                    from None
        if not self.targets:
            raise ValueError("LoRA targets must be a non-empty regex")

    @property
    def scale(self) -> float:
        """alpha / r, the factor of the low-rank update."""
        return self.alpha / self.rank

    @classmethod
    def from_mapping(cls, mapping) -> "LoraConfig":
        """From a dict or ConfigDict (e.g. `config.model.lora`), rejecting unknown keys."""
        unknown = sorted(set(mapping) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown LoRA config keys {unknown}; valid: "
                             f"{sorted(cls.__dataclass_fields__)}")
        return cls(**dict(mapping))


# --------------------------------------------------------------------------- paths


def _key(entry) -> Any:
    return getattr(entry, "key", getattr(entry, "idx", entry))


def _path_str(keys) -> str:
    return "/".join(str(k) for k in keys)


def _leaves(tree) -> list[tuple[tuple, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(tuple(_key(e) for e in path), leaf) for path, leaf in flat]


def projections(params: Params) -> dict[str, tuple]:
    """Module path -> key path of its kernel, for every projection ("kernel" leaf of rank >= 2)
    of `params` (arrays or `jax.ShapeDtypeStruct`s), in tree order."""
    return {_path_str(keys[:-1]): keys for keys, leaf in _leaves(params)
            if keys and keys[-1] == "kernel" and len(getattr(leaf, "shape", ())) >= 2}


def _summary(paths) -> list[str]:
    """Paths with layer numbers folded ("decoder/layers/*/attn/q"), sorted, unique."""
    return sorted({re.sub(r"/\d+(?=/|$)", "/*", p) for p in paths})


def targeted(params: Params, cfg: LoraConfig) -> dict[str, tuple]:
    """The projections `cfg.targets` selects: module path -> kernel key path.

    Raises:
      ValueError: if the regex matches no projection (the message lists them).
    """
    all_paths = projections(params)
    hit = {p: k for p, k in all_paths.items() if re.search(cfg.targets, p)}
    if not hit:
        raise ValueError(f"LoRA targets {cfg.targets!r} match no projection; projections: "
                         f"{_summary(all_paths)}")
    return hit


def _full(params: Params, cfg: LoraConfig) -> dict[str, tuple]:
    """Parameter path -> key path of the base parameters `cfg.full` trains in full."""
    if not cfg.full:
        return {}
    hit = {_path_str(k): k for k, _ in _leaves(params) if re.search(cfg.full, _path_str(k))}
    if not hit:
        raise ValueError(f"LoRA full {cfg.full!r} matches no parameter of the base")
    return hit


def _get(tree, keys):
    for k in keys:
        tree = tree[k]
    return tree


def _set(tree: dict, keys, value) -> None:
    """Writes `value` at `keys`, creating nested dicts."""
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
    tree[keys[-1]] = value


def _replace(tree, keys, value):
    """A copy of nested dict `tree` with `keys` set to `value` (only the path is copied)."""
    if not keys:
        return value
    out = dict(tree)
    out[keys[0]] = _replace(tree[keys[0]], keys[1:], value)
    return out


def _entries(adapters: Params, base: Params, cfg: LoraConfig):
    """Checked (kernel key path, "lora"|"full", adapter node) of every adapter entry.

    Raises:
      ValueError: an adapter without a base parameter, or of the wrong shape.
    """
    kernels = projections(base)
    out = []

    def walk(node, keys):
        if isinstance(node, dict) and set(node) == {"a", "b"}:
            path = _path_str(keys)
            if path not in kernels:
                raise ValueError(f"adapter {path!r} has no projection kernel in the base")
            w = _get(base, kernels[path])
            a, b = node["a"], node["b"]
            lead, (n_in, n_out) = tuple(w.shape[:-2]), tuple(w.shape[-2:])
            want_a, want_b = (*lead, n_in, cfg.rank), (*lead, cfg.rank, n_out)
            if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
                raise ValueError(f"adapter {path!r}: a {tuple(a.shape)}, b {tuple(b.shape)} do "
                                 f"not fit kernel {tuple(w.shape)} at rank {cfg.rank} (want a "
                                 f"{want_a}, b {want_b})")
            out.append((kernels[path], "lora", node))
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, keys + (k,))
        else:
            path = _path_str(keys)
            try:
                w = _get(base, keys)
            except (KeyError, TypeError):
                raise ValueError(f"adapter tree leaf {path!r} is no parameter of the base") \
                    from None
            if tuple(w.shape) != tuple(node.shape):
                raise ValueError(f"fully trained {path!r}: shape {tuple(node.shape)} != base "
                                 f"{tuple(w.shape)}")
            out.append((keys, "full", node))

    walk(adapters, ())
    return out


# --------------------------------------------------------------------------- adapters


def init_adapters(rng: jax.Array, base_params: Params, cfg: LoraConfig) -> Params:
    """Adapters of the targeted projections: A ~ N(0, 1/I) and B = 0 (the adapted model equals
    the base at init), plus copies of the parameters `cfg.full` trains in full.

    Args:
      rng: PRNG key; projection j draws its A from fold_in(rng, j) in tree order.
      base_params: the base's params (arrays or `jax.ShapeDtypeStruct`s: under `jax.eval_shape`
        this gives abstract adapters).
      cfg: the LoRA config.

    Returns:
      A nested dict with the base's module paths: at each targeted projection {"a": [..., I, r],
      "b": [..., r, O]} (a stacked kernel's leading axes, e.g. L with `scan_layers`, lead both),
      and at each fully trained parameter a copy of it.
    """
    dtype = jnp.dtype(cfg.dtype)
    adapters: Params = {}
    for j, (path, keys) in enumerate(targeted(base_params, cfg).items()):
        shape = _get(base_params, keys).shape
        lead, (n_in, n_out) = tuple(shape[:-2]), tuple(shape[-2:])
        a = jax.random.normal(jax.random.fold_in(rng, j), (*lead, n_in, cfg.rank), jnp.float32)
        _set(adapters, keys[:-1], {"a": (a / math.sqrt(n_in)).astype(dtype),
                                   "b": jnp.zeros((*lead, cfg.rank, n_out), dtype)})
    for keys in _full(base_params, cfg).values():  # a copy: the step donates what it trains
        _set(adapters, keys, jnp.array(_get(base_params, keys), copy=True))
    return adapters


def adapter_logical_axes(adapters: Params, base_axes: Any) -> Any:
    """Logical axis names of `adapters`, from the base's (`model.logical_axes(base_params)`):
    a kernel (..., in, out) gives A (..., in, None) and B (..., None, out), so A shards like the
    kernel's rows and B like its columns (rank replicated); fully trained params keep theirs."""

    def walk(node, keys):
        if isinstance(node, dict) and set(node) == {"a", "b"}:
            axes = _get(base_axes, keys + ("kernel",))
            return {"a": (*axes[:-1], None), "b": (*axes[:-2], None, axes[-1])}
        if isinstance(node, dict):
            return {k: walk(v, keys + (k,)) for k, v in node.items()}
        return _get(base_axes, keys)

    return walk(adapters, ())


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LowRankKernel:
    """A projection kernel with its adapters, standing in for the kernel leaf of the params:
    W + scale A B, never formed (see the module docstring). A pytree of w [..., I, O],
    a [..., I, r], b [..., r, O] and `key` (dropout key(s) of shape [...], or None)."""

    w: jax.Array
    a: jax.Array
    b: jax.Array
    key: jax.Array | None
    scale: float = dataclasses.field(metadata=dict(static=True))
    dropout: float = dataclasses.field(metadata=dict(static=True))

    @property
    def shape(self):
        return self.w.shape

    @property
    def dtype(self):
        return self.w.dtype

    @property
    def ndim(self):
        return self.w.ndim

    def __getitem__(self, index):
        raise TypeError("a LoRA kernel was read outside an adapted function: call the model "
                        "through alignax.models.lora (make_lora_apply, make_lora_loss or "
                        "intercept)")

    def __jax_array__(self):
        return self[...]


def lora_params(adapters: Params, base_params: Params, cfg: LoraConfig,
                rng: jax.Array | None = None) -> Params:
    """The base tree with each targeted kernel replaced by a `LowRankKernel` and each fully
    trained parameter by its adapter copy; a valid `params` for the model's apply inside
    `intercept()`. Only the paths to those leaves are copied (no array is).

    Args:
      rng: dropout key (dropout applies when it is given and `cfg.dropout > 0`).
    """
    params = base_params
    use_dropout = rng is not None and cfg.dropout > 0
    for j, (keys, kind, node) in enumerate(_entries(adapters, base_params, cfg)):
        if kind == "full":
            params = _replace(params, keys, node)
            continue
        w = _get(base_params, keys)
        key = None
        if use_dropout:
            key = jax.random.fold_in(rng, j)
            lead = w.shape[:-2]
            if lead:  # one key per stacked layer, so each slice of the scan has its own
                key = jax.random.split(key, math.prod(lead)).reshape(lead)
        params = _replace(params, keys, LowRankKernel(w, node["a"], node["b"], key, cfg.scale,
                                                      cfg.dropout))
    return params


# --------------------------------------------------------------------------- interception

_LINEAR_CALL = nnx.Linear.__call__
_lock = threading.Lock()
_depth = 0


def _adapted_linear_call(self, inputs, out_sharding=None):
    """nnx.Linear.__call__, with a `LowRankKernel` kernel computed in factored form."""
    kernel = self.kernel.get_value()
    if not isinstance(kernel, LowRankKernel):
        return _LINEAR_CALL(self, inputs, out_sharding)
    bias = self.bias[...] if self.bias is not None else None
    x, w, bias = self.promote_dtype((inputs, kernel.w, bias), dtype=self.dtype)
    kwargs = {"out_sharding": out_sharding}
    if self.preferred_element_type is not None:
        kwargs["preferred_element_type"] = self.preferred_element_type
    contract = (((x.ndim - 1,), (0,)), ((), ()))
    y = self.dot_general(x, w, contract, precision=self.precision, **kwargs)
    if bias is not None:
        y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    xd = x
    if kernel.key is not None:
        keep = jax.random.bernoulli(kernel.key, 1.0 - kernel.dropout, x.shape)
        xd = jnp.where(keep, x / (1.0 - kernel.dropout), 0).astype(x.dtype)
    h = jax.lax.dot_general(xd, kernel.a.astype(x.dtype), contract, precision=self.precision)
    h = h * jnp.asarray(kernel.scale, h.dtype)  # [N, r]: the cheapest place for the scale
    delta = jax.lax.dot_general(h, kernel.b.astype(x.dtype), contract, precision=self.precision)
    return y + delta.astype(y.dtype)


@contextlib.contextmanager
def intercept():
    """While active, nnx.Linear computes `LowRankKernel` kernels in factored form (plain
    kernels are unaffected). Reentrant; restores nnx.Linear on exit of the outermost."""
    global _depth
    with _lock:
        if _depth == 0:
            nnx.Linear.__call__ = _adapted_linear_call
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                nnx.Linear.__call__ = _LINEAR_CALL


def with_adapters(fn: Callable) -> Callable:
    """`fn` run inside `intercept()`: e.g. `with_adapters(model.apply_cached)(lora_params(
    adapters, base, cfg), ...)` for decoding with the adapted model."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with intercept():
            return fn(*args, **kwargs)

    return wrapped


def make_lora_apply(model, cfg: LoraConfig) -> Callable:
    """`apply(adapters, base_params, input_ids, mask, *, rng=None, **kwargs)`: the adapted
    model's output, y = x W + (alpha/r) (x A) B at every targeted projection, never forming
    W + AB. `rng` enables adapter dropout; `kwargs` go to `model.apply` (e.g. logits_range).
    The reference is `model.apply(base_params, ...)` on the same arrays."""
    inner = with_adapters(model.apply)

    def apply(adapters, base_params, input_ids, mask, *, rng=None, **kwargs):
        return inner(lora_params(adapters, base_params, cfg, rng), input_ids, mask, **kwargs)

    return apply


def make_lora_loss(loss_fn: Callable, cfg: LoraConfig, *, reference: bool = True) -> Callable:
    """`(adapters, batch, rng, base_params, **kw) -> loss_fn(adapted params, batch, rng,
    [base_params], **kw)`, for `make_train_step` with the adapters as the trained params and
    the base as the one frozen argument.

    `loss_fn(params, batch, rng, *frozen)` is any loss built on the plain `model.apply` (e.g.
    `make_direct_loss(model.apply, "dpo")`, an SFT or reward loss); it runs inside
    `intercept()` with the adapted params. With `reference=True` the base is also passed as the
    loss's reference params (DPO's `ref_params`): the reference forward reads the same arrays.
    Dropout (cfg.dropout > 0) draws from fold_in(rng, 1).
    """

    def lora_loss(adapters, batch, rng, base_params, **kwargs):
        drop_rng = jax.random.fold_in(rng, 1) if cfg.dropout > 0 else None
        params = lora_params(adapters, base_params, cfg, drop_rng)
        frozen = (base_params,) if reference else ()
        with intercept():
            return loss_fn(params, batch, rng, *frozen, **kwargs)

    return lora_loss


# --------------------------------------------------------------------------- merge / export


def _delta(node, cfg: LoraConfig):
    """(alpha/r) A B in float32, [..., I, O]."""
    return cfg.scale * jnp.matmul(node["a"].astype(jnp.float32), node["b"].astype(jnp.float32))


def merge(base_params: Params, adapters: Params, cfg: LoraConfig) -> Params:
    """Plain params of the adapted model: W + (alpha/r) A B at each adapted kernel (computed in
    float32, stored in W's dtype) and the fully trained parameters; for export or serving."""
    params = base_params
    for keys, kind, node in _entries(adapters, base_params, cfg):
        if kind == "full":
            params = _replace(params, keys, node)
        else:
            w = _get(base_params, keys)
            params = _replace(params, keys, (w.astype(jnp.float32) + _delta(node, cfg))
                              .astype(w.dtype))
    return params


def unmerge(merged: Params, adapters: Params, cfg: LoraConfig) -> Params:
    """The base back from `merge`'s output: W' - (alpha/r) A B (exact up to float rounding).
    Fully trained parameters keep their trained values (their base values are not stored)."""
    params = merged
    for keys, kind, node in _entries(adapters, merged, cfg):
        if kind == "lora":
            w = _get(merged, keys)
            params = _replace(params, keys, (w.astype(jnp.float32) - _delta(node, cfg))
                              .astype(w.dtype))
    return params


def export_merged(model, base_params: Params, adapters: Params, cfg: LoraConfig, path: str,
                  *, model_type: str = "llama", **export_kwargs) -> None:
    """Writes the merged model as a Hugging Face checkpoint (`alignax.models.hf.export_hf`;
    `export_kwargs` are its options: dtype, max_shard_size, tokenizer_dir, generation_config,
    ...)."""
    from alignax.models.hf import export_hf

    export_hf(model, merge(base_params, adapters, cfg), path, model_type=model_type,
              **export_kwargs)
