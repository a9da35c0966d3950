"""RankMe and alpha-ReQ against closed-form cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.eval import geometry


def _orthonormal_centred(rng, n, d):
    """[n, d] with orthonormal, zero-mean columns."""
    a = rng.standard_normal((n, d))
    a -= a.mean(0, keepdims=True)
    q, _ = np.linalg.qr(a)
    return q


def test_rankme_of_an_isotropic_gaussian_is_close_to_the_dimension():
    h = np.random.default_rng(0).standard_normal((8000, 32))
    r = float(geometry.rankme(h))
    assert 31.0 < r <= 32.0


def test_rankme_of_a_rank_one_matrix_is_one():
    rng = np.random.default_rng(1)
    h = np.outer(rng.standard_normal(500), rng.standard_normal(32))
    assert abs(float(geometry.rankme(h)) - 1.0) < 1e-3


def test_rankme_is_exp_entropy_of_known_singular_values():
    rng = np.random.default_rng(2)
    s = np.array([4.0, 2.0, 1.0, 1.0, 0.5])
    u = _orthonormal_centred(rng, 50, 5)
    h = u * s  # singular values exactly s
    p = s / s.sum()
    expected = np.exp(-np.sum(p * np.log(p)))
    assert float(geometry.rankme(h)) == pytest.approx(expected, rel=1e-4)
    # k equal singular values: RankMe = k
    assert float(geometry.rankme(u[:, :3] * 2.0)) == pytest.approx(3.0, rel=1e-4)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_a_planted_power_law(alpha):
    rng = np.random.default_rng(3)
    n, d = 400, 32
    lam = 3.0 * np.arange(1, d + 1) ** -alpha
    h = _orthonormal_centred(rng, n, d) * np.sqrt((n - 1) * lam)  # covariance eigenvalues lam
    np.testing.assert_allclose(geometry.covariance_eigenvalues(h), lam, rtol=2e-3)
    assert float(geometry.alpha_req(h)) == pytest.approx(alpha, abs=5e-3)
    a, c = geometry.power_law_fit(lam)
    assert float(a) == pytest.approx(alpha, abs=1e-4)
    assert float(c) == pytest.approx(np.log(3.0), abs=1e-4)


def test_alpha_req_ignores_numerically_zero_eigenvalues_and_a_flat_spectrum_is_zero():
    rng = np.random.default_rng(4)
    n, d, k = 300, 16, 6
    lam = np.arange(1, k + 1) ** -1.5
    h = np.zeros((n, d))
    h[:, :k] = _orthonormal_centred(rng, n, k) * np.sqrt((n - 1) * lam)  # rank k
    assert float(geometry.alpha_req(h)) == pytest.approx(1.5, abs=1e-2)
    flat = _orthonormal_centred(rng, n, d) * 2.0
    assert abs(float(geometry.alpha_req(flat))) < 1e-3
    assert np.isnan(float(geometry.power_law_fit(jnp.array([1.0, 0.0, 0.0]))[0]))


def test_metrics_jit_and_vmap_over_a_stack():
    rng = np.random.default_rng(5)
    iso = rng.standard_normal((2000, 8))
    rank1 = np.outer(rng.standard_normal(2000), rng.standard_normal(8))
    out = jax.jit(jax.vmap(geometry.geometry_metrics))(jnp.asarray(np.stack([iso, rank1]),
                                                                    jnp.float32))
    assert out["rankme"].shape == (2,)
    assert float(out["rankme"][0]) > 7.5 and float(out["rankme"][1]) < 1.01
    # [..., D] inputs are flattened to rows; the one-SVD metrics equal the separate functions
    three = geometry.geometry_metrics(iso.reshape(40, 50, 8))
    assert float(three["rankme"]) == pytest.approx(float(geometry.rankme(iso)), rel=1e-5)
    assert float(three["alpha_req"]) == pytest.approx(float(geometry.alpha_req(iso)), abs=1e-4)
    lam = 2.0 * np.arange(1, 9) ** -1.3
    planted = _orthonormal_centred(rng, 300, 8) * np.sqrt(299 * lam) + 5.0  # mean off zero
    m = geometry.geometry_metrics(planted)
    assert float(m["alpha_req"]) == pytest.approx(1.3, abs=5e-3)
    assert float(m["rankme"]) == pytest.approx(float(geometry.rankme(planted)), rel=1e-5)
    # fewer rows than columns: the missing eigenvalues are zeros, left out of the fit
    few = geometry.geometry_metrics(planted[:5])
    assert np.isfinite(float(few["alpha_req"]))
