"""Plots: one PNG per metric group, valid files, pyplot left alone."""

import os
import sys

import numpy as np
import pytest

from alignax.train.plots import (plot_curves, plot_grouped_bars, plot_metrics, plot_scatter,
                                 plot_variant_bars)
from alignax.train.writers import MetricsWriter

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5000, (path, len(data))  # axes, ticks and a line, not an empty image
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return width, height


def _rows(n=20):
    rows = []
    for step in range(1, n + 1):
        rows.append({"step": step, "train/loss": 1.0 / step, "train/accuracy": 1 - 0.5 / step,
                     "lr": 1e-3, "variant": "dpo"})
        if step % 5 == 0:
            rows.append({"step": step, "eval/win_rate": step / n, "eval/kl": "nan" if step == 5
                         else 0.1 * step})
    return rows


def test_plot_metrics_groups_by_prefix(tmp_path):
    paths = plot_metrics(_rows(), tmp_path / "plots")
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["eval.png", "metrics.png", "train.png"]
    assert sorted(os.listdir(tmp_path / "plots")) == names
    sizes = {os.path.basename(p): _assert_png(p) for p in paths}
    # two subplots side by side in train.png and eval.png, one in metrics.png ("lr").
    assert sizes["train.png"][0] > sizes["metrics.png"][0]
    assert sizes["eval.png"] == sizes["train.png"]


def test_plot_metrics_from_a_jsonl_file_with_keys_prefix_and_skipped_values(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as w:
        for row in _rows():
            step = row.pop("step")
            w.write(step, row)
        w.write(21, {"train/loss": float("nan"), "only_nan": float("inf")})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 22, "train/lo')  # a killed run's partial line is ignored
    out = tmp_path / "plots"
    paths = plot_metrics(str(tmp_path / "metrics.jsonl"), str(out),
                         keys=["eval/kl", "train/loss", "only_nan", "variant", "missing"],
                         prefix="dpo_")
    # "only_nan" and "variant" have nothing numeric to plot: no metrics.png.
    assert sorted(os.path.basename(p) for p in paths) == ["dpo_eval.png", "dpo_train.png"]
    for p in paths:
        assert os.path.dirname(p) == str(out)
        _assert_png(p)


def test_plot_metrics_with_nothing_numeric_writes_nothing(tmp_path):
    assert plot_metrics([{"step": 1, "note": "x", "loss": "nan"}], tmp_path / "p") == []
    assert not os.path.exists(tmp_path / "p")


def test_plot_metrics_sanitises_group_names_and_many_subplots(tmp_path):
    rows = [{"step": s, **{f"a b/{i}": s * i for i in range(7)}} for s in range(3)]
    (path,) = plot_metrics(rows, tmp_path)
    assert os.path.basename(path) == "a_b.png"
    w, h = _assert_png(path)
    assert h > w / 3 * 2  # 7 subplots -> 3 rows of 3 columns


def test_plot_curves(tmp_path):
    kl = np.linspace(0, 10, 12)
    curves = {
        "dpo": (kl, np.sqrt(kl)),
        "ipo": (list(kl), list(0.8 * np.sqrt(kl)), list(0.1 + 0 * kl)),  # shaded +- std
        "with_nan": (kl, np.where(kl > 5, np.nan, kl / 5)),
    }
    path = str(tmp_path / "sub" / "gold_vs_kl.png")
    assert plot_curves(curves, path, title="Gold reward vs KL", xlabel="KL",
                       ylabel="gold reward") == path
    _assert_png(path)
    with pytest.raises(ValueError, match="'bad'"):
        plot_curves({"bad": (kl, kl[:3])}, path, title="t", xlabel="x", ylabel="y")


def test_plot_curves_on_a_log_x_axis(tmp_path):
    labels = np.array([0.5, 1, 2, 5, 10, 20, 50])
    path = str(tmp_path / "routing.png")
    linear = str(tmp_path / "routing_linear.png")
    curves = {"group 0": (labels, 0.85 + 0.08 * (1 - np.exp(-labels / 3)), 0.01 + 0 * labels),
              "baseline": (labels[[0, -1]], [0.5, 0.5])}
    assert plot_curves(curves, path, title="t", xlabel="labels", ylabel="accuracy",
                       xscale="log") == path
    plot_curves(curves, linear, title="t", xlabel="labels", ylabel="accuracy")
    _assert_png(path)
    with open(path, "rb") as f, open(linear, "rb") as g:
        assert f.read() != g.read()  # the scale changes the drawing
    with pytest.raises(ValueError, match="xscale must be"):
        plot_curves(curves, path, title="t", xlabel="x", ylabel="y", xscale="symlog")


def test_plotting_does_not_use_pyplot(tmp_path):
    had_pyplot = "matplotlib.pyplot" in sys.modules
    plot_metrics(_rows(3), tmp_path)
    plot_curves({"a": ([0, 1], [1, 2])}, str(tmp_path / "c.png"), title="t", xlabel="x",
                ylabel="y")
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot


def test_plot_variant_bars_one_panel_per_metric_in_the_given_order(tmp_path):
    results = {v: {"metrics": {"acc": {"mean": m, "std": 0.01}, "ece": {"mean": e, "std": 0.0}}}
               for v, m, e in (("bt", 0.8, 0.1), ("ours", 0.9, 0.05), ("other", 0.85, 0.2))}
    one = plot_variant_bars(results, [("acc", "accuracy")], str(tmp_path / "a" / "one.png"),
                            title="t", zoom=True)
    two = plot_variant_bars(results, [("acc", "accuracy"), ("ece", "ECE")],
                            str(tmp_path / "two.png"), title="t", variants=("ours", "bt", "gone"))
    w1, _ = _assert_png(one)
    w2, _ = _assert_png(two)
    assert w2 > w1  # two panels are wider than one
    with pytest.raises(KeyError):
        plot_variant_bars(results, [("missing", "x")], str(tmp_path / "x.png"), title="t")


def test_plot_grouped_bars_one_bar_per_series_in_each_group(tmp_path):
    groups = ["helpfulness", "length", "honesty"]
    series = {"base": ([1.6, 0.7, -0.1], [0.1, 0.05, 0.02]),
              "anti-length": (np.array([1.5, -0.8, 0.0]), np.zeros(3))}
    path = str(tmp_path / "sub" / "gains.png")
    assert plot_grouped_bars(groups, series, path, title="t", ylabel="gain") == path
    one = plot_grouped_bars(groups[:1], {"rm": ([0.9], [0.01])}, str(tmp_path / "one.png"),
                            title="t", ylabel="accuracy", ylim=(0.5, 1.0))
    w_many, _ = _assert_png(path)
    w_one, _ = _assert_png(one)
    assert w_many > w_one  # more groups x series are wider
    with pytest.raises(ValueError, match="'bad'"):
        plot_grouped_bars(groups, {"bad": ([1.0, 2.0], [0.0, 0.0])}, path, title="t",
                          ylabel="y")


def test_plot_scatter_groups_drop_non_finite_points_and_reject_ragged_input(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    groups = {"ordinary": (x, 2 * x + rng.normal(size=300)),
              "near-tie": (list(0.1 * x[:50]), list(np.where(x[:50] > 1, np.nan, x[:50])))}
    path = str(tmp_path / "sub" / "scatter.png")
    assert plot_scatter(groups, path, title="strength vs gold", xlabel="gold", ylabel="mu",
                        hline=0.0) == path
    _assert_png(path)
    with pytest.raises(ValueError, match="'bad'"):
        plot_scatter({"bad": (x, x[:3])}, path, title="t", xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match="'flat'"):
        plot_scatter({"flat": (x.reshape(30, 10), x.reshape(30, 10))}, path, title="t",
                     xlabel="x", ylabel="y")


def test_seed_mean_curve_reads_per_seed_metrics(tmp_path):
    from alignax.train.plots import seed_mean_curve

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5, "seed_0/eval/x": 1.0, "seed_1/eval/x": 3.0}\n'
                    '{"step": 10, "seed_0/eval/x": 2.0, "seed_1/eval/x": 2.0}\n')
    x, mean, std = seed_mean_curve(str(path), "eval/x", [0, 1])
    assert x == [1, 2]
    np.testing.assert_allclose(mean, [2.0, 2.0])
    np.testing.assert_allclose(std, [1.0, 0.0])
    assert seed_mean_curve(str(tmp_path / "none.jsonl"), "eval/x", [0]) is None
