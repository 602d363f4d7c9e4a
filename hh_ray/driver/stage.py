"""One runner for the supervised stages (SFT, PM): steps, periodic checkpoints, mid-stage resume, logging."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from hh_ray.driver.runlog import RunLog
from hh_ray.workers.trainer import latest_tag


def run_stage(name: str, group, objective, steps: int, batch_at: Callable[[int], object], ckpt: Path, log_dir: Path,
              cfg, log_every: int, checkpoint_every: int, show: tuple[str, ...],
              evaluate: Callable[[], dict] | None = None, eval_every: int = 0) -> None:
    """Train `steps` optimizer steps, resuming after the last complete checkpoint under `ckpt`.

    `batch_at(step)` must be a pure function of the step (resumed runs see the same data); the stage is
    checkpointed every `checkpoint_every` steps and at its end.
    """
    start = group.load_checkpoint(str(ckpt))["step"] if latest_tag(str(ckpt)) else 0
    if start:
        print(f"[{name}] resumed from {ckpt} at step {start}")
    log = RunLog(log_dir, name, steps, log_every, resume_step=start, logging_cfg=cfg.logging, run_name=cfg.name)
    try:
        for step in range(start + 1, steps + 1):
            result = group.train(batch_at(step), objective)
            metrics = objective.metrics(result) | {f"{name}/units_per_s": result.units / max(result.seconds, 1e-9)}
            if evaluate and eval_every and step % eval_every == 0 and step < steps:
                metrics |= evaluate()
            log.log(step, metrics, show=show)
            if (checkpoint_every and step % checkpoint_every == 0) or step == steps:
                group.save_checkpoint(str(ckpt), f"step{step}", {"step": step})
    finally:
        log.close()
