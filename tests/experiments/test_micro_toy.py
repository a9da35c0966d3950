"""The MiCRo toy (experiments/micro.py): data, Bayes references and online Hedge routing."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.experiment import load_module
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.train.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
micro = load_module(os.path.join(REPO, "experiments", "micro.py"))


def test_get_config_rejects_unknown_argument():
    with pytest.raises(ValueError, match="unknown argument"):
        micro.get_config("tiny")


def test_group_rewards_are_unit_and_conflicting():
    data = micro.get_config().data
    w = micro.group_rewards(data, seed=2)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=1e-12)
    cos = w @ w.T
    np.testing.assert_allclose(cos[~np.eye(3, dtype=bool)], -0.5, atol=1e-12)
    np.testing.assert_allclose(w.sum(0), 0.0, atol=1e-12)


def test_comparisons_shapes_and_bayes_verdicts():
    data = micro.get_config().data
    w = micro.group_rewards(data, 0)
    groups = np.repeat(np.arange(3)[:, None], 3000, 1)
    out = micro.comparisons(w, groups, data, np.random.default_rng(0))
    assert out["chosen"].shape == (3, 3000, data.dim)
    assert out["prompt"].shape == (3, 3000, data.prompt_dim)
    # group known: the chosen item has the higher group reward exactly when bayes_group is 1
    r = np.einsum("usd,ud->us", out["chosen"] - out["rejected"], w[np.arange(3)])
    np.testing.assert_array_equal(r > 0, out["bayes_group"] == 1)
    # knowing the group beats knowing only the prompt, which beats chance
    assert out["bayes_group"].mean() > out["bayes_prompt"].mean() > 0.75


def test_mixture_correct_golden():
    d = jnp.array([[2.0, -1.0], [-3.0, 0.5], [0.0, 0.0]])
    logw = jnp.log(jnp.array([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5]]))
    # p = 0.5 s(2) + 0.5 s(-1) = 0.574 > 1/2; 0.9 s(-3) + 0.1 s(0.5) = 0.105; tie -> 0.5
    np.testing.assert_allclose(jax.jit(micro.mixture_correct)(d, logw), [1.0, 0.0, 0.5])


def test_routing_equals_the_bayes_posterior_over_heads():
    """With eta = 1 the Hedge state after n labels is log softmax(sum_i log sigma(d_ik))."""
    k, dim, pdim = 3, 4, 3
    heads = make_mlp(MLPConfig(in_dim=dim, hidden=(), out_dim=k))
    gate = make_mlp(MLPConfig(in_dim=pdim, hidden=(4,), out_dim=k))
    params = {"heads": heads.init(jax.random.key(0)), "gate": gate.init(jax.random.key(1))}
    rng = np.random.default_rng(0)
    stream = {n: jnp.asarray(rng.normal(size=(2, 6, dim)), jnp.float32)
              for n in ("chosen", "rejected")}
    test = {n: jnp.asarray(rng.normal(size=(2, 40, dim)), jnp.float32)
            for n in ("chosen", "rejected")}
    test["prompt"] = jnp.asarray(rng.normal(size=(2, 40, pdim)), jnp.float32)
    labels = (0, 3, 6)
    got = micro.route_and_eval(params, stream, test, heads=heads, gate=gate, eval_labels=labels,
                               rate=1.0)
    assert got.shape == (3, 2)

    def apply(m, p, x):
        return np.asarray(m.apply(p, jnp.asarray(x)), np.float64)

    d_stream = apply(heads, params["heads"], stream["chosen"]) - apply(
        heads, params["heads"], stream["rejected"])
    d_test = apply(heads, params["heads"], test["chosen"]) - apply(
        heads, params["heads"], test["rejected"])
    g = apply(gate, params["gate"], test["prompt"])
    for row, n in enumerate(labels):
        loglik = -np.logaddexp(0.0, -d_stream[:, :n]).sum(1)  # [U, K]
        logw = g + loglik[:, None]
        w = np.exp(logw - logw.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        p = (w / (1 + np.exp(-d_test))).sum(-1)
        np.testing.assert_allclose(got[row], (p > 0.5).mean(-1), atol=1e-6)


def test_run_rejects_eval_labels_beyond_the_stream(tmp_path):
    config = micro.get_config("smoke")
    config.micro.eval_labels = [0, 60]
    with pytest.raises(ValueError, match="exceed route_labels"):
        micro.run_seeds(config, str(tmp_path))


def test_routing_helps_on_a_small_run(tmp_path):
    config = micro.get_config("smoke")
    config.seeds = [0, 1]
    out = micro.run_seeds(config, str(tmp_path / "micro"))
    for seed in (0, 1):
        assert out[seed]["test_routed_accuracy_50"] > out[seed]["test_routed_accuracy_0"] + 0.03
    config.method = "bt"
    bt = micro.run_seeds(config, str(tmp_path / "bt"))
    assert bt[0]["test_accuracy"] < 0.6 and bt[1]["test_accuracy"] < 0.6
    # both seeds trained in one run folder per stage, with metrics per seed
    rows = read_metrics(str(tmp_path / "micro" / "mixture" / "lr=0.01" / "metrics.jsonl"))
    assert "seed_0/loss" in rows[-1] and "seed_1/loss" in rows[-1]
