"""PNG plots from a run's files (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def reliability_diagram(table: list[dict], ece: float, out: str | Path, title: str = "PM calibration") -> Path:
    """The paper's calibration figure: observed frequency that the option wins vs the PM's probability."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    mids = [(b["lo"] + b["hi"]) / 2 for b in table if b["count"]]
    acc = [b["acc"] for b in table if b["count"]]
    conf = [b["conf"] for b in table if b["count"]]
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.bar(mids, acc, width=1 / len(table), alpha=0.35, edgecolor="k", label="observed (bin)")
    ax.plot(conf, acc, "o-", color="C3", label="PM")
    ax.set_xlabel("PM probability that the option is preferred")
    ax.set_ylabel("frequency it was preferred")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{title} (ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def line_plot(xs, series: dict[str, list], xlabel: str, ylabel: str, title: str, out: str | Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, ys in series.items():
        ax.plot(xs, ys, marker=".", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def score_vs_sqrt_kl(sqrt_kl: list[float], score: list[float], steps: list[int], out: str | Path) -> Path:
    """Bai et al.'s view of PPO: PM score against sqrt(KL(policy || initial policy)), colored by step."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    sc = ax.scatter(sqrt_kl, score, c=steps, cmap="viridis")
    ax.plot(sqrt_kl, score, color="grey", alpha=0.4)
    fig.colorbar(sc, ax=ax, label="PPO step")
    ax.set_xlabel("sqrt(KL(policy || initial policy))")
    ax.set_ylabel("PM score (normalized)")
    ax.set_title("PM score vs sqrt(KL)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
