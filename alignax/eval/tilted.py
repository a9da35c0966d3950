"""Exact KL-constrained alignment and best-of-N over a discrete reward distribution.

Yang, Salamatian, Sun, Suresh and Beirami 2024, "Asymptotics of Language Model Alignment"
(arXiv 2404.01730). A reference model p and a reward r define the problem

    phi_Delta = argmax_phi E_phi r(y)   subject to   KL(phi || p) <= Delta,

whose solution is the exponential tilt phi_lambda(y) = p(y) e^{lambda r(y)} / Z(lambda),
Z(lambda) = E_p e^{lambda r}, with lambda >= 0 the smallest value reaching KL = Delta
(lambda = inf, p conditioned on the reward's maximum, when Delta >= -log P_p(r = max r)).

Both phi_lambda and best-of-N (draw N samples from p, keep the one of highest reward) change p
by a factor that depends on y through r(y) only, so every quantity of the paper is a function
of the reward's law under p: a finite list of distinct values v_1 < ... < v_K with
probabilities P_p(r = v_k). This module computes, in float64 NumPy, exactly:

- the tilt (`tilt`, `tilted_kl`, `lambda_for_kl` by bisection on lambda);
- best-of-N's law of the selected reward, P(R_max = v) = F(v)^N - F(v^-)^N (ties included:
  all N draws below or at v, not all strictly below), of the selected sample (`bon_item_law`:
  the samples sharing a reward split its mass in proportion to p), its expected reward and
  KL(BoN || p) (`bon_kl`), with the known bound KL <= log N - (N - 1) / N (`bon_kl_bound`,
  Beirami et al. 2024, arXiv 2401.01879);
- the paper's memoryless, linear case: y = (y_1, ..., y_n) i.i.d. tokens and
  r(y) = sum_t r(y_t). The law of R = sum_t r(y_t) by exact convolution on the reward's grid
  (`sum_distribution`); the token-level tilt is the sequence-level one (phi_lambda of the
  product is the product of the token tilts, KL adds over tokens); the log-MGF
  kappa(theta) = log E_p e^{theta r} (`log_mgf`), and the Cramer rate function of R / n,
  I(x) = sup_theta [theta x - kappa(theta)] (`rate_function`, the Legendre transform). Under
  phi_lambda the log-MGF is kappa(lambda + theta) - kappa(lambda) (the "tilted log-MGF" of the
  paper's large-deviation principle), so the rate of R / n under phi_lambda is
  `rate_function(..., lam=lambda)`. At the tilted mean x_lambda = kappa'(lambda) one has
  I_p(x_lambda) = lambda x_lambda - kappa(lambda) = KL(phi_lambda || p) per token: best-of-N
  with N = e^{n delta} and phi at KL n delta both concentrate R / n at the x with
  I_p(x) = delta (`ldp_reward_rate`).

Arrays: values [K] (float, any order unless a docstring says sorted), probs [K] summing to 1.
Functions take NumPy arrays and return NumPy arrays or floats; N may be a float (e^{n delta}
overflows int64 long before it overflows float64).
"""

from __future__ import annotations

import math

import numpy as np


def _law(values, probs) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, np.float64).reshape(-1)
    p = np.asarray(probs, np.float64).reshape(-1)
    if v.shape != p.shape or v.size == 0:
        raise ValueError(f"values {v.shape} and probs {p.shape} must be non-empty and of one "
                         "shape")
    if np.any(p < 0) or not np.all(np.isfinite(p)) or not np.all(np.isfinite(v)):
        raise ValueError("probs must be finite and >= 0 and values finite")
    total = p.sum()
    if not abs(total - 1.0) < 1e-9:
        raise ValueError(f"probs must sum to 1, got {total!r}")
    return v, p


def reward_law(values, probs) -> tuple[np.ndarray, np.ndarray]:
    """The law of r(y): (distinct values [K'] sorted ascending, their probabilities [K']),
    exact equality merging; values of zero probability are dropped."""
    v, p = _law(values, probs)
    keep = p > 0
    support, inverse = np.unique(v[keep], return_inverse=True)
    out = np.zeros(support.shape, np.float64)
    np.add.at(out, inverse, p[keep])
    return support, out


def kl(q, p) -> float:
    """KL(q || p) = sum_k q_k log(q_k / p_k) in nats (0 log 0 = 0; inf where q_k > 0 = p_k).
    q, p [K]."""
    q = np.asarray(q, np.float64)
    p = np.asarray(p, np.float64)
    m = q > 0
    if np.any(p[m] <= 0):
        return math.inf
    return float(np.sum(q[m] * (np.log(q[m]) - np.log(p[m]))))


def _tilt_logits(v, p, lam):
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    if math.isinf(lam):
        top = v[p > 0].max()
        return np.where(v == top, logp, -np.inf)
    return logp + lam * v


def tilt(values, probs, lam: float) -> np.ndarray:
    """phi_lambda [K]: phi(y) = p(y) e^{lambda r(y)} / sum_y' p(y') e^{lambda r(y')}.

    lam = inf gives the limit: p conditioned on the highest reward of positive probability.
    (Yang et al. 2024: phi_Delta is this tilt with KL(phi_lambda || p) = Delta.)
    """
    v, p = _law(values, probs)
    logits = _tilt_logits(v, p, float(lam))
    logits = logits - logits.max()
    w = np.exp(logits)
    return w / w.sum()


def log_mgf(values, probs, theta) -> np.ndarray:
    """kappa(theta) = log E_p e^{theta r} (the cumulant generating function), elementwise over
    theta [...] -> [...], by a stable log-sum-exp."""
    v, p = _law(values, probs)
    theta = np.asarray(theta, np.float64)
    m = p > 0
    a = theta[..., None] * v[m] + np.log(p[m])
    top = a.max(-1)
    return top + np.log(np.exp(a - top[..., None]).sum(-1))


def tilted_kl(values, probs, lam: float) -> float:
    """KL(phi_lambda || p) = lambda E_phi r - kappa(lambda) (nats); at lam = inf,
    -log P_p(r = max r)."""
    v, p = _law(values, probs)
    phi = tilt(v, p, lam)
    if math.isinf(float(lam)):
        return kl(phi, p)
    return float(max(lam * np.dot(phi, v) - log_mgf(v, p, lam), 0.0))


def max_kl(values, probs) -> float:
    """-log P_p(r = max r): the largest KL(phi || p) any tilt reaches (that of lam = inf)."""
    v, p = _law(values, probs)
    top = v[p > 0].max()
    return float(-np.log(p[v == top].sum()))


def lambda_for_kl(values, probs, delta: float, *, tol: float = 1e-12,
                  max_iter: int = 500) -> float:
    """The lambda >= 0 with KL(phi_lambda || p) = delta, by bisection (KL is increasing in
    lambda >= 0: d/dlambda KL = lambda Var_phi(r)).

    Returns 0 for delta <= 0 or a constant reward, and inf when delta >= `max_kl` (no finite
    tilt spends the budget: phi_Delta is p conditioned on the maximum). Bisection on [0, hi]
    with hi doubled until KL(hi) >= delta, stopped when the bracket is below
    tol * max(1, hi).
    """
    v, p = _law(values, probs)
    delta = float(delta)
    if delta <= 0 or np.ptp(v[p > 0]) == 0:
        return 0.0
    if delta >= max_kl(v, p) * (1 - 1e-12):
        return math.inf
    lo, hi = 0.0, 1.0
    while tilted_kl(v, p, hi) < delta:
        lo, hi = hi, 2 * hi
        if hi > 1e12:
            return math.inf
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        if tilted_kl(v, p, mid) < delta:
            lo = mid
        else:
            hi = mid
        if hi - lo <= tol * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _log_cdf_pow(p_sorted, n: float) -> tuple[np.ndarray, np.ndarray]:
    """N log F(v_k) and N log F(v_k^-) for a sorted law, accurate near F = 1 (through the
    survival function and log1p) and F = 0."""
    sf = np.concatenate([np.cumsum(p_sorted[::-1])[::-1][1:], [0.0]])   # P(R > v_k)
    cdf = np.cumsum(p_sorted)                                           # P(R <= v_k)
    cdf_below = np.concatenate([[0.0], cdf[:-1]])                       # P(R < v_k)
    sf_below = sf + p_sorted                                            # P(R >= v_k)
    with np.errstate(divide="ignore"):
        log_f = np.where(sf < 0.5, np.log1p(-np.minimum(sf, 1.0)), np.log(cdf))
        log_fm = np.where(sf_below < 0.5, np.log1p(-np.minimum(sf_below, 1.0)),
                          np.log(cdf_below))
    return n * log_f, n * log_fm


def _check_n(n) -> float:
    n = float(n)
    if not n >= 1 or not math.isfinite(n):
        raise ValueError(f"best-of-N needs a finite N >= 1, got {n!r}")
    return n


def bon_log_law(values, probs, n) -> tuple[np.ndarray, np.ndarray]:
    """Best-of-N's law of the selected reward, in logs: (support [K'] ascending,
    log P(R_max = v) [K']), with

        P(R_max = v) = F(v)^N - F(v^-)^N = F(v)^N (1 - e^{N log F(v^-) - N log F(v)}),

    F(v) = P_p(r <= v), F(v^-) = P_p(r < v): ties are handled, the maximum equals v when all N
    draws are <= v and not all < v. N >= 1 may be a non-integer float (the same formula). Reward
    values of probability 0 under p are dropped.
    """
    n = _check_n(n)
    support, p = reward_law(values, probs)
    g, g_below = _log_cdf_pow(p, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = g + np.log(-np.expm1(g_below - g))
    return support, log_q


def bon_law(values, probs, n) -> tuple[np.ndarray, np.ndarray]:
    """(support [K'] ascending, P(R_max = v) [K']): `bon_log_law` exponentiated."""
    support, log_q = bon_log_law(values, probs, n)
    return support, np.exp(log_q)


def bon_item_law(values, probs, n) -> np.ndarray:
    """Best-of-N's law over the K items y (not only their rewards) [K]: the draws sharing the
    selected reward are exchangeable, so the reward level's mass splits in proportion to p:
    pi_N(y) = P(R_max = r(y)) p(y) / P_p(r = r(y)) (any tie-breaking that ignores y gives this).
    """
    v, p = _law(values, probs)
    support, q = bon_law(v, p, n)
    _, level_p = reward_law(v, p)
    idx = np.searchsorted(support, v)
    out = np.zeros_like(p)
    m = p > 0
    out[m] = q[idx[m]] * p[m] / level_p[idx[m]]
    return out


def bon_expected_reward(values, probs, n) -> float:
    """E[R_max] = sum_v v P(R_max = v)."""
    support, q = bon_law(values, probs, n)
    return float(np.dot(q, support))


def bon_kl(values, probs, n) -> float:
    """KL(pi_N || p) in nats, exactly: the sum over reward levels of
    q(v) log(q(v) / P_p(r = v)) (the items' law adds nothing: both split a level's mass in
    proportion to p), q = `bon_law`."""
    support, log_q = bon_log_law(values, probs, n)
    _, p = reward_law(values, probs)
    q = np.exp(log_q)
    m = q > 0
    return float(np.sum(q[m] * (log_q[m] - np.log(p[m]))))


def bon_kl_bound(n) -> float:
    """log N - (N - 1) / N: an upper bound on KL(pi_N || p) for every reference and reward,
    with equality for a continuous reward law (Beirami et al. 2024, arXiv 2401.01879,
    the analytical KL formula shown to be an upper bound)."""
    n = _check_n(n)
    return math.log(n) - (n - 1) / n


def bon_kl_to_tilt(values, probs, n, lam: float) -> float:
    """KL(pi_N || phi_lambda) in nats: both are functions of the reward level times p, so it is
    the KL between the two reward laws (Yang et al. 2024: per token, this vanishes
    as n grows with N = e^{n delta} and KL(phi || p) = n delta)."""
    support, log_q = bon_log_law(values, probs, n)
    _, p = reward_law(values, probs)
    phi = tilt(support, p, lam)
    q = np.exp(log_q)
    m = q > 0
    if np.any(phi[m] <= 0):
        return math.inf
    return float(np.sum(q[m] * (log_q[m] - np.log(phi[m]))))


def expected_reward(values, probs) -> float:
    """E_p r = sum_k p_k v_k."""
    v, p = _law(values, probs)
    return float(np.dot(p, v))


def grid_steps(values, step: float, *, tol: float = 1e-9) -> tuple[float, np.ndarray]:
    """(origin, k [K] int): values = origin + step * k with origin = min(values), k >= 0.

    Raises:
      ValueError: a value is not on the grid (off by more than tol * step).
    """
    v = np.asarray(values, np.float64).reshape(-1)
    step = float(step)
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step!r}")
    origin = float(v.min())
    k = np.rint((v - origin) / step)
    if np.any(np.abs(origin + step * k - v) > tol * step):
        raise ValueError(f"values {v.tolist()} are not on a grid of step {step}")
    return origin, k.astype(np.int64)


def sum_distribution(values, probs, n: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """The law of R = sum_{t=1..n} r(y_t), y_t i.i.d. ~ p, for token rewards on a grid.

    values [V] token rewards (each origin + step * k_i, k_i integer), probs [V] token
    probabilities. The law of sum_t k_{y_t} is the n-fold convolution of the token law on
    {0, ..., max k}, computed by repeated squaring with direct (not FFT) convolutions: every
    entry is a sum of products of non-negative numbers, so small probabilities keep their
    relative accuracy (until float64 underflow, about 1e-308).

    Returns:
      (support [n max_k + 1] = n origin + step * j, probabilities [n max_k + 1]); entries of
      probability 0 are kept (they are grid points).
    """
    v, p = _law(values, probs)
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    origin, k = grid_steps(v, step)
    token = np.zeros(int(k.max()) + 1, np.float64)
    np.add.at(token, k, p)
    out = np.ones(1, np.float64)
    base = token
    m = n
    while m:
        if m & 1:
            out = np.convolve(out, base)
        m >>= 1
        if m:
            base = np.convolve(base, base)
    out = np.maximum(out, 0.0)
    out = out / out.sum()
    support = n * origin + float(step) * np.arange(out.size)
    return support, out


def rate_function(values, probs, x, *, lam: float = 0.0, tol: float = 1e-12) -> np.ndarray:
    """The Cramer rate function of R / n for i.i.d. token rewards under the tilt phi_lam:

        I_lam(x) = sup_theta [theta x - (kappa(lam + theta) - kappa(lam))],

    the Legendre transform of the tilted log-MGF (lam = 0: of p itself). Elementwise over
    x [...] -> [...]: 0 at the tilted mean, finite on [min r, max r] (at an end,
    -log phi_lam(r = end)), inf outside. The supremum is at the theta where the tilted mean
    kappa'(lam + theta) equals x, found by bisection (kappa' is increasing).
    (Yang et al. 2024: R / n under phi_Delta satisfies an LDP with this rate.)
    """
    support, p = reward_law(values, probs)
    phi = tilt(support, p, lam)
    x_arr = np.asarray(x, np.float64)
    out = np.empty(x_arr.shape, np.float64)
    lo_v, hi_v = support[0], support[-1]
    mean = float(np.dot(phi, support))
    for i, xi in np.ndenumerate(x_arr):
        if xi < lo_v - 1e-15 or xi > hi_v + 1e-15:
            out[i] = math.inf
        elif support.size == 1:
            out[i] = 0.0
        elif xi >= hi_v:
            out[i] = float(-np.log(phi[-1]))
        elif xi <= lo_v:
            out[i] = float(-np.log(phi[0]))
        else:
            theta = _theta_for_mean(support, phi, float(xi), mean, tol)
            out[i] = float(theta * xi - log_mgf(support, phi, theta))
    return out


def _theta_for_mean(v, q, x, mean, tol) -> float:
    """theta with E_{q tilted by theta} r = x (x strictly inside the support)."""
    def tilted_mean(t):
        w = tilt(v, q, t)
        return float(np.dot(w, v))

    if x == mean:
        return 0.0
    sign = 1.0 if x > mean else -1.0
    lo, hi = 0.0, sign
    while (tilted_mean(hi) - x) * sign < 0:
        lo, hi = hi, 2 * hi
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if (tilted_mean(mid) - x) * sign < 0:
            lo = mid
        else:
            hi = mid
        if abs(hi - lo) <= tol * max(1.0, abs(hi)):
            break
    return 0.5 * (lo + hi)


def ldp_reward_rate(values, probs, delta: float) -> float:
    """x*(delta): the per-token reward where I_p(x) = delta on the upper branch (x >= E_p r),
    i.e. the tilted mean kappa'(lambda) of the token tilt with KL(phi_lambda || p) = delta.

    Both the KL-constrained optimum at KL = n delta (exactly: E_phi R / n = x*) and best-of-N
    with N = e^{n delta} (as n -> inf) have per-token reward x* (Yang et al. 2024: the LDP
    of the optimum and the equivalence of best-of-N). delta >= `max_kl` gives max r.
    """
    support, p = reward_law(values, probs)
    lam = lambda_for_kl(support, p, delta)
    return float(np.dot(tilt(support, p, lam), support))


def empirical_tilt_weights(rewards, lam: float) -> np.ndarray:
    """Self-normalised importance weights of the tilt fitted on M samples of p:
    w_i = e^{lam r_i} / sum_j e^{lam r_j} over the last axis of rewards [..., M] -> [..., M]
    (lam = inf: uniform over the samples with the highest reward). This is `tilt` of the
    empirical law (each sample 1 / M)."""
    r = np.asarray(rewards, np.float64)
    if math.isinf(float(lam)):
        top = r == r.max(-1, keepdims=True)
        return top / top.sum(-1, keepdims=True)
    a = lam * r
    a = a - a.max(-1, keepdims=True)
    w = np.exp(a)
    return w / w.sum(-1, keepdims=True)
