"""Data for the diffusion testbeds: 2-D Gaussian mixtures with mode ids, and 8x8 digit images.

- `ring_of_gaussians`: M isotropic Gaussians with centres evenly spaced on a circle (M = 8 is the
  classic "8 gaussians" of the GAN / diffusion mode-collapse literature). Every point comes with
  the id of the component it was drawn from, and `assign_modes` maps any samples (a model's) to
  their nearest centre, or to -1 when they are further than a radius from every centre, so mode
  coverage and off-mode mass can be measured (`mode_stats`).
- `load_digits_8x8`: scikit-learn's bundled handwritten digits (1,797 images of 8x8 pixels with
  values 0..16; no download), scaled to [-1, 1] as x / 8 - 1, shaped [N, 8, 8, 1] (NHWC), with
  their labels 0..9.

Splits follow the protocol (`alignax.tasks.splits`): point sets for experiment seed s are drawn
from the data seeds `split_seeds(s)` (train 3s, validation 3s + 1, test 3s + 2); the digits are a
fixed finite set, so `digit_splits(seed)` partitions them by a permutation of `seed` (disjoint by
construction, stratified by label). Generators are numpy and deterministic functions of their
seed.

Shapes: N points / images, M modes.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from alignax.tasks.splits import split_seeds

DIGIT_SHAPE = (8, 8, 1)


class Points(NamedTuple):
    """Points [N, 2] float32 and the id [N] int32 of the component each was drawn from."""

    points: np.ndarray
    modes: np.ndarray


def ring_centers(num_modes: int = 8, radius: float = 2.0) -> np.ndarray:
    """Centres of M modes evenly spaced on a circle: c_m = radius (cos 2 pi m / M,
    sin 2 pi m / M). Returns [M, 2] float32."""
    if num_modes < 1:
        raise ValueError(f"num_modes must be >= 1, got {num_modes}")
    angles = 2 * np.pi * np.arange(num_modes) / num_modes
    return (radius * np.stack([np.cos(angles), np.sin(angles)], -1)).astype(np.float32)


def ring_of_gaussians(n: int, *, seed: int, num_modes: int = 8, radius: float = 2.0,
                      std: float = 0.1, weights: Sequence[float] | None = None) -> Points:
    """n draws from the mixture sum_m w_m N(c_m, std^2 I) with centres `ring_centers`.

    Args:
      n: number of points.
      seed: the data seed (numpy Generator).
      num_modes: M. radius: the circle's radius. std: each component's standard deviation.
      weights: [M] mixture weights (normalised; default uniform), e.g. imbalanced modes to test
        whether a method keeps the rare ones.

    Returns:
      Points(points [n, 2] float32, modes [n] int32 in [0, M)).
    """
    if n < 1 or std <= 0:
        raise ValueError(f"need n >= 1 and std > 0, got n={n}, std={std}")
    w = np.full(num_modes, 1.0 / num_modes) if weights is None else np.asarray(weights, float)
    if w.shape != (num_modes,) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be {num_modes} non-negative numbers, got {weights}")
    rng = np.random.default_rng(seed)
    modes = rng.choice(num_modes, size=n, p=w / w.sum()).astype(np.int32)
    centers = ring_centers(num_modes, radius)
    points = centers[modes] + std * rng.standard_normal((n, 2))
    return Points(points.astype(np.float32), modes)


def eight_gaussians(n: int, *, seed: int, radius: float = 2.0, std: float = 0.1) -> Points:
    """The "8 gaussians" mixture: `ring_of_gaussians` with 8 equal modes."""
    return ring_of_gaussians(n, seed=seed, num_modes=8, radius=radius, std=std)


def assign_modes(points: np.ndarray, centers: np.ndarray, *,
                 max_distance: float | None = None) -> np.ndarray:
    """The nearest centre of every point, or -1 if it is further than `max_distance` from all.

    Args:
      points: [N, 2]. centers: [M, 2]. max_distance: None (always the nearest) or r > 0.

    Returns:
      [N] int32 mode ids in [-1, M).
    """
    points, centers = np.asarray(points, np.float64), np.asarray(centers, np.float64)
    dist = np.linalg.norm(points[:, None, :] - centers[None, :, :], axis=-1)
    ids = dist.argmin(-1).astype(np.int32)
    if max_distance is not None:
        ids = np.where(dist.min(-1) <= max_distance, ids, -1).astype(np.int32)
    return ids


class ModeStats(NamedTuple):
    """Mode statistics of a sample set.

    Attributes:
      counts: [M] int number of samples assigned to each mode.
      covered: number of modes holding at least `min_count` samples.
      on_mode: fraction of samples within the radius of some mode (not -1).
    """

    counts: np.ndarray
    covered: int
    on_mode: float


def mode_stats(mode_ids: np.ndarray, num_modes: int, *, min_count: int = 1) -> ModeStats:
    """Counts, coverage and on-mode fraction of `assign_modes` output [N] (ids -1 off-mode)."""
    ids = np.asarray(mode_ids)
    counts = np.bincount(ids[ids >= 0], minlength=num_modes)[:num_modes]
    return ModeStats(counts, int((counts >= min_count).sum()), float((ids >= 0).mean()))


class PointSplits(NamedTuple):
    train: Points
    validation: Points
    test: Points


def point_splits(seed: int, sizes: tuple[int, int, int] = (4096, 1024, 1024), **mixture
                 ) -> PointSplits:
    """Train / validation / test point sets of experiment seed `seed` from disjoint data seeds
    (`split_seeds`); `mixture` is passed to `ring_of_gaussians` (num_modes, radius, std,
    weights)."""
    seeds = split_seeds(seed)
    return PointSplits(*(ring_of_gaussians(n, seed=s, **mixture) for n, s in zip(sizes, seeds)))


class Digits(NamedTuple):
    """Images [N, 8, 8, 1] float32 in [-1, 1] and labels [N] int32 in 0..9."""

    images: np.ndarray
    labels: np.ndarray


def load_digits_8x8() -> Digits:
    """scikit-learn's bundled digits (1,797 images; Alpaydin & Kaynak 1998) as [N, 8, 8, 1]
    float32 in [-1, 1] (pixel / 8 - 1) with labels; no network."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (np.asarray(data.images, np.float32) / 8.0 - 1.0)[..., None]
    return Digits(images, np.asarray(data.target, np.int32))


class DigitSplits(NamedTuple):
    train: Digits
    validation: Digits
    test: Digits


def digit_splits(seed: int, fractions: tuple[float, float] = (0.1, 0.1)) -> DigitSplits:
    """A disjoint, label-stratified train / validation / test partition of the digits.

    Within each label the images are permuted by `numpy.random.default_rng(seed)`; the first
    round(f_val n_label) go to validation, the next round(f_test n_label) to test, the rest to
    train. Each split is then ordered by original index.

    Args:
      seed: the split seed (an experiment seed: the same seed gives the same split).
      fractions: (validation, test) fractions, each in (0, 1), summing to < 1.
    """
    f_val, f_test = fractions
    if not (0 < f_val < 1 and 0 < f_test < 1 and f_val + f_test < 1):
        raise ValueError(f"fractions must be two numbers in (0, 1) summing to < 1, got "
                         f"{fractions}")
    data = load_digits_8x8()
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in np.unique(data.labels):
        idx = rng.permutation(np.flatnonzero(data.labels == label))
        n_val, n_test = round(f_val * len(idx)), round(f_test * len(idx))
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val:n_val + n_test])
        parts[0].append(idx[n_val + n_test:])
    take = [np.sort(np.concatenate(p)) for p in parts]
    return DigitSplits(*(Digits(data.images[i], data.labels[i]) for i in take))
