"""Reference-based text metrics in pure jax, for rewards inside a jitted loss: BLEU and ROUGE-1.

`alignax.rewards.rules.sentence_bleu` / `bleu_reward` are Python loops over Counters (exact,
host-side). The functions here compute the same numbers on fixed-length token arrays with masks,
vectorised over any leading batch shape, so a GRPO loss can score its sampled responses against
a reference store on device (BLEUBERI, "BLEU as a reward for instruction following", 2025;
ROUGE-1 as the lexical baseline of "Shaping Explanations", 2025).

Shapes: a hypothesis is `[..., T]` token ids with an optional `[..., T]` mask of valid tokens
(the valid tokens must be a prefix: n-grams are read off consecutive positions), references are
`[..., K, R]` ids (K references of R tokens) with an optional `[..., K, R]` mask; leading shapes
broadcast. N-grams are compared token by token (no hashing, no vocabulary size needed): the
cost is O(T (T + K R) n) per hypothesis and n-gram order, small for the toy lengths.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignax.losses.reward import contrastive_representation_loss


def _windows(tokens, mask, n: int):
    """([..., T - n + 1, n] n-grams, [..., T - n + 1] valid) of tokens [..., T]."""
    t = tokens.shape[-1]
    count = t - n + 1
    grams = jnp.stack([tokens[..., k:k + count] for k in range(n)], -1)
    valid = jnp.all(jnp.stack([mask[..., k:k + count] for k in range(n)], -1), -1)
    return grams, valid


def _prepare(hypothesis, references, hypothesis_mask, reference_mask):
    hyp = jnp.asarray(hypothesis)
    refs = jnp.asarray(references)
    if refs.ndim < 2:
        raise ValueError(f"references must be [..., K, R], got shape {refs.shape}")
    hmask = (jnp.ones(hyp.shape, bool) if hypothesis_mask is None
             else jnp.asarray(hypothesis_mask, bool))
    rmask = (jnp.ones(refs.shape, bool) if reference_mask is None
             else jnp.asarray(reference_mask, bool))
    return hyp, refs, hmask, rmask


def _clipped_counts(hyp, hmask, refs, rmask, n: int):
    """[...] clipped matches of order n: each hypothesis n-gram
    counts at most as often as in the reference that holds it most often (Papineni et al.)."""
    hg, hv = _windows(hyp, hmask, n)  # [..., I, n], [..., I]
    rg, rv = _windows(refs, rmask, n)  # [..., K, J, n], [..., K, J]
    same_h = jnp.all(hg[..., :, None, :] == hg[..., None, :, :], -1) & hv[..., None, :]
    in_hyp = jnp.sum(same_h, -1)  # [..., I] occurrences of gram i in the hypothesis
    same_r = (jnp.all(hg[..., :, None, None, :] == rg[..., None, :, :, :], -1)
              & rv[..., None, :, :])  # [..., I, K, J]
    in_ref = jnp.max(jnp.sum(same_r, -1), -1)  # [..., I] max count over the references
    share = jnp.minimum(in_hyp, in_ref) / jnp.maximum(in_hyp, 1)
    return jnp.sum(jnp.where(hv, share, 0.0), -1)


def bleu(hypothesis, references, hypothesis_mask=None, reference_mask=None, *, max_n: int = 4,
         smoothing: float = 1.0):
    """Sentence BLEU of hypotheses [..., T] against references [..., K, R]: [...] float32.

    BLEU = BP exp(sum_n (1/max_n) log p_n) (Papineni et al. 2002): p_n the clipped n-gram
    precision (each hypothesis n-gram counted at most its largest count in one reference),
    BP = min(1, exp(1 - r/c)), c the hypothesis length and r the reference length closest to c
    (the shorter on ties). `smoothing` is added to the numerator and denominator of p_n for
    n > 1 ("+1", Lin and Och 2004), so short hypotheses score above 0; with no unigram match,
    or an empty hypothesis, BLEU is 0. Equal to `alignax.rewards.rules.sentence_bleu` of the
    valid tokens (tests/rewards/test_metrics.py); the cause was XLA:CPU's YNNPACK fusions, now off
    # (alignax._src.xla_flags); differentiable nowhere (a reward).
    """
    hyp, refs, hmask, rmask = _prepare(hypothesis, references, hypothesis_mask, reference_mask)
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    c = jnp.sum(hmask, -1).astype(jnp.float32)  # [...]
    log_p = 0.0
    zero = jnp.zeros(jnp.broadcast_shapes(hyp.shape[:-1], refs.shape[:-2]), bool)
    for n in range(1, max_n + 1):
        if n > hyp.shape[-1] or n > refs.shape[-1]:
            clipped = jnp.zeros_like(c)  # no n-gram fits the arrays
        else:
            clipped = _clipped_counts(hyp, hmask, refs, rmask, n)
        total = jnp.maximum(c - n + 1, 0.0)
        add = smoothing if n > 1 else 0.0
        num, den = clipped + add, total + add
        zero = zero | (num <= 0) | (den <= 0)
        log_p = log_p + jnp.log(jnp.where(zero, 1.0, num / jnp.where(den > 0, den, 1.0))) / max_n
    ref_len = jnp.sum(rmask, -1).astype(jnp.float32)  # [..., K]
    dist = jnp.abs(ref_len - c[..., None])
    # the closest reference length, the shorter one on ties
    key = dist * (refs.shape[-1] + 1) + ref_len
    r = jnp.take_along_axis(ref_len, jnp.argmin(key, -1)[..., None], -1)[..., 0]
    bp = jnp.where(c > r, 1.0, jnp.exp(1.0 - r / jnp.maximum(c, 1.0)))
    return jnp.where(zero | (c <= 0), 0.0, bp * jnp.exp(log_p)).astype(jnp.float32)


def rouge1(hypothesis, references, hypothesis_mask=None, reference_mask=None, *,
           measure: str = "f"):
    """ROUGE-1 of hypotheses [..., T] against references [..., K, R]: [...] float32.

    The unigram overlap o = sum_w min(count_hyp(w), count_ref(w)) with each reference (Lin
    2004); precision o / |hyp|, recall o / |ref|, F1 their harmonic mean (`measure` "p", "r"
    or "f"); with several references the best one counts (max over K). 0 when either side is
    empty or nothing overlaps.
    """
    if measure not in ("p", "r", "f"):
        raise ValueError(f"measure must be 'p', 'r' or 'f', got {measure!r}")
    hyp, refs, hmask, rmask = _prepare(hypothesis, references, hypothesis_mask, reference_mask)
    same_h = (hyp[..., :, None] == hyp[..., None, :]) & hmask[..., None, :]
    in_hyp = jnp.sum(same_h, -1)  # [..., T]
    same_r = (hyp[..., None, :, None] == refs[..., :, None, :]) & rmask[..., :, None, :]
    in_ref = jnp.sum(same_r, -1)  # [..., K, T]
    share = jnp.minimum(in_hyp[..., None, :], in_ref) / jnp.maximum(in_hyp[..., None, :], 1)
    overlap = jnp.sum(jnp.where(hmask[..., None, :], share, 0.0), -1)  # [..., K]
    c = jnp.sum(hmask, -1).astype(jnp.float32)[..., None]
    r = jnp.sum(rmask, -1).astype(jnp.float32)
    p = overlap / jnp.maximum(c, 1.0)
    rec = overlap / jnp.maximum(r, 1.0)
    f = jnp.where(overlap > 0, 2 * p * rec / jnp.maximum(p + rec, 1e-12), 0.0)
    out = {"p": p, "r": rec, "f": f}[measure]
    return jnp.max(out, -1).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Semantic similarity with a learned bag-of-tokens encoder, and concept-set F1


def init_bag_encoder(key, vocab_size: int, dim: int, *, scale: float = 1.0) -> dict:
    """Params {"embedding": [V, dim]} of a bag-of-tokens sentence encoder, N(0, scale^2 / dim)
    entries (near-orthogonal tokens before training)."""
    emb = jax.random.normal(key, (int(vocab_size), int(dim)), jnp.float32)
    return {"embedding": emb * (scale / float(dim) ** 0.5)}


def bag_embeddings(params: dict, tokens, mask=None):
    """[..., dim] sentence embeddings of tokens [..., T]: the mean of the valid tokens'
    embeddings (a pooled encoder without order: synonyms trained together land together)."""
    tokens = jnp.asarray(tokens)
    m = (jnp.ones(tokens.shape, jnp.float32) if mask is None
         else jnp.asarray(mask, jnp.float32))
    e = params["embedding"][tokens] * m[..., None]
    return e.sum(-2) / jnp.maximum(m.sum(-1, keepdims=True), 1.0)


def embedding_similarity(params: dict, hypothesis, references, hypothesis_mask=None,
                         reference_mask=None):
    """cos(E(y), E(y_ref)) of the bag encoder, hypotheses [..., T] against references
    [..., K, R]: the best reference's cosine, [...] float32 (the semantic reward of "Shaping
    Explanations", 2025)."""
    # unit vectors first, then the dot product: XLA:CPU (jax 0.10.2) miscompiles
    # `alignax.rewards.cosine_reward`'s sum(a b) / (|a| |b|) under jit for some broadcast
    # shapes (e.g. [1, 1728, 1, 16] x [128, 1, 1, 16]: errors up to 1.5); this form is exact
    # (tests/rewards/test_metrics.py); the cause was XLA:CPU's YNNPACK fusions, now off
    # (alignax._src.xla_flags)
    h = _unit(bag_embeddings(params, hypothesis, hypothesis_mask))[..., None, :]
    r = _unit(bag_embeddings(params, references, reference_mask))
    return jnp.max(jnp.sum(h * r, -1), -1).astype(jnp.float32)


def _unit(x):
    return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-12))


def bag_encoder_loss(*, temperature: float = 0.1):
    """`loss_fn(params, batch) -> (loss, metrics)` of contrastive encoder training for
    `alignax.train.small.fit_small(has_aux=True)`: InfoNCE
    (`alignax.losses.reward.contrastive_representation_loss`, in-batch negatives, symmetric)
    between the bag embeddings of batch["anchor"] [B, T] and batch["positive"] [B, T]
    (paraphrases: the same meaning in other words, e.g. synonyms substituted), with optional
    masks batch["anchor_mask"], batch["positive_mask"]. Metrics: "accuracy" (each anchor's
    nearest positive in the batch is its own)."""
    def loss_fn(params, batch):
        a = bag_embeddings(params, batch["anchor"], batch.get("anchor_mask"))
        p = bag_embeddings(params, batch["positive"], batch.get("positive_mask"))
        loss = 0.5 * (contrastive_representation_loss(a, p, temperature=temperature).mean()
                      + contrastive_representation_loss(p, a, temperature=temperature).mean())
        an = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-6)
        pn = p / jnp.maximum(jnp.linalg.norm(p, axis=-1, keepdims=True), 1e-6)
        hit = jnp.argmax(an @ pn.T, -1) == jnp.arange(a.shape[0])
        return loss, {"accuracy": jnp.mean(hit)}

    return loss_fn


def concept_f1(hypothesis, references, concept_of, num_concepts: int, hypothesis_mask=None,
               reference_mask=None):
    """F1 of the concept sets of hypotheses [..., T] and references [..., K, R] (the best
    reference): [...] float32. `concept_of` [V] int maps each token to its concept (synonyms
    share one), or to -1 for tokens without meaning (fillers), which are ignored; precision =
    |C(y) ∩ C(ref)| / |C(y)|, recall = ... / |C(ref)| over distinct concepts; 0 when either set
    is empty."""
    concept_of = jnp.asarray(concept_of, jnp.int32)
    hyp, refs, hmask, rmask = _prepare(hypothesis, references, hypothesis_mask, reference_mask)
    ids = jnp.arange(int(num_concepts))

    def present(tokens, mask):
        c = concept_of[tokens]
        return jnp.any((c[..., None] == ids) & mask[..., None], -2)  # [..., C]

    h = present(hyp, hmask)[..., None, :]  # [..., 1, C]
    r = present(refs, rmask)  # [..., K, C]
    both = jnp.sum(h & r, -1).astype(jnp.float32)
    nh, nr = jnp.sum(h, -1).astype(jnp.float32), jnp.sum(r, -1).astype(jnp.float32)
    f1 = jnp.where(both > 0, 2 * both / jnp.maximum(nh + nr, 1.0), 0.0)
    return jnp.max(f1, -1).astype(jnp.float32)
