"""Preference-model math: the pairwise loss and calibration (pure tensor functions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: float = 0.0, center_coef: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair loss -log sigmoid(r_c - r_r - margin) + center_coef * (r_c + r_r)^2, and correctness.

    The centering term keeps scores near 0 so that the PM's scale does not drift (its mean is not pinned
    by the pairwise loss alone). Returns (loss per pair, 1.0 where r_c > r_r).
    """
    diff = r_chosen - r_rejected
    loss = -F.logsigmoid(diff - margin)
    if center_coef:
        loss = loss + center_coef * (r_chosen + r_rejected) ** 2
    return loss, (diff > 0).float()


def expected_calibration_error(p_chosen: torch.Tensor, bins: int = 10) -> tuple[float, list[dict]]:
    """ECE of P(chosen) = sigmoid(r_c - r_r) against the human label, in `bins` equal-width bins.

    Each pair is counted from both sides (p for "chosen wins", 1 - p for "rejected wins"), as in the paper's
    calibration plot, so bins cover [0, 1] symmetrically. Returns (ece, per-bin {lo, hi, count, conf, acc}).
    """
    probs = torch.cat([p_chosen, 1.0 - p_chosen]).double()
    labels = torch.cat([torch.ones_like(p_chosen), torch.zeros_like(p_chosen)]).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    idx = torch.clamp(torch.bucketize(probs, edges[1:-1], right=False), 0, bins - 1)
    ece = 0.0
    table = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        conf = float(probs[sel].mean()) if n else float("nan")
        acc = float(labels[sel].mean()) if n else float("nan")
        if n:
            ece += n / len(probs) * abs(conf - acc)
        table.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n, "conf": conf, "acc": acc})
    return ece, table


def pm_metrics(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, subsets: list[str], len_chosen: list[int],
    len_rejected: list[int], bins: int = 10,
) -> dict:
    """Accuracy overall and per subset, ECE, and the "longer response wins" baseline (ties count half)."""
    correct = (r_chosen > r_rejected).float()
    lc, lr = torch.tensor(len_chosen, dtype=torch.float64), torch.tensor(len_rejected, dtype=torch.float64)
    longer = (lc > lr).double() + 0.5 * (lc == lr).double()
    ece, table = expected_calibration_error(torch.sigmoid(r_chosen - r_rejected), bins)
    per_subset: dict[str, dict] = {}
    for name in sorted(set(subsets)):
        sel = torch.tensor([s == name for s in subsets])
        per_subset[name] = {
            "accuracy": float(correct[sel].mean()),
            "pairs": int(sel.sum()),
            "length_baseline_accuracy": float(longer[sel].mean()),
        }
    scores = torch.cat([r_chosen, r_rejected])
    return {
        "accuracy": float(correct.mean()),
        "pairs": int(len(correct)),
        "per_subset": per_subset,
        "ece": ece,
        "length_baseline_accuracy": float(longer.mean()),
        "score_mean": float(scores.mean()),
        "score_std": float(scores.std()) if len(scores) > 1 else 1.0,
        "calibration": table,
    }
