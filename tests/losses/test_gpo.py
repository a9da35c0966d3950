"""GPO (alignax.losses.gpo): the preference of a response over the policy's group and the
SPPO-style square loss."""

import jax
import jax.numpy as jnp
import numpy as np

from alignax.losses.gpo import gpo_loss, preference_against_group
from alignax.losses.reward import gpm_score


def _group(seed=0, g=4, k=2, batch=()):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((*batch, g, 2 * k))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    lam = np.abs(rng.standard_normal((*batch, k)))
    return jnp.asarray(v, jnp.float32), jnp.asarray(lam, jnp.float32)


def test_preference_against_group_is_the_mean_score_against_the_others():
    v, lam = _group()
    got = preference_against_group(v, lam)
    want = [np.mean([float(gpm_score(v[i], v[j], lam)) for j in range(4) if j != i])
            for i in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # skew-symmetry: the group's scores against each other sum to zero
    np.testing.assert_allclose(float(got.sum()), 0.0, atol=1e-5)


def test_preference_against_group_batched_and_masked():
    v, lam = _group(1, g=5, batch=(3,))
    got = preference_against_group(v, lam)
    assert got.shape == (3, 5)
    for b in range(3):
        np.testing.assert_allclose(got[b], preference_against_group(v[b], lam[b]), rtol=1e-5)
    mask = jnp.array([1, 1, 1, 0, 0], jnp.float32)
    masked = preference_against_group(v[0], lam[0], mask=mask)
    np.testing.assert_allclose(masked[:3], preference_against_group(v[0, :3], lam[0]),
                               rtol=1e-5, atol=1e-6)
    # a group of one has no opponent: 0
    np.testing.assert_allclose(preference_against_group(v[0, :1], lam[0]), [0.0])


def test_gpo_loss_value_and_gradient_flow_only_through_the_policy():
    logp = jnp.array([-1.0, -2.0, -0.5])
    old = jnp.array([-1.2, -1.8, -0.7])
    s = jnp.array([0.4, -0.3, 0.1])
    loss = gpo_loss(logp, old, s, eta=2.0)
    np.testing.assert_allclose(loss, (logp - old - 2.0 * s) ** 2, rtol=1e-6)
    g_policy, g_old, g_s = jax.grad(lambda a, b, c: gpo_loss(a, b, c, eta=2.0).sum(),
                                    argnums=(0, 1, 2))(logp, old, s)
    np.testing.assert_allclose(g_policy, 2 * (logp - old - 2.0 * s), rtol=1e-6)
    np.testing.assert_allclose(g_old, 0.0)
    np.testing.assert_allclose(g_s, 0.0)


def test_gpo_with_win_probabilities_and_baseline_half_is_sppo():
    """SPPO: (log ratio - eta (P(y > pi_t) - 1/2))^2; with hard P = 1 / 0 and eta = 1 / beta it
    is the per-response term of alignax.losses.direct.sppo_hard_loss."""
    from alignax.losses.direct import sppo_hard_loss

    pc, pr, rc, rr = (jnp.array([x]) for x in (-1.0, -2.0, -1.5, -1.7))
    beta = 0.5
    want, _ = sppo_hard_loss(pc, pr, rc, rr, beta=beta)
    got = (gpo_loss(pc, rc, jnp.ones(1), eta=1 / beta, baseline=0.5)
           + gpo_loss(pr, rr, jnp.zeros(1), eta=1 / beta, baseline=0.5))
    np.testing.assert_allclose(got, want, rtol=1e-6)
