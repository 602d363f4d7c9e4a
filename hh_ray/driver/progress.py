"""The console's progress display: one bar per phase (SFT, PM, test PM, PPO, ...) with step, ETA and key metrics.

On a terminal it is a `rich.progress` bar that redraws in place (prints from the driver scroll above it); on
anything else (CI, a log file, a pipe) it degrades to a few plain lines per phase, one per tenth of the steps,
so a log of a long run stays short and holds no escape codes.
"""

from __future__ import annotations

import atexit
import logging
import os
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

BAR_METRICS = 3  # metrics beside a bar: more would squeeze the bar and its ETA off a 120-column terminal
PLAIN_LINES_PER_PHASE = 10  # plain mode: one line per tenth of a phase's steps (plus its first and last step)


def quiet_driver_libraries() -> None:
    """Keep library chatter off the driver's console, where the progress display is: Hugging Face's progress bars
    (hh-ray shows its own) and DeepSpeed's notice that a machine without a GPU runs it on the CPU."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("DeepSpeed").addFilter(lambda record: "Setting accelerator to CPU" not in record.getMessage())


def format_metrics(metrics: dict, keys: tuple[str, ...]) -> str:
    """`loss=0.123 kl=4.5`: the last part of each key present, floats to 4 significant digits."""
    return " ".join(f"{k.split('/')[-1]}={metrics[k]:.4g}" if isinstance(metrics[k], float)
                    else f"{k.split('/')[-1]}={metrics[k]}" for k in keys if k in metrics)


def format_seconds(seconds: float) -> str:
    """`1h02m`, `3m05s`, `42s`: short enough for a progress line."""
    s = int(max(0.0, seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class PhaseProgress:
    """Progress of one phase of `total` steps, resumed after `start` steps; `update` after each step."""

    def __init__(self, label: str, total: int, start: int = 0, console: Console | None = None):
        self.label, self.total, self.start = label, max(1, total), start
        self.console = console or Console(stderr=True)
        self.t0 = time.perf_counter()
        self.printed_tenth = -1  # plain mode: the last tenth of the phase a line was printed for
        self.bar: Progress | None = None
        if self.console.is_terminal:
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                TextColumn("{task.fields[metrics]}"), console=self.console,
                                refresh_per_second=2)  # a redraw costs the driver CPU the workers need
            self.task = self.bar.add_task(label, total=self.total, completed=start, metrics="")
            self.bar.start()
            atexit.register(self.close)  # an exception ending the process still restores the terminal

    def eta_s(self, step: int) -> float:
        """Seconds left at the mean pace of the steps done in this process (a resumed phase counts from its start)."""
        done = step - self.start
        return (time.perf_counter() - self.t0) / done * (self.total - step) if done > 0 else 0.0

    def update(self, step: int, metrics_text: str = "", every: int = 1) -> None:
        """Redraw the bar; in plain mode print a line at the first and last step and at a step that is a multiple
        of `every` in a tenth of the phase not printed yet."""
        if self.bar is not None:
            self.bar.update(self.task, completed=step, metrics=" ".join(metrics_text.split()[:BAR_METRICS]))
            return
        tenth = step * PLAIN_LINES_PER_PHASE // self.total
        if step not in (self.start + 1, self.total) and (step % max(1, every) or tenth == self.printed_tenth):
            return
        self.printed_tenth = tenth
        parts = [f"[{self.label}] step {step}/{self.total} ({100 * step // self.total}%)", metrics_text,
                 f"elapsed {format_seconds(time.perf_counter() - self.t0)} ETA {format_seconds(self.eta_s(step))}"]
        self.console.file.write(" ".join(p for p in parts if p) + "\n")
        self.console.file.flush()

    def close(self) -> None:
        """Stop redrawing; the finished bar stays on screen as one line."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
            atexit.unregister(self.close)
