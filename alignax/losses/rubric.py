"""Geometric projection reference constraints (GPRC) for multi-dimensional rubric reward models.

Reconstruction: the MR-RML paper (Jin et al. 2025, "Multidimensional Rubric-oriented Reward Model
Learning via Geometric Projection Reference Constraints", arXiv 2511.16139) describes GPRC as a
prompt-anchored polar decomposition of a response embedding with an axis-similarity loss and a
perpendicular-deviation loss; the exact formulas were not available, so the functions below are a
reconstruction from that description, not a transcription:

- the axis runs from the prompt embedding e_x to the reference (ideal) answer embedding e_ref;
- a response e_y is decomposed into its projection on that axis and a perpendicular deviation;
- the axis-similarity term is a pairwise logistic loss ranking the response further along the axis
  above the other; the perpendicular term makes the score insensitive to off-axis drift.

Shapes: B pairs, E embedding size.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from alignax._src import checks


def reference_projection(
    prompt_emb: jax.Array, reference_emb: jax.Array, response_emb: jax.Array, *,
    eps: float = 1e-6,
) -> tuple[jax.Array, jax.Array]:
    """Prompt-anchored decomposition of a response along the prompt -> reference axis.

    .. math::
        d = e_{ref} - e_x, \\; u = d / \\lVert d \\rVert, \\; v = e_y - e_x, \\quad
        s = \\frac{\\langle v, u \\rangle}{\\lVert d \\rVert}, \\quad
        p = \\frac{v - \\langle v, u \\rangle u}{\\lVert d \\rVert}

    s is the fraction of the way from the prompt to the reference (0 at the prompt, 1 at the
    reference) and p the perpendicular deviation in the same units, so both are invariant to a
    common translation and scaling of the three embeddings. `eps` guards ||d|| = 0. GPRC
    (reconstruction, see the module docstring), Jin et al. 2025 (arXiv 2511.16139).

    Args:
      prompt_emb: [B, E] prompt embeddings e_x.
      reference_emb: [B, E] reference answer embeddings e_ref.
      response_emb: [B, E] response embeddings e_y.
      eps: lower bound on ||d||.

    Returns:
      (s [B], p [B, E]).
    """
    chex.assert_rank(prompt_emb, 2, custom_message="prompt_emb")
    chex.assert_equal_shape([prompt_emb, reference_emb, response_emb],
                            custom_message="prompt_emb, reference_emb, response_emb")
    x = checks.as_float(prompt_emb, "prompt_emb")
    d = checks.as_float(reference_emb, "reference_emb").astype(x.dtype) - x
    v = checks.as_float(response_emb, "response_emb").astype(x.dtype) - x
    norm = jnp.sqrt(jnp.maximum(jnp.sum(d * d, axis=-1, keepdims=True), eps**2))
    u = d / norm
    along = jnp.sum(v * u, axis=-1, keepdims=True)
    return (along / norm)[:, 0], (v - along * u) / norm


def gprc_loss(
    higher_scores: jax.Array,
    lower_scores: jax.Array,
    higher_axis_scores: jax.Array | None = None,
    lower_axis_scores: jax.Array | None = None,
    *,
    temperature: float = 1.0,
    perpendicular_weight: float = 0.0,
) -> jax.Array:
    """GPRC pair loss: axis-similarity ranking plus a perpendicular-deviation penalty.

    For two responses to one prompt where the `higher` one lies further along the
    prompt -> reference axis (larger s of `reference_projection`, e.g. a milder synthetic
    corruption of the reference):

    .. math::
        L = -\\log\\sigma\\left(\\frac{r_{hi} - r_{lo}}{\\tau}\\right)
            + \\frac{\\lambda_\\perp}{2}\\left[(r_{hi} - r^{\\parallel}_{hi})^2
                                       + (r_{lo} - r^{\\parallel}_{lo})^2\\right]

    where r^par is the score of the response's projection onto the axis (its perpendicular
    deviation removed), so the penalty asks the score not to move with off-axis drift. With
    lambda_perp = 0 the axis scores are not needed. Reconstruction of GPRC (module docstring),
    Jin et al. 2025 (arXiv 2511.16139).

    Args:
      higher_scores: [B] scores of the responses further along the axis.
      lower_scores: [B] scores of the other responses.
      higher_axis_scores: [B] scores of the on-axis projections of the `higher` responses.
      lower_axis_scores: [B] scores of the on-axis projections of the `lower` responses.
      temperature: tau > 0.
      perpendicular_weight: lambda_perp >= 0.

    Returns:
      [B] float32 losses.
    """
    chex.assert_rank(higher_scores, 1, custom_message="higher_scores")
    chex.assert_equal_shape([higher_scores, lower_scores],
                            custom_message="higher_scores, lower_scores")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if perpendicular_weight < 0:
        raise ValueError(f"perpendicular_weight must be >= 0, got {perpendicular_weight}")
    hi = checks.as_float(higher_scores, "higher_scores")
    lo = checks.as_float(lower_scores, "lower_scores").astype(hi.dtype)
    loss = -jax.nn.log_sigmoid((hi - lo) / temperature)
    if perpendicular_weight == 0:
        return loss
    if higher_axis_scores is None or lower_axis_scores is None:
        raise ValueError("perpendicular_weight > 0 needs higher_axis_scores and lower_axis_scores")
    chex.assert_equal_shape([higher_scores, higher_axis_scores, lower_axis_scores],
                            custom_message="higher_scores, higher_axis_scores, lower_axis_scores")
    hi_par = checks.as_float(higher_axis_scores, "higher_axis_scores").astype(hi.dtype)
    lo_par = checks.as_float(lower_axis_scores, "lower_axis_scores").astype(hi.dtype)
    return loss + 0.5 * perpendicular_weight * (jnp.square(hi - hi_par)
                                                + jnp.square(lo - lo_par))
