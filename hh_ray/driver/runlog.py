"""A run's record: one JSON line per step in `metrics.jsonl` (plus TensorBoard, and W&B when asked), the
phase's progress on the console (`progress.py`), and `progress.json` beside the log, which `hh-ray status` reads.

Metric names are namespaced as TRL and cleanRL do (`objective/kl`, `policy/clipfrac`, `time/generate`), so
TensorBoard groups them. A resumed stage first drops the rows after the step it resumes from, so every step is
in the log exactly once.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hh_ray.driver.progress import PhaseProgress, format_metrics
from hh_ray.files import read_jsonl as read_metrics
from hh_ray.files import write_text_atomic

if TYPE_CHECKING:
    from hh_ray.config import LoggingConfig

PROGRESS_FILE = "progress.json"


class RunLog:
    """Writes each step's metrics to `<dir>/metrics.jsonl` and the configured sinks; shows the phase's progress.

    `label` names the phase on the console and in `progress.json` (default: `name`, the metrics' namespace,
    upper-cased: SFT, PM, PPO).
    """

    def __init__(self, out_dir: str | Path, name: str, total_steps: int, every: int = 1, resume_step: int = 0,
                 logging_cfg: LoggingConfig | None = None, run_name: str = "", label: str = ""):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        # a half-written last row (a kill mid-append) is cut off; a new stage starts an empty log
        kept = [r for r in read_metrics(self.path, repair=True) if r["step"] <= resume_step] if resume_step else []
        write_jsonl_atomic(self.path, kept)
        self.name, self.total, self.every = name, total_steps, max(1, every)
        self.label = label or name.upper()
        self.resume_step = resume_step
        self.t0 = time.perf_counter()
        self.progress = PhaseProgress(self.label, total_steps, start=resume_step)
        self.tb = self.wandb = None
        if logging_cfg is not None and logging_cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
        if logging_cfg is not None and logging_cfg.wandb:
            import wandb

            self.wandb = wandb.init(project=logging_cfg.wandb_project, name=f"{run_name}-{name}",
                                    mode=logging_cfg.wandb_mode, dir=str(self.dir), resume="allow")

    def truncate(self, step: int) -> None:
        """Drop the rows after `step` (a stage rolled back to a checkpoint and redoes them)."""
        write_jsonl_atomic(self.path, [r for r in read_metrics(self.path) if r["step"] <= step])

    def log(self, step: int, metrics: dict, show: tuple[str, ...] = ()) -> None:
        row = {"step": step, "time": round(time.perf_counter() - self.t0, 3)} | {
            k: (float(f"{v:.7g}") if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tb:
            for k, v in numbers.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb:
            self.wandb.log(numbers, step=step)
        self.progress.update(step, format_metrics(metrics, show), self.every)
        write_json_atomic(self.dir / PROGRESS_FILE, {
            "phase": self.label, "step": step, "total": self.total, "resumed_from": self.resume_step,
            "elapsed_s": round(time.perf_counter() - self.t0, 1), "eta_s": round(self.progress.eta_s(step), 1),
            "updated": time.time(), "metrics": {k: metrics[k] for k in show if k in metrics}})

    def close(self) -> None:
        self.progress.close()
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()


def write_jsonl_atomic(path: str | Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2))
