"""`hh-ray status RUN_DIR`: where a run is (phase, step, last metrics, ETA) and whether a command still runs on it,
read from the run folder alone: each phase's `progress.json` (written by RunLog at every step), its
`metrics.jsonl` where a phase predates those, and the folder's lock file (RunLock)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from hh_ray.driver.progress import format_metrics, format_seconds
from hh_ray.driver.runlog import PROGRESS_FILE
from hh_ray.files import LockHolder, RunLock, read_jsonl

SHOWN_FROM_LOG = 6  # metrics shown for a phase without progress.json, which names no key metrics


class NotARunFolder(ValueError):
    """The folder does not exist or holds nothing an hh-ray command writes."""


@dataclass
class PhaseStatus:
    phase: str
    folder: str
    step: int
    total: int | None  # None: a log written before progress.json existed, so the total is not recorded
    updated: float
    eta_s: float | None = None
    metrics: dict = field(default_factory=dict)


@dataclass
class RunStatus:
    run_dir: str
    live: bool
    holder: LockHolder | None  # the live command, or the one that died without a clean exit
    phases: list[PhaseStatus]  # oldest first; the last is the current (or last) phase

    def to_json(self) -> dict:
        return {"run_dir": self.run_dir, "live": self.live, "holder": self.holder and vars(self.holder),
                "phases": [vars(p) for p in self.phases]}


def phase_status(folder: Path, run_dir: Path) -> PhaseStatus | None:
    """One phase's position from its `progress.json`, else from the last row of its `metrics.jsonl`."""
    name = str(folder.relative_to(run_dir))
    progress = folder / PROGRESS_FILE
    if progress.is_file():
        try:
            p = json.loads(progress.read_text())
            return PhaseStatus(p["phase"], name, p["step"], p["total"], p["updated"], p["eta_s"], p["metrics"])
        except (ValueError, KeyError):
            pass  # written atomically, so only a file from elsewhere is unreadable: fall back to the log
    rows = read_jsonl(folder / "metrics.jsonl")
    if not rows:
        return None
    last = rows[-1]
    metrics = dict(list((k, v) for k, v in last.items() if k not in ("step", "time"))[:SHOWN_FROM_LOG])
    return PhaseStatus(name, name, last["step"], None, (folder / "metrics.jsonl").stat().st_mtime, None, metrics)


def run_status(run_dir: str | Path) -> RunStatus:
    run = Path(run_dir)
    if not run.is_dir():
        raise NotARunFolder(f"{run} is not a folder" if run.exists() else f"{run} does not exist")
    lock = RunLock(run, "hh-ray status")
    if not (lock.path.is_file() or (run / "config.yaml").is_file()):  # every writing command leaves its lock file
        raise NotARunFolder(f"{run} is not an hh-ray run folder: it holds neither {RunLock.NAME} nor config.yaml")
    folders = sorted({f.parent for pattern in (PROGRESS_FILE, "metrics.jsonl") for f in run.rglob(pattern)})
    phases = sorted(filter(None, (phase_status(f, run) for f in folders)), key=lambda p: p.updated)
    return RunStatus(str(run), lock.is_held(), lock.holder(), phases)


def phase_name(p: PhaseStatus) -> str:
    """`PPO`, or `PPO (rounds/1/ppo)` where a phase runs more than once in nested folders (online rounds)."""
    return f"{p.phase} ({p.folder})" if "/" in p.folder else p.phase


def format_status(status: RunStatus, now: float | None = None) -> str:
    """A few lines for a person: live or stopped, the current phase and step with ETA, its last key metrics."""
    now = time.time() if now is None else now
    if status.live:
        head = f"live: {status.holder or 'a command'} holds it"
    elif status.holder:
        head = f"stopped: {status.holder} is gone without a clean exit (killed?); rerun it to resume"
    else:
        head = "stopped (the last command exited cleanly)"
    lines = [f"{status.run_dir}: {head}"]
    if not status.phases:
        return "\n".join(lines + ["no step logged yet"])
    *earlier, cur = status.phases
    if earlier:
        lines.append("earlier phases: " + ", ".join(f"{phase_name(p)} {p.step}/{p.total or '?'}" for p in earlier))
    of_total = f"/{cur.total} ({100 * cur.step // cur.total}%)" if cur.total else ""
    line = f"phase {phase_name(cur)}: step {cur.step}{of_total}, last step {format_seconds(now - cur.updated)} ago"
    if status.live and cur.eta_s is not None and cur.total and cur.step < cur.total:
        line += f", ETA {format_seconds(max(0.0, cur.eta_s - (now - cur.updated)))}"
    elif cur.total and cur.step >= cur.total:
        line += ", done"
    lines.append(line)
    if cur.metrics:
        lines.append("last metrics: " + format_metrics(cur.metrics, tuple(cur.metrics)))
    return "\n".join(lines)
