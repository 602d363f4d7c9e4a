"""PPO math as small pure tensor functions (no Ray, no models, no files).

Shapes: [batch, T] over response tokens, with `mask` 1 on real response tokens and 0 on padding. Sums are
returned next to counts where a caller shards a batch across ranks and must normalize globally.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def pad_ragged(rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rows of unequal length (float32 arrays, or lists) -> left-aligned zero-padded [B, T] tensor and its
    0/1 mask."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    T = max(int(lengths.max()) if len(rows) else 1, 1)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    out = torch.zeros(len(rows), T)
    if mask.any():  # a boolean mask fills row by row, left to right: the rows' concatenation, in order
        out[mask] = torch.from_numpy(np.concatenate([np.asarray(r, dtype=np.float32) for r in rows]))
    return out, mask.float()


def unpad(padded: torch.Tensor, lengths: list[int]) -> list[np.ndarray]:
    """The inverse of `pad_ragged`: one float32 array per row, its first `lengths[i]` entries. This is what per-token
    data travel as between the driver and the workers (Ray ships numpy arrays as buffers, not as Python floats)."""
    rows = padded.detach().float().cpu().numpy()
    return [rows[i, :n].copy() for i, n in enumerate(lengths)]


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalize to unit variance over the masked entries (and zero mean unless `shift_mean` is False)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token log ratio log pi(a) - log pi_ref(a): unbiased for KL(pi || ref) under samples from pi."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 = r - 1 - log r with r = pi_ref / pi: unbiased, lower variance, never negative."""
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r


KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    return KL_ESTIMATORS[estimator](logp, ref_logp)


def token_rewards(score: torch.Tensor, kl: torch.Tensor, kl_coef: float, mask: torch.Tensor) -> torch.Tensor:
    """r_t = -kl_coef * KL_t on every response token, plus the PM score on the last one (Bai et al. eq. 1)."""
    rewards = -kl_coef * kl * mask
    last = mask.sum(dim=1).long() - 1  # index of each row's final response token (responses are left-aligned)
    rows = torch.arange(mask.shape[0])
    has = last >= 0
    rewards[rows[has], last[has]] += score[has]
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over left-aligned response tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t (V past the end = 0); A_t = delta_t + gamma * lam * A_{t+1}.
    Returns (advantages, returns = advantages + values), zero on padding.
    """
    T = rewards.shape[1]
    values = values * mask  # so that past a row's end V = 0 and the recursion stays 0 through padding
    rewards = rewards * mask
    adv = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        running = delta + gamma * lam * running
        adv[:, t] = running
    adv = adv * mask
    return adv, (adv + values) * mask


BEHAVIOUR_WEIGHT_CAP = 5.0


def behaviour_weights(proximal_logp: torch.Tensor, behaviour_logp: torch.Tensor,
                      cap: float = BEHAVIOUR_WEIGHT_CAP) -> torch.Tensor:
    """Decoupled PPO (Hilton et al. 2021, as AReaL trains asynchronously): a token sampled by an older behaviour
    policy counts pi_prox / pi_behaviour in the loss, truncated at `cap` as IMPALA truncates its weights, while
    the ratio is clipped around the proximal policy pi_prox (the trainer's weights before this update)."""
    return torch.exp(proximal_logp - behaviour_logp).clamp(max=cap)


def clipped_policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, summed over masked tokens: sum w max(-A r, -A clip(r, 1-e, 1+e)), w = 1 unless
    `weights` (decoupled PPO's `behaviour_weights`) are given.

    Returns (loss_sum, stats) where stats hold sums of clipped-token counts and of the approx KL
    0.5 * (log r)^2, so that callers normalize by the global token count.
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = torch.maximum(loss1, loss2) if weights is None else torch.maximum(loss1, loss2) * weights
    stats = {
        "clipped_tokens": masked_sum((loss2 > loss1).float(), mask).detach(),
        "approx_kl_sum": masked_sum(0.5 * log_ratio.detach() ** 2, mask),
    }
    return masked_sum(loss, mask), stats


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss summed over masked tokens: 0.5 * max((V - R)^2, (clip(V, V_old +- e) - R)^2)."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    l1 = (values - returns) ** 2
    l2 = (clipped - returns) ** 2
    loss = 0.5 * torch.maximum(l1, l2)
    return masked_sum(loss, mask), {"value_clipped_tokens": masked_sum((l2 > l1).float(), mask).detach()}


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, entropy: str = "none"
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(logits)[token] at each position, and the softmax's entropy from the same log-softmax.

    `entropy`: "none"; "metric" (computed without gradient: a loss that does not use it pays no backward over the
    vocabulary); "loss" (differentiable, for an entropy bonus). One float32 log-softmax serves both outputs.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if entropy == "none":
        return picked, None
    src = logp if entropy == "loss" else logp.detach()
    return picked, -(src.exp() * src).sum(-1)


class KLController:
    """lambda_KL: constant (the paper's setting), or with `target` > 0 adaptive as in Ziegler et al. (2019):
    kl_coef moves so that the measured KL tracks `target` (proportional control)."""

    def __init__(self, coef: float, target: float = 0.0, horizon: int = 10000):
        self.coef, self.target, self.horizon = coef, target, horizon

    def update(self, measured_kl: float, n_samples: int) -> float:
        if self.target > 0:
            error = max(-0.2, min(0.2, measured_kl / self.target - 1.0))
            self.coef *= 1.0 + error * n_samples / self.horizon
        return self.coef

    def state_dict(self) -> dict:
        return {"coef": self.coef} | ({"target": self.target, "horizon": self.horizon} if self.target > 0 else {})

    def load_state_dict(self, state: dict) -> None:
        self.coef = state["coef"]
        if self.target > 0:
            self.target, self.horizon = state["target"], state["horizon"]


def sqrt_kl(kl: float) -> float:
    """The paper plots PM score against sqrt(KL); negative k1 estimates clip to 0."""
    return math.sqrt(max(kl, 0.0))


def logprob_gap(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    """Mean and max |a - b| over every token: how far the engine's sampling logprobs are from the trainer's."""
    (x, mask), (y, _) = pad_ragged(a), pad_ragged(b)
    diff = (x - y).abs() * mask
    return float(diff.sum() / mask.sum().clamp_min(1)), float(diff.max()) if diff.numel() else 0.0
