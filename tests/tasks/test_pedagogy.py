import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models import sequence_table as st
from alignax.tasks.pedagogy import (ANSWER, HINT, BKTLearner, PedagogyWorld, pedagogical_accuracy,
                                    pedagogical_pairs, perplexity)

SPACE = st.SequenceSpace(4, 3)


def test_replies_have_their_modes_and_state_dependent_content():
    world = PedagogyWorld(SPACE, dim=5, seed=3)
    z = world.states(40, seed=1)
    scaffold, direct = world.replies(z)
    assert (SPACE.sequences[scaffold, 0] == HINT).all()
    assert (SPACE.sequences[direct, 0] == ANSWER).all()
    assert len(set(scaffold.tolist())) > 3  # content depends on the state
    pairs = pedagogical_pairs(world, z)
    np.testing.assert_array_equal(pairs["chosen"], scaffold)
    np.testing.assert_array_equal(pairs["rejected"], direct)
    kinds = world.reply_kinds(z)
    assert kinds.shape == (40, SPACE.num_sequences)
    assert (kinds == 2).sum(1).tolist() == [1] * 40
    np.testing.assert_array_equal(kinds[np.arange(40), scaffold], 2)
    np.testing.assert_array_equal(kinds[np.arange(40), direct], 0)
    assert (kinds[:, SPACE.sequences[:, 0] == 3] == -1).all()
    with pytest.raises(ValueError):
        PedagogyWorld(st.SequenceSpace(2, 3))


def test_base_tutor_prefers_the_direct_answer_and_ignores_extra_features():
    world = PedagogyWorld(SPACE, dim=5, answer_bias=3.0, seed=0)
    z = world.states(200, seed=2)
    ref = world.reference_params(extra_features=2)
    feats = np.concatenate([z, np.ones((200, 2), np.float32)], 1)
    lp = np.asarray(st.sequence_log_probs(SPACE, ref, jnp.asarray(feats)))
    scaffold, direct = world.replies(z)
    rows = np.arange(200)
    # it answers more than it hints, and ranks the direct answer above the scaffold mostly
    assert pedagogical_accuracy(lp[rows, scaffold], lp[rows, direct]) < 0.2
    mode_mass = np.exp(lp).reshape(200, 4, -1).sum(-1).mean(0)
    assert mode_mass[ANSWER] > mode_mass[HINT]
    # it knows the answer content: the direct answer is the likeliest answer-mode reply
    answer_rows = SPACE.sequences[:, 0] == ANSWER
    best = np.flatnonzero(answer_rows)[lp[:, answer_rows].argmax(1)]
    assert np.mean(best == direct) > 0.5
    feats0 = np.concatenate([z, np.zeros((200, 2), np.float32)], 1)
    np.testing.assert_allclose(st.sequence_log_probs(SPACE, ref, jnp.asarray(feats0)), lp,
                               atol=1e-5)


def test_pedagogical_accuracy_is_the_perplexity_comparison():
    assert pedagogical_accuracy([-1.0, -5.0, -2.0], [-2.0, -1.0, -2.0]) == pytest.approx(1 / 3)
    np.testing.assert_allclose(perplexity(-6.0, 3), np.exp(2.0))
    # lengths matter: -4 over 4 tokens (PPL e) beats -3 over 2 tokens (PPL e^1.5)
    assert pedagogical_accuracy([-4.0], [-3.0], scaffold_lengths=4, direct_lengths=2) == 1.0
    assert pedagogical_accuracy([-4.0], [-3.0]) == 0.0


def test_learner_succeeds_more_after_a_hint_than_after_a_copied_answer():
    learner = BKTLearner()
    s_off, s_copy, s_wrong, s_hint = learner.follow_up_success([-1, 0, 1, 2])
    assert s_hint > s_wrong > s_copy > s_off
    # no learning: the follow-up rate is the prior's
    np.testing.assert_allclose(s_off, 0.2 * 0.9 + 0.8 * 0.2)
    np.testing.assert_allclose(s_hint, 0.68 * 0.9 + 0.32 * 0.2)
    probs = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    kinds = np.array([[2, 0, 1], [2, 0, 1]])
    np.testing.assert_allclose(learner.expected_success(probs, kinds),
                               [(s_hint + s_copy) / 2, s_wrong])
