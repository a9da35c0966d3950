"""The simulated multi-hop retrieval environment: knowledge base, questions, turn counting,
in-order retrieval of the needed facts and the frozen generator's answer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models import sequence_table as st
from alignax.tasks import search
from alignax.tasks.splits import check_disjoint

TASK = search.SearchTask(num_entities=20, num_keys=3, max_hops=3, max_turns=4)
S = TASK.stop  # 3


def test_task_sizes_and_validation():
    assert TASK.vocab_size == 4 and TASK.num_features == 1 + 3 * 4
    assert TASK.space().num_sequences == 4 ** 4
    with pytest.raises(ValueError, match="max_turns"):
        search.SearchTask(num_entities=5, num_keys=2, max_hops=3, max_turns=2)


def test_turns_count_calls_before_the_first_stop():
    actions = np.array([[S, 0, 1, 2], [0, S, 1, 1], [0, 1, 2, 0], [2, 2, 2, S]])
    np.testing.assert_array_equal(search.turns(actions, S), [0, 1, 4, 3])


def test_retrieved_hops_in_order_and_ignoring_after_stop():
    chain = np.array([1, 2, -1])  # a 2-hop question: key 1, then key 2
    actions = np.array([[1, 2, S, S],   # exact plan
                        [2, 1, S, S],   # wrong order: only hop 1 (key 1 at turn 2)
                        [0, 1, 0, 2],   # detours, still in order
                        [1, S, 2, S],   # stops before hop 2
                        [2, 2, 2, 2]])  # never asks hop 1
    got = search.retrieved_hops(actions, chain, 2, S)
    np.testing.assert_array_equal(got, [2, 1, 2, 1, 0])
    np.testing.assert_array_equal(search.answer_correct(actions, chain, 2, S), [1, 0, 1, 0, 0])
    # repeated keys: a 3-hop chain (0, 0, 0) needs three separate calls
    np.testing.assert_array_equal(
        search.retrieved_hops(np.array([[0, 0, S, S], [0, 0, 0, S]]), np.array([0, 0, 0]), 3, S),
        [2, 3])


def test_broadcasting_over_questions_and_all_sequences():
    rng = np.random.default_rng(0)
    kb = search.knowledge_base(TASK, rng)
    q = search.draw_questions(TASK, kb, 7, rng)
    seqs = TASK.space().sequences  # [N, L]
    got = search.retrieved_hops(seqs[None], q["chain"][:, None], q["hops"][:, None], S)
    assert got.shape == (7, seqs.shape[0])
    for i in range(3):  # the same as one question at a time
        np.testing.assert_array_equal(got[i], search.retrieved_hops(seqs, q["chain"][i],
                                                                    q["hops"][i], S))
    # the fraction of sequences that answer a k-hop question falls with k
    acc = np.asarray(search.answer_correct(seqs[None], q["chain"][:, None],
                                           q["hops"][:, None], S)).mean(1)
    by_hops = {k: acc[q["hops"] == k].mean() for k in np.unique(q["hops"])}
    assert all(by_hops[a] > by_hops[b] for a, b in zip(sorted(by_hops), sorted(by_hops)[1:]))


def test_questions_knowledge_base_and_generator():
    rng = np.random.default_rng(1)
    kb = search.knowledge_base(TASK, rng)
    assert kb.shape == (20, 3) and kb.min() >= 0 and kb.max() < 20
    q = search.draw_questions(TASK, kb, 50, rng)
    assert set(np.unique(q["hops"])) <= {1, 2, 3}
    for e, c, k, a in zip(q["entity"], q["chain"], q["hops"], q["answer"]):
        assert np.all(c[:k] >= 0) and np.all(c[k:] == -1)
        x = e
        for r in c[:k]:
            x = kb[x, r]
        assert a == x  # the gold answer follows the chain through the table
    oracle = search.oracle_plan(TASK, q["chain"])
    naive = search.naive_plan(TASK, q["chain"])
    ans = search.generator_answer(kb, q["entity"], q["chain"], q["hops"], oracle, S)
    np.testing.assert_array_equal(ans, q["answer"])
    np.testing.assert_array_equal(search.turns(oracle, S), q["hops"])
    naive_ans = np.asarray(search.generator_answer(kb, q["entity"], q["chain"], q["hops"],
                                                   naive, S))
    np.testing.assert_array_equal(naive_ans == q["answer"], q["hops"] == 1)
    assert np.all(naive_ans[q["hops"] > 1] == -1)  # the generator abstains without the chain
    # distinct, and a second draw can exclude the first (disjoint splits)
    ids = search.question_ids(q)
    assert len(set(ids)) == 50
    q2 = search.draw_questions(TASK, kb, 50, rng, exclude=ids)
    check_disjoint(train=ids, test=search.question_ids(q2))
    with pytest.raises(ValueError, match="distinct"):
        search.draw_questions(search.SearchTask(2, 1, 1, 1), kb[:2, :1], 5, rng)


def test_features_and_a_log_linear_policy_that_follows_them():
    chain = np.array([[2, -1, -1], [0, 1, 2]])
    phi = search.question_features(TASK, chain)
    assert phi.shape == (2, TASK.num_features)
    np.testing.assert_array_equal(phi[0], [1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(phi[1], [1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0])
    # a hand-set log-linear table: at depth t pick the key of hop t (stop on "no hop t")
    space = TASK.space()
    params = st.init_table(space, TASK.num_features)
    depth = np.zeros(space.num_nodes, int)
    for n in range(1, space.num_nodes):
        depth[n] = depth[(n - 1) // TASK.vocab_size] + 1
    w = np.zeros((space.num_nodes, TASK.num_features, TASK.vocab_size), np.float32)
    for n in range(space.num_nodes):
        t = min(depth[n], TASK.max_hops - 1)
        for v in range(TASK.vocab_size):
            w[n, 1 + t * TASK.vocab_size + v, v] = 30.0 if depth[n] < TASK.max_hops else 0.0
        if depth[n] >= TASK.max_hops:
            w[n, 0, S] = 30.0
    params = {"bias": params["bias"], "weight": jnp.asarray(w)}
    y = st.sample(space, params, jax.random.key(0), 3, phi)  # [2, 3]
    actions = space.sequences[np.asarray(y)]
    np.testing.assert_array_equal(search.turns(actions, S), [[1] * 3, [3] * 3])
    np.testing.assert_array_equal(
        search.answer_correct(actions, chain[:, None], np.array([1, 3])[:, None], S), 1.0)


def test_demonstrations_find_the_chain_and_stop_at_random_points():
    rng = np.random.default_rng(3)
    kb = search.knowledge_base(TASK, rng)
    q = search.draw_questions(TASK, kb, 300, rng)
    demos = search.demonstration_plans(TASK, q["chain"], q["hops"], rng)
    np.testing.assert_array_equal(search.answer_correct(demos, q["chain"], q["hops"], S), 1.0)
    extra = np.asarray(search.turns(demos, S)) - q["hops"]
    assert extra.min() == 0 and np.all(extra <= TASK.max_turns - q["hops"])
    for k in (1, 2, 3):  # every number of extra calls up to T_max - k occurs
        assert set(extra[q["hops"] == k]) == set(range(TASK.max_turns - k + 1))
