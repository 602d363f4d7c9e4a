"""The rollout pool's version bookkeeping on CPU, without Ray or vLLM: engines are stand-ins and the weight sync
records its pushes, so these check when `RolloutGroup.ensure` pushes (the real push is in test_rollout_sync)."""

from __future__ import annotations

import pytest

from hh_ray.config import RolloutConfig
from hh_ray.ops.autoscale import RolloutAutoscaler
from hh_ray.workers import rollout as rollout_module
from hh_ray.workers.rollout import RolloutGroup
from hh_ray.workers.weight_sync import SyncStats


class FakeEngine:
    class policy_version:  # noqa: N801 - an actor method: `.remote()`
        @staticmethod
        def remote() -> int:
            return 0


class FakeEngineGroup:
    """One engine's `WorkerGroup`: a name and an actor, nothing started."""

    def __init__(self, actor_cls, size, name, *args, **kwargs):
        self.name, self.actors = name, [FakeEngine()]

    def shutdown(self) -> None:
        self.actors = []


class RecordingSync:
    """Stands in for `WeightSync`: remembers every push; `fail` makes the next one break off."""

    def __init__(self):
        self.pushed: list[int] = []
        self.fail = False

    def push(self, version: int) -> SyncStats:
        if self.fail:
            self.fail = False
            raise RuntimeError("trainer rank 0 died mid-broadcast")
        self.pushed.append(version)
        return SyncStats(0.1, 100, 0.05)


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setattr(rollout_module, "WorkerGroup", FakeEngineGroup)
    monkeypatch.setattr("ray.get", lambda refs: refs)  # the constructor's "engines are up" wait
    group = RolloutGroup("model", RolloutConfig(num_engines=2, min_engines=1, max_engines=3), 128)
    group.sync = RecordingSync()
    return group


def test_ensure_pushes_only_when_an_engine_is_behind(pool):
    assert pool.ensure(0) is None and pool.sync.pushed == []  # engines start with the starting policy, version 0
    assert pool.ensure(1).bytes == 100 and pool.sync.pushed == [1]
    assert pool.ensure(1) is None and pool.sync.pushed == [1]  # the same version again: no second push
    assert pool.version == 1 and pool.behind(1) == []


def test_a_new_or_replacement_engine_is_brought_to_the_current_version(pool):
    pool.ensure(3)
    pool.drop_dead([pool.engines[0]])  # an engine died: `ensure` replaces it, then pushes to the new one
    assert pool.ensure(3) is not None and len(pool.engines) == 2 and pool.sync.pushed == [3, 3]
    assert pool.ensure(3) is None
    pool.add_engine()
    assert pool.behind(3) == ["rollout-3"]  # it loaded the starting policy
    assert pool.ensure() is not None and pool.sync.pushed == [3, 3, 3]  # default: the version the pool serves


def test_the_autoscaler_brings_added_engines_to_the_current_version(pool):
    pool.ensure(2)
    scaler = RolloutAutoscaler(pool, 1, 3, backlog_per_engine=8)
    scaler._request = lambda engines: None  # no Ray autoscaler here
    assert scaler.adjust(24)["added"] == 1
    assert pool.sync.pushed == [2, 2] and pool.behind(2) == []


def test_a_broken_push_leaves_every_engine_unknown_so_the_next_ensure_pushes(pool):
    pool.ensure(1)
    pool.sync.fail = True
    with pytest.raises(RuntimeError):
        pool.ensure(2)
    assert pool.ensure(1) is not None and pool.sync.pushed == [1, 1]  # half-received weights are overwritten


def test_a_first_connect_without_bucket_size_or_timeout_is_refused(pool):
    """Without them the sync would be built with zero-byte buckets and a zero timeout."""
    pool.sync = None
    with pytest.raises(ValueError, match="bucket size and timeout"):
        pool.connect(object())
    assert pool.sync is None
