"""One runner for the supervised stages (SFT, PM): steps, periodic checkpoints, mid-stage resume, logging."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from hh_ray.driver import stop
from hh_ray.driver.resume import last_complete
from hh_ray.driver.runlog import RunLog

if TYPE_CHECKING:
    from hh_ray.config import JobConfig


def resume_step(ckpt: Path, log_dir: Path, fresh: bool, load) -> int:
    """The step to continue after: the newest intact checkpoint's (loaded with `load`), or 0 for a new stage;
    `fresh` deletes the stage's checkpoints and log first."""
    tag = last_complete(ckpt, fresh, clear=(log_dir / "metrics.jsonl",))
    return load(str(ckpt), tag)["step"] if tag else 0


def run_stage(name: str, group, objective, steps: int, batch_at: Callable[[int], object], ckpt: Path, log_dir: Path,
              cfg: JobConfig, log_every: int, checkpoint_every: int, show: tuple[str, ...],
              evaluate: Callable[[], dict] | None = None, eval_every: int = 0, label: str = "") -> None:
    """Train `steps` optimizer steps, resuming after the last complete checkpoint under `ckpt`.

    `batch_at(step)` must be a pure function of the step (resumed runs see the same data); the stage is
    checkpointed every `checkpoint_every` steps and at its end. `label` names the stage on the console.
    """
    start = resume_step(ckpt, log_dir, cfg.fresh, group.load_checkpoint)
    if start:
        print(f"[{name}] resumed from {ckpt} at step {start}")
    log = RunLog(log_dir, name, steps, log_every, resume_step=start, logging_cfg=cfg.logging, run_name=cfg.name,
                 label=label)
    saved = start
    try:
        for step in range(start + 1, steps + 1):
            if stop.requested():  # a signal: checkpoint the last finished step, then stop
                if step - 1 > saved:
                    group.save_checkpoint(str(ckpt), f"step{step - 1}", {"step": step - 1})
                stop.stop_after_step(name, step - 1, steps, ckpt)
            result = group.train(batch_at(step), objective)
            metrics = objective.metrics(result) | {f"{name}/units_per_s": result.units / max(result.seconds, 1e-9)}
            if evaluate and eval_every and step % eval_every == 0 and step < steps:
                metrics |= evaluate()
            log.log(step, metrics, show=show)
            if (checkpoint_every and step % checkpoint_every == 0) or step == steps:
                group.save_checkpoint(str(ckpt), f"step{step}", {"step": step})
                saved = step
    finally:
        log.close()
