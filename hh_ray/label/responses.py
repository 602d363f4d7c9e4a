"""Where a task's two responses come from, and the retries that make them usable (non-empty and different).

A `ResponseSource` is Serve deployments in production (serve.py) and a stub in tests; the pair for a context is
seeded by it, so a repeated task shows the same responses, and which source sits on side A is drawn per try.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from typing import Protocol

from .errors import LabelError
from .records import Sample, TurnPlan


class ResponseSource(Protocol):
    """Where responses come from: `n` samples of source `name` for an HH context ending in "Assistant:"."""

    async def generate(self, name: str, context: str, n: int, seed: int) -> list[Sample]: ...

    def stream(self, name: str, context: str, n: int, seed: int) -> AsyncIterator[list[Sample]]:
        """The `n` samples so far, again each time they grow; the last ones are what `generate` returns."""
        ...


class Unavailable(LabelError):
    status = 503


def context_seed(context: str) -> int:
    """Samples are seeded by the context: the same context shown again gets the same responses (repeat tasks)."""
    return int.from_bytes(hashlib.sha256(context.encode("utf-8")).digest()[:4], "big")


def attempt_seed(plan: TurnPlan, attempt: int) -> tuple[int, bool]:
    """The seed of one try at a task's pair, and whether its second sample is shown as A (drawn from the seed, so
    neither source always sits on one side; known before generating, so a stream fills the right columns)."""
    s = context_seed(plan.context) + 7919 * attempt
    return s, random.Random(s).random() < 0.5


def usable(a: Sample, b: Sample) -> bool:
    return bool(a.text.strip() and b.text.strip() and a.text != b.text)


async def two_responses(sources: ResponseSource, plan: TurnPlan, retries: int) -> tuple[Sample, Sample]:
    """Responses A and B for one task: two sources, or two samples of one; non-empty and different."""
    for attempt in range(retries):
        s, swap = attempt_seed(plan, attempt)
        if plan.source_a == plan.source_b:
            a, b = (await sources.generate(plan.source_a, plan.context, 2, s))[:2]
        else:
            (a,), (b,) = await asyncio.gather(sources.generate(plan.source_a, plan.context, 1, s),
                                              sources.generate(plan.source_b, plan.context, 1, s + 1))
        if usable(a, b):
            return (b, a) if swap else (a, b)
    raise Unavailable(f"the sources gave empty or identical responses {retries} times; try another turn")


async def merged(streams: list[AsyncIterator[list[Sample]]]) -> AsyncIterator[list[Sample | None]]:
    """One sample from each stream, the latest of all of them, again each time one grows (None: not started)."""
    latest: list[Sample | None] = [None] * len(streams)
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[list[Sample]]) -> None:
        try:
            async for samples in stream:
                queue.put_nowait((i, samples[0]))
        finally:
            queue.put_nowait((i, None))

    tasks = [asyncio.create_task(pump(i, st)) for i, st in enumerate(streams)]
    try:
        for _ in range(len(streams)):
            while (item := await queue.get())[1] is not None:
                latest[item[0]] = item[1]
                yield list(latest)
        await asyncio.gather(*tasks)  # a stream that failed raises here
    finally:
        for t in tasks:
            t.cancel()


async def streamed_responses(sources: ResponseSource, plan: TurnPlan,
                             retries: int) -> AsyncIterator[tuple[int, str, str, tuple[Sample, Sample] | None]]:
    """As `two_responses`, streamed: (attempt, text A so far, text B so far, None) as the samples grow, and last
    (attempt, A, B, the pair) once a try gave a usable pair."""
    for attempt in range(retries):
        s, swap = attempt_seed(plan, attempt)
        if plan.source_a == plan.source_b:
            steps = sources.stream(plan.source_a, plan.context, 2, s)
        else:
            steps = merged([sources.stream(plan.source_a, plan.context, 1, s),
                            sources.stream(plan.source_b, plan.context, 1, s + 1)])
        a = b = None
        async for step in steps:
            a, b = (step[1], step[0]) if swap else (step[0], step[1])
            yield attempt, a.text if a else "", b.text if b else "", None
        if a is not None and b is not None and usable(a, b):
            yield attempt, a.text, b.text, (a, b)
            return
    raise Unavailable(f"the sources gave empty or identical responses {retries} times; try another turn")
