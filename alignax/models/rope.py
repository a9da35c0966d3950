"""Rotary position embeddings (Su et al. 2021, "RoFormer") and their context-extension variants:
the inverse frequencies of every `rope_type` that Hugging Face transformers writes in a
checkpoint's `rope_parameters` (or the older `rope_scaling`), as pure functions.

    inv_freq, attention_factor = rope_frequencies(head_dim=128, theta=500000.0,
                                                  scaling=(("rope_type", "llama3"), ...))
    cos, sin = rope_tables(positions, head_dim, theta, scaling)   # [B, T, 1, E/2] each

A rotary embedding rotates each pair (x_i, x_{i + E/2}) of a query or key at position p by the
angle p * inv_freq_i (half-split layout, as Llama/HF). The plain frequencies are
inv_freq_i = theta^(-2i/E), i = 0..E/2-1. The variants (`ROPE_TYPES`), with f = `factor` and
L = `original_max_position_embeddings`:

- "default": the plain frequencies.
- "linear" (position interpolation, Chen et al. 2023): inv_freq_i / f.
- "dynamic" (dynamic NTK, bloc97/emozilla 2023): the base grows with the sequence length N at run
  time, theta' = theta * (f N / M - (f - 1))^(E / (E - 2)) with N = max(longest position + 1, M)
  and M = max_position_embeddings, so nothing changes up to M tokens.
- "yarn" (Peng et al. 2023, "YaRN", eq. 17-21): per dimension a ramp between interpolation
  (inv_freq / f) and extrapolation (inv_freq): with r_i = the ramp from the correction range
  [low, high] of dims whose wavelengths turn beta_fast and beta_slow times in L,
  inv_freq'_i = inv_freq_i / f * r_i + inv_freq_i * (1 - r_i); cos and sin are scaled by the
  attention factor 0.1 ln f + 1 (or mscale / mscale_all_dim's ratio, or `attention_factor`).
- "llama3" (Meta's Llama 3.1): wavelengths lambda_i = 2 pi / inv_freq_i above L / low_freq_factor
  are divided by f, below L / high_freq_factor kept, in between smoothly interpolated with
  s = (L / lambda_i - low_freq_factor) / (high_freq_factor - low_freq_factor):
  inv_freq' = (1 - s) inv_freq / f + s inv_freq.

Refused by name (`REFUSED_ROPE_TYPES`): "longrope" (Phi-3: switches frequency sets by
sequence length with per-dimension factor lists) and "proportional" (Gemma 4's partial
rotation); `partial_rotary_factor` != 1 (rotating only part of each head) is refused too.

"dynamic" differs from transformers in one respect, by design: transformers' rotary module keeps
the grown frequencies of its longest call so far (until a call shorter than M resets them), so
its output depends on the history of calls; here the frequencies are a pure function of the
positions of the current call (the longest position in the batch, as transformers computes N).
Both agree on any call no longer than M, and on any call at least as long as every earlier one
(e.g. a prefill followed by its decode steps).

Reference formulas: transformers.modeling_rope_utils (`_compute_*_parameters`), read for
transformers 5.25; the tests compare each variant with it.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")
REFUSED_ROPE_TYPES = {
    "longrope": "LongRoPE switches between two per-dimension factor lists by sequence length "
                "(Phi-3); not implemented",
    "proportional": "proportional RoPE (Gemma 4) rotates a fraction of each head; not "
                    "implemented",
}
# keys each rope_type reads (besides rope_type and rope_theta); others are an error
_KEYS = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor", "max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings", "attention_factor", "beta_fast",
             "beta_slow", "mscale", "mscale_all_dim", "truncate", "max_position_embeddings"),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor",
               "original_max_position_embeddings"),
}
_REQUIRED = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor", "max_position_embeddings"),
    "yarn": ("original_max_position_embeddings",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor",
               "original_max_position_embeddings"),
}


def normalize_scaling(scaling) -> tuple[tuple[str, Any], ...]:
    """The canonical (hashable, sorted) form of a rope scaling spec: a mapping or pairs of
    {"rope_type": one of ROPE_TYPES, parameters...}; () for the plain rotary embedding.

    Raises:
      ValueError: a refused or unknown rope_type, a missing or unknown parameter, a factor < 1.
    """
    items = dict(scaling or ())
    if not items:
        return ()
    rope_type = items.get("rope_type", items.get("type", "default"))
    items.pop("type", None)
    items["rope_type"] = rope_type
    if rope_type in REFUSED_ROPE_TYPES:
        raise ValueError(f"rope_type {rope_type!r} is not supported: "
                         f"{REFUSED_ROPE_TYPES[rope_type]}")
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"unknown rope_type {rope_type!r}; supported: {ROPE_TYPES}")
    params = {k: v for k, v in items.items() if k != "rope_type"}
    unknown = sorted(set(params) - set(_KEYS[rope_type]))
    if unknown:
        raise ValueError(f"rope_type {rope_type!r} does not take {unknown}; it reads "
                         f"{list(_KEYS[rope_type])}")
    missing = [k for k in _REQUIRED[rope_type] if params.get(k) is None]
    if missing:
        raise ValueError(f"rope_type {rope_type!r} needs {missing}")
    factor = params.get("factor")
    if factor is not None and not float(factor) >= 1.0:
        raise ValueError(f"rope scaling factor must be >= 1, got {factor!r}")
    if rope_type == "default":
        return ()
    return tuple(sorted(items.items()))


def _plain(head_dim: int, theta: float) -> np.ndarray:
    """theta^(-2i/E), i = 0..E/2-1, in float64 (the exponent as transformers forms it)."""
    return 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))


def linear_inv_freq(head_dim: int, theta: float, factor: float) -> np.ndarray:
    """Position interpolation: theta^(-2i/E) / f. [E/2] float64."""
    return _plain(head_dim, theta) / factor


def llama3_inv_freq(head_dim: int, theta: float, factor: float, low_freq_factor: float,
                    high_freq_factor: float, original_max_position_embeddings: int
                    ) -> np.ndarray:
    """Llama 3.1's frequency rescaling (see the module docstring). [E/2] float64."""
    inv = _plain(head_dim, theta)
    old = original_max_position_embeddings
    wavelen = 2 * math.pi / inv
    low_wavelen, high_wavelen = old / low_freq_factor, old / high_freq_factor
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature, eq. 21: 0.1 mscale ln f + 1 (1 for f <= 1)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def yarn_inv_freq(head_dim: int, theta: float, factor: float,
                  original_max_position_embeddings: int, beta_fast: float = 32.0,
                  beta_slow: float = 1.0, truncate: bool = True) -> np.ndarray:
    """YaRN's "NTK-by-parts" frequencies (eq. 17-19). [E/2] float64.

    The dimension that turns r times over L positions is d(r) = E ln(L / (2 pi r)) / (2 ln
    theta); dims below d(beta_fast) extrapolate (keep inv_freq), dims above d(beta_slow)
    interpolate (inv_freq / f), a linear ramp in between (bounds floored/ceiled if `truncate`,
    clipped to [0, E - 1]).
    """
    def dim_of(rotations):
        return (head_dim * math.log(original_max_position_embeddings
                                    / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = dim_of(beta_fast), dim_of(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # no singular ramp
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    inv = _plain(head_dim, theta)
    extrapolation = 1 - ramp
    return inv / factor * (1 - extrapolation) + inv * extrapolation


def yarn_attention_factor(factor: float, attention_factor: float | None = None,
                          mscale: float | None = None, mscale_all_dim: float | None = None
                          ) -> float:
    """The factor on YaRN's cos and sin: `attention_factor` if given, else
    mscale(f, mscale) / mscale(f, mscale_all_dim) when both are set, else 0.1 ln f + 1."""
    if attention_factor is not None:
        return float(attention_factor)
    if mscale and mscale_all_dim:
        return yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
    return yarn_mscale(factor)


def dynamic_theta(theta, head_dim: int, factor: float, seq_len, max_position_embeddings: int):
    """Dynamic NTK's base for a sequence of `seq_len` tokens (numpy or traced):
    theta (f N / M - (f - 1))^(E / (E - 2)) with N = max(seq_len, M)."""
    n = jnp.maximum(seq_len, max_position_embeddings)
    return theta * (factor * n / max_position_embeddings - (factor - 1)) ** (
        head_dim / (head_dim - 2))


def rope_frequencies(head_dim: int, theta: float, scaling=()) -> tuple[np.ndarray, float]:
    """(inv_freq [E/2] float32, attention factor) of a static rope type (all but "dynamic",
    whose frequencies depend on the positions: `rope_tables` computes them)."""
    p = dict(normalize_scaling(scaling))
    kind = p.get("rope_type", "default")
    if kind == "default":
        inv, af = _plain(head_dim, theta), 1.0
    elif kind == "linear":
        inv, af = linear_inv_freq(head_dim, theta, p["factor"]), 1.0
    elif kind == "llama3":
        inv, af = llama3_inv_freq(head_dim, theta, p["factor"], p["low_freq_factor"],
                                  p["high_freq_factor"], p["original_max_position_embeddings"]), 1.0
    elif kind == "yarn":
        old = p["original_max_position_embeddings"]
        factor = p.get("factor")
        if factor is None:  # DeepSeek-style: the ratio of the two context lengths
            factor = p["max_position_embeddings"] / old
        inv = yarn_inv_freq(head_dim, theta, factor, old, p.get("beta_fast") or 32.0,
                            p.get("beta_slow") or 1.0, p.get("truncate", True))
        af = yarn_attention_factor(factor, p.get("attention_factor"), p.get("mscale"),
                                   p.get("mscale_all_dim"))
    else:
        raise ValueError(f"rope_type {kind!r} depends on the positions; use rope_tables")
    return inv.astype(np.float32), float(af)


def rope_tables(positions, head_dim: int, theta: float, scaling=()):
    """cos and sin of the rotary angles, each [B, T, 1, E/2] float32 (computed once per forward
    and shared by every layer), already multiplied by the attention factor (YaRN).

    Args:
      positions: [B, T] integer positions.
      head_dim: E.
      theta: the RoPE base.
      scaling: a rope scaling spec (`normalize_scaling`); () for the plain embedding.
    """
    p = dict(normalize_scaling(scaling))
    pos = positions.astype(jnp.float32)
    if p.get("rope_type") == "dynamic":
        seq_len = jnp.max(positions) + 1
        base = dynamic_theta(theta, head_dim, float(p["factor"]), seq_len.astype(jnp.float32),
                             int(p["max_position_embeddings"]))
        exponent = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
        inv, af = 1.0 / (base ** exponent), 1.0
    elif not p:  # the plain embedding, exactly as before rope types existed
        inv = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
        af = 1.0
    else:
        inv, af = rope_frequencies(head_dim, theta, scaling)
        inv = jnp.asarray(inv)
    angles = pos[..., None] * inv  # [B, T, E/2]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    if af != 1.0:
        cos, sin = cos * af, sin * af
    return cos[:, :, None, :], sin[:, :, None, :]


def apply_rope(x, cos, sin):
    """Rotates [B, T, N, E] by precomputed `rope_tables` (half-split layout, as Llama/HF)."""
    half = x.shape[-1] // 2
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., :half], x32[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def rope(x, positions, theta: float, scaling=()):
    """Rotary position embedding (Su et al. 2021), half-split layout as in Llama/HF.

    Args:
      x: [B, T, N, E] queries or keys.
      positions: [B, T] integer positions.
      theta: the RoPE base.
      scaling: a rope scaling spec (`normalize_scaling`).
    """
    return apply_rope(x, *rope_tables(positions, x.shape[-1], theta, scaling))
