"""Pure-jax BLEU and ROUGE-1 (alignax.rewards.metrics) against the host-side references."""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax

from alignax.rewards import (bag_embeddings, bag_encoder_loss, bleu, concept_f1,
                             embedding_similarity, init_bag_encoder, rouge1, sentence_bleu)
from alignax.train.small import fit_small


def _rouge1_reference(hyp, refs, measure="f"):
    best = 0.0
    h = Counter(hyp)
    for ref in refs:
        o = sum((h & Counter(ref)).values())
        if not hyp or not ref or o == 0:
            continue
        p, r = o / len(hyp), o / len(ref)
        best = max(best, {"p": p, "r": r, "f": 2 * p * r / (p + r)}[measure])
    return best


def _random_case(rng, n, t, k, r, vocab):
    hyp = rng.integers(0, vocab, (n, t))
    refs = rng.integers(0, vocab, (n, k, r))
    hlen = rng.integers(0, t + 1, n)
    rlen = rng.integers(1, r + 1, (n, k))
    hmask = np.arange(t)[None] < hlen[:, None]
    rmask = np.arange(r)[None, None] < rlen[..., None]
    return hyp, refs, hmask, rmask


def test_bleu_equals_sentence_bleu_with_masks_and_several_references():
    rng = np.random.default_rng(0)
    hyp, refs, hmask, rmask = _random_case(rng, 300, 7, 3, 6, vocab=3)
    # a few exact copies of a reference (BLEU 1) and short hypotheses
    hyp[:20, :6], hmask[:20] = refs[:20, 0], np.arange(7)[None] < rmask[:20, 0].sum(-1)[:, None]
    settings = ((4, 1.0), (2, 0.0), (1, 1.0))
    scores = jax.jit(lambda *a: [bleu(*a, max_n=max_n, smoothing=smoothing)
                                 for max_n, smoothing in settings])(hyp, refs, hmask, rmask)
    for (max_n, smoothing), got in zip(settings, scores):
        got = np.asarray(got)
        want = [sentence_bleu(h[m].tolist(), [q[w].tolist() for q, w in zip(rs, rm)],
                              max_n=max_n, smoothing=smoothing)
                for h, m, rs, rm in zip(hyp, hmask, refs, rmask)]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.allclose(got[:20], 1.0)


def test_bleu_broadcasts_over_groups_without_masks():
    """[M, G, T] sampled responses against [M, 1, K, R] per-prompt references (a GRPO batch)."""
    rng = np.random.default_rng(1)
    hyp = rng.integers(0, 4, (3, 5, 6))
    refs = rng.integers(0, 4, (3, 2, 6))
    got, short = jax.jit(lambda h, r: (bleu(h, r), bleu(h[:, :, :3], r)))(hyp, refs[:, None])
    got, short = np.asarray(got), np.asarray(short)
    assert got.shape == (3, 5)
    for m in range(3):
        for g in range(5):
            assert got[m, g] == pytest.approx(sentence_bleu(hyp[m, g].tolist(),
                                                            refs[m].tolist()), rel=1e-5)
    # a hypothesis longer than every n-gram order that fits the references
    want = sentence_bleu(hyp[0, 0, :3].tolist(), refs[0].tolist())
    assert short[0, 0] == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="references"):
        bleu(hyp[0, 0], refs[0, 0])


def test_rouge1_equals_the_counter_definition():
    rng = np.random.default_rng(2)
    hyp, refs, hmask, rmask = _random_case(rng, 200, 6, 2, 5, vocab=5)
    measures = ("f", "p", "r")
    scores = jax.jit(lambda *a: [rouge1(*a, measure=measure) for measure in measures])(
        hyp, refs, hmask, rmask)
    for measure, got in zip(measures, scores):
        got = np.asarray(got)
        want = [_rouge1_reference(h[m].tolist(), [q[w].tolist() for q, w in zip(rs, rm)],
                                  measure)
                for h, m, rs, rm in zip(hyp, hmask, refs, rmask)]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # hand values: hyp (1, 1, 2) vs ref (1, 3, 4, 5): overlap 1, P = 1/3, R = 1/4
    hand = jax.jit(rouge1)(jnp.array([1, 1, 2]), jnp.array([[1, 3, 4, 5]]))
    assert float(hand) == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))
    with pytest.raises(ValueError, match="measure"):
        rouge1(hyp, refs, measure="x")


def test_concept_f1_hand_values():
    concept_of = np.array([0, 0, 1, 1, 2, -1])  # tokens 0,1 synonyms; 2,3 synonyms; 5 filler
    refs = jnp.array([[0, 2, 5]])  # concepts {0, 1}
    cases = {(1, 3, 5): 1.0,  # synonyms of both, a filler
             (0, 0, 5): 2 / 3,  # P = 1, R = 1/2
             (0, 2, 4): 0.8,  # P = 2/3, R = 1
             (4, 5, 5): 0.0, (5, 5, 5): 0.0}
    # one program: the hand cases, and the best of several references with a masked token
    got, two = jax.jit(lambda h, r, h2, r2, m2, c: (concept_f1(h, r, c, 3),
                                                   concept_f1(h2, r2, c, 3, m2)))(
        jnp.array(list(cases)), refs[None], jnp.array([4, 4, 0]),
        jnp.array([[0, 2, 5], [4, 5, 5]]), jnp.array([1, 1, 0], bool), concept_of)
    np.testing.assert_allclose(got, list(cases.values()), rtol=1e-6)
    # the best of several references; a masked token does not count
    assert float(two) == pytest.approx(1.0)


def test_bag_encoder_learns_synonyms_contrastively(tmp_path):
    """InfoNCE on paraphrases (synonyms swapped) through fit_small: synonyms end up closer to
    each other than to other concepts, and the similarity reward credits a paraphrase."""
    concepts, synonyms, length = 4, 2, 3
    rng = np.random.default_rng(0)
    meaning = rng.integers(0, concepts, (512, length))
    anchor = meaning * synonyms + rng.integers(0, synonyms, meaning.shape)
    positive = meaning * synonyms + rng.integers(0, synonyms, meaning.shape)
    data = {"anchor": jnp.asarray(anchor), "positive": jnp.asarray(positive)}

    def batch_fn(d, key):
        i = jax.random.randint(key, (64,), 0, d["anchor"].shape[0])
        return {k: v[i] for k, v in d.items()}

    fit = fit_small(str(tmp_path), loss_fn=bag_encoder_loss(temperature=0.1), has_aux=True,
                    init_params=lambda k: init_bag_encoder(k, concepts * synonyms, 8),
                    tx=optax.adam(0.05), num_steps=150, data=data, batch_fn=batch_fn,
                    steps_per_log=50, plots=False)
    params = fit.seed_params(0)
    e = np.asarray(jax.jit(bag_embeddings)(params, np.arange(concepts * synonyms)[:, None]))
    e = e / np.linalg.norm(e, axis=-1, keepdims=True)
    cos = e @ e.T
    same = cos[np.arange(0, 8, 2), np.arange(1, 8, 2)]
    other = cos[np.arange(0, 8, 2)][:, np.arange(0, 8, 2)][~np.eye(4, dtype=bool)]
    assert same.min() > other.max() + 0.3, (same, other)
    assert float(fit.final_loss[0]) < np.log(64) - 1.0  # well below chance (in-batch 1/64)
    # a paraphrase scores higher than a sentence of other concepts
    ref = jnp.array([[0, 2, 4]])
    sim = jax.jit(embedding_similarity)(params, jnp.array([[1, 3, 5], [6, 7, 6]]), ref[None])
    assert float(sim[0]) > 0.9 > float(sim[1])


def test_embedding_similarity_is_exact_under_jit_for_broadcast_tables():
    """Every sequence [1, N, T] against every prompt's reference [P, 1, K, R]: the shapes at
    which XLA:CPU miscompiled the broadcast cosine sum(a b) / (|a| |b|) (jax 0.10.2)."""
    rng = np.random.default_rng(3)
    params = {"embedding": jnp.asarray(rng.standard_normal((12, 16)), jnp.float32)}
    hyp = rng.integers(0, 12, (1, 1728, 3))
    refs = rng.integers(0, 12, (128, 1, 1, 3))
    got = np.asarray(jax.jit(embedding_similarity)(params, hyp, refs))
    e = np.asarray(params["embedding"])
    h, r = e[hyp].mean(-2), e[refs].mean(-2)[:, :, 0]  # [1, N, 16], [P, 1, 16]
    want = (h * r).sum(-1) / np.linalg.norm(h, axis=-1) / np.linalg.norm(r, axis=-1)
    np.testing.assert_allclose(got, want, atol=1e-5)
