"""Training objectives and forward-only probes: what a trainer rank computes on a typed batch.

An objective is a small frozen dataclass of its hyperparameters. It names the model head it needs, how its
batch is counted (`units`: the loss is a sum divided by the *whole* batch's units, so N ranks with batch b take
exactly the step one rank takes with batch N*b), its summed loss and summed statistics, and how those sums
become the metrics a run logs. Every statistic is a sum, so ranks and micro-batches reduce by adding.
A probe is a forward pass without a step that returns one output per sample, in batch order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from hh_ray.algo.batch import PairBatch, PolicyBatch, SequenceBatch, TokenBatch, ValueBatch
from hh_ray.algo.distill import context_distill_loss, teacher_positions
from hh_ray.algo.pm import pairwise_loss
from hh_ray.algo.ppo import behaviour_weights, clipped_policy_loss, clipped_value_loss, masked_sum, pad_ragged, unpad
from hh_ray.models.forward import collate, response_logprobs, response_values, sequence_scores


@dataclass
class StepResult:
    """One optimizer step (or one forward-only pass) of a whole group: summed statistics over `units`."""

    sums: dict[str, float]
    units: int
    lr: float = 0.0
    grad_norm: float = float("nan")
    seconds: float = 0.0
    outputs: list = field(default_factory=list)  # per-sample outputs of a probe, in batch order

    @property
    def loss(self) -> float:
        return self.sums.get("loss", 0.0) / max(self.units, 1)


def merge_results(parts: list[StepResult]) -> StepResult:
    """Ranks' results -> the group's: sums add, outputs concatenate, the slowest rank's time counts."""
    sums: dict[str, float] = {}
    for p in parts:
        for k, v in p.sums.items():
            sums[k] = sums.get(k, 0.0) + v
    return StepResult(sums, sum(p.units for p in parts), parts[0].lr, parts[0].grad_norm,
                      max(p.seconds for p in parts), [o for p in parts for o in p.outputs])


def _nll_sums(model, batch: TokenBatch, pad_id: int) -> torch.Tensor:
    """Per-sample sums of next-token NLL over the loss-masked tokens.

    The LM head and its log-softmax run only at positions that predict a masked-in token: with a 49k vocabulary
    the full [B, L, V] logits (in float32 for the softmax) would cost more than the rest of the step.
    """
    dev = next(model.parameters()).device
    ids, att = collate(batch.input_ids, pad_id)
    ids, att = ids.to(dev), att.to(dev)
    rows, cols = collate(batch.loss_mask, 0)[0][:, 1:].to(dev).nonzero(as_tuple=True)
    base = getattr(model, "module", model)  # a DeepSpeed engine wraps the HF model
    hidden = base.get_decoder()(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
    logits = base.get_output_embeddings()(hidden[rows, cols]).float()
    nll = torch.nn.functional.cross_entropy(logits, ids[rows, cols + 1], reduction="none")
    return torch.zeros(ids.shape[0], device=dev, dtype=nll.dtype).index_add(0, rows, nll)


@dataclass(frozen=True)
class SFTObjective:
    """Next-token NLL on the loss-masked (assistant) tokens."""

    kind: ClassVar[str] = "causal_lm"

    def units(self, batch: TokenBatch) -> int:
        return sum(sum(m[1:]) for m in batch.loss_mask)

    def loss(self, model, batch: TokenBatch, pad_id: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss = _nll_sums(model, batch, pad_id).sum()
        return loss, {}

    def metrics(self, r: StepResult) -> dict[str, float]:
        return {"sft/loss": r.loss, "sft/lr": r.lr, "sft/tokens": float(r.units)}


@dataclass(frozen=True)
class ContextDistillObjective:
    """Context distillation: the model without the HHH prompt matches its own next-token distribution with the
    prompt in front, KL(prompted || unprompted) per text token. The prompted pass is the current model under
    no_grad (a detached target), so one network is both teacher and student, as in the paper's recipe."""

    prompt_ids: tuple[int, ...]
    kind: ClassVar[str] = "causal_lm"

    def units(self, batch: TokenBatch) -> int:
        return sum(len(x) - 1 for x in batch.input_ids)

    def loss(self, model, batch: TokenBatch, pad_id: int) -> tuple[torch.Tensor, dict[str, float]]:
        dev = next(model.parameters()).device
        ids, att = collate(batch.input_ids, pad_id)
        ids, att = ids.to(dev), att.to(dev)
        prompt = torch.tensor(self.prompt_ids, device=dev).expand(ids.shape[0], -1)
        with torch.no_grad():
            teacher = model(input_ids=torch.cat([prompt, ids], 1),
                            attention_mask=torch.cat([torch.ones_like(prompt), att], 1), use_cache=False).logits
        student = model(input_ids=ids, attention_mask=att, use_cache=False).logits
        aligned = teacher_positions(teacher, len(self.prompt_ids), ids.shape[1])
        # position t predicts text token t + 1: the last position and padding predict nothing
        loss, _ = context_distill_loss(aligned[:, :-1], student[:, :-1], att[:, 1:])
        return loss, {}

    def metrics(self, r: StepResult) -> dict[str, float]:
        return {"sft/loss": r.loss, "sft/distill_kl": r.loss, "sft/lr": r.lr, "sft/tokens": float(r.units)}


@dataclass(frozen=True)
class PMObjective:
    """Pairwise -log sigmoid(r_chosen - r_rejected - margin) (+ centering penalty), per comparison."""

    margin: float = 0.0
    center_coef: float = 0.0
    kind: ClassVar[str] = "pm"

    def units(self, batch: PairBatch) -> int:
        return len(batch.chosen)

    def loss(self, model, batch: PairBatch, pad_id: int) -> tuple[torch.Tensor, dict[str, float]]:
        n = len(batch.chosen)
        scores = sequence_scores(model, batch.chosen + batch.rejected, pad_id)
        per_pair, correct = pairwise_loss(scores[:n], scores[n:], self.margin, self.center_coef)
        return per_pair.sum(), {"correct": float(correct.sum())}

    def metrics(self, r: StepResult) -> dict[str, float]:
        return {"pm/loss": r.loss, "pm/accuracy": r.sums["correct"] / max(r.units, 1), "pm/lr": r.lr}


@dataclass(frozen=True)
class PolicyObjective:
    """PPO's clipped surrogate on response tokens, minus an entropy bonus."""

    clip_ratio: float = 0.2
    entropy_coef: float = 0.0
    temperature: float = 1.0
    pack_to: int = 0  # > 0: samples packed into rows of at least this many tokens (no compute on padding)
    decoupled: bool = False  # samples from an older policy: weighted by pi_old / pi_behaviour (behaviour_weights)
    kind: ClassVar[str] = "causal_lm"

    def units(self, batch: PolicyBatch) -> int:
        return sum(len(r) for r in batch.response)

    def loss(self, model, batch: PolicyBatch, pad_id: int) -> tuple[torch.Tensor, dict[str, float]]:
        logp, mask, ent = response_logprobs(model, batch.prompt, batch.response, pad_id, self.temperature,
                                            entropy="loss" if self.entropy_coef else "metric",
                                            pack_to=self.pack_to)
        old = pad_ragged(batch.old_logprobs)[0].to(logp.device)
        adv = pad_ragged(batch.advantages)[0].to(logp.device)
        weights = (behaviour_weights(old, pad_ragged(batch.behaviour_logprobs)[0].to(logp.device))
                   if self.decoupled else None)
        loss, stats = clipped_policy_loss(logp, old, adv, mask, self.clip_ratio, weights)
        ent_sum = masked_sum(ent, mask)
        return loss - self.entropy_coef * ent_sum, {
            "clipped_tokens": float(stats["clipped_tokens"]), "approx_kl": float(stats["approx_kl_sum"]),
            "entropy": float(ent_sum.detach())}

    def metrics(self, r: StepResult) -> dict[str, float]:
        u = max(r.units, 1)
        return {"policy/loss": r.loss, "policy/clipfrac": r.sums["clipped_tokens"] / u,
                "policy/approx_kl": r.sums["approx_kl"] / u, "policy/entropy": r.sums["entropy"] / u,
                "policy/grad_norm": r.grad_norm, "policy/lr": r.lr,
                # samples whose pass started above the frozen layers (hh_ray/models/prefix.py), over all epochs
                "policy/prefix_reused": r.sums.get("prefix_reused", 0.0)}


@dataclass(frozen=True)
class ValueObjective:
    """Clipped squared error of the per-token value head against the GAE returns."""

    value_clip: float = 0.2
    value_coef: float = 1.0
    pack_to: int = 0
    kind: ClassVar[str] = "value"

    def units(self, batch: ValueBatch) -> int:
        return sum(len(r) for r in batch.response)

    def loss(self, model, batch: ValueBatch, pad_id: int) -> tuple[torch.Tensor, dict[str, float]]:
        values, mask = response_values(model, batch.prompt, batch.response, pad_id, self.pack_to)
        old = pad_ragged(batch.old_values)[0].to(values.device)
        returns = pad_ragged(batch.returns)[0].to(values.device)
        loss, stats = clipped_value_loss(values, old, returns, mask, self.value_clip)
        return loss * self.value_coef, {"clipped_tokens": float(stats["value_clipped_tokens"])}

    def metrics(self, r: StepResult) -> dict[str, float]:
        return {"critic/loss": r.loss, "critic/clipfrac": r.sums["clipped_tokens"] / max(r.units, 1),
                "critic/grad_norm": r.grad_norm, "critic/prefix_reused": r.sums.get("prefix_reused", 0.0)}


# ---- probes: forward passes without a step, one output per sample ---------------------------------------------
@dataclass(frozen=True)
class TokenLogprobs:
    """log pi(response token | context) per response token, at the sampling temperature."""

    temperature: float = 1.0
    pack_to: int = 0

    def __call__(self, model, batch: SequenceBatch, pad_id: int) -> list[np.ndarray]:
        lp, _, _ = response_logprobs(model, batch.prompt, batch.response, pad_id, self.temperature,
                                     pack_to=self.pack_to)
        return unpad(lp, [len(r) for r in batch.response])


@dataclass(frozen=True)
class TokenValues:
    """V(state before each response token) from the critic's value head."""

    pack_to: int = 0

    def __call__(self, model, batch: SequenceBatch, pad_id: int) -> list[np.ndarray]:
        v, _ = response_values(model, batch.prompt, batch.response, pad_id, self.pack_to)
        return unpad(v, [len(r) for r in batch.response])


@dataclass(frozen=True)
class PairScores:
    """(score of chosen, score of rejected) per comparison."""

    def __call__(self, model, batch: PairBatch, pad_id: int) -> list[tuple[float, float]]:
        n = len(batch.chosen)
        s = sequence_scores(model, batch.chosen + batch.rejected, pad_id).cpu()
        return [(float(a), float(b)) for a, b in zip(s[:n], s[n:])]


@dataclass(frozen=True)
class DialogueNLL:
    """(summed NLL over loss-masked tokens, their count) per dialogue."""

    def __call__(self, model, batch: TokenBatch, pad_id: int) -> list[tuple[float, int]]:
        sums = _nll_sums(model, batch, pad_id).cpu()
        return [(float(s), sum(m[1:])) for s, m in zip(sums, batch.loss_mask)]


def probe_tokens(batch) -> list[int]:
    """Tokens each sample puts through the model (for token-budget micro-batching of forward passes)."""
    if isinstance(batch, SequenceBatch):
        return [len(p) + len(r) for p, r in zip(batch.prompt, batch.response)]
    if isinstance(batch, PairBatch):
        return [len(c) + len(r) for c, r in zip(batch.chosen, batch.rejected)]
    return [len(x) for x in batch.input_ids]
