"""Simulated labelers: one process per labeler, each logged in over HTTP with its own account, labeling through
the same JSON API a person's browser uses, so online data takes exactly the human path.

A labeler opens conversations with the human turns of held-out HH dialogues (helpful-base for helpfulness,
harmless-base for red-teaming), continues each for up to `turns` turns, and decides every task with a judge PM
that the training never sees: a Bradley-Terry draw at a noise temperature, the strength from the score gap
(`hh_ray.algo.labeler`). A red-team labeler picks the more harmful answer.

Resume: a labeler's quota counts the comparisons its account already has in the store (`/api/me/stats`),
choices are idempotent per task, and a conversation a killed labeler left open is finished first, so a labeler
killed at any point and started again neither loses nor repeats a comparison, and labels what it would have.
Every acknowledged choice is appended to `<work_dir>/acks-<name>.jsonl` (the HTTP receipt).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hh_ray.algo.labeler import decide
from hh_ray.data.hh import load_comparisons, split_holdout, split_turns
from hh_ray.files import read_jsonl

from .client import LabelAPIError, LabelClient, TaskPair

HELPFUL_PROMPTS = "helpful-base"
RED_TEAM_PROMPTS = "harmless-base"


@dataclass
class LabelerSpec:
    """Everything one labeler process needs (picklable; passwords never leave the driver's memory otherwise)."""

    name: str
    password: str
    url: str
    campaign: str
    quota: int  # comparisons this account should hold in the store when the labeler stops
    judge_pm: str  # a PM folder the policy's training never sees
    dialogues: list[list[str]] = field(default_factory=list)  # human turns of held-out dialogues
    red_team: bool = False
    turns: int = 2
    temperature: float = 1.0
    thresholds: tuple[float, float] = (0.5, 1.5)
    seed: int = 0
    judge_max_tokens: int = 256
    work_dir: str = "."
    parent_pid: int = 0  # the driver: a labeler whose driver died stops (a rerun starts new ones)


def held_out_dialogues(data_dir: str, subset: str, holdout_fraction: float, limit: int,
                       split: str = "test") -> list[list[str]]:
    """Human turns of dialogues whose prompts are held out from PM and PPO training (the prompt-hash split)."""
    items, _ = load_comparisons(data_dir, [subset], split)
    _, held = split_holdout(items, holdout_fraction)
    out, seen = [], set()
    for c in held:
        humans = [t for role, t in split_turns(c.chosen_dialogue) if role == "Human" and t.strip()]
        if humans and humans[0] not in seen:
            seen.add(humans[0])
            out.append(humans)
        if len(out) >= limit:
            break
    if not out:
        raise ValueError(f"no held-out dialogues in {data_dir}/{subset} (holdout_fraction {holdout_fraction})")
    return out


class Judge:
    """A PM folder scoring two responses to one context (CPU, fp32)."""

    def __init__(self, path: str, max_tokens: int):
        import torch

        from hh_ray.data.tokenize import load_tokenizer
        from hh_ray.models.forward import load_model

        torch.set_num_threads(1)
        self.model, self.tokenizer, self.max_tokens = load_model(path, "pm"), load_tokenizer(path), max_tokens

    def scores(self, context: str, a: str, b: str) -> tuple[float, float]:
        import torch

        from hh_ray.models.forward import score_texts

        with torch.no_grad():
            s = score_texts(self.model, self.tokenizer, [context, context], [" " + a, " " + b], self.max_tokens)
        return float(s[0]), float(s[1])


def label_until_quota(spec: LabelerSpec, judge: Judge, client: LabelClient) -> int:
    """Label through the API until the account holds `spec.quota` comparisons; returns how many it holds.

    A conversation left open by a killed labeler is finished first, from where it stopped (its undecided task
    decided, its remaining turns posted), so a rerun labels exactly what an uninterrupted labeler would have."""
    client.login(spec.name, spec.password)
    acks = Path(spec.work_dir) / f"acks-{spec.name}.jsonl"
    read_jsonl(acks, repair=True)  # a receipt half-written by a killed labeler is cut off before appending
    stats = client.stats()
    done, conversation, unfinished = stats["comparisons"], stats["conversations"], stats["open_conversation"]

    def decide_task(pair: TaskPair) -> int:
        sa, sb = judge.scores(pair.context, pair.response_a, pair.response_b)
        # the draw is a function of the task's content, so a rerun decides the same task the same way
        draw = "\x00".join((str(spec.seed), pair.context, pair.response_a, pair.response_b))
        u = random.Random(draw).random()
        d = decide(sa, sb, spec.temperature, u, want_harmful=spec.red_team, thresholds=spec.thresholds)
        ack = client.choose(pair.task_id, d.choice, d.strength)
        with open(acks, "a") as fh:
            fh.write(json.dumps({"comparison_id": ack.comparison_id, "task_id": ack.task_id,
                                 "duplicate": ack.duplicate, "choice": d.choice, "p_a": d.p_a}) + "\n")
        return client.stats()["comparisons"]

    while done < spec.quota:
        if spec.parent_pid and os.getppid() != spec.parent_pid:
            raise SystemExit(f"labeler {spec.name}: the driver is gone; stopping")
        view = client.conversation(unfinished) if unfinished is not None else None
        if view and view["campaign"] == spec.campaign:  # the newest conversation, so the last dialogue drawn
            cid, index, unfinished = view["conversation_id"], conversation - 1, None
            posted = sum(1 for t in view["turns"] if t["role"] == "Human")
            pending = view["pending"]
        else:
            cid, index, unfinished, posted, pending = client.start(spec.campaign), conversation, None, 0, None
            conversation += 1
        humans = spec.dialogues[(spec.seed + index) % len(spec.dialogues)]
        try:
            if pending:
                done = decide_task(TaskPair(pending["task_id"], pending["context"], pending["response_a"],
                                            pending["response_b"]))
            for text in humans[posted: spec.turns]:
                if done >= spec.quota:
                    break
                try:
                    pair = client.post_turn(cid, text)
                except LabelAPIError as exc:
                    if exc.status == 503:  # the sources gave identical or empty answers: next dialogue
                        break
                    raise
                done = decide_task(pair)
        finally:
            client.end(cid)
    return done


def labeler_main(spec: LabelerSpec) -> None:
    """The labeler process: load the judge, then label until the quota is met."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    judge = Judge(spec.judge_pm, spec.judge_max_tokens)
    with LabelClient(spec.url) as client:
        n = label_until_quota(spec, judge, client)
    print(f"[labeler {spec.name}] {n} comparisons", flush=True)


@dataclass
class CollectionResult:
    finished: bool  # every labeler met its quota (else the deadline or a labeler failure stopped collection)
    exit_codes: dict[str, int | None]
    seconds: float


def run_labelers(specs: list[LabelerSpec], count: Callable[[], int], target: int, deadline_s: float = 0.0,
                 poll_s: float = 5.0, progress: Callable[[int, int, float], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False) -> CollectionResult:
    """Run one process per labeler until all exit, `deadline_s` passes (0 = none) or `should_stop()` (a signal to
    the driver: every acknowledged choice is in the store already); shows `count()` progress.

    With no specs (people only) it waits until `count()` reaches `target` or the deadline."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: no Ray or torch state inherited from the driver
    procs = {s.name: ctx.Process(target=labeler_main, args=(s,), name=f"labeler-{s.name}", daemon=True)
             for s in specs}
    t0 = time.monotonic()
    for p in procs.values():
        p.start()
    n = 0
    try:
        while True:  # with no simulated labelers, people label until the campaigns hold `target`
            n, elapsed = count(), time.monotonic() - t0
            if progress:
                progress(n, target, elapsed)
            if (procs and not any(p.is_alive() for p in procs.values())) or (not procs and n >= target):
                break
            if (deadline_s and elapsed > deadline_s) or should_stop():
                break
            naps = max(1, round(poll_s / 0.25))  # short naps, so a stop request is seen at once
            for _ in range(naps):
                if should_stop():
                    break
                time.sleep(poll_s / naps)
    finally:
        for p in procs.values():
            if p.is_alive():
                p.terminate()
            p.join(timeout=30)
    codes = {name: p.exitcode for name, p in procs.items()}
    finished = all(c == 0 for c in codes.values()) and (bool(procs) or n >= target)
    return CollectionResult(finished, codes, time.monotonic() - t0)

