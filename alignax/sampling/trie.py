"""Decoding constrained to a catalogue: a token trie of the valid item sequences, trie-constrained
beam search and sampling inside jit, and the teacher-forced log-probs of the same items.

Generative recommenders emit an item as a token sequence (a semantic ID, or a title's tokens
followed by eos); only the sequences of the catalogue are valid. ReRe (Tan et al. 2025,
"Reinforced Preference Optimization for Recommendation", arXiv 2510.12211) samples the G
responses of a GRPO group with beam search constrained to the catalogue's trie, so that the
group holds G distinct valid items (the G most likely ones, in rank order) instead of
temperature samples that repeat the same few items; its ranking reward reads each item's beam
rank (`alignax.rewards.ranking`).

The trie (`build_trie`) is dense arrays over the catalogue's own token set: U distinct tokens
(`tokens`, sorted), M prefix nodes numbered breadth first (the root is node 0, the nodes of
depth d are contiguous), and per node the allowed-next mask `allowed [M, U]` and the child index
`child [M, U]` (-1 where not allowed). Working in the U columns of the catalogue instead of the
V of the vocabulary keeps the arrays small for a real tokenizer (V ~ 150k, U a few thousand);
`TokenTrie.allowed_mask()` gives the [M, V] view. A node without children is a leaf: a complete
item (`node_item`); the catalogue must be prefix-free (end variable-length items with an eos),
and items with identical sequences share one leaf (the lowest index stands for them).

Which log-probs (every function returns both kinds, named as in `alignax.sampling.sampler`):

- `logps`: log pi(token | prefix) under the model itself, the log-softmax over the whole
  vocabulary, no mask, no renormalisation -- what a training forward over the same tokens
  computes. The policy-gradient update uses these (`Rollout.old_logps`), as ReRe's trainer does
  (TRL's GRPOTrainer recomputes full-vocabulary log-probs of the generated tokens).
- `constrained_logps`: log-probs under the trie-constrained distribution: the model's softmax
  restricted to the allowed tokens and renormalised over them (at the sampler's temperature
  for `constrained_sample`), i.e. the distribution the constrained sampler draws from.

Beam search ranks items by the sum of `logps` (`renormalise=False`, the default: ReRe's
decoding, transformers' beam search with a prefix-constrained logits processor, which masks the
log-softmax without renormalising it) or by the sum of `constrained_logps` (`renormalise=True`).
`teacher_forced_logps` recomputes both kinds from one forward's logits; they agree with the
decoders' (float32, 1e-5; tests/sampling/test_trie.py).

Decoding with a `logits_fn(tokens, t) -> logits`: `tokens` [B, K, L] int32 holds each row's
item tokens so far (columns >= t are padding and must not change the result), `t` the step (an
int32 scalar: traced in the `lax.fori_loop`, concrete when items of L <= 4 tokens unroll the
loop, which compiles faster); it returns the [B, K, V] logits of token t. A table policy reads
the prefix node from `tokens` (`alignax.models.sequence_table`); a causal LM runs its forward
on [prompt | tokens] (`lm_logits_fn`: a full forward per step, no KV cache -- items are a few
tokens long).

Beam search (W beams, the W = G best items returned): W beams start at the root (one live,
W - 1 at -inf, so no item is found twice); each step scores every (beam, allowed token) pair
by beam score + token score, keeps the W best (`lax.top_k`, sorted, ties to the lower index),
and a beam at a leaf (a finished item) keeps its slot with its score unchanged. After L =
`max_len` steps every live beam is a distinct complete item and the beams are in rank order.
Beam search is exact (the G items of highest score) when W is at least the number of prefixes
alive at every depth, and for any W when the token scores do not depend on the prefix (both
tested against brute force); beams that found no item (fewer than W items reachable) are
invalid (`valid` False, item -1, score -inf).

Shapes: B contexts (prompts), W beams, G = W returned items, n samples, L = max item length,
V vocabulary, U catalogue tokens, M trie nodes, I catalogue items.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignax.types import Rollout

__all__ = ["BeamOutput", "TokenTrie", "TrieSample", "beam_rollout", "beam_rollout_from_config",
           "beam_search", "build_trie", "constrained_sample", "lm_logits_fn", "lookup_items",
           "trie_nodes",
           "teacher_forced_logps"]

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]
_NEG_INF = float("-inf")


@dataclasses.dataclass(frozen=True)
class TokenTrie:
    """The prefix trie of a catalogue of item token sequences (module docstring).

    A jax pytree: the arrays are leaves (pass the trie as an argument of a jitted function, or
    close over it), `vocab_size` and `pad_id` are static.

    Attributes:
      tokens: [U] int32, the catalogue's distinct tokens, sorted (local column u <-> token).
      allowed: [M, U] bool, token `tokens[u]` may follow node m.
      child: [M, U] int32, the node reached (-1 where not allowed).
      node_item: [M] int32, the item of a leaf node (the lowest index among identical items);
        -1 for inner nodes.
      depth: [M] int32, each node's depth (the root is 0).
      item_tokens: [I, L] int32, the items' tokens, padded with `pad_id` to L = max length.
      item_lengths: [I] int32.
      item_leaf: [I] int32, each item's leaf node.
      vocab_size: V, the model's vocabulary (tokens lie in [0, V)).
      pad_id: the token that pads an item after its end.
    """

    tokens: np.ndarray
    allowed: np.ndarray
    child: np.ndarray
    node_item: np.ndarray
    depth: np.ndarray
    item_tokens: np.ndarray
    item_lengths: np.ndarray
    item_leaf: np.ndarray
    vocab_size: int
    pad_id: int

    @property
    def num_nodes(self) -> int:
        """M."""
        return int(self.allowed.shape[0])

    @property
    def num_items(self) -> int:
        """I (duplicates counted)."""
        return int(self.item_tokens.shape[0])

    @property
    def num_distinct_items(self) -> int:
        """The number of distinct item sequences (leaves): the most beams can find."""
        return int((np.asarray(self.node_item) >= 0).sum())

    @property
    def max_len(self) -> int:
        """L, the longest item's length (the number of decoding steps)."""
        return int(self.item_tokens.shape[1])

    def allowed_mask(self) -> np.ndarray:
        """[M, V] bool: the allowed-next mask over the whole vocabulary (numpy)."""
        out = np.zeros((self.num_nodes, self.vocab_size), bool)
        out[:, np.asarray(self.tokens)] = np.asarray(self.allowed)
        return out

    def lookup(self, tokens: Sequence[int]) -> int:
        """The item of a token sequence (the lowest index among identical items), or -1 when
        it is not a complete item of the catalogue (host-side, numpy)."""
        node = 0
        local = {int(t): u for u, t in enumerate(np.asarray(self.tokens))}
        for t in tokens:
            u = local.get(int(t))
            if u is None or not self.allowed[node, u]:
                return -1
            node = int(self.child[node, u])
        return int(self.node_item[node])


jax.tree_util.register_dataclass(
    TokenTrie, data_fields=["tokens", "allowed", "child", "node_item", "depth", "item_tokens",
                            "item_lengths", "item_leaf"],
    meta_fields=["vocab_size", "pad_id"])


def build_trie(sequences: Sequence[Sequence[int]], *, vocab_size: int, pad_id: int = 0
               ) -> TokenTrie:
    """The `TokenTrie` of a catalogue: item i is the token sequence `sequences[i]`.

    Args:
      sequences: I >= 1 non-empty sequences of token ids in [0, vocab_size), prefix-free (no
        item is a proper prefix of another; end variable-length items with an eos token).
        Identical sequences are allowed (they share a leaf).
      vocab_size: V.
      pad_id: the id that pads items (and finished beams) after their last token.

    Returns:
      The trie (numpy arrays).

    Raises:
      ValueError: no items, an empty item, a token outside [0, V), or an item that is a proper
        prefix of another.
    """
    seqs = [[int(t) for t in s] for s in sequences]
    if not seqs:
        raise ValueError("build_trie needs at least one item sequence")
    vocab_size = int(vocab_size)
    for i, s in enumerate(seqs):
        if not s:
            raise ValueError(f"item {i} has no tokens")
        if min(s) < 0 or max(s) >= vocab_size:
            raise ValueError(f"item {i} has a token outside [0, {vocab_size}): {s}")
    tokens = np.array(sorted({t for s in seqs for t in s}), np.int32)
    local = {int(t): u for u, t in enumerate(tokens)}
    # dict trie: node -> {local token: child}; nodes renumbered breadth first below
    children: list[dict[int, int]] = [{}]
    leaf_of: list[int] = []
    for s in seqs:
        node = 0
        for t in s:
            u = local[t]
            if u not in children[node]:
                children.append({})
                children[node][u] = len(children) - 1
            node = children[node][u]
        leaf_of.append(node)
    for i, leaf in enumerate(leaf_of):
        if children[leaf]:
            j = next(j for j, s in enumerate(seqs) if len(s) > len(seqs[i])
                     and s[:len(seqs[i])] == seqs[i])
            raise ValueError(f"item {i} is a prefix of item {j}: the catalogue must be "
                             "prefix-free (end each item with an eos token)")
    order, depth_of, frontier = [0], {0: 0}, [0]
    while frontier:
        nxt = []
        for node in frontier:
            for u in sorted(children[node]):
                c = children[node][u]
                depth_of[c] = depth_of[node] + 1
                nxt.append(c)
        order.extend(nxt)
        frontier = nxt
    new = {old: k for k, old in enumerate(order)}
    m, num_u = len(order), len(tokens)
    allowed = np.zeros((m, num_u), bool)
    child = np.full((m, num_u), -1, np.int32)
    for old, k in new.items():
        for u, c in children[old].items():
            allowed[k, u] = True
            child[k, u] = new[c]
    node_item = np.full(m, -1, np.int32)
    for i in reversed(range(len(seqs))):  # the lowest index wins
        node_item[new[leaf_of[i]]] = i
    max_len = max(len(s) for s in seqs)
    item_tokens = np.full((len(seqs), max_len), int(pad_id), np.int32)
    for i, s in enumerate(seqs):
        item_tokens[i, :len(s)] = s
    return TokenTrie(
        tokens=tokens, allowed=allowed, child=child, node_item=node_item,
        depth=np.array([depth_of[old] for old in order], np.int32), item_tokens=item_tokens,
        item_lengths=np.array([len(s) for s in seqs], np.int32),
        item_leaf=np.array([new[leaf] for leaf in leaf_of], np.int32),
        vocab_size=vocab_size, pad_id=int(pad_id))


_UNROLL = 4  # decoding loops of at most this many steps are unrolled (they compile faster)


def _loop(length: int, step, init):
    """`lax.fori_loop(0, length, step, init)`, unrolled in Python for short items."""
    if length <= _UNROLL:
        carry = init
        for t in range(length):
            carry = step(jnp.int32(t), carry)
        return carry
    return jax.lax.fori_loop(0, length, step, init)


def _scan(step, init, xs):
    """`lax.scan(step, init, xs)` over the leading axis of `xs`, unrolled for short items."""
    length = jax.tree.leaves(xs)[0].shape[0]
    if length > _UNROLL:
        return jax.lax.scan(step, init, xs)
    carry, ys = init, []
    for t in range(length):
        carry, y = step(carry, jax.tree.map(lambda x, t=t: x[t], xs))
        ys.append(y)
    return carry, (None if ys[0] is None else jax.tree.map(lambda *y: jnp.stack(y), *ys))


def _log_softmax(logits: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)


def _constrained(local: jax.Array, allowed: jax.Array) -> jax.Array:
    """log-probs [.., U] renormalised over the allowed columns (-inf elsewhere; a row with no
    allowed column gives -inf everywhere, not NaN)."""
    masked = jnp.where(allowed, local, _NEG_INF)
    norm = jax.nn.logsumexp(masked, axis=-1, keepdims=True)
    return jnp.where(allowed, masked - jnp.where(jnp.isfinite(norm), norm, 0.0), _NEG_INF)


class BeamOutput(NamedTuple):
    """The G = W best items of each context, in rank order (beam k has rank k, 0-based).

    Attributes:
      tokens: [B, W, L] int32 item tokens (pad after the item's end).
      mask: [B, W, L] bool, the item's tokens (False on padding and on invalid beams).
      items: [B, W] int32 catalogue index of each beam's item; -1 for an invalid beam.
      valid: [B, W] bool, the beam reached an item (False when fewer than W are reachable).
      ranks: [B, W] int32, 0..W-1 (the beam order is the rank).
      scores: [B, W] float32 the ranking score: sum of `logps` (renormalise=False) or of
        `constrained_logps` (renormalise=True); -inf on invalid beams.
      logps: [B, W, L] float32 log pi(token | prefix) under the model (full vocabulary); 0 off
        `mask`.
      constrained_logps: [B, W, L] float32 log-probs under the trie-constrained, renormalised
        distribution; 0 off `mask`.
    """

    tokens: jax.Array
    mask: jax.Array
    items: jax.Array
    valid: jax.Array
    ranks: jax.Array
    scores: jax.Array
    logps: jax.Array
    constrained_logps: jax.Array


def beam_search(trie: TokenTrie, logits_fn: LogitsFn, *, batch_size: int, num_beams: int,
                renormalise: bool = False) -> BeamOutput:
    """Trie-constrained beam search: the `num_beams` best distinct valid items per context.

    Beam score after step t: s(y_<=t) = sum_{j <= t} ell_j, with ell_j = log pi(y_j | y_<j)
    (the model's full-vocabulary log-prob, `renormalise=False`: ReRe's decoding) or
    log pi_trie(y_j | y_<j) = ell_j - logsumexp_{u allowed} ell(u) (`renormalise=True`).
    Each step keeps the W best of {finished beams unchanged} u {live beam + allowed token}
    (module docstring). Jittable: a `lax.fori_loop` over the L steps (unrolled for L <= 4),
    static shapes.

    Args:
      trie: the catalogue (`build_trie`).
      logits_fn: `(tokens [B, W, L] int32, t) -> [B, W, V]` logits of token t (module
        docstring).
      batch_size: B.
      num_beams: W >= 1 (G = W items are returned).
      renormalise: rank by the constrained, renormalised log-probs instead of the model's.

    Returns:
      BeamOutput.
    """
    b, w, length = int(batch_size), int(num_beams), trie.max_len
    if w < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    tokens_u = jnp.asarray(trie.tokens)
    allowed_t, child_t = jnp.asarray(trie.allowed), jnp.asarray(trie.child)
    num_u = tokens_u.shape[0]
    leaf_t = ~allowed_t.any(-1)  # [M]
    pad = jnp.int32(trie.pad_id)

    def step(t, carry):
        tokens, node, score, lp, clp, mask = carry
        logits = logits_fn(tokens, t)
        if logits.shape[:2] != (b, w):
            raise ValueError(f"logits_fn must return [{b}, {w}, V] logits, got {logits.shape}")
        local = _log_softmax(logits)[..., tokens_u]  # [B, W, U]
        allowed = allowed_t[node]  # [B, W, U]
        constrained = _constrained(local, allowed)
        model_step = jnp.where(allowed, local, _NEG_INF)
        step_score = constrained if renormalise else model_step
        done = leaf_t[node]  # [B, W] finished items keep their slot, score unchanged
        first = jnp.arange(num_u) == 0
        step_score = jnp.where(done[..., None], jnp.where(first, 0.0, _NEG_INF), step_score)
        cand = (score[..., None] + step_score).reshape(b, w * num_u)
        top, idx = jax.lax.top_k(cand, w)  # sorted, ties to the lower index
        src, col = idx // num_u, idx % num_u
        live = jnp.isfinite(top)

        def take(x):
            return jnp.take_along_axis(x, src.reshape(b, w, *([1] * (x.ndim - 2))), axis=1)

        tokens, lp, clp, mask = take(tokens), take(lp), take(clp), take(mask)
        parent, parent_done = take(node), take(done)
        new_tok = jnp.where(parent_done, pad, tokens_u[col])
        emit = live & ~parent_done
        tok_lp = jnp.take_along_axis(model_step.reshape(b, w * num_u), idx, axis=1)
        tok_clp = jnp.take_along_axis(constrained.reshape(b, w * num_u), idx, axis=1)
        tokens = tokens.at[:, :, t].set(jnp.where(emit, new_tok, pad))
        lp = lp.at[:, :, t].set(jnp.where(emit, tok_lp, 0.0))
        clp = clp.at[:, :, t].set(jnp.where(emit, tok_clp, 0.0))
        mask = mask.at[:, :, t].set(emit)
        nxt = jnp.where(parent_done, parent, child_t[parent, col])
        node = jnp.where(live, jnp.maximum(nxt, 0), 0)
        return tokens, node, top, lp, clp, mask

    init = (jnp.full((b, w, length), pad, jnp.int32), jnp.zeros((b, w), jnp.int32),
            jnp.tile(jnp.where(jnp.arange(w) == 0, 0.0, _NEG_INF)[None], (b, 1)),
            jnp.zeros((b, w, length), jnp.float32), jnp.zeros((b, w, length), jnp.float32),
            jnp.zeros((b, w, length), bool))
    tokens, node, score, lp, clp, mask = _loop(length, step, init)
    valid = jnp.isfinite(score) & leaf_t[node]
    items = jnp.where(valid, jnp.asarray(trie.node_item)[node], -1)
    mask = mask & valid[..., None]
    return BeamOutput(tokens=jnp.where(mask, tokens, pad), mask=mask, items=items, valid=valid,
                      ranks=jnp.tile(jnp.arange(w, dtype=jnp.int32)[None], (b, 1)),
                      scores=jnp.where(valid, score, _NEG_INF),
                      logps=jnp.where(mask, lp, 0.0), constrained_logps=jnp.where(mask, clp, 0.0))


class TrieSample(NamedTuple):
    """n items drawn per context from the trie-constrained distribution.

    Attributes:
      tokens: [B, n, L] int32 item tokens (pad after the item's end).
      mask: [B, n, L] bool, the item's tokens.
      items: [B, n] int32 catalogue index of each sample (always a valid item; repeats happen).
      logps: [B, n, L] float32 log pi(token | prefix) under the model (full vocabulary,
        temperature 1); 0 off `mask`.
      constrained_logps: [B, n, L] float32 log-probs under the distribution drawn from (the
        allowed tokens' softmax of logits / temperature, renormalised); 0 off `mask`.
    """

    tokens: jax.Array
    mask: jax.Array
    items: jax.Array
    logps: jax.Array
    constrained_logps: jax.Array


def constrained_sample(trie: TokenTrie, logits_fn: LogitsFn, key: jax.Array, *,
                       batch_size: int, num_samples: int, temperature: float = 1.0
                       ) -> TrieSample:
    """Trie-constrained sampling: token by token from softmax(logits / T) restricted to the
    allowed tokens and renormalised, so every sample is a valid item (the vanilla GRPO rollout
    of generative recommendation). Jittable (`lax.fori_loop` over the L steps, unrolled for
    L <= 4).

    Args:
      trie: the catalogue.
      logits_fn: `(tokens [B, n, L] int32, t) -> [B, n, V]` (module docstring).
      key: PRNG key.
      batch_size: B.
      num_samples: n per context (independent draws).
      temperature: T > 0.

    Returns:
      TrieSample.
    """
    b, n, length = int(batch_size), int(num_samples), trie.max_len
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    tokens_u = jnp.asarray(trie.tokens)
    allowed_t, child_t = jnp.asarray(trie.allowed), jnp.asarray(trie.child)
    leaf_t = ~allowed_t.any(-1)
    pad = jnp.int32(trie.pad_id)

    def step(t, carry):
        tokens, node, lp, clp, mask = carry
        logits = logits_fn(tokens, t)
        if logits.shape[:2] != (b, n):
            raise ValueError(f"logits_fn must return [{b}, {n}, V] logits, got {logits.shape}")
        logits = jnp.asarray(logits, jnp.float32)
        local = _log_softmax(logits)[..., tokens_u]
        allowed = allowed_t[node]
        drawn = _constrained(_log_softmax(logits / temperature)[..., tokens_u], allowed)
        col = jax.random.categorical(jax.random.fold_in(key, t), drawn, axis=-1)
        done = leaf_t[node]
        pick = lambda x: jnp.take_along_axis(x, col[..., None], axis=-1)[..., 0]  # noqa: E731
        tokens = tokens.at[:, :, t].set(jnp.where(done, pad, tokens_u[col]))
        lp = lp.at[:, :, t].set(jnp.where(done, 0.0, pick(local)))
        clp = clp.at[:, :, t].set(jnp.where(done, 0.0, pick(drawn)))
        mask = mask.at[:, :, t].set(~done)
        node = jnp.where(done, node, child_t[node, col])
        return tokens, node, lp, clp, mask

    init = (jnp.full((b, n, length), pad, jnp.int32), jnp.zeros((b, n), jnp.int32),
            jnp.zeros((b, n, length), jnp.float32), jnp.zeros((b, n, length), jnp.float32),
            jnp.zeros((b, n, length), bool))
    tokens, node, lp, clp, mask = _loop(length, step, init)
    return TrieSample(tokens=tokens, mask=mask, items=jnp.asarray(trie.node_item)[node],
                      logps=lp, constrained_logps=clp)


def trie_nodes(trie: TokenTrie, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The trie node at which each token of item sequences is chosen, and whether the token is
    allowed there.

    Args:
      trie: the catalogue.
      tokens: [..., L] int item tokens (pad after the end; a complete item ends at a leaf).

    Returns:
      (nodes [..., L] int32: node of prefix y_<t (0 once off the trie), allowed [..., L] bool:
      y_t is an allowed child of that node; False on padding after a complete item).
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    tokens_u = jnp.asarray(trie.tokens)
    allowed_t, child_t = jnp.asarray(trie.allowed), jnp.asarray(trie.child)
    col = jnp.clip(jnp.searchsorted(tokens_u, tokens), 0, tokens_u.shape[0] - 1)
    known = tokens_u[col] == tokens

    def step(node, x):
        c, k = x
        ok = k & allowed_t[node, c] & (node >= 0)
        nxt = jnp.where(ok, child_t[jnp.maximum(node, 0), c], -1)
        return nxt, (jnp.maximum(node, 0), ok)

    lead = tokens.shape[:-1]
    _, (nodes, ok) = _scan(step, jnp.zeros(lead, jnp.int32),
                           (jnp.moveaxis(col, -1, 0), jnp.moveaxis(known, -1, 0)))
    return jnp.moveaxis(nodes, 0, -1), jnp.moveaxis(ok, 0, -1)


def lookup_items(trie: TokenTrie, tokens: jax.Array) -> jax.Array:
    """Jittable `TokenTrie.lookup`: the item each row of tokens spells.

    Args:
      trie: the catalogue.
      tokens: [..., L] int tokens; after an item's last token only `pad_id` may follow.

    Returns:
      [...] int32 the item (the lowest index among identical items), -1 when the row is no
      complete catalogue item (a token off the trie, a prefix only, or non-pad after the end).
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    tokens_u = jnp.asarray(trie.tokens)
    allowed_t, child_t = jnp.asarray(trie.allowed), jnp.asarray(trie.child)
    leaf_t = ~allowed_t.any(-1)
    col = jnp.clip(jnp.searchsorted(tokens_u, tokens), 0, tokens_u.shape[0] - 1)
    known = tokens_u[col] == tokens

    def step(node, x):
        c, k, tok = x
        here = jnp.maximum(node, 0)
        at_leaf = (node >= 0) & leaf_t[here]
        down = jnp.where((node >= 0) & k & allowed_t[here, c], child_t[here, c], -1)
        return jnp.where(at_leaf, jnp.where(tok == trie.pad_id, node, -1), down), None

    final, _ = _scan(step, jnp.zeros(tokens.shape[:-1], jnp.int32),
                     (jnp.moveaxis(col, -1, 0), jnp.moveaxis(known, -1, 0),
                      jnp.moveaxis(tokens, -1, 0)))
    here = jnp.maximum(final, 0)
    return jnp.where((final >= 0) & leaf_t[here], jnp.asarray(trie.node_item)[here], -1)


def teacher_forced_logps(trie: TokenTrie, logits: jax.Array, tokens: jax.Array
                         ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Both kinds of log-probs of given item sequences from one forward's logits: the training
    side of the decoders' `logps` / `constrained_logps`.

    Args:
      trie: the catalogue.
      logits: [..., L, V] the logits predicting each item token (position t predicts y_t).
      tokens: [..., L] int item tokens (pad after the end).

    Returns:
      (logps [..., L], constrained_logps [..., L], mask [..., L]): log pi(y_t | y_<t) over the
      whole vocabulary, the same renormalised over the tokens the trie allows after y_<t, and
      the tokens on the item's trie path (both log-probs are 0 off it).
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    logp = _log_softmax(logits)
    full = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    nodes, ok = trie_nodes(trie, tokens)
    local = logp[..., jnp.asarray(trie.tokens)]
    norm = jax.nn.logsumexp(jnp.where(jnp.asarray(trie.allowed)[nodes], local, _NEG_INF), -1)
    return (jnp.where(ok, full, 0.0), jnp.where(ok, full - jnp.where(ok, norm, 0.0), 0.0), ok)


# ---------------------------------------------------------------------------------------------
# Causal LMs: the beam-search rollout of the policy-gradient recipe


def lm_logits_fn(model, params, prompt_ids: jax.Array, prompt_mask: jax.Array) -> LogitsFn:
    """A `logits_fn` of a causal LM for decoding items after left-aligned prompts.

    Row (b, k) is the sequence [prompt_b | tokens[b, k]]; step t runs the model's forward on
    ids [B K, P + L] with the mask [prompt_mask | column < t] and returns the logits at column
    P - 1 + t (the LM head on the L item positions only, `logits_range`). Causality makes them
    the logits a training forward over the whole item computes at that position, so the
    decoders' `logps` equal `online.response_logps` of the finished rows (fp32, 1e-5). One full
    forward per step, no KV cache: simple and exact for items of a few tokens.

    Args:
      model: an alignax causal LM (`apply(params, ids, mask, logits_range=)`).
      params: its parameters.
      prompt_ids: [B, P] prompts, left-padded (`alignax.sampling.left_align`).
      prompt_mask: [B, P] bool.

    Returns:
      `logits_fn(tokens [B, K, L], t) -> [B, K, V]`.
    """
    prompt_ids = jnp.asarray(prompt_ids, jnp.int32)
    prompt_mask = jnp.asarray(prompt_mask, bool)
    p = prompt_ids.shape[1]

    def logits_fn(tokens, t):
        b, k, length = tokens.shape
        ids = jnp.concatenate([jnp.repeat(prompt_ids, k, 0), tokens.reshape(b * k, length)], 1)
        mask = jnp.concatenate([jnp.repeat(prompt_mask, k, 0),
                                jnp.broadcast_to(jnp.arange(length) < t, (b * k, length))], 1)
        logits = model.apply(params, ids, mask, logits_range=(p - 1, p - 1 + length))
        step = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)
        return step.reshape(b, k, -1)

    return logits_fn


def beam_rollout(model, trie: TokenTrie, *, num_beams: int, renormalise: bool = False
                 ) -> Callable[..., Rollout]:
    """`rollout(params, prompt_ids [B, P], prompt_mask [B, P], rng) -> Rollout` of the
    `num_beams` best catalogue items per prompt (trie-constrained beam search, `lm_logits_fn`).

    Rows are prompt-major and, within a prompt's group, in beam-rank order: row b G + k holds
    the rank-k item of prompt b (a reward reads the rank as `row % G`). ids [B G, P + L] =
    [left-aligned prompt | item tokens, pad after the item]; `response_mask` [B G, L] is the
    item's tokens (its eos included); `old_logps` the model's own full-vocabulary log-probs of
    them (module docstring: what the update recomputes). The rng is unused (beam search is
    deterministic). Jitted.

    Raises:
      ValueError: `num_beams` exceeds the catalogue's distinct items.
    """
    g = int(num_beams)
    if g > trie.num_distinct_items:
        raise ValueError(f"num_beams={g} exceeds the catalogue's {trie.num_distinct_items} "
                         "distinct items")
    pad = int(trie.pad_id)

    @jax.jit
    def decode(params, prompt_ids, prompt_mask):
        order = jnp.argsort(prompt_mask.astype(jnp.int32), axis=-1, stable=True)
        ids = jnp.take_along_axis(prompt_ids.astype(jnp.int32), order, axis=-1)
        mask = jnp.take_along_axis(prompt_mask.astype(bool), order, axis=-1)
        out = beam_search(trie, lm_logits_fn(model, params, ids, mask),
                          batch_size=ids.shape[0], num_beams=g, renormalise=renormalise)
        b = ids.shape[0]
        resp = out.tokens.reshape(b * g, -1)
        rmask = out.mask.reshape(b * g, -1)
        return Rollout(
            ids=jnp.concatenate([jnp.repeat(ids, g, 0), jnp.where(rmask, resp, pad)], 1),
            mask=jnp.concatenate([jnp.repeat(mask, g, 0), rmask], 1),
            response_mask=rmask, old_logps=jnp.where(rmask, out.logps.reshape(b * g, -1), 0.0),
            prompt_index=jnp.repeat(jnp.arange(b, dtype=jnp.int32), g)), None

    def rollout(params, prompt_ids, prompt_mask, rng) -> Rollout:
        del rng
        out, _ = decode(params, jnp.asarray(prompt_ids), jnp.asarray(prompt_mask))
        return out

    rollout.response_len = trie.max_len
    rollout.num_samples = g
    return rollout


def beam_rollout_from_config(trie: TokenTrie, *, renormalise: bool = False) -> Callable:
    """A rollout builder for `policy_gradient.train(rollout_fn=)`: `(model, cfg, n) ->
    beam_rollout(model, trie, num_beams=n)` (the recipe's `num_samples` is the group size G,
    the number of beams). The recipe's `max_new_tokens` must be the trie's `max_len` (the
    response length of the update and the reference forward): a ValueError naming it
    otherwise. The sampler options (temperature, top_k, top_p) do not apply to beam search.
    """

    def build(model, cfg: Mapping[str, Any], num_samples: int):
        if int(cfg["max_new_tokens"]) != trie.max_len:
            raise ValueError(f"max_new_tokens={cfg['max_new_tokens']} must be the longest "
                             f"catalogue item's length {trie.max_len} (the beam rollout's "
                             "response length)")
        return beam_rollout(model, trie, num_beams=num_samples, renormalise=renormalise)

    build.response_len = trie.max_len
    return build
