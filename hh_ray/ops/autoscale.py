"""Rollout pool sizing: grow engines with the generation backlog (or latency), shrink after a quiet period.

Growth asks Ray's autoscaler for the engines' bundles (`request_resources`), so nodes start before the
placement groups wait on them; a new engine receives the pool's current policy (`RolloutGroup.ensure`) before it
serves. Shrinking lowers that request again, and the autoscaler retires idle nodes.
"""

from __future__ import annotations

import logging
import math
import time

log = logging.getLogger(__name__)


class RolloutAutoscaler:
    def __init__(self, rollout, min_engines: int, max_engines: int, backlog_per_engine: int,
                 latency_threshold_s: float = 0.0, scale_down_idle_s: float = 30.0, placement_timeout_s: float = 300.0):
        self.rollout = rollout
        self.min, self.max = min_engines, max_engines
        self.backlog_per_engine = max(1, backlog_per_engine)
        self.latency_threshold_s, self.scale_down_idle_s = latency_threshold_s, scale_down_idle_s
        self.placement_timeout_s = placement_timeout_s
        self.quiet_since: float | None = None
        self.events: list[dict] = []

    def desired(self, pending_prompts: int, last_latency_s: float = 0.0) -> int:
        n = len(self.rollout.engines)
        want = math.ceil(pending_prompts / self.backlog_per_engine)
        if self.latency_threshold_s and last_latency_s > self.latency_threshold_s:
            want = max(want, n + 1)
        return max(self.min, min(self.max, want))

    def _request(self, engines: int) -> None:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[b for _ in range(engines) for b in self.rollout.bundles()])

    def adjust(self, pending_prompts: int, last_latency_s: float = 0.0) -> dict:
        """Resize before a generation call; returns {"engines": n, "added": a, "removed": r}."""
        from hh_ray.workers.group import PlacementError

        n = len(self.rollout.engines)
        want = self.desired(pending_prompts, last_latency_s)
        added = removed = 0
        if want > n:
            self.quiet_since = None
            self._request(want)
            for _ in range(want - n):
                try:
                    self.rollout.add_engine(timeout_s=self.placement_timeout_s)
                    added += 1
                except PlacementError as exc:  # the cluster is at its limit: serve with what we have
                    log.warning("rollout autoscaler: %s", exc)
                    break
            if added:  # new engines serve only once they hold the pool's current policy (the sync reconnects first)
                self.rollout.ensure()
        elif want < n:
            now = time.monotonic()
            self.quiet_since = self.quiet_since or now
            if now - self.quiet_since >= self.scale_down_idle_s:
                removed = n - want
                for _ in range(removed):
                    self.rollout.remove_engine()
                self._request(len(self.rollout.engines))
                self.quiet_since = None  # the next sync rebuilds its group without the removed engines
        else:
            self.quiet_since = None
        event = {"engines": len(self.rollout.engines), "added": added, "removed": removed, "want": want,
                 "pending": pending_prompts}
        if added or removed:
            log.info("rollout autoscaler: %s", event)
            self.events.append(event | {"time": time.time()})
        return event
