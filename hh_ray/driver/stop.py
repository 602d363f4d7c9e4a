"""Graceful stop on SIGTERM (what Kubernetes and preemptible nodes send before a kill) and SIGINT (Ctrl-C).

The first signal only raises a flag. Training loops look at it at each step boundary: they checkpoint the step
just finished (unless it is saved already) and raise `Preempted`, so the rerun loses no finished step. If the
step in progress does not end within the grace period (`ray.stop_grace_s`), or a second signal comes, the step
is abandoned (`Abandoned`, a KeyboardInterrupt, raised in the main thread) and the newest checkpoint stands.
The `hh-ray` command turns both into one line and exit code 128 + the signal (143, 130).
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field


class Preempted(Exception):
    """Stopped at a step boundary by a signal; the message says what was saved."""

    def __init__(self, signum: int, what: str):
        super().__init__(what)
        self.signum = signum


class Abandoned(KeyboardInterrupt):
    """The step in progress did not end within the grace period (or a second signal came)."""


@dataclass
class StopState:
    signum: int = 0  # the signal received; 0 = none
    grace_s: float = 25.0
    armed: bool = False  # handlers installed by the command (in-process callers such as tests keep their own)
    timer: threading.Timer | None = None
    previous: dict = field(default_factory=dict)  # the handlers before `install`, put back by `uninstall`


_state = StopState()


def _handle(signum: int, frame) -> None:
    if _state.signum:  # a second signal, or the grace period's timer
        raise Abandoned(f"the step in progress did not end within {_state.grace_s:g}s of the signal")
    _state.signum = signum
    _state.timer = threading.Timer(_state.grace_s, os.kill, (os.getpid(), signum))
    _state.timer.daemon = True
    _state.timer.start()


def install(grace_s: float) -> None:
    """Handle SIGTERM and SIGINT from now on (call from the main thread). `ray.init` sets its own SIGTERM handler
    (`sys.exit`), so `connect` calls `rearm` after it."""
    reset()
    _state.grace_s, _state.armed = grace_s, True
    _state.previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    rearm()


def uninstall() -> None:
    """Put the previous handlers back (the received signal is kept: the command still reports it)."""
    if _state.timer:
        _state.timer.cancel()
    if _state.armed and threading.current_thread() is threading.main_thread():
        for s, handler in _state.previous.items():
            signal.signal(s, handler)
    _state.armed = False


def rearm() -> None:
    if _state.armed and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _handle)
        signal.signal(signal.SIGINT, _handle)


def requested() -> bool:
    return bool(_state.signum)


def signal_number() -> int:
    return _state.signum


def stop(what: str) -> None:
    """Raise `Preempted` once the step boundary is saved; the grace timer stops (the rest is teardown)."""
    if _state.timer:
        _state.timer.cancel()
    raise Preempted(_state.signum, what)


def stop_after_step(stage: str, step: int, total: int, ckpt) -> None:
    stop(f"after {stage} step {step} of {total}, checkpoint in {ckpt}" if step
         else f"before {stage}'s first step, nothing new to save")


def reset() -> None:
    """Forget a received signal."""
    if _state.timer:
        _state.timer.cancel()
    _state.signum, _state.timer = 0, None

