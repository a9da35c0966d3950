"""alignax.ops.rotations: quaternion algebra, Euler round trips, and the Bingham distribution on
S^3 (normaliser, density and sampler) against quadrature on a grid over S^3."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.ops import rotations as rot


def _random_quats(n, seed=0):
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return jnp.asarray(q / np.linalg.norm(q, axis=1, keepdims=True), jnp.float32)


def _sphere_grid(n=48):
    """Points x [N, 4] of S^3 and quadrature weights [N] (Hopf coordinates x = (sin e cos a,
    sin e sin a, cos e cos b, cos e sin b), dS = sin e cos e de da db, midpoint rule)."""
    eta = (np.arange(n) + 0.5) / n * np.pi / 2
    ang = (np.arange(2 * n) + 0.5) / (2 * n) * 2 * np.pi
    e, a, b = (g.ravel() for g in np.meshgrid(eta, ang, ang, indexing="ij"))
    x = np.stack([np.sin(e) * np.cos(a), np.sin(e) * np.sin(a), np.cos(e) * np.cos(b),
                  np.cos(e) * np.sin(b)], -1)
    w = np.sin(e) * np.cos(e) * (np.pi / 2 / n) * (np.pi / n) ** 2
    return x, w


def _quadrature(z, m=None):
    """F(z) and E[(M^T x)_i^2] [4] by quadrature."""
    x, w = _sphere_grid()
    m = np.eye(4) if m is None else np.asarray(m, np.float64)
    proj = x @ m
    f = np.exp((proj**2 * np.asarray(z, np.float64)).sum(-1)) * w
    return f.sum(), (proj**2 * f[:, None]).sum(0) / f.sum()


# ----------------------------------------------------------------------------- quaternions


def test_quaternion_algebra_identities():
    p, q, r = _random_quats(5, 0), _random_quats(5, 1), _random_quats(5, 2)
    mul = rot.quat_multiply

    @jax.jit  # one program for every value the assertions read
    def values(p, q, r):
        i, j = jnp.array([0.0, 1, 0, 0]), jnp.array([0.0, 0, 1, 0])
        lp = rot.quat_left_matrix(p)
        return dict(pq_r=mul(mul(p, q), r), p_qr=mul(p, mul(q, r)),
                    p_conj=mul(p, rot.quat_conjugate(p)), norm=jnp.linalg.norm(mul(p, q), axis=-1),
                    ij=mul(i, j), ji=mul(j, i), m_pq=rot.quat_to_matrix(mul(p, q)),
                    mp_mq=rot.quat_to_matrix(p) @ rot.quat_to_matrix(q),
                    lp_q=jnp.einsum("nij,nj->ni", lp, q), pq=mul(p, q),
                    lpt_lp=jnp.einsum("nji,njk->nik", lp, lp),
                    det=jnp.linalg.det(rot.quat_to_matrix(p)))

    v = values(p, q, r)
    np.testing.assert_allclose(v["pq_r"], v["p_qr"], atol=1e-6)
    ident = jnp.broadcast_to(jnp.array([1.0, 0, 0, 0]), p.shape)
    np.testing.assert_allclose(v["p_conj"], ident, atol=1e-6)
    np.testing.assert_allclose(v["norm"], 1.0, atol=1e-6)
    # i j = k, j i = -k (Hamilton)
    np.testing.assert_allclose(v["ij"], [0, 0, 0, 1])
    np.testing.assert_allclose(v["ji"], [0, 0, 0, -1])
    # the matrix of a product is the product of the matrices; L(p) q = p q, L orthogonal
    np.testing.assert_allclose(v["m_pq"], v["mp_mq"], atol=1e-5)
    np.testing.assert_allclose(v["lp_q"], v["pq"], atol=1e-6)
    np.testing.assert_allclose(v["lpt_lp"], np.broadcast_to(np.eye(4), (5, 4, 4)), atol=1e-6)
    # rotation matrices are proper
    np.testing.assert_allclose(v["det"], 1.0, atol=1e-5)


def test_matrix_quaternion_round_trip_including_half_turns():
    q = np.asarray(_random_quats(64, 3))
    # half turns (w = 0) and a quarter turn about each axis
    q = np.concatenate([q, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0.6, 0.8, 0],
                            [math.cos(math.pi / 4), 0, math.sin(math.pi / 4), 0]]])
    back = np.asarray(jax.jit(lambda q: rot.matrix_to_quat(rot.quat_to_matrix(q)))(
        jnp.asarray(q, jnp.float32)))
    assert np.all(back[:, 0] >= 0)
    sign = np.sign(np.sum(back * q, axis=1, keepdims=True))
    np.testing.assert_allclose(back, sign * q, atol=2e-6)


def test_rotvec_and_geodesic_angle():
    axis = np.array([1.0, 2.0, -2.0]) / 3.0

    @jax.jit  # one program for the four angles
    def values(v):
        q = rot.quat_from_rotvec(v)
        ident = jnp.array([1.0, 0, 0, 0])
        return (jnp.linalg.norm(q), rot.quat_angle(ident, q), rot.quat_angle(ident, -q),
                rot.rotation_angle(jnp.eye(3), rot.quat_to_matrix(q)), rot.quat_to_matrix(q))

    for angle in (1e-8, 0.3, 2.0, math.pi - 1e-3):
        norm, angle_q, angle_neg, angle_m, m = values(jnp.asarray(angle * axis, jnp.float32))
        np.testing.assert_allclose(norm, 1.0, atol=1e-6)
        np.testing.assert_allclose(angle_q, angle, atol=1e-5)
        np.testing.assert_allclose(angle_neg, angle, atol=1e-5)  # sign-free
        np.testing.assert_allclose(angle_m, angle, atol=2e-4)
        # the rotation axis is fixed by R
        np.testing.assert_allclose(np.asarray(m) @ axis, axis, atol=1e-5)


def test_euler_round_trips_away_from_gimbal_lock():
    rng = np.random.default_rng(4)
    e = np.stack([rng.uniform(-3.1, 3.1, 200), rng.uniform(-1.45, 1.45, 200),
                  rng.uniform(-3.1, 3.1, 200)], -1).astype(np.float32)

    @jax.jit  # one program for every value the assertions read
    def values(e):
        m = rot.euler_to_matrix(e)
        # hand values: yaw 90 degrees, pitch 90 degrees, and gimbal lock
        hand = rot.euler_to_matrix(jnp.array([[math.pi / 2, 0, 0], [0, math.pi / 2, 0],
                                              [0.4, math.pi / 2, 0.3]]))
        return dict(m=m, m_e=rot.matrix_to_euler(m), m_q=rot.quat_to_matrix(rot.euler_to_quat(e)),
                    q_e=rot.quat_to_euler(rot.euler_to_quat(e)), yaw=hand[0], pitch=hand[1],
                    locked=hand[2], locked_back=rot.euler_to_matrix(rot.matrix_to_euler(hand[2])))

    v = values(jnp.asarray(e))
    m = v["m"]
    np.testing.assert_allclose(v["m_e"], e, atol=2e-4)
    np.testing.assert_allclose(v["m_q"], m, atol=1e-5)
    np.testing.assert_allclose(v["q_e"], e, atol=2e-4)
    # hand values: yaw 90 degrees maps x to y; pitch 90 degrees maps z to x
    yaw, pitch = np.asarray(v["yaw"]), np.asarray(v["pitch"])
    np.testing.assert_allclose(yaw @ [1, 0, 0], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(pitch @ [0, 0, 1], [1, 0, 0], atol=1e-6)
    # at gimbal lock the matrix (not the angles) round-trips
    np.testing.assert_allclose(v["locked_back"], v["locked"], atol=1e-3)


# ----------------------------------------------------------------------------- Bingham


def test_bingham_density_is_antipodally_symmetric_and_shift_invariant():
    @jax.jit  # one program for every value the assertions read
    def values(x):
        m, z = rot.bingham_from_mode(jnp.array([0.2, -0.5, 0.4, 0.7]),
                                     jnp.array([3.0, 8.0, 1.0]))
        mode = rot.quat_normalize(jnp.array([0.2, -0.5, 0.4, 0.7]))
        r = rot.quat_multiply(rot.quat_conjugate(mode), x)
        return dict(lp=rot.bingham_log_prob(x, m, z), lp_neg=rot.bingham_log_prob(-x, m, z),
                    lp_shift=rot.bingham_log_prob(x, m, z + 2.5),
                    lp_mode=rot.bingham_log_prob(mode, m, z),
                    unnorm=rot.bingham_log_unnormalized(x, m, z),
                    by_hand=-(jnp.array([3.0, 8.0, 1.0]) * r[:, 1:] ** 2).sum(-1))

    v = values(_random_quats(32, 5))
    np.testing.assert_array_equal(v["lp"], v["lp_neg"])
    # adding a constant to z leaves the distribution unchanged
    np.testing.assert_allclose(v["lp_shift"], v["lp"], atol=1e-4)
    # the mode has the highest density; log p = -sum_i k_i r_i^2 - log F with r = q0^* x
    assert float(v["lp_mode"]) > float(jnp.max(v["lp"]))
    np.testing.assert_allclose(v["unnorm"], v["by_hand"], atol=1e-5)


# log F(z) and its gradient: one program for every z of the tests below
_LOG_F_AND_GRAD = jax.jit(jax.value_and_grad(rot.bingham_log_normalizer))


@pytest.mark.parametrize("z", [(0, 0, 0, 0), (0, -1, -2, -5), (0, -10, -20, -30),
                               (0, -50, -50, -50), (3, 1, -2, -8)])
def test_bingham_normalizer_and_its_gradient_match_quadrature(z):
    z = np.array(z, np.float64)
    f_quad, moments = _quadrature(z)
    log_f, grad = _LOG_F_AND_GRAD(jnp.asarray(z, jnp.float32))
    log_f = float(log_f)
    assert abs(math.exp(log_f) / f_quad - 1) < 0.05
    if not z.any():
        np.testing.assert_allclose(math.exp(log_f), 2 * math.pi**2, rtol=1e-3)  # area of S^3
    # d log F / dz_i = E[x_i^2]
    np.testing.assert_allclose(grad, moments, atol=0.03)
    np.testing.assert_allclose(np.sum(grad), 1.0, atol=0.01)


def test_bingham_normalizer_concentrated_limit():
    # F -> 2 pi^{3/2} / sqrt(k1 k2 k3) (two Gaussian caps at +-mode); the saddle-point constant
    # factor in this limit is within 1.5 %
    for k in (100.0, 1e3, 1e4):
        z = jnp.array([0.0, -k, -2 * k, -3 * k])
        ratio = math.exp(float(_LOG_F_AND_GRAD(z)[0])) / (
            2 * math.pi**1.5 / math.sqrt(6 * k**3))
        assert abs(ratio - 1) < 0.015, (k, ratio)


def test_acg_envelope_b_solves_its_equation():
    lam = jnp.array([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 5.0, 20.0], [0.0, 1e4, 1e4, 1e4]])
    b = jax.jit(rot.acg_envelope_b)(lam)
    np.testing.assert_allclose(b[0], 4.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.sum(1.0 / (b[:, None] + 2 * lam), -1), 1.0, rtol=1e-4)


def test_bingham_sampler_moments_match_the_density():
    q0 = jnp.array([0.3, 0.5, -0.2, 0.7])

    @jax.jit  # one program: the draws, the norms, the moments and the uniform points
    def draws(q0):
        m, z = rot.bingham_from_mode(q0, jnp.array([5.0, 10.0, 20.0]))
        x = rot.bingham_sample(jax.random.key(0), m, z, 20000)
        return m, z, jnp.linalg.norm(x, axis=-1), ((x @ m) ** 2).mean(0), jax.random.normal(
            jax.random.key(1), (200000, 4))

    m, z, norms, proj2, u = draws(q0)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    _, moments = _quadrature(np.asarray(z), np.asarray(m))
    proj2 = np.asarray(proj2)
    # 20000 draws: the standard error of each mean is below 0.003
    np.testing.assert_allclose(proj2, moments, atol=0.012)
    # importance weights: uniform points weighted by the density reproduce the same moments
    u = np.array(u, np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = np.exp(np.asarray(jax.jit(rot.bingham_log_prob)(jnp.asarray(u, jnp.float32), m, z),
                          np.float64))
    # the density integrates to 1 (mean over uniform points times the area of S^3)
    np.testing.assert_allclose(w.mean() * 2 * math.pi**2, 1.0, atol=0.06)
    iw = ((u @ np.asarray(m)) ** 2 * w[:, None]).sum(0) / w.sum()
    np.testing.assert_allclose(proj2, iw, atol=0.02)


def test_bingham_sampler_uniform_concentrated_and_vmapped():
    k = jnp.array([1e3, 4e3, 1.6e4])

    @jax.jit  # one program for every value the assertions read
    def values(k):
        x = rot.bingham_sample(jax.random.key(2), jnp.eye(4), jnp.zeros(4), 20000)
        # concentrated: r_i ~ N(0, 1 / (2 k_i)) about the mode, either sign of the mode
        q0 = rot.quat_normalize(jnp.array([0.1, 0.9, 0.3, -0.2]))
        m, z = rot.bingham_from_mode(q0, k)
        r = rot.quat_multiply(rot.quat_conjugate(q0), rot.bingham_sample(jax.random.key(3), m, z,
                                                                        20000))
        # vmap over distributions
        ms, zs = jax.vmap(rot.bingham_from_mode)(jnp.stack([q0, -q0]), jnp.stack([k, k / 4]))
        keys = jax.random.split(jax.random.key(4), 2)
        xs = jax.vmap(rot.bingham_sample, in_axes=(0, 0, 0, None))(keys, ms, zs, 500)
        return (x**2).mean(0), r, xs, rot.quat_angle(q0, xs)

    uniform2, r, xs, err = values(k)
    np.testing.assert_allclose(np.asarray(uniform2), 0.25, atol=0.01)  # uniform on S^3
    r = np.asarray(r)
    np.testing.assert_allclose(r[:, 1:].var(0) * 2 * np.asarray(k), 1.0, atol=0.05)
    assert 0.4 < np.mean(r[:, 0] > 0) < 0.6  # antipodal: both signs are drawn
    assert xs.shape == (2, 500, 4)
    assert float(jnp.median(err[0])) < float(jnp.median(err[1]))
