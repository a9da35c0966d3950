"""The experiment protocol's statistics and claim kinds (docs/protocol.md).

A paper's claims are decided over seeds, never on one number:

- `paired_interval(a, b)`: the mean of the per-seed differences a - b and its two-sided
  interval (Student t with n - 1 degrees of freedom, or a percentile bootstrap with a fixed
  seed); `mean_interval(x)` the same for one metric.
- A claim is one of three kinds. `comparative` (`compare`): a paired difference over the seeds
  two variants share, against a threshold. `threshold` (`threshold`): a metric's mean against a
  threshold. `sanity` (`sanity`): a check that holds by construction; it is run and shown, and
  never counted for or against a paper. A fourth kind, `legacy`, is what the plain
  `Claim(name, passed, measured, detail)` of older experiments means: PASS or FAIL, no interval.
- Status of a comparative or threshold claim "value >= c" (`at_least=c`): PASS when the whole
  interval lies in the claimed region (low >= c), FAIL when it lies wholly outside (high < c),
  INCONCLUSIVE otherwise; `at_most=c` mirrors it (PASS: high <= c, FAIL: low > c). With fewer
  than `MIN_SEEDS` (5) seeds the status is INCONCLUSIVE whatever the interval says, with the
  reason recorded; with fewer than 2 there is no interval at all.
- `paper_status(claims)`: REPRODUCED when every counted (non-sanity) claim PASSes, NOT
  REPRODUCED when any FAILs, INCONCLUSIVE otherwise, or when nothing falsifiable was claimed.

This module is pure Python + NumPy (no JAX, no SciPy): the Student t quantile is computed here
from the regularized incomplete beta function.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

LEVEL = 0.95  # two-sided interval level of every claim unless a claim says otherwise
MIN_SEEDS = 5  # the protocol's minimum number of seeds for a counted claim
N_BOOTSTRAP = 10_000  # resamples of the percentile bootstrap

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
STATUSES = (PASS, FAIL, INCONCLUSIVE)
COMPARATIVE, THRESHOLD, SANITY, LEGACY = "comparative", "threshold", "sanity", "legacy"
KINDS = (COMPARATIVE, THRESHOLD, SANITY, LEGACY)
AT_LEAST, AT_MOST = "at_least", "at_most"
REPRODUCED, NOT_REPRODUCED = "REPRODUCED", "NOT REPRODUCED"
PAPER_STATUSES = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
LEGACY_NOTE = "(legacy claims, no intervals)"

# The columns of RESULTS.md's per-paper status table (written by tools/results_table.py, read by
# `alignax list`).
STATUS_COLUMNS = ("paper", "status", "claims", "experiments", "reason")


# ---------------------------------------------------------------------------------------------
# Student t quantiles (no SciPy)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes
    6.4)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) = B(x; a, b) / B(a, b), 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                 + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom:
    1 - I_{df / (df + t^2)}(df / 2, 1 / 2) / 2 for t >= 0, and symmetric."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


@functools.lru_cache(maxsize=1024)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (bisection on `t_cdf`; about
    1e-12 relative accuracy). t_quantile(0.975, 4) = 2.7764..."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------------------------
# Intervals


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean over n seeds and its two-sided interval at `level` (low/high NaN when n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    level: float
    method: str


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def mean_interval(x: Sequence[float], *, level: float = LEVEL, method: str = "t",
                  seed: int = 0, n_bootstrap: int = N_BOOTSTRAP) -> Interval:
    """The mean of per-seed values x [N] and its two-sided `level` interval.

    method "t": mean ± t_{(1 + level) / 2, N - 1} * s / sqrt(N), s the sample std (ddof=1).
    method "bootstrap": the (1 - level) / 2 and (1 + level) / 2 percentiles of the means of
    `n_bootstrap` resamples with replacement, drawn with `np.random.default_rng(seed)` (so the
    same values give the same interval). The percentile bootstrap is narrower than the t
    interval at small N (it ignores the t correction): prefer "t" with 5-10 seeds.

    Args:
      x: [N] per-seed values (finite).
      level: the interval's coverage, in (0, 1).
      method: "t" or "bootstrap".
      seed: the bootstrap's seed.
      n_bootstrap: the bootstrap's number of resamples.

    Returns:
      An `Interval`; with N < 2 its low and high are NaN (no spread to estimate).
    """
    _check_level(level)
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    x = np.asarray(x, np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected one value per seed (rank 1), got shape {x.shape}")
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("no values: an interval needs at least one seed")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"non-finite values: {x.tolist()}")
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, level, method)
    if method == "t":
        half = t_quantile((1.0 + level) / 2.0, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
        return Interval(mean, mean - half, mean + half, n, level, method)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(n_bootstrap, n))].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Interval(mean, float(low), float(high), n, level, method)


def paired_interval(a: Sequence[float], b: Sequence[float], *, level: float = LEVEL,
                    method: str = "t", seed: int = 0,
                    n_bootstrap: int = N_BOOTSTRAP) -> Interval:
    """The mean of the per-seed differences d = a - b [N] and its two-sided interval.

    Pairing removes what the two sides share on one seed (data draw, initialisation): the
    interval is `mean_interval(a - b)`, not a difference of two independent intervals.

    Args:
      a: [N] per-seed values of the first side.
      b: [N] the second side's values on the same seeds, in the same order.
      level, method, seed, n_bootstrap: as in `mean_interval`.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same shape, got {a.shape} and {b.shape}")
    return mean_interval(a - b, level=level, method=method, seed=seed, n_bootstrap=n_bootstrap)


# ---------------------------------------------------------------------------------------------
# Claims


def _float_or_none(x) -> float | None:
    return None if x is None else float(x)


@dataclasses.dataclass
class Claim:
    """One checked claim: a sentence, its kind and status, and the numbers it was judged on.

    `Claim(name, passed, measured, detail)` (the form older experiments use) is a `legacy` claim
    with status PASS or FAIL and no interval. The protocol's claims come from `compare`,
    `threshold` and `sanity`, which fill the other fields. `passed` is always
    `status == PASS`.

    Attributes:
      name: the claim as a sentence.
      passed: status == PASS.
      measured: the numbers shown with the claim, by name.
      detail: free text from the experiment.
      kind: "comparative", "threshold", "sanity" or "legacy".
      status: "PASS", "FAIL" or "INCONCLUSIVE" (legacy and sanity: PASS or FAIL).
      mean: the mean (of the per-seed differences, for a comparative claim).
      interval: (low, high) at `level`, or None (n < 2, sanity and legacy claims).
      n: the number of seeds.
      level: the interval's level.
      threshold: the value the interval is compared with.
      direction: "at_least" (claimed: value >= threshold) or "at_most".
      method: "t" or "bootstrap".
      seeds: the seeds the claim was measured on.
      reason: why the status is what it is, when the interval alone does not say (too few
        seeds, non-finite values).
      paper: the paper the claim is about, when an experiment covers several ("" means the
        experiment's paper, the first line of its docstring); RESULTS.md decides each paper's
        status on the claims about it.
    """

    name: str
    passed: bool
    measured: dict[str, float]
    detail: str = ""
    kind: str = LEGACY
    status: str | None = None
    mean: float | None = None
    interval: tuple[float, float] | None = None
    n: int | None = None
    level: float | None = None
    threshold: float | None = None
    direction: str | None = None
    method: str | None = None
    seeds: list | None = None
    reason: str = ""
    paper: str = ""

    def __post_init__(self):
        self.passed = bool(self.passed)
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.name!r}: kind must be one of {KINDS}, got "
                             f"{self.kind!r}")
        if self.status is None:
            self.status = PASS if self.passed else FAIL
        if self.status not in STATUSES:
            raise ValueError(f"claim {self.name!r}: status must be one of {STATUSES}, got "
                             f"{self.status!r}")
        if self.passed != (self.status == PASS):
            raise ValueError(f"claim {self.name!r}: passed={self.passed} contradicts status "
                             f"{self.status}")
        if self.kind in (SANITY, LEGACY) and self.status == INCONCLUSIVE:
            raise ValueError(f"claim {self.name!r}: a {self.kind} claim is PASS or FAIL")
        if self.direction not in (None, AT_LEAST, AT_MOST):
            raise ValueError(f"claim {self.name!r}: direction must be 'at_least' or "
                             f"'at_most', got {self.direction!r}")

    @property
    def counted(self) -> bool:
        """Whether the claim counts towards its paper's status (every kind but sanity)."""
        return self.kind != SANITY

    def to_json(self) -> dict:
        """A JSON-able dict. A legacy claim keeps the four keys it always had (kind and status
        are implied by their absence and `passed`); the other kinds carry every field."""
        out = {"name": self.name, "passed": bool(self.passed),
               "measured": {k: float(v) for k, v in self.measured.items()},
               "detail": self.detail}
        if self.kind == LEGACY:
            return out
        out.update(
            kind=self.kind, status=self.status, mean=_float_or_none(self.mean),
            interval=None if self.interval is None else [float(v) for v in self.interval],
            n=None if self.n is None else int(self.n), level=_float_or_none(self.level),
            threshold=_float_or_none(self.threshold), direction=self.direction,
            method=self.method, seeds=None if self.seeds is None else list(self.seeds),
            reason=self.reason)
        if self.paper:
            out["paper"] = self.paper
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Claim:
        """The inverse of `to_json` (also reads the claims of summary.json files written before
        the protocol: they are legacy claims)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"claim {d.get('name')!r}: unknown fields {sorted(unknown)}")
        kw = dict(d)
        if kw.get("interval") is not None:
            kw["interval"] = tuple(float(v) for v in kw["interval"])
        kw["measured"] = {k: float(v) for k, v in kw.get("measured", {}).items()}
        return cls(**kw)


def _status(low: float, high: float, threshold: float, direction: str) -> str:
    """PASS / FAIL / INCONCLUSIVE of an interval against `value >= threshold` (at_least) or
    `value <= threshold` (at_most)."""
    if direction == AT_LEAST:
        return PASS if low >= threshold else FAIL if high < threshold else INCONCLUSIVE
    return PASS if high <= threshold else FAIL if low > threshold else INCONCLUSIVE


def _direction(at_least: float | None, at_most: float | None) -> tuple[float, str]:
    if (at_least is None) == (at_most is None):
        raise ValueError("give exactly one of at_least= or at_most=")
    if at_least is not None:
        return float(at_least), AT_LEAST
    return float(at_most), AT_MOST


def _seed_order(seeds: Iterable) -> list:
    seeds = list(seeds)
    try:
        return sorted(seeds, key=int)
    except (TypeError, ValueError):
        return sorted(seeds, key=str)


def decide(name: str, values: Mapping[Any, float], *, kind: str = THRESHOLD,
           at_least: float | None = None, at_most: float | None = None, level: float = LEVEL,
           method: str = "t", seed: int = 0, measured: Mapping[str, float] | None = None,
           detail: str = "", paper: str = "") -> Claim:
    """A comparative or threshold claim on per-seed values: their mean's interval against a
    threshold (see the module docstring for the rule).

    `compare` and `threshold` call it; call it directly for a per-seed quantity that
    `claims(results)` derives itself (a ratio of two metrics, a difference of gains, ...).

    Args:
      name: the claim as a sentence.
      values: {seed: value}; for a comparative claim, the per-seed differences.
      kind: "comparative" or "threshold".
      at_least: the claim is "value >= at_least" (exactly one of at_least / at_most).
      at_most: the claim is "value <= at_most".
      level, method, seed: as in `mean_interval`.
      measured: the numbers to show (default: {"mean": mean}).
      detail: free text.
      paper: the paper the claim is about, if not the experiment's (see `Claim.paper`).

    Returns:
      A `Claim`. INCONCLUSIVE, with `reason` saying why, when there are fewer than
      `MIN_SEEDS` seeds (the interval is still computed and shown when n >= 2) or a value is
      not finite.
    """
    if kind not in (COMPARATIVE, THRESHOLD):
        raise ValueError(f"decide makes comparative or threshold claims, got kind {kind!r}")
    limit, direction = _direction(at_least, at_most)
    seeds = _seed_order(values)
    x = np.array([float(values[s]) for s in seeds], np.float64)
    common = dict(name=name, detail=detail, paper=paper, kind=kind, n=len(seeds), level=level,
                  threshold=limit, direction=direction, method=method,
                  seeds=[s if isinstance(s, str) else int(s) for s in seeds])
    if not len(seeds):
        return Claim(passed=False, measured=dict(measured or {}), status=INCONCLUSIVE,
                     reason="no seeds to measure on", **common)
    bad = [s for s, v in zip(seeds, x) if not math.isfinite(v)]
    if bad:
        return Claim(passed=False, measured=dict(measured or {}), status=INCONCLUSIVE,
                     reason=f"non-finite values at seeds {bad}", **common)
    iv = mean_interval(x, level=level, method=method, seed=seed)
    shown = dict(measured) if measured is not None else {"mean": iv.mean}
    if iv.n < 2:
        return Claim(passed=False, measured=shown, status=INCONCLUSIVE, mean=iv.mean,
                     reason=f"n={iv.n} seed: no interval (the protocol needs >= {MIN_SEEDS})",
                     **common)
    status = _status(iv.low, iv.high, limit, direction)
    reason = ""
    if iv.n < MIN_SEEDS:
        reason = (f"n={iv.n} seeds < {MIN_SEEDS} required by the protocol (the interval alone "
                  f"would be {status})")
        status = INCONCLUSIVE
    return Claim(passed=status == PASS, measured=shown, status=status, mean=iv.mean,
                 interval=(iv.low, iv.high), reason=reason, **common)


def per_seed(results: Mapping, variant: str, metric: str) -> dict:
    """{seed: value} of one metric of one variant, from `run_experiment`'s results (or the
    "results" of a summary.json); a missing variant or metric is a ValueError naming the
    ones there are."""
    if variant not in results:
        raise ValueError(f"no variant {variant!r} in the results (variants: {sorted(results)})")
    seeds = results[variant]["per_seed"]
    out = {s: float(m[metric]) for s, m in seeds.items() if metric in m}
    if not out:
        known = sorted({k for m in seeds.values() for k in m})
        raise ValueError(f"no metric {metric!r} in variant {variant!r} (metrics: {known})")
    return out


def seed_mean(results: Mapping, variant: str, metric: str) -> float:
    """The mean over seeds of one metric of one variant (`per_seed`), for a claim's detail
    text or a derived threshold; NaN when the variant did not run (e.g. one the smoke setting
    skips). A missing metric of a present variant is a ValueError, as in `per_seed`."""
    if variant not in results:
        return float("nan")
    values = list(per_seed(results, variant, metric).values())
    return float(sum(values) / len(values))


def compare(name: str, results: Mapping, a: tuple[str, str], b: tuple[str, str], *,
            at_least: float | None = None, at_most: float | None = None,
            level: float = LEVEL, method: str = "t", seed: int = 0,
            detail: str = "", paper: str = "") -> Claim:
    """A comparative claim: the paired difference a - b over the seeds both sides have.

    `compare("DPO beats SFT", results, ("dpo", "gold"), ("sft", "gold"), at_least=0.0)` claims
    mean(gold_dpo - gold_sft) >= 0 with the whole 95% interval.

    Args:
      name: the claim as a sentence.
      results: `run_experiment`'s results ({variant: {"per_seed": {seed: {metric: x}}}}).
      a: (variant, metric) of the first side.
      b: (variant, metric) of the second side (the baseline).
      at_least: the claim is "a - b >= at_least" (exactly one of at_least / at_most).
      at_most: the claim is "a - b <= at_most".
      level, method, seed: as in `mean_interval`.
      detail: free text.

    Returns:
      A comparative `Claim`; measured = {"<variant>/<metric>": mean over the shared seeds of
      each side, "difference": mean difference}.
    """
    va, vb = per_seed(results, *a), per_seed(results, *b)
    shared = [s for s in va if s in vb]
    diffs = {s: va[s] - vb[s] for s in shared}
    label_a, label_b = f"{a[0]}/{a[1]}", f"{b[0]}/{b[1]}"
    if label_a == label_b:
        raise ValueError(f"claim {name!r} compares {label_a} with itself")
    measured = {}
    if shared:
        measured = {label_a: float(np.mean([va[s] for s in shared])),
                    label_b: float(np.mean([vb[s] for s in shared])),
                    "difference": float(np.mean(list(diffs.values())))}
    return decide(name, diffs, kind=COMPARATIVE, at_least=at_least, at_most=at_most,
                  level=level, method=method, seed=seed, measured=measured, detail=detail,
                  paper=paper)


def threshold(name: str, results: Mapping, x: tuple[str, str], *,
              at_least: float | None = None, at_most: float | None = None,
              level: float = LEVEL, method: str = "t", seed: int = 0,
              detail: str = "", paper: str = "") -> Claim:
    """A threshold claim: a metric's mean over seeds against a threshold.

    `threshold("RM accuracy well above chance", results, ("rm", "accuracy"), at_least=0.75)`.

    Args:
      name: the claim as a sentence.
      results: `run_experiment`'s results.
      x: (variant, metric).
      at_least / at_most: the claimed bound (exactly one).
      level, method, seed: as in `mean_interval`.
      detail: free text.

    Returns:
      A threshold `Claim`; measured = {"<variant>/<metric>": mean}.
    """
    values = per_seed(results, *x)
    measured = {f"{x[0]}/{x[1]}": float(np.mean(list(values.values())))}
    return decide(name, values, kind=THRESHOLD, at_least=at_least, at_most=at_most,
                  level=level, method=method, seed=seed, measured=measured, detail=detail,
                  paper=paper)


def sanity(name: str, passed: bool, measured: Mapping[str, float],
           detail: str = "", paper: str = "") -> Claim:
    """A check that holds by construction (a planted property, a model-class ceiling, a
    baseline at chance by design): PASS or FAIL, shown, never counted for the paper."""
    return Claim(name=name, passed=bool(passed), measured=dict(measured), detail=detail,
                 kind=SANITY, paper=paper)


# ---------------------------------------------------------------------------------------------
# Paper status


@dataclasses.dataclass(frozen=True)
class PaperVerdict:
    """A paper's status, why, and the claim counts it was decided on.

    counts: {"PASS": k, "FAIL": k, "INCONCLUSIVE": k} over counted claims, and "sanity": k.
    """

    status: str
    reason: str
    counts: dict[str, int]

    def to_json(self) -> dict:
        return {"status": self.status, "reason": self.reason, "counts": dict(self.counts)}


def paper_verdict(claims: Iterable[Claim]) -> PaperVerdict:
    """The status of a paper from all its claims, with the reason and counts.

    Sanity claims are excluded. No counted claim: INCONCLUSIVE ("no falsifiable claim"). Any
    FAIL: NOT REPRODUCED. All PASS: REPRODUCED. Otherwise INCONCLUSIVE. Legacy claims count as
    what they say, and the reason then ends with "(legacy claims, no intervals)".
    """
    claims = list(claims)
    counted = [c for c in claims if c.counted]
    counts = {s: sum(c.status == s for c in counted) for s in STATUSES}
    counts["sanity"] = len(claims) - len(counted)
    m = len(counted)
    if not m:
        return PaperVerdict(INCONCLUSIVE, "no falsifiable claim (only sanity checks)"
                            if claims else "no falsifiable claim", counts)
    if counts[FAIL]:
        status, reason = NOT_REPRODUCED, f"{counts[FAIL]} of {m} claims FAIL"
    elif counts[PASS] == m:
        status, reason = REPRODUCED, f"all {m} claims PASS"
    else:
        status, reason = INCONCLUSIVE, f"{counts[INCONCLUSIVE]} of {m} claims INCONCLUSIVE"
    legacy = sum(c.kind == LEGACY for c in counted)
    if legacy:
        reason += f" {LEGACY_NOTE}" if legacy == m else f" ({legacy} {LEGACY_NOTE[1:]}"
    return PaperVerdict(status, reason, counts)


def paper_status(claims: Iterable[Claim]) -> str:
    """"REPRODUCED", "NOT REPRODUCED" or "INCONCLUSIVE" (see `paper_verdict` for the rule and
    the reason)."""
    return paper_verdict(claims).status


# --- choices made on validation (rule 1) ---------------------------------------------------

def _json_score(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def choose_on_validation(candidates: Mapping[Any, Any], score: Callable[[Any], float], *,
                         maximize: bool = True) -> tuple[Any, dict]:
    """Picks the candidate with the best validation score, and records how.

    Every candidate is scored (no early exit), so the record shows the whole search. Give each
    variant (the method and every baseline) the same candidates and the same `score` budget.

    Args:
      candidates: {name: value} in search order, e.g. {"steps=100": 100, "steps=300": 300} or
        {name: trained state}.
      score: value -> validation score (a float; NaN or inf never wins).
      maximize: True to pick the highest score, False the lowest.

    Returns:
      (best name, record): record is JSON-able: {"procedure": ..., "maximize": bool,
      "scores": {str(name): score} in candidate order (non-finite scores as "nan"/"inf"),
      "chosen": str(best name)}. Ties go to the earliest candidate.

    Raises:
      ValueError: no candidates, or no finite score.
    """
    if not candidates:
        raise ValueError("choose_on_validation: no candidates")
    scores = {name: float(score(value)) for name, value in candidates.items()}
    finite = [(name, s) for name, s in scores.items() if math.isfinite(s)]
    if not finite:
        raise ValueError(f"choose_on_validation: no finite validation score ({scores})")
    best_name, best = finite[0]
    for name, s in finite[1:]:
        if (s > best) if maximize else (s < best):
            best_name, best = name, s
    record = {
        "procedure": ("argmax" if maximize else "argmin") + " of the validation score over "
                     "all candidates (ties: the earliest; non-finite scores never chosen)",
        "maximize": bool(maximize),
        "scores": {str(name): _json_score(s) for name, s in scores.items()},
        "chosen": str(best_name),
    }
    return best_name, record
