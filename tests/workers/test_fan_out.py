"""`group.fan_out`, the one driver-to-group fan-out, on tiny Ray actors: shards in batch order, empty shards left
out, failures raised at once, and (elastic) a dead actor's shard re-run by a survivor."""

from __future__ import annotations

import os

import pytest
import ray

from hh_ray.algo.batch import PromptBatch
from hh_ray.workers.group import NoActorsError, fan_out


@ray.remote(num_cpus=0, max_restarts=0)
class Doubler:
    def __init__(self, dies_on: int = -1):
        self.dies_on = dies_on

    def double(self, batch: PromptBatch, offset: int) -> list[int]:
        if self.dies_on in batch.seed:
            os._exit(1)  # the process dies mid-call, as a killed engine does
        if -2 in batch.seed:
            raise ValueError("bad shard")
        return [2 * s + offset for s in batch.seed]


def _batch(seeds):
    return PromptBatch([[s] for s in seeds], list(seeds))


def test_shards_come_back_in_batch_order_and_empty_ones_are_skipped(ray_local):
    actors = [Doubler.remote() for _ in range(3)]
    assert fan_out(actors, "double", _batch(range(7)), 1)() == [2 * s + 1 for s in range(7)]
    assert fan_out(actors, "double", _batch([5]), 0, skip_empty=True)() == [10]  # one shard, two idle actors
    assert fan_out(actors, "double", _batch(range(4)), 0, join=len)() == 3  # join sees one result per shard
    with pytest.raises(ray.exceptions.RayTaskError, match="bad shard"):
        fan_out(actors, "double", _batch([0, 1, -2, 3]), 0)()


def test_elastic_fan_out_reruns_a_dead_actors_shard_on_a_survivor(ray_local):
    actors = [Doubler.remote(), Doubler.remote(dies_on=4)]
    lost = []
    out = fan_out(actors, "double", _batch(range(6)), 0, on_dead=lost.append)()
    assert out == [2 * s for s in range(6)] and lost == [actors[1]]  # shard [3, 4, 5] re-ran on actor 0
    with pytest.raises(NoActorsError):
        fan_out([Doubler.remote(dies_on=0)], "double", _batch([0, 1]), 0, on_dead=lambda a: None)()
