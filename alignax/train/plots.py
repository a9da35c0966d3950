"""PNG plots of a run's metrics and of experiment-level curves.

Figures are drawn with `matplotlib.figure.Figure` and the Agg canvas directly, never through
pyplot, so plotting neither changes the backend of a user who already imported pyplot nor needs
a display.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_curves", "plot_metrics", "run_plots_enabled", "seed_mean_curve"]

_DEFAULT_GROUP = "metrics"
_MAX_COLS = 3


def run_plots_enabled() -> bool:
    """Whether training runs draw their per-run metric PNGs (`<run>/plots/`) at the end.

    On by default; the environment variable `ALIGNAX_RUN_PLOTS=0` turns them off (metrics.jsonl
    and TensorBoard still get every metric, and an experiment's own figures are still drawn).
    A figure of a dozen panels costs about a second of CPU, so a sweep of many short runs, or a
    test suite that runs hundreds of them, spends much of its time drawing PNGs no one opens.
    """
    value = os.environ.get("ALIGNAX_RUN_PLOTS", "1").strip().lower()
    if value not in ("0", "1", "false", "true", "no", "yes", "off", "on", ""):
        raise ValueError(f"ALIGNAX_RUN_PLOTS must be 0 or 1, got {value!r}")
    return value not in ("0", "false", "no", "off")


def _number(value: Any) -> float | None:
    """The value as a finite float, or None for non-numeric, bool and non-finite values."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("._")
    return name or "_"


def _new_figure(nrows: int, ncols: int, *, width: float = 4.5, height: float = 3.2,
                fixed_margins: bool = False) -> Figure:
    """A figure of nrows x ncols panels of width x height inches. `fixed_margins` places the
    panels with fixed margins sized for a title, tick labels and an x label, instead of
    matplotlib's constrained layout, which measures every text and takes about three quarters
    of the drawing time: the per-run metric plots use it, since every run draws them."""
    total_w, total_h = width * ncols, height * nrows
    fig = Figure(figsize=(total_w, total_h), layout=None if fixed_margins else "constrained")
    if fixed_margins:
        fig.subplots_adjust(left=0.75 / total_w, right=1 - 0.2 / total_w,
                            bottom=0.55 / total_h, top=1 - 0.35 / total_h,
                            wspace=0.9 / (width - 0.95), hspace=0.9 / (height - 0.9))
    FigureCanvasAgg(fig)
    return fig


def _series(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] | None
            ) -> dict[str, tuple[list[float], list[float]]]:
    """key -> (steps, values) of the finite numeric values, keys in order of first appearance."""
    wanted = None if keys is None else set(keys)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        step = _number(row.get("step"))
        if step is None:
            continue
        for key, value in row.items():
            if key == "step" or (wanted is not None and key not in wanted):
                continue
            y = _number(value)
            if y is None:
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(step)
            ys.append(y)
    if keys is not None:  # the caller's order
        series = {k: series[k] for k in keys if k in series}
    return series


def plot_metrics(metrics: Sequence[Mapping[str, Any]] | str | os.PathLike, out_dir: str,
                 *, keys: Sequence[str] | None = None, prefix: str = "") -> list[str]:
    """Writes one PNG per metric group, one subplot per metric, against the step.

    Metrics are grouped by the part of their name before the first "/": "train/loss" and
    "train/accuracy" go to `<prefix>train.png`, "eval/kl" to `<prefix>eval.png`; names without a
    "/" go to `<prefix>metrics.png`. Non-numeric values, bools and NaN/inf (stored as the strings
    "nan"/"inf"/"-inf" in metrics.jsonl) are skipped; a group with nothing to plot writes no file.

    Args:
      metrics: rows `{"step": int, name: value, ...}` or the path of a metrics.jsonl file.
      out_dir: folder for the PNGs (created if needed).
      keys: plot only these metric names (in this order); all of them by default.
      prefix: prepended to every file name (e.g. the variant's name and "_").

    Returns:
      The paths written, sorted by group name.
    """
    if isinstance(metrics, (str, os.PathLike)):
        from alignax.train.writers import read_metrics

        metrics = read_metrics(metrics)
    series = _series(metrics, keys)
    groups: dict[str, list[str]] = {}
    for key in series:
        group = key.split("/", 1)[0] if "/" in key else _DEFAULT_GROUP
        groups.setdefault(_safe_name(group), []).append(key)
    if not groups:
        return []
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for group in sorted(groups):
        names = groups[group]
        ncols = min(_MAX_COLS, len(names))
        nrows = math.ceil(len(names) / ncols)
        fig = _new_figure(nrows, ncols, fixed_margins=True)
        for i, name in enumerate(names):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            steps, values = (np.asarray(a) for a in series[name])
            order = np.argsort(steps, kind="stable")
            ax.plot(steps[order], values[order], marker="o" if len(steps) <= 30 else None,
                    markersize=3, linewidth=1.2)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
        path = os.path.join(out_dir, f"{prefix}{group}.png")
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


def plot_curves(curves: Mapping[str, tuple[Any, Any] | tuple[Any, Any, Any]], path: str, *,
                title: str, xlabel: str, ylabel: str, xscale: str = "linear") -> str:
    """Draws labelled curves on one axis, e.g. gold reward vs KL for several variants.

    Args:
      curves: label -> (x, y), or (x, y, y_std) to shade y +- y_std; x, y, y_std are [N]
        array-likes. Points with a non-finite x or y are dropped.
      path: the PNG to write (its folder is created if needed).
      title: the figure title.
      xlabel: the x axis label.
      ylabel: the y axis label.
      xscale: the x axis scale, "linear" or "log" (x values must then be positive).

    Returns:
      `path`.

    Raises:
      ValueError: a curve's arrays are not 1-D of equal length, or an unknown `xscale`.
    """
    if xscale not in ("linear", "log"):
        raise ValueError(f"xscale must be 'linear' or 'log', got {xscale!r}")
    fig = _new_figure(1, 1, width=6.0, height=4.2)
    ax = fig.add_subplot(1, 1, 1)
    for label, curve in curves.items():
        if len(curve) not in (2, 3):
            raise ValueError(f"curve {label!r} must be (x, y) or (x, y, y_std)")
        arrays = [np.asarray(a, dtype=np.float64) for a in curve]
        if any(a.ndim != 1 or a.shape != arrays[0].shape for a in arrays):
            raise ValueError(
                f"curve {label!r}: x, y (and y_std) must be 1-D of equal length, got shapes "
                f"{[a.shape for a in arrays]}"
            )
        keep = np.isfinite(arrays[0]) & np.isfinite(arrays[1])
        x, y = arrays[0][keep], arrays[1][keep]
        (line,) = ax.plot(x, y, marker="o" if len(x) <= 30 else None, markersize=4,
                          linewidth=1.5, label=str(label))
        if len(arrays) == 3:
            std = np.nan_to_num(arrays[2][keep])
            ax.fill_between(x, y - std, y + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale(xscale)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize=9)
    return _save(fig, path)


def plot_variant_bars(results: Mapping[str, Any], metrics: Sequence[tuple[str, str]], path: str,
                      *, title: str, variants: Sequence[str] | None = None,
                      zoom: bool = False) -> str:
    """One panel per metric, one bar per variant: mean +- std over seeds of an experiment.

    Args:
      results: `alignax.experiment` results, variant -> {"metrics": name -> {"mean", "std"}}.
      metrics: (metric name, y-axis label) per panel.
      path: the PNG to write (its folder is created if needed).
      title: the figure title.
      variants: the variants to show, in order (default: all, in `results` order).
      zoom: start each y axis just below the lowest bar (for accuracies close together).

    Returns:
      `path`.
    """
    names = [v for v in (variants if variants is not None else list(results)) if v in results]
    fig = _new_figure(1, len(metrics), width=max(4.5, 0.9 * len(names) + 1.5), height=3.6)
    for i, (metric, label) in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        means = [results[v]["metrics"][metric]["mean"] for v in names]
        stds = [results[v]["metrics"][metric]["std"] for v in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=15)
        ax.set_ylabel(label)
        if zoom and means:
            ax.set_ylim(min(means) - 0.05, min(1.0, max(means) + 0.03))
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_grouped_bars(groups: Sequence[str], series: Mapping[str, tuple[Any, Any]], path: str,
                      *, title: str, ylabel: str,
                      ylim: tuple[float, float] | None = None) -> str:
    """Grouped bars on one axis: G groups on the x axis, one bar per series in each group.

    E.g. the attribute gains (groups) of two policies (series), or the per-task accuracy (groups)
    of several reward models (series); bars show mean +- std.

    Args:
      groups: [G] the x-axis labels.
      series: label -> (means [G], stds [G]) array-likes; one colour per series, a legend when
        there is more than one.
      path: the PNG to write (its folder is created if needed).
      title: the figure title.
      ylabel: the y axis label.
      ylim: optional (low, high) of the y axis.

    Returns:
      `path`.

    Raises:
      ValueError: a series' means or stds are not 1-D of length G.
    """
    g = len(groups)
    arrays = {}
    for label, (means, stds) in series.items():
        means, stds = np.asarray(means, np.float64), np.asarray(stds, np.float64)
        if means.shape != (g,) or stds.shape != (g,):
            raise ValueError(f"series {label!r}: means and stds must have shape ({g},) like "
                             f"groups, got {means.shape} and {stds.shape}")
        arrays[label] = (means, stds)
    fig = _new_figure(1, 1, width=max(4.5, 0.6 * g * max(1, len(arrays)) + 2.0), height=3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(arrays))
    for i, (label, (means, stds)) in enumerate(arrays.items()):
        offset = (i - (len(arrays) - 1) / 2) * width
        ax.bar(np.arange(g) + offset, means, width, yerr=stds, capsize=3, label=str(label))
    ax.set_xticks(range(g), [str(x) for x in groups])
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if any((m < 0).any() for m, _ in arrays.values()):
        ax.axhline(0.0, color="k", linewidth=0.5)
    ax.grid(True, axis="y", alpha=0.3)
    if len(arrays) > 1:
        ax.legend(fontsize=9)
    ax.set_title(title)
    return _save(fig, path)


def plot_scatter(groups: Mapping[str, tuple[Any, Any]], path: str, *, title: str, xlabel: str,
                 ylabel: str, hline: float | None = None) -> str:
    """Point clouds on one axis, one colour per group, e.g. an estimate against its gold value
    for two kinds of examples.

    Args:
      groups: label -> (x, y), [N] array-likes (N may differ between groups). Points with a
        non-finite x or y are dropped.
      path: the PNG to write (its folder is created if needed).
      title: the figure title.
      xlabel: the x axis label.
      ylabel: the y axis label.
      hline: optional y of a thin horizontal reference line (e.g. 0).

    Returns:
      `path`.

    Raises:
      ValueError: a group's x and y are not 1-D of equal length.
    """
    fig = _new_figure(1, 1, width=5.5, height=4.2)
    ax = fig.add_subplot(1, 1, 1)
    for label, (x, y) in groups.items():
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.ndim != 1 or x.shape != y.shape:
            raise ValueError(f"group {label!r}: x and y must be 1-D of equal length, got shapes "
                             f"{x.shape} and {y.shape}")
        keep = np.isfinite(x) & np.isfinite(y)
        ax.scatter(x[keep], y[keep], s=3, alpha=0.4, label=str(label))
    if hline is not None:
        ax.axhline(float(hline), color="k", linewidth=0.5)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize=9, markerscale=3)
    return _save(fig, path)


def _save(fig, path: str) -> str:
    """Writes `fig` as a PNG at `path`, creating its folder; returns `path`."""
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def seed_mean_curve(metrics_path: str, key: str, seeds) -> tuple | None:
    """(x, mean, std) over `seeds` of a `fit_small` run's per-seed metric `seed_<s>/<key>`
    along its logged rows (x = 1, 2, ...), for `plot_curves`; `seeds` are the run's row ids
    (e.g. one chosen configuration per seed). A row without the metric counts as missing (NaN,
    left out of the mean). None when the run has no metrics.jsonl (a variant not run)."""
    from alignax.train.writers import read_metrics

    if not os.path.exists(metrics_path):
        return None
    rows = read_metrics(metrics_path)
    ys = np.array([[row.get(f"seed_{s}/{key}", np.nan) for row in rows] for s in seeds],
                  np.float64)
    return list(range(1, len(rows) + 1)), np.nanmean(ys, 0), np.nanstd(ys, 0)

