"""An autoregressive policy over every sequence of a small vocabulary, with exact expectations.

The toy language models of many alignment papers (the DAA over-optimisation tree MDP, 64-arm
bandits, "vocab 8, length 6" LMs) are small enough to enumerate: all N = V^L responses
y = (y_1, ..., y_L), y_t in {0, ..., V - 1}. Then log pi(y | x) of every response, E_pi[r],
KL(pi || pi_ref), the entropy and the token-level KLs of TDPO are exact sums instead of Monte
Carlo estimates, and a whole run of five seeds fits in one `fit_small` program.

The policy is a prefix tree of softmaxes. Prefix nodes are numbered breadth first (as
`alignax.tasks.mdp.tree_mdp`): the empty prefix is node 0 and appending token a to node i gives
node V i + 1 + a; the M = (V^L - 1) / (V - 1) nodes of depth < L carry logits. The logits of
node i for a prompt with features phi in R^F are

    logits_i(x) = bias_i + phi(x) @ weight_i,      bias [M, V], weight [M, F, V],

so F = 0 is one table shared by all prompts, one-hot phi is a separate table per prompt
(tabular), and dense phi is a log-linear policy that generalises across prompts. Sequences are
numbered lexicographically: index(y) = sum_t y_t V^(L - 1 - t).

Every function takes the features with any leading batch shape [..., F] and returns [..., ...]
(vmappable over seeds). The functions are pure jax and differentiable in the params.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class SequenceSpace:
    """All sequences of `length` tokens over `vocab_size` tokens.

    Attributes:
      vocab_size: V >= 2.
      length: L >= 1.
    """

    vocab_size: int
    length: int

    def __post_init__(self):
        if self.vocab_size < 2 or self.length < 1:
            raise ValueError(f"SequenceSpace needs vocab_size >= 2 and length >= 1, got "
                             f"{self.vocab_size}, {self.length}")
        if self.vocab_size ** self.length > 1 << 20:
            raise ValueError(f"{self.vocab_size}^{self.length} sequences is too many to "
                             f"enumerate (limit 2^20)")

    @property
    def num_sequences(self) -> int:
        """N = V^L."""
        return self.vocab_size ** self.length

    @property
    def num_nodes(self) -> int:
        """M: prefixes of length < L (the nodes that carry logits)."""
        return sum(self.vocab_size ** d for d in range(self.length))

    @functools.cached_property
    def sequences(self) -> np.ndarray:
        """[N, L] int32: every sequence, in lexicographic order (row n is sequence n)."""
        grids = np.indices((self.vocab_size,) * self.length).reshape(self.length, -1)
        return np.ascontiguousarray(grids.T).astype(np.int32)

    @functools.cached_property
    def prefix_nodes(self) -> np.ndarray:
        """[N, L] int32: the node (prefix y_<t) at which each token of each sequence is chosen."""
        nodes = np.zeros((self.num_sequences, self.length), np.int32)
        for t in range(1, self.length):
            nodes[:, t] = self.vocab_size * nodes[:, t - 1] + 1 + self.sequences[:, t - 1]
        return nodes

    def index(self, tokens) -> np.ndarray:
        """The sequence indices of tokens [..., L] (numpy)."""
        tokens = np.asarray(tokens)
        if tokens.shape[-1:] != (self.length,):
            raise ValueError(f"tokens must end in length {self.length}, got {tokens.shape}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"tokens must lie in [0, {self.vocab_size})")
        powers = self.vocab_size ** np.arange(self.length - 1, -1, -1)
        return (tokens * powers).sum(-1).astype(np.int32)


def init_table(space: SequenceSpace, num_features: int = 0, *, key: jax.Array | None = None,
               scale: float = 0.0) -> dict:
    """Params {"bias": [M, V], "weight": [M, F, V]}: zero (the uniform policy) or, with `key`,
    N(0, scale^2) entries."""
    shapes = {"bias": (space.num_nodes, space.vocab_size),
              "weight": (space.num_nodes, int(num_features), space.vocab_size)}
    if key is None or scale == 0.0:
        return {k: jnp.zeros(s, jnp.float32) for k, s in shapes.items()}
    kb, kw = jax.random.split(key)
    return {"bias": scale * jax.random.normal(kb, shapes["bias"], jnp.float32),
            "weight": scale * jax.random.normal(kw, shapes["weight"], jnp.float32)}


def _features(params, features):
    num_features = params["weight"].shape[-2]
    if features is None:
        if num_features:
            raise ValueError(f"the policy has {num_features} prompt features; pass features")
        return jnp.zeros((0,), jnp.float32)
    features = jnp.asarray(features, jnp.float32)
    if features.shape[-1] != num_features:
        raise ValueError(f"features must end in {num_features}, got {features.shape}")
    return features


def node_log_probs(params: dict, features=None) -> jax.Array:
    """[..., M, V] log-softmax of every node's logits for prompts with `features` [..., F]."""
    phi = _features(params, features)
    logits = params["bias"] + jnp.einsum("...f,mfv->...mv", phi, params["weight"])
    return jax.nn.log_softmax(logits, axis=-1)


def token_log_probs(space: SequenceSpace, params: dict, features=None) -> jax.Array:
    """[..., N, L] log pi(y_t | x, y_<t) of every token of every sequence."""
    logp = node_log_probs(params, features)
    flat = logp.reshape(*logp.shape[:-2], -1)
    index = jnp.asarray(space.prefix_nodes * space.vocab_size + space.sequences)
    return jnp.take(flat, index, axis=-1)


def sequence_log_probs(space: SequenceSpace, params: dict, features=None) -> jax.Array:
    """[..., N] log pi(y | x) of every sequence (they logsumexp to 0)."""
    return token_log_probs(space, params, features).sum(-1)


def path_log_probs(space: SequenceSpace, params: dict, index, features=None) -> jax.Array:
    """[...] log pi(y | x) of the sequences `index` [...] (int) for prompts with `features`
    [..., F]: the same values as `gather(sequence_log_probs(...), index[..., None])[..., 0]`, but
    only the L nodes on each sequence's path are evaluated (cheap for minibatches of pairs)."""
    index = jnp.asarray(index, jnp.int32)
    nodes = jnp.asarray(space.prefix_nodes)[index]  # [..., L]
    tokens = jnp.asarray(space.sequences)[index]  # [..., L]
    phi = _features(params, features)
    logits = params["bias"][nodes] + jnp.einsum("...f,...lfv->...lv", phi,
                                                params["weight"][nodes])
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0].sum(-1)


def expectation(space: SequenceSpace, params: dict, values, features=None) -> jax.Array:
    """[...] E_{y ~ pi(.|x)}[values(y)], values [..., N] (e.g. a gold reward of every sequence)."""
    p = jnp.exp(sequence_log_probs(space, params, features))
    return (p * jnp.asarray(values, jnp.float32)).sum(-1)


def sequence_kl(space: SequenceSpace, params: dict, ref_params: dict, features=None
                ) -> jax.Array:
    """[...] KL(pi(.|x) || pi_ref(.|x)) over whole sequences, exactly."""
    lp = sequence_log_probs(space, params, features)
    lq = sequence_log_probs(space, ref_params, features)
    return (jnp.exp(lp) * (lp - lq)).sum(-1)


def entropy(space: SequenceSpace, params: dict, features=None) -> jax.Array:
    """[...] H(pi(.|x)) over whole sequences, in nats."""
    lp = sequence_log_probs(space, params, features)
    return -(jnp.exp(lp) * lp).sum(-1)


def node_kl(params: dict, ref_params: dict, features=None, *, reverse: bool = False
            ) -> jax.Array:
    """[..., M] KL(pi(.|node) || pi_ref(.|node)) of each node's next-token distribution;
    `reverse=True` gives KL(pi_ref || pi)."""
    a = node_log_probs(params, features)
    b = node_log_probs(ref_params, features)
    if reverse:
        a, b = b, a
    return (jnp.exp(a) * (a - b)).sum(-1)


def sequential_kl(space: SequenceSpace, params: dict, ref_params: dict, features=None
                  ) -> jax.Array:
    """[..., N] TDPO's sequential KL of every sequence:
    D_SeqKL(x, y; pi_ref || pi) = sum_t KL(pi_ref(.|x, y_<t) || pi(.|x, y_<t)) (Zeng et al.
    2024, eq. 4; the `chosen_seq_kl` / `rejected_seq_kl` of `alignax.losses.direct.tdpo_loss`)."""
    kl = node_kl(params, ref_params, features, reverse=True)
    return jnp.take(kl, jnp.asarray(space.prefix_nodes), axis=-1).sum(-1)


def sample(space: SequenceSpace, params: dict, key: jax.Array, num_samples: int,
           features=None, *, temperature: float = 1.0) -> jax.Array:
    """[..., num_samples] int32 sequence indices drawn i.i.d. from pi(.|x)^(1/temperature)
    (renormalised over whole sequences); `space.sequences[index]` gives the tokens."""
    lp = sequence_log_probs(space, params, features) / float(temperature)
    draws = jax.random.categorical(key, lp, axis=-1, shape=(num_samples, *lp.shape[:-1]))
    return jnp.moveaxis(draws, 0, -1).astype(jnp.int32)


def sample_paths(space: SequenceSpace, params: dict, key: jax.Array, num_samples: int,
                 features=None) -> jax.Array:
    """[..., num_samples] int32 sequence indices drawn token by token down the prefix tree:
    the same distribution as `sample` (temperature 1), at a cost of L node evaluations per
    sample instead of the whole table of V^L sequences (for large spaces and many prompts)."""
    phi = _features(params, features)
    v = space.vocab_size
    shape = phi.shape[:-1] + (int(num_samples),)
    node = jnp.zeros(shape, jnp.int32)
    index = jnp.zeros(shape, jnp.int32)
    for t, k in enumerate(jax.random.split(key, space.length)):
        logits = params["bias"][node] + jnp.einsum("...f,...sfv->...sv", phi,
                                                   params["weight"][node])
        token = jax.random.categorical(k, logits, axis=-1).astype(jnp.int32)
        index = index * v + token
        node = v * node + 1 + token
    return index


def gather(values: jax.Array, index: jax.Array) -> jax.Array:
    """values [..., N] at sequence indices [..., K] -> [..., K] (e.g. the log-probs of sampled
    or paired responses)."""
    return jnp.take_along_axis(values, jnp.asarray(index), axis=-1)
