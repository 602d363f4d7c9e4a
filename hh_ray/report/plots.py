"""PNG plots from a run's files (matplotlib, headless)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hh_ray.algo.analysis import LinearFit  # noqa: E402
from hh_ray.files import write_bytes_atomic  # noqa: E402


def _finish(fig, ax, out: str | Path, xlabel: str, ylabel: str, title: str, legend: int = 0,
            grid: str = "both") -> Path:
    """Labels, grid ("" = none), legend at that font size (0 = none); then write the PNG atomically (a reader
    never sees half a file) and free the figure."""
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if grid:
        ax.grid(alpha=0.3, axis=grid)
    if legend:
        ax.legend(fontsize=legend)
    fig.tight_layout()
    out = Path(out)
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    return write_bytes_atomic(out, png.getvalue())


def reliability_diagram(table: list[dict], ece: float, out: str | Path, title: str = "PM calibration") -> Path:
    """The paper's calibration figure: observed frequency that the option wins vs the PM's probability."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    mids = [(b["lo"] + b["hi"]) / 2 for b in table if b["count"]]
    acc = [b["acc"] for b in table if b["count"]]
    conf = [b["conf"] for b in table if b["count"]]
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.bar(mids, acc, width=1 / len(table), alpha=0.35, edgecolor="k", label="observed (bin)")
    ax.plot(conf, acc, "o-", color="C3", label="PM")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    return _finish(fig, ax, out, "PM probability that the option is preferred", "frequency it was preferred",
                   f"{title} (ECE {ece:.3f})", grid="")


def line_plot(xs, series: dict[str, list], xlabel: str, ylabel: str, title: str, out: str | Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, ys in series.items():
        ax.plot(xs, ys, marker=".", label=name)
    return _finish(fig, ax, out, xlabel, ylabel, title, legend=8 if len(series) > 1 else 0)


def score_vs_sqrt_kl(sqrt_kl: list[float], score: list[float], steps: list[int], out: str | Path,
                     fits: dict[str, LinearFit] | None = None, curves: dict[str, tuple[list, list]] | None = None,
                     divergence_x: float | None = None, title: str = "PM score vs sqrt(KL)",
                     points_label: str = "PPO (train PM)", color_label: str = "PPO step") -> Path:
    """Bai et al.'s view of PPO: PM score against sqrt(KL(policy || initial policy)), colored by step.

    Optional: `fits` are least-squares lines (label -> fit) drawn over the plotted x range; `curves` are more
    series on the same axes (label -> (sqrt KL, score)): the test PM's scores, best-of-N; `divergence_x`
    marks where the train-PM and test-PM curves part ways.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.3), dpi=110)
    sc = ax.scatter(sqrt_kl, score, c=steps, cmap="viridis", zorder=3, label=points_label if curves else None)
    ax.plot(sqrt_kl, score, color="grey", alpha=0.4)
    fig.colorbar(sc, ax=ax, label=color_label)
    xs_all = list(sqrt_kl) + [x for xs, _ in (curves or {}).values() for x in xs]
    for i, (name, (xs, ys)) in enumerate((curves or {}).items()):
        ax.plot(xs, ys, "s--" if "best-of" in name else "^-", color=f"C{i + 1}", label=name, alpha=0.85)
    for i, (name, f) in enumerate((fits or {}).items()):
        lo, hi = min(xs_all, default=0.0), max(xs_all, default=1.0)
        ax.plot([lo, hi], [f.slope * lo + f.intercept, f.slope * hi + f.intercept], ":", color=f"C{i + 5}",
                label=f"{name}: {f.slope:+.2f} x {f.intercept:+.2f} (R^2 {f.r2:.2f})")
    if divergence_x is not None:
        ax.axvline(divergence_x, color="C3", alpha=0.6, label="train/test PM part ways")
    return _finish(fig, ax, out, "sqrt(KL(policy || initial policy))", "PM score (normalized)", title,
                   legend=7 if fits or curves or divergence_x is not None else 0)


def elo_by_round(rounds: list[int], elo: list[float], lo: list[float], hi: list[float], out: str | Path,
                 title: str = "Elo by round") -> Path:
    """Elo of the policy after each online round, with its bootstrap interval (relative to the anchor)."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    yerr = [[e - a for e, a in zip(elo, lo)], [b - e for e, b in zip(elo, hi)]]
    ax.errorbar(rounds, elo, yerr=yerr, fmt="o-", capsize=4, color="C0")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(rounds)
    return _finish(fig, ax, out, "round (policy version)", "Elo", title)


def tradeoff_plane(labels: list[str], helpful: list[float], harmless: list[float], out: str | Path,
                   xlabel: str, ylabel: str, baselines: dict[str, tuple[float, float]] | None = None,
                   helpful_err: list[float] | None = None, harmless_err: list[float] | None = None,
                   title: str = "Helpfulness vs harmlessness") -> Path:
    """One point per model (PM or policy) in the helpful/harmless plane; baselines as dashed lines.

    `baselines` maps a name to (helpful value, harmless value); NaN leaves that axis' line out.
    """
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=110)
    ax.errorbar(helpful, harmless, xerr=helpful_err, yerr=harmless_err, fmt="none", ecolor="grey", alpha=0.6)
    ax.scatter(helpful, harmless, c=range(len(labels)), cmap="plasma", zorder=3)
    for x, y, name in zip(helpful, harmless, labels):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for i, (name, (bx, by)) in enumerate((baselines or {}).items()):
        if bx == bx:
            ax.axvline(bx, ls="--", color=f"C{i}", alpha=0.6, label=name)
        if by == by:
            ax.axhline(by, ls="--", color=f"C{i}", alpha=0.6, label=None if bx == bx else name)
    return _finish(fig, ax, out, xlabel, ylabel, title, legend=7 if baselines else 0)


def before_after_bars(names: list[str], before: list[float], after: list[float], before_err: list[float],
                      after_err: list[float], out: str | Path, ylabel: str, title: str,
                      labels: tuple[str, str] = ("before", "after")) -> Path:
    """Paired bars per name (before and after, or two scorers), with standard-error whiskers."""
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(names) + 2), 4), dpi=110)
    xs = list(range(len(names)))
    ax.bar([x - 0.2 for x in xs], before, 0.4, yerr=before_err, capsize=3, label=labels[0])
    ax.bar([x + 0.2 for x in xs], after, 0.4, yerr=after_err, capsize=3, label=labels[1])
    ax.set_xticks(xs, names, rotation=20, fontsize=8)
    return _finish(fig, ax, out, "", ylabel, title, legend=8, grid="y")


def histograms(series: dict[str, list[float]], out: str | Path, xlabel: str, title: str, bins: int = 30) -> Path:
    """Overlaid normalized histograms, one per named sample (e.g. OOD distances of in- and out-of-distribution)."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, xs in series.items():
        ax.hist(xs, bins=bins, alpha=0.5, density=True, label=name)
    return _finish(fig, ax, out, xlabel, "density", title, legend=8, grid="")
