"""Files written atomically: a temporary file beside the target, then `os.replace`, so a reader (or a run that
resumes after a kill) never sees half a file. The temporary name carries the process id: two processes, e.g. on
nodes sharing a folder, never write the same one.

Also the two guards of a run folder against what a kill or a second command leaves behind: JSON-lines logs whose
last line a kill cut in half (`read_jsonl(..., repair=True)`), and one writer per folder (`RunLock`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` whole or not at all; flushed to disk before the rename, so a power cut cannot leave
    the new name pointing at an empty file. Parent folders are created."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    return p


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


class DamagedFileError(ValueError):
    """A log line before the last one is not JSON: not what a kill leaves, so no line is guessed away."""


def read_jsonl(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """The rows of a JSON-lines file (none when it does not exist).

    A last line that is not JSON is what a kill during an append leaves: readers skip it (it may also be a write
    in flight), and `repair=True` (a command resuming its own log) cuts it off the file with one warning naming the
    byte offset. A bad line anywhere else raises `DamagedFileError` naming the file and line.
    """
    p = Path(path)
    if not p.is_file():
        return []
    data = p.read_bytes()
    rows, offset = [], 0
    lines = data.split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"a JSON {type(row).__name__}, not an object")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if i < last:
                why = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise DamagedFileError(f"{p}: line {i + 1} is not a JSON object ({why}); lines follow it, so "
                                       "this is not an interrupted write: fix or remove that line") from None
            if repair:
                with p.open("r+b") as fh:
                    fh.truncate(start)
                print(f"[hh-ray] warning: {p}: cut off a damaged last line at byte {start} "
                      f"({len(data) - start} bytes; a write interrupted by a kill)", file=sys.stderr, flush=True)
            return rows
        rows.append(row)
    if repair and data and not data.endswith(b"\n"):  # a complete last row without its newline: the next append
        with p.open("ab") as fh:                       # would be glued onto it
            fh.write(b"\n")
    return rows


@dataclass
class LockHolder:
    host: str
    pid: int
    command: str
    started: str

    def __str__(self) -> str:
        return f"`{self.command}` (pid {self.pid} on {self.host}, since {self.started})"


class RunFolderBusy(RuntimeError):
    """Another live command holds the run folder."""


class RunLock:
    """One writer per run folder: an exclusive `flock` on `<folder>/.hh-ray.lock`, held for the process's life.

    The kernel drops the lock when its holder dies however it dies, so a dead holder never blocks the folder; its
    record (host, pid, command, start time) stays in the file and the next command takes over with a warning. The
    file is never deleted (deleting it would let two commands lock two different files of one name); a clean
    exit empties it.
    """

    NAME = ".hh-ray.lock"

    def __init__(self, folder: str | os.PathLike, command: str):
        self.path = Path(folder) / self.NAME
        self.command = command
        self.fd: int | None = None

    def holder(self) -> LockHolder | None:
        try:
            return LockHolder(**json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def is_held(self) -> bool:
        """Whether a live command holds the folder: a shared `flock` probe, released at once (a command starting in
        that instant would be refused as if the folder were busy)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's lock
        return False

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            held = self.holder()
            raise RunFolderBusy(f"{self.path.parent} is in use by {held or 'another command'}; wait for it to "
                                f"finish or stop it (one writer per run folder)") from None
        previous = self.holder()
        if previous:  # its holder died without a clean exit (SIGKILL, a lost node)
            print(f"[hh-ray] warning: taking over {self.path} from {previous}, which is gone", file=sys.stderr,
                  flush=True)
        me = LockHolder(socket.gethostname(), os.getpid(), self.command,
                        time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
