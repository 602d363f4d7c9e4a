"""Files written atomically: a temporary file beside the target, then `os.replace`, so a reader (or a run that
resumes after a kill) never sees half a file. The temporary name carries the process id: two processes, e.g. on
nodes sharing a folder, never write the same one."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    p = Path(path)
    tmp = p.with_name(f"{p.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, p)
    return p


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines file (none when it does not exist)."""
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []
