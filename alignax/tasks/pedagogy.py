"""A dialogue-state toy for pedagogical alignment: scaffolding hints vs direct answers.

A dialogue state x (a student stuck on a step of a problem) is a feature vector z(x) in R^D.
A tutor reply is a sequence y of `length` tokens over `vocab_size` tokens
(`alignax.models.sequence_table.SequenceSpace`): its first token is the reply's mode,
HINT (0: a scaffolding hint, the next guiding step), ANSWER (1: the direct answer) or any other
token (off-task chatter); the remaining L - 1 tokens are its content. Each state has one
scaffold, [HINT] + c_hint(x), and one direct answer, [ANSWER] + c_answer(x); the content tokens
are position-wise argmaxes of scores linear in z (a log-linear policy can represent them):

    c_hint(x)_t = argmax_a z @ H[t, :, a],     c_answer(x)_t = argmax_a z @ A[t, :, a].

The base (reference) policy is what an LLM tutor is before alignment: it prefers to answer
(its mode logits favour ANSWER by `answer_bias`, plus a state-dependent term), knows the answer
content well (logits `answer_skill` z @ A) and the hint content less well (`hint_skill` z @ H);
off-task subtrees are uniform. It is a log-linear `sequence_table` policy, so a trained policy
can start from it exactly.

`pedagogical_pairs` builds the synthetic preference data (chosen = the scaffold, rejected = the
direct answer); `pedagogical_accuracy` is the perplexity-preference metric of the paper (the
fraction of states where PPL(scaffold) < PPL(direct answer)); `BKTLearner` is the simulated
student whose follow-up success after a reply measures the learner-side gain.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from alignax.models.sequence_table import SequenceSpace

HINT, ANSWER = 0, 1


@dataclasses.dataclass(frozen=True)
class PedagogyWorld:
    """Scaffolds, direct answers and the base tutor of one world (seeded by `seed`).

    Attributes:
      space: the reply space (vocab_size >= 3: HINT, ANSWER and at least one off-task token).
      dim: D, state features.
      answer_bias: how much the base tutor's mode logits favour ANSWER over HINT.
      answer_skill: the base tutor's inverse temperature on the answer content scores.
      hint_skill: the same on the hint content scores.
      seed: the world's seed.
    """

    space: SequenceSpace
    dim: int = 6
    answer_bias: float = 2.0
    answer_skill: float = 3.0
    hint_skill: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.space.vocab_size < 3 or self.space.length < 2:
            raise ValueError("a PedagogyWorld needs vocab_size >= 3 and length >= 2")

    def _draws(self):
        rng = np.random.default_rng([self.seed, 5757])
        v, length, d = self.space.vocab_size, self.space.length, self.dim
        hint = rng.standard_normal((length - 1, d, v))
        answer = rng.standard_normal((length - 1, d, v))
        mode = 0.5 * rng.standard_normal((d, v)) / np.sqrt(d)
        return hint, answer, mode

    def states(self, n: int, seed: int) -> np.ndarray:
        """[n, D] float32 dialogue-state features drawn with `seed` (a data seed)."""
        return np.random.default_rng([seed, 5758]).standard_normal((n, self.dim)).astype(
            np.float32)

    def contents(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hint content, answer content), each [..., L - 1] int tokens, of states z [..., D]."""
        hint, answer, _ = self._draws()
        return (np.einsum("...d,tdv->...tv", z, hint).argmax(-1),
                np.einsum("...d,tdv->...tv", z, answer).argmax(-1))

    def replies(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scaffold, direct answer) sequence indices [...] of states z [..., D]."""
        c_hint, c_answer = self.contents(z)
        lead = np.ones(c_hint.shape[:-1] + (1,), np.int64)
        scaffold = np.concatenate([HINT * lead, c_hint], -1)
        direct = np.concatenate([ANSWER * lead, c_answer], -1)
        return self.space.index(scaffold), self.space.index(direct)

    def reference_params(self, extra_features: int = 0) -> dict:
        """The base tutor as log-linear `sequence_table` params over the features
        [z (D), then `extra_features` it ignores]: {"bias": [M, V], "weight": [M, D + extra, V]}.
        """
        hint, answer, mode = self._draws()
        space, v = self.space, self.space.vocab_size
        m, d = space.num_nodes, self.dim
        bias = np.zeros((m, v))
        weight = np.zeros((m, d + extra_features, v))
        bias[0, ANSWER] = self.answer_bias
        weight[0, :d] = mode
        # nodes below the root: node -> (depth, mode token of its subtree)
        start = 1
        for depth in range(1, space.length):
            count = v ** depth
            for k in range(count):
                node = start + k
                top = k // (v ** (depth - 1))  # the subtree's first token
                if top == HINT:
                    weight[node, :d] = self.hint_skill * hint[depth - 1]
                elif top == ANSWER:
                    weight[node, :d] = self.answer_skill * answer[depth - 1]
            start += count
        return {"bias": bias.astype(np.float32), "weight": weight.astype(np.float32)}

    def reply_kinds(self, z: np.ndarray) -> np.ndarray:
        """[..., N] int kind of every reply for states z: 2 = the state's scaffold, 1 = another
        hint-mode reply (a wrong hint), 0 = an answer-mode reply (the answer given away, right
        or wrong), -1 = off-task."""
        scaffold, _ = self.replies(z)
        first = self.space.sequences[:, 0]
        kinds = np.where(first == HINT, 1, np.where(first == ANSWER, 0, -1))
        kinds = np.broadcast_to(kinds, np.shape(scaffold) + kinds.shape).copy()
        np.put_along_axis(kinds, np.asarray(scaffold)[..., None], 2, axis=-1)
        return kinds


def pedagogical_pairs(world: PedagogyWorld, z: np.ndarray) -> dict:
    """The synthetic pedagogical preference data of states z [P, D]: chosen = the scaffold
    (the next guiding step), rejected = the direct answer, as sequence indices [P]."""
    scaffold, direct = world.replies(z)
    return {"z": np.asarray(z, np.float32), "chosen": scaffold.astype(np.int32),
            "rejected": direct.astype(np.int32)}


def perplexity(log_prob, length: int):
    """PPL = exp(-log p / length) of a reply of `length` tokens with log-probability log_prob."""
    return np.exp(-np.asarray(log_prob, np.float64) / length)


def pedagogical_accuracy(scaffold_log_probs, direct_log_probs, scaffold_lengths=1,
                         direct_lengths=1) -> float:
    """The perplexity-preference metric: the fraction of states where PPL(scaffold) <
    PPL(direct answer), from summed log-probs [P] and the replies' token counts (scalars or
    [P]); with equal lengths it is the fraction where log p(scaffold) > log p(direct)."""
    s = perplexity(scaffold_log_probs, 1) ** (1.0 / np.asarray(scaffold_lengths, np.float64))
    d = perplexity(direct_log_probs, 1) ** (1.0 / np.asarray(direct_lengths, np.float64))
    return float(np.mean(s < d))


@dataclasses.dataclass(frozen=True)
class BKTLearner:
    """A simulated student (Bayesian knowledge tracing) who reads one tutor reply, then solves
    follow-up problems on the same skill alone.

    Before the reply the skill is mastered with probability `prior`. Reading the state's
    scaffold, the student works the step out and learns the skill with probability
    `learn_hint`; a wrong hint teaches with `learn_wrong_hint`; a direct answer is copied and
    teaches with `learn_copy`; an off-task reply teaches nothing. A follow-up is then solved with
    probability P(mastered) (1 - slip) + (1 - P(mastered)) guess.
    """

    prior: float = 0.2
    learn_hint: float = 0.6
    learn_wrong_hint: float = 0.2
    learn_copy: float = 0.05
    slip: float = 0.1
    guess: float = 0.2

    def learn_rates(self) -> np.ndarray:
        """P(learn) by reply kind, indexed by kind + 1: [off-task, answer, wrong hint,
        scaffold]."""
        return np.array([0.0, self.learn_copy, self.learn_wrong_hint, self.learn_hint])

    def follow_up_success(self, kinds) -> np.ndarray:
        """P(solve a follow-up) after a reply of each kind (`PedagogyWorld.reply_kinds`)."""
        learn = self.learn_rates()[np.asarray(kinds) + 1]
        mastered = self.prior + (1.0 - self.prior) * learn
        return mastered * (1.0 - self.slip) + (1.0 - mastered) * self.guess

    def expected_success(self, reply_probs, kinds) -> np.ndarray:
        """[...] E_{y ~ pi(.|x)}[follow-up success] from reply probabilities [..., N] and the
        kinds [..., N]."""
        return (np.asarray(reply_probs) * self.follow_up_success(kinds)).sum(-1)
