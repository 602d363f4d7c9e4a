"""Advantage estimators, registered by name, and the step that turns a scored batch into advantages.

Every estimator sees the same shaped per-token rewards (the PM score, less a truncation penalty, on the last
token; -kl_coef * KL_t on every token: Bai et al. eq. 1) and differs only in how it credits them:

- `gae`: PPO's per-token GAE against the critic's values, then (optionally) whitened over the batch;
- `grpo`: GRPO's group-relative advantage (Shao et al. 2024) without a critic. The KL to the reference stays in
  the reward, as for PPO (not a loss term): each sample's return is the sum of its shaped rewards, normalized
  within the samples of its prompt, (R - group mean) / (group std + eps), and broadcast over its tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from hh_ray.algo.ppo import gae, kl_k1, kl_penalty, masked_mean, pad_ragged, token_rewards, unpad, whiten

GROUP_STD_EPS = 1e-6


@dataclass(frozen=True)
class AdvantageConfig:
    """How a scored batch becomes advantages: reward shaping (KL estimator, truncation penalty) and estimator.
    `gamma`, `lam` and `whiten` are GAE's; `group_size` (samples per prompt, adjacent in the batch) is GRPO's."""

    estimator: str = "gae"
    kl_estimator: str = "k1"
    gamma: float = 1.0
    lam: float = 0.95
    whiten: bool = True
    truncation_penalty: float = 0.0
    group_size: int = 1


# (rewards [B, T], values [B, T] or None, mask [B, T], config) -> (advantages [B, T], returns [B, T] or None)
Estimator = Callable[[torch.Tensor, "torch.Tensor | None", torch.Tensor, AdvantageConfig],
                     tuple[torch.Tensor, "torch.Tensor | None"]]
ADVANTAGE_ESTIMATORS: dict[str, Estimator] = {}


def advantage_estimator(name: str):
    """Register the decorated function in ADVANTAGE_ESTIMATORS under `name`."""

    def register(fn: Estimator) -> Estimator:
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return register


def group_relative_advantages(returns: torch.Tensor, group_size: int, eps: float = GROUP_STD_EPS) -> torch.Tensor:
    """Per-sample (R - mean of its group) / (std of its group + eps) for a [B] tensor whose consecutive runs of
    `group_size` samples share a prompt. The std is the sample (n - 1) one, as veRL's and OpenRLHF's GRPO take it;
    a group whose returns are all equal gets advantage 0."""
    groups = returns.view(-1, group_size)
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, keepdim=True)
    return ((groups - mean) / (std + eps)).view(-1)


@advantage_estimator("gae")
def gae_advantages(rewards: torch.Tensor, values: torch.Tensor | None, mask: torch.Tensor,
                   cfg: AdvantageConfig) -> tuple[torch.Tensor, torch.Tensor]:
    adv, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    return (whiten(adv, mask) if cfg.whiten else adv), returns


@advantage_estimator("grpo")
def grpo_advantages(rewards: torch.Tensor, values: torch.Tensor | None, mask: torch.Tensor,
                    cfg: AdvantageConfig) -> tuple[torch.Tensor, None]:
    """No critic and no returns to train one on; `whiten` does not apply (each group is normalized already)."""
    per_sample = group_relative_advantages(rewards.sum(dim=1), cfg.group_size)
    return per_sample[:, None] * mask, None


def compute_advantages(exp, kl_coef: float, cfg: AdvantageConfig, stale: bool = False) -> dict[str, float]:
    """Fill `exp.advantages` (and `exp.returns` when the estimator gives them) from its scores, logprobs and, with a
    critic, values; return the step's stats.

    Per-token KL measures the policy that generated the samples against the reference: `old_logprobs` (the
    trainer's own) when it did, the engine's `behaviour_logprobs` when the batch is `stale` (an older version
    generated it). KL figures are per sample, summed over the response's tokens, in nats.
    """
    lengths = [len(r) for r in exp.response]
    policy = exp.behaviour_logprobs if stale else exp.old_logprobs
    (old, mask), (ref, _) = pad_ragged(policy), pad_ragged(exp.ref_logprobs)
    kl = kl_penalty(old, ref, cfg.kl_estimator) * mask
    truncated = torch.tensor([f == "length" for f in exp.finish], dtype=torch.float32)
    score = torch.tensor(exp.scores, dtype=torch.float32)
    rewards = token_rewards(score - cfg.truncation_penalty * truncated, kl, kl_coef, mask)
    values = pad_ragged(exp.old_values)[0] if exp.old_values else None
    adv, returns = ADVANTAGE_ESTIMATORS[cfg.estimator](rewards, values, mask, cfg)
    exp.advantages = unpad(adv, lengths)
    exp.returns = unpad(returns, lengths) if returns is not None else []
    stats = {
        "objective/kl": float(kl.sum(1).mean()),
        "objective/kl_k1": float((kl_k1(old, ref) * mask).sum(1).mean()),
        "objective/reward": float(rewards.sum(1).mean()),
        "objective/pm_score": float(score.mean()),
        "objective/response_length": float(mask.sum(1).mean()),
        "objective/truncated_share": float(truncated.mean()),
    }
    return stats | ({"critic/value_mean": float(masked_mean(values, mask))} if values is not None else {})
