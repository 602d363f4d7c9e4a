"""One resume rule for every training stage (SFT, PM, PPO and the algorithms after it).

A stage continues after the newest step whose checkpoints are intact for every trainer role it runs (and which
its driver state, where it keeps one, names). Checkpoints of which none is usable stop the run instead of a
silent start-over that would overwrite them and the metrics log; `fresh` deletes them first, on purpose.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from hh_ray.workers.checkpoint import has_checkpoints, intact_tags


class ResumeError(RuntimeError):
    """A run folder holds a stage's checkpoints but none it can resume from; `fresh=true` starts over."""


def last_complete(ckpt: Path, fresh: bool, roles: tuple[str, ...] = ("",), what: str = "checkpoints",
                  named: Callable[[str], bool] = lambda tag: True, clear: tuple[Path, ...] = (),
                  saved_state: tuple[Path, ...] = ()) -> str | None:
    """The newest tag intact under `ckpt / role` for every role and accepted by `named`, or None for a new stage.

    `fresh` deletes `ckpt` and the files in `clear` (the stage's log) and returns None. `what` names the stage's
    checkpoints in the error a folder without a usable tag raises; `saved_state` (a driver's state files) counts
    as a checkpoint left behind, as a tag folder does.
    """
    if fresh:
        shutil.rmtree(ckpt, ignore_errors=True)
        for path in clear:
            path.unlink(missing_ok=True)
        return None
    intact = [intact_tags(ckpt / role) for role in roles]  # each newest first; damaged ones are warned about there
    usable = [tag for tag in intact[0] if all(tag in tags for tags in intact[1:]) and named(tag)]
    if usable:
        return usable[0]
    if any(has_checkpoints(ckpt / role) for role in roles) or saved_state:
        raise ResumeError(f"{ckpt} holds {what} but no step with intact {' and '.join(r or 'weights' for r in roles)}"
                          f" (see the warnings above); rerun with --fresh (or fresh=true) to start this stage over, "
                          f"which deletes them")
    return None
