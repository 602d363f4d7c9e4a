"""Typed, column-oriented batches: what the driver hands a trainer group, and one PPO batch (`Experience`).

Every batch is a dataclass whose fields are equal-length lists (one entry per sample), so one pair of helpers
(`select`, `split`) slices any of them, and a trainer rank never has to guess which string keys a batch holds.
Token ids are lists of ints; per-token numbers (logprobs, values, advantages, returns) are `Row`s, float32 arrays
of a response's length, which Ray ships as buffers and `ppo.pad_ragged` / `ppo.unpad` turn into [B, T] tensors
and back without changing a value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

B = TypeVar("B")
Row = np.ndarray  # float32, one entry per response token


def batch_size(batch) -> int:
    return len(getattr(batch, dataclasses.fields(batch)[0].name))  # the first field is always a column


def select(batch: B, idx: list[int]) -> B:
    """The samples at `idx`, in that order, as a batch of the same type (columns left empty stay empty)."""
    cols = {}
    for f in dataclasses.fields(batch):
        col = getattr(batch, f.name)
        cols[f.name] = ([col[i] for i in idx] if col else []) if isinstance(col, list) else col
    return type(batch)(**cols)


def cut(items: list, parts: int) -> list[list]:
    """`parts` contiguous, nearly equal pieces (the first ones one longer when uneven; some may be empty)."""
    base, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def split(batch: B, parts: int) -> list[B]:
    """`parts` contiguous pieces of a batch, cut as `cut` does."""
    return [select(batch, idx) for idx in cut(list(range(batch_size(batch))), parts)]


@dataclass
class TokenBatch:
    """SFT: whole dialogues and a 0/1 mask of the tokens the loss is taken on."""

    input_ids: list[list[int]]
    loss_mask: list[list[int]]


@dataclass
class PairBatch:
    """PM training: PM input ids of the chosen and the rejected side of each comparison."""

    chosen: list[list[int]]
    rejected: list[list[int]]


@dataclass
class SequenceBatch:
    """Forward-only passes (logprobs, values): prompt ids and response ids."""

    prompt: list[list[int]]
    response: list[list[int]]


@dataclass
class PolicyBatch(SequenceBatch):
    old_logprobs: list[Row]
    advantages: list[Row]
    behaviour_logprobs: list[Row] = field(default_factory=list)  # read by a decoupled objective only


@dataclass
class ValueBatch(SequenceBatch):
    old_values: list[Row]
    returns: list[Row]


@dataclass
class Experience:
    """One PPO batch, filled phase by phase: generate -> reference/score/values/old logprobs -> advantages.
    Every field but `version` is a per-sample column.

    `behaviour_logprobs` are the engine's sampling logprobs; `old_logprobs` are the policy trainer's own on the
    same tokens (the PPO ratio's denominator and the policy side of the KL penalty).
    """

    prompt: list[list[int]]
    response: list[list[int]]
    prompt_text: list[str]
    response_text: list[str]
    finish: list[str]  # vLLM's finish reason per sample: "stop" (end of turn) or "length" (cut at the cap)
    behaviour_logprobs: list[Row]
    version: int = 0  # the policy version the engines held when they generated these samples
    old_logprobs: list[Row] = field(default_factory=list)
    ref_logprobs: list[Row] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    old_values: list[Row] = field(default_factory=list)
    advantages: list[Row] = field(default_factory=list)
    returns: list[Row] = field(default_factory=list)

    def view(self, batch_type: type[B]) -> B:
        """The columns a trainer batch type (SequenceBatch, PolicyBatch, ValueBatch) declares, and no others."""
        return batch_type(**{f.name: getattr(self, f.name) for f in dataclasses.fields(batch_type)})


@dataclass
class ScoreBatch:
    """PM scoring: prompt and response texts (a PM may read them with its own tokenizer) and the response ids
    (what the substring scorer counts). Named as `Experience`'s columns, so `exp.view(ScoreBatch)` is one."""

    prompt_text: list[str]
    response_text: list[str]
    response: list[list[int]]


@dataclass
class PromptBatch:
    """Generation: prompt ids and each prompt's sampling seed (an engine seeds sample j with seed + j)."""

    prompt: list[list[int]]
    seed: list[int]


def minibatches(n: int, parts: int, rng) -> list[list[int]]:
    """One epoch's minibatches: a shuffled order cut into `parts` nearly equal pieces; every sample is in one."""
    order = list(range(n))
    rng.shuffle(order)
    return cut(order, parts)


def first_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of at most `capacity` total length, longest first into the first bin with room
    (first-fit decreasing); an item longer than `capacity` gets a bin of its own."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins
