"""The small GPM with a prompt-dependent eigenvalue gate (alignax.models.general_preference)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses.reward import bradley_terry_loss, gpm_loss, gpm_score
from alignax.models.general_preference import GPMConfig, eigen_gate, \
    make_general_preference_model, unit_embedding


def _inputs(seed=0, batch=5, pdim=3, rdim=4):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch, pdim)), jnp.float32)
    y1 = jnp.asarray(rng.standard_normal((batch, rdim)), jnp.float32)
    y2 = jnp.asarray(rng.standard_normal((batch, rdim)), jnp.float32)
    return x, y1, y2


@pytest.mark.parametrize("gate", ["prompt", "constant"])
def test_shapes_unit_embeddings_and_non_negative_eigenvalues(gate):
    gpm = make_general_preference_model(GPMConfig(prompt_dim=3, response_dim=4, k=3,
                                                  hidden=(8,), gate_hidden=(8,), gate=gate))
    params = gpm.init(jax.random.key(0))
    x, y1, _ = _inputs()
    v, lam = gpm.embed(params, x, y1)
    assert v.shape == (5, 6) and lam.shape == (5, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1.0, rtol=1e-5)
    assert np.all(np.asarray(lam) >= 0)
    np.testing.assert_allclose(np.asarray(lam).sum(-1), 3.0, rtol=1e-5)
    # one prompt broadcast over a group of responses
    v_group, lam_group = gpm.embed(params, x[0], y1)
    assert v_group.shape == (5, 6) and lam_group.shape == (5, 3)


def test_score_is_skew_symmetric_and_zero_on_the_diagonal():
    gpm = make_general_preference_model(GPMConfig(prompt_dim=3, response_dim=4, k=2,
                                                  hidden=(8,), gate_hidden=(8,)))
    params = gpm.init(jax.random.key(1))
    x, y1, y2 = _inputs(1)
    s12, s21 = gpm.score(params, x, y1, y2), gpm.score(params, x, y2, y1)
    np.testing.assert_allclose(s12, -s21, atol=1e-6)
    np.testing.assert_allclose(gpm.score(params, x, y1, y1), 0.0, atol=1e-6)
    assert np.all(np.abs(np.asarray(s12)) <= 2.0 + 1e-5)  # |s| <= max lambda <= k


def test_the_gate_makes_the_score_depend_on_the_prompt_through_the_eigenvalues():
    gpm = make_general_preference_model(GPMConfig(prompt_dim=3, response_dim=4, k=2,
                                                  hidden=(8,), gate_hidden=(8,)))
    params = gpm.init(jax.random.key(2))
    x, y1, y2 = _inputs(2)
    v1, lam = gpm.embed(params, x, y1)
    v2, _ = gpm.embed(params, x, y2)
    np.testing.assert_allclose(gpm.score(params, x, y1, y2), gpm_score(v1, v2, lam), atol=1e-6)
    lam_direct = eigen_gate(jnp.stack([jnp.zeros(2), jnp.array([3.0, -3.0])]))
    np.testing.assert_allclose(lam_direct, [[1.0, 1.0], [2 * 0.99752738, 2 * 0.00247262]],
                               rtol=1e-5)
    # prompts that differ give different eigenvalues (the gate is not constant)
    assert float(jnp.abs(lam[0] - lam[1]).max()) > 1e-4


def test_constant_gate_ignores_the_prompt():
    gpm = make_general_preference_model(GPMConfig(prompt_dim=3, response_dim=4, k=2,
                                                  hidden=(8,), gate="constant"))
    params = gpm.init(jax.random.key(3))
    params["gate"] = jnp.array([0.5, -0.2])
    x, y1, _ = _inputs(3)
    _, lam = gpm.embed(params, x, y1)
    np.testing.assert_allclose(lam, np.broadcast_to(eigen_gate(params["gate"]), (5, 2)),
                               rtol=1e-6)


def test_gradients_of_the_pairwise_loss_match_finite_differences():
    gpm = make_general_preference_model(GPMConfig(prompt_dim=3, response_dim=4, k=2,
                                                  hidden=(6,), gate_hidden=(5,)))
    params = gpm.init(jax.random.key(4))
    x, y1, y2 = _inputs(4)

    def loss(p):
        return -jax.nn.log_sigmoid(gpm.score(p, x, y1, y2)).mean()

    grads = jax.grad(loss)(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # the gate is trained by the pairwise loss
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["gate"])) > 0
    check_grads(loss, (params,), order=1, modes=("rev",), atol=5e-2, rtol=5e-2)


def test_k1_with_the_unnormalised_embedding_1_r_is_bradley_terry():
    """s((1, r_1), (1, r_2)) = r_1 - r_2: BT is the k = 1 GPM with v = (1, r), lambda = 1."""
    r1, r2 = jnp.array([0.3, -1.2, 2.0]), jnp.array([1.1, 0.4, -0.5])
    v1 = jnp.stack([jnp.ones(3), r1], -1)
    v2 = jnp.stack([jnp.ones(3), r2], -1)
    np.testing.assert_allclose(gpm_score(v1, v2), r1 - r2, rtol=1e-6)
    np.testing.assert_allclose(gpm_loss(v1, v2), bradley_terry_loss(r1, r2), rtol=1e-6)


def test_unit_embedding_and_config_checks():
    np.testing.assert_allclose(unit_embedding(jnp.array([[3.0, 4.0]])), [[0.6, 0.8]])
    with pytest.raises(ValueError, match="k must be"):
        GPMConfig(prompt_dim=1, response_dim=1, k=0)
    with pytest.raises(ValueError, match="gate must be"):
        GPMConfig(prompt_dim=1, response_dim=1, gate="mlp")
