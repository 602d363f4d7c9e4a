"""A run's record: one JSON line per step in `metrics.jsonl`, and a progress line with rate and ETA."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path


class RunLog:
    """Appends metrics to `<dir>/metrics.jsonl` and prints `[name] step i/n ... ETA` every `every` steps."""

    def __init__(self, out_dir: str | Path, name: str, total_steps: int, every: int = 1, fresh: bool = True):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        if fresh and self.path.exists():
            self.path.unlink()
        self.name, self.total, self.every = name, total_steps, max(1, every)
        self.t0 = time.perf_counter()
        self.first_step: int | None = None

    def log(self, step: int, metrics: dict, show: tuple[str, ...] = ()) -> None:
        row = {"step": step, "time": round(time.perf_counter() - self.t0, 3)} | {
            k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.first_step is None:
            self.first_step = step
        if step % self.every == 0 or step == self.total:
            done = step - self.first_step + 1
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / done * (self.total - step) if done else 0.0
            parts = " ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics.get(k), float) else f"{k}={metrics.get(k)}"
                             for k in show if k in metrics)
            print(f"[{self.name}] step {step}/{self.total} {parts} elapsed={elapsed:.0f}s ETA={eta:.0f}s",
                  file=sys.stderr, flush=True)


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []


def write_json_atomic(path: str | Path, obj) -> None:
    import os

    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, p)
