"""Diffusion testbeds: the 8-Gaussian ring with mode ids, mode assignment and statistics, the
8x8 digits in [-1, 1], and deterministic, disjoint splits."""

import numpy as np
import pytest

from alignax.tasks import diffusion_data as dd


def test_ring_centers_and_mixture_moments():
    c = dd.ring_centers(8, radius=2.0)
    assert c.shape == (8, 2) and c.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 2.0, rtol=1e-6)
    np.testing.assert_allclose(c[0], [2.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(c[2], [0.0, 2.0], atol=1e-6)  # counter-clockwise by 2 pi / 8
    pts = dd.eight_gaussians(8000, seed=0, std=0.1)
    assert pts.points.shape == (8000, 2) and pts.points.dtype == np.float32
    assert pts.modes.dtype == np.int32 and set(np.unique(pts.modes)) == set(range(8))
    # every component: mean at its centre, std 0.1 per coordinate
    for m in range(8):
        x = pts.points[pts.modes == m]
        np.testing.assert_allclose(x.mean(0), c[m], atol=4 * 0.1 / np.sqrt(len(x)))
        np.testing.assert_allclose(x.std(0), 0.1, rtol=4 / np.sqrt(2 * len(x)))
    # mixture weights are respected (3 sigma of a binomial)
    counts = np.bincount(pts.modes, minlength=8)
    np.testing.assert_allclose(counts / 8000, 1 / 8, atol=3 * np.sqrt(1 / 8 * 7 / 8 / 8000))


def test_weighted_mixture_and_determinism():
    w = [4, 1, 1, 1, 0, 0, 0, 1]
    pts = dd.ring_of_gaussians(4000, seed=3, weights=w)
    counts = np.bincount(pts.modes, minlength=8)
    assert counts[4:7].sum() == 0
    np.testing.assert_allclose(counts[0] / 4000, 0.5, atol=0.03)
    again = dd.ring_of_gaussians(4000, seed=3, weights=w)
    np.testing.assert_array_equal(pts.points, again.points)
    assert not np.array_equal(pts.points, dd.ring_of_gaussians(4000, seed=4, weights=w).points)
    with pytest.raises(ValueError, match="weights"):
        dd.ring_of_gaussians(10, seed=0, weights=[1, 2])
    with pytest.raises(ValueError, match="std"):
        dd.ring_of_gaussians(10, seed=0, std=0.0)


def test_assign_modes_recovers_the_drawn_mode_and_flags_off_mode_points():
    pts = dd.eight_gaussians(2000, seed=1, std=0.1)
    centers = dd.ring_centers()
    # adjacent centres are 2 * 2 sin(pi / 8) = 1.53 apart, 7.7 sigma from the midpoint: exact
    np.testing.assert_array_equal(dd.assign_modes(pts.points, centers), pts.modes)
    probe = np.array([[2.0, 0.05], [0.0, 0.0], [0.0, 2.6], [-1.45, -1.3]])
    np.testing.assert_array_equal(dd.assign_modes(probe, centers, max_distance=0.5),
                                  [0, -1, -1, 5])
    np.testing.assert_array_equal(dd.assign_modes(probe, centers)[[0, 2, 3]], [0, 2, 5])
    stats = dd.mode_stats(np.array([0, 0, 1, -1, 5, 5, 5]), 8, min_count=2)
    np.testing.assert_array_equal(stats.counts, [2, 1, 0, 0, 0, 3, 0, 0])
    assert stats.covered == 2 and stats.on_mode == pytest.approx(6 / 7)


def test_point_splits_use_disjoint_data_seeds():
    a = dd.point_splits(0, sizes=(64, 32, 32))
    b = dd.point_splits(1, sizes=(64, 32, 32))
    assert a.train.points.shape == (64, 2) and a.test.points.shape == (32, 2)
    np.testing.assert_array_equal(a.train.points, dd.ring_of_gaussians(64, seed=0).points)
    np.testing.assert_array_equal(a.validation.points, dd.ring_of_gaussians(32, seed=1).points)
    np.testing.assert_array_equal(b.test.points, dd.ring_of_gaussians(32, seed=5).points)
    np.testing.assert_array_equal(dd.point_splits(0, sizes=(64, 32, 32)).test.points,
                                  a.test.points)
    pooled = np.concatenate([a.train.points, a.validation.points, a.test.points])
    assert len(np.unique(pooled, axis=0)) == len(pooled)


def test_digits_are_scaled_and_split_disjointly_by_seed():
    from sklearn.datasets import load_digits

    d = dd.load_digits_8x8()
    raw = load_digits()
    assert d.images.shape == (1797, 8, 8, 1) and d.images.dtype == np.float32
    assert d.images.min() == -1.0 and d.images.max() == 1.0
    np.testing.assert_allclose(d.images[5, :, :, 0], raw.images[5] / 8 - 1)
    np.testing.assert_array_equal(d.labels, raw.target)

    s = dd.digit_splits(0)
    sizes = [len(part.labels) for part in s]
    assert sum(sizes) == 1797 and 170 <= sizes[1] <= 190 and 170 <= sizes[2] <= 190
    # disjoint and complete: the 1,797 images are distinct, so each row names its index
    flat = d.images.reshape(1797, -1)
    index = {row.tobytes(): i for i, row in enumerate(flat)}
    assert len(index) == 1797
    ids = [{index[r.tobytes()] for r in part.images.reshape(len(part.labels), -1)} for part in s]
    assert set().union(*ids) == set(range(1797)) and sum(len(i) for i in ids) == 1797
    for part, i in zip(s, ids):
        np.testing.assert_array_equal(part.labels, d.labels[sorted(i)])
    for part in s:  # stratified: every label in every split
        assert set(np.unique(part.labels)) == set(range(10))
    again, other = dd.digit_splits(0), dd.digit_splits(1)
    np.testing.assert_array_equal(again.test.images, s.test.images)
    assert not np.array_equal(other.test.images, s.test.images)
    with pytest.raises(ValueError, match="fractions"):
        dd.digit_splits(0, fractions=(0.6, 0.5))

