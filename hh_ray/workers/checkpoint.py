"""Checkpoint folders on disk: a complete tag carries a manifest of its files, and resume trusts only tags whose
files are all there, at their recorded sizes, and readable.

Layout: `<root>/<tag>/...` (DeepSpeed's files) and `<root>/<tag>/COMPLETE` (JSON: time and manifest), written
last, after every rank's files; `<root>/latest` names the newest tag. Any process may be killed at any moment,
so a tag without its marker, or with a file missing, cut short or unreadable, is skipped with a warning and
the newest intact tag is used instead.

Under ZeRO every rank writes its own shard; `missing_checkpoint_files` names the files a whole checkpoint must
hold (after DeepSpeed's `_get_ckpt_name`), so rank 0 marks it COMPLETE only when every rank's shard is in the
(shared) folder: ranks on other nodes writing to a local disk would otherwise leave a marked, unloadable tag.
"""

from __future__ import annotations

import json
import logging
import re
import time
import zipfile
from pathlib import Path

from hh_ray.files import write_text_atomic

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"


def write_manifest(tag_dir: Path) -> None:
    """Mark `tag_dir` complete: every file below it with its size, written atomically as the last file."""
    files = {str(p.relative_to(tag_dir)): p.stat().st_size for p in sorted(tag_dir.rglob("*"))
             if p.is_file() and p.name != COMPLETE}
    write_text_atomic(tag_dir / COMPLETE, json.dumps({"time": time.time(), "files": files}))


def checkpoint_problem(root: str | Path, tag: str) -> str | None:
    """Why `root/tag` cannot be resumed from, or None when it is intact."""
    tag_dir = Path(root) / tag
    marker = tag_dir / COMPLETE
    if not marker.is_file():
        return f"{tag_dir} has no {COMPLETE} marker (a save that did not finish)"
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return f"{marker} is not a readable manifest"
    for rel, size in files.items():
        path = tag_dir / rel
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size} bytes, the manifest says {size}"
        if path.suffix == ".pt":
            try:
                with zipfile.ZipFile(path) as zf:  # torch.save's zip format: a cut file has no central directory
                    zf.namelist()
            except (zipfile.BadZipFile, OSError) as exc:
                return f"{path} is unreadable ({exc})"
    return None


def _step_of(tag: str) -> int:
    m = re.search(r"(\d+)$", tag)
    return int(m.group(1)) if m else -1


def _tag_dirs(root: str | Path) -> list[Path]:
    """Tag folders under `root`, intact or not (staging folders start with a dot)."""
    rootp = Path(root)
    return [p for p in rootp.iterdir() if p.is_dir() and not p.name.startswith(".")] if rootp.is_dir() else []


def intact_tags(root: str | Path) -> list[str]:
    """Tags under `root` that are intact, newest (highest step) first; damaged ones are reported once each."""
    out = []
    for d in sorted(_tag_dirs(root), key=lambda p: _step_of(p.name), reverse=True):
        problem = checkpoint_problem(root, d.name)
        if problem is None:
            out.append(d.name)
        elif (d / COMPLETE).is_file():  # marked complete yet damaged: say so; unmarked debris is normal
            log.warning("skipping damaged checkpoint %s: %s", d, problem)
    return out


def latest_tag(root: str | Path) -> str | None:
    """The newest intact tag under `root`, or None; warns when that is not the tag `root/latest` names."""
    tags = intact_tags(root)
    named = Path(root) / "latest"
    if tags and named.is_file() and named.read_text().strip() != tags[0]:
        log.warning("checkpoint %s/%s is not intact; resuming from %s", root, named.read_text().strip(), tags[0])
    return tags[0] if tags else None


def has_checkpoints(root: str | Path) -> bool:
    """Whether any tag folder (intact or not) exists under `root`."""
    return bool(_tag_dirs(root))


def expected_checkpoint_files(world: int, zero_stage: int, bf16: bool) -> list[str | tuple[str, ...]]:
    """Per file, its name (or the names it may have) in a checkpoint of `world` data-parallel ranks.

    Model states: one file (`mp_rank_00_model_states.pt`) below ZeRO-3, one per rank at ZeRO-3. Optimizer
    states: one per rank at ZeRO 1-3 (DeepSpeed prefixes them `bf16_` in bf16 mode); at stage 0 they live in the
    model states file, in bf16 too (DeepSpeed 0.19 wraps a bf16 model's optimizer in its fp16-style optimizer).
    """
    if zero_stage == 3:
        files: list[str | tuple[str, ...]] = [f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(world)]
    else:
        files = ["mp_rank_00_model_states.pt"]
    if zero_stage >= 1:
        for r in range(world):
            plain = f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"
            files.append((f"bf16_{plain}", plain) if bf16 else plain)
    return files


def missing_checkpoint_files(folder: str | Path, world: int, zero_stage: int, bf16: bool = False) -> list[str]:
    """The expected files `folder` lacks (empty when the checkpoint is whole); names as DeepSpeed writes them."""
    folder = Path(folder)
    missing = []
    for entry in expected_checkpoint_files(world, zero_stage, bf16):
        names = entry if isinstance(entry, tuple) else (entry,)
        if not any((folder / n).is_file() for n in names):
            missing.append(names[0])
    return missing
