"""Export stored comparisons in HH's own layout, so `data.data_dir` reads them beside the static HH data.

    <out>/<subset>/train.jsonl.gz, test.jsonl.gz   {"chosen": transcript, "rejected": transcript}
    <out>/<subset>/meta/train.jsonl, test.jsonl     one line per record, same order: id, strength, sources, ...

The subset is named per mode (`online-helpful`, `online-harmless`); train/test are split by the prompt hash
(`hh_ray.data.hh.prompt_bucket`), so a prompt never lands on both sides. In red-team mode `chosen` is already
the less harmful response in the store. The sidecar sits in a subfolder so HH's loader never reads it as data.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from hh_ray.data.hh import prompt_bucket
from hh_ray.files import write_bytes_atomic

from .config import HELPFUL, RED_TEAM
from .store import ComparisonRecord, Store

SUBSET_OF_MODE = {HELPFUL: "online-helpful", RED_TEAM: "online-harmless"}


@dataclass
class ExportSummary:
    out_dir: str
    files: dict[str, int] = field(default_factory=dict)  # relative path -> records

    @property
    def total(self) -> int:
        return sum(n for p, n in self.files.items() if p.endswith(".jsonl.gz"))


def hh_record(r: ComparisonRecord) -> dict:
    """HH's record: the whole transcript ending in the chosen / the rejected response."""
    return {"chosen": f"{r.context} {r.chosen}", "rejected": f"{r.context} {r.rejected}"}


def meta_record(r: ComparisonRecord) -> dict:
    return {"comparison_id": r.id, "task_id": r.task_id, "campaign": r.campaign, "mode": r.mode,
            "labeler": r.labeler, "choice": r.choice, "strength": r.strength,
            "source_a": r.source_a, "version_a": r.version_a, "source_b": r.source_b, "version_b": r.version_b,
            "chosen_is": ("A" if r.chosen == r.response_a else "B"), "decided_at": r.decided_at.isoformat(),
            "decide_seconds": r.decide_seconds}


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def export_records(records: list[ComparisonRecord], out_dir: str | os.PathLike, test_fraction: float) -> ExportSummary:
    """Write the records (one campaign or several) in HH layout; every file is replaced atomically."""
    out = Path(out_dir)
    summary = ExportSummary(str(out))
    groups: dict[tuple[str, str], list[ComparisonRecord]] = {}
    for r in records:
        split = "test" if prompt_bucket(r.context) < test_fraction else "train"
        groups.setdefault((SUBSET_OF_MODE[r.mode], split), []).append(r)
    for subset in sorted({SUBSET_OF_MODE[r.mode] for r in records}):
        for split in ("train", "test"):  # both files always exist, so a loader asking for either finds it
            rows = groups.get((subset, split), [])
            data = gzip.compress(_jsonl([hh_record(r) for r in rows]), mtime=0)
            write_bytes_atomic(out / subset / f"{split}.jsonl.gz", data)
            write_bytes_atomic(out / subset / "meta" / f"{split}.jsonl", _jsonl([meta_record(r) for r in rows]))
            summary.files[f"{subset}/{split}.jsonl.gz"] = len(rows)
            summary.files[f"{subset}/meta/{split}.jsonl"] = len(rows)
    return summary


def export_campaign(store: Store, campaign: str | None, out_dir: str | os.PathLike,
                    test_fraction: float) -> ExportSummary:
    """One campaign's comparisons (all campaigns when None) into `out_dir`."""
    return export_records(store.comparisons(campaign), out_dir, test_fraction)
