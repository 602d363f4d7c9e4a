"""HH-RLHF comparisons: load (local folder or the hub via `datasets`), validate, split into prompt/responses.

A transcript is a sequence of turns that begin with "\\n\\nHuman: " and "\\n\\nAssistant: ". A comparison is
split at its final "\\n\\nAssistant:" marker: the prompt is everything up to and including it, the chosen and
rejected responses are what follows, so `prompt + chosen == record["chosen"]` byte for byte.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # the malformed-record summaries already warned about in this process

SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"

# Reject reasons, each counted per file.
BAD_JSON = "bad_json"
MISSING_KEY = "missing_key"
NO_FINAL_ASSISTANT = "no_final_assistant"
PROMPT_MISMATCH = "prompt_mismatch"
IDENTICAL = "identical"
EMPTY_RESPONSE = "empty_response"
BAD_UTF8 = "bad_utf8"
TRUNCATED = "truncated_file"  # a gzip stream that ends early: the lines before it are kept
NOT_GZIP = "not_gzip"  # named .gz, but not gzip
FILE_PROBLEMS = (BAD_JSON, BAD_UTF8, TRUNCATED, NOT_GZIP)
REASONS = (BAD_JSON, MISSING_KEY, NO_FINAL_ASSISTANT, PROMPT_MISMATCH, IDENTICAL, EMPTY_RESPONSE, BAD_UTF8, TRUNCATED,
           NOT_GZIP)


class DataError(ValueError):
    """A data problem that stops loading (strict mode, or a missing folder); names file, line and reason."""


@dataclass(frozen=True)
class Comparison:
    """One human judgement: the shared prompt and the preferred (chosen) and other (rejected) response."""

    prompt: str
    chosen: str
    rejected: str
    subset: str
    source: str = ""  # "file:line" for error messages and provenance

    @property
    def chosen_dialogue(self) -> str:
        return self.prompt + self.chosen

    @property
    def rejected_dialogue(self) -> str:
        return self.prompt + self.rejected


@dataclass
class LoadReport:
    """Kept and rejected counts per file; `rejected[file][reason] = count`."""

    kept: Counter = field(default_factory=Counter)
    rejected: dict[str, Counter] = field(default_factory=dict)

    def reject(self, file: str, reason: str) -> None:
        self.rejected.setdefault(file, Counter())[reason] += 1

    def total_rejected(self) -> int:
        return sum(sum(c.values()) for c in self.rejected.values())

    def summary(self) -> str:
        return "; ".join(f"{file}: " + ", ".join(f"{r}={n}" for r, n in sorted(counts.items()))
                         for file, counts in sorted(self.rejected.items()))


def split_prompt(transcript: str) -> tuple[str, str] | None:
    """(prompt, response) at the final Assistant marker, or None when the transcript does not end on one."""
    cut = transcript.rfind(ASSISTANT)
    if cut < 0 or transcript.rfind(HUMAN) > cut:
        return None
    end = cut + len(ASSISTANT)
    return transcript[:end], transcript[end:]


def split_turns(transcript: str) -> list[tuple[str, str]]:
    """[(role, text)] with role in {"Human", "Assistant"}; text excludes the marker and the space after it.

    Text before the first marker (normally none) is returned under role "". Joining
    `"\\n\\n" + role + ":" + (" " + text if text else "")` rebuilds turns whose text is preceded by one space.
    """
    parts = re.split(r"\n\n(Human|Assistant):", transcript)  # [text before, role, text, role, text, ...]
    turns = [("", parts[0])] + list(zip(parts[1::2], parts[2::2]))
    turns = [(role, text.removeprefix(" ")) for role, text in turns]
    return [t for t in turns if t[0] or t[1]]


def parse_record(obj: object, subset: str, source: str) -> Comparison | str:
    """A validated Comparison, or the reject reason."""
    if not isinstance(obj, dict) or not isinstance(obj.get("chosen"), str) or not isinstance(obj.get("rejected"), str):
        return MISSING_KEY
    chosen_split, rejected_split = split_prompt(obj["chosen"]), split_prompt(obj["rejected"])
    if chosen_split is None or rejected_split is None:
        return NO_FINAL_ASSISTANT
    (prompt, chosen), (r_prompt, rejected) = chosen_split, rejected_split
    if prompt != r_prompt:
        return PROMPT_MISMATCH
    if not chosen.strip() or not rejected.strip():
        return EMPTY_RESPONSE
    if chosen == rejected:
        return IDENTICAL
    return Comparison(prompt, chosen, rejected, subset, source)


def _read_lines(path: Path) -> Iterator[str]:
    """Lines of a (gzipped) JSONL file; a line that is not UTF-8 comes back as BAD_UTF8, and a file that ends
    early or is not gzip at all ends with one TRUNCATED or NOT_GZIP entry after the lines that could be read."""
    import zlib

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            for raw in fh:
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield BAD_UTF8
    except (EOFError, zlib.error) as exc:
        log.warning("%s: ends early (%s)", path, exc)
        yield TRUNCATED
    except gzip.BadGzipFile:
        yield NOT_GZIP
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _files_of(root: Path, subset: str, split: str | None) -> list[Path]:
    folder = root / subset
    if split is None:  # every file of the subset (used by `pm eval` on arbitrary folders)
        return sorted(list(folder.glob("*.jsonl.gz")) + list(folder.glob("*.jsonl")))
    return [p for p in (folder / f"{split}.jsonl.gz", folder / f"{split}.jsonl") if p.is_file()][:1]


def _records_local(root: Path, subset: str, split: str | None) -> Iterator[tuple[str, int, object]]:
    files = _files_of(root, subset, split)
    if not files:
        want = f"{split}.jsonl.gz" if split else "*.jsonl.gz"
        have = ", ".join(local_subsets(str(root))) or "none"
        raise DataError(f"no {want} for subset '{subset}' under {root / subset} (subsets there: {have})")
    for path in files:
        for lineno, line in enumerate(_read_lines(path), start=1):
            if line in (BAD_UTF8, TRUNCATED, NOT_GZIP):
                yield str(path), lineno, line
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = BAD_JSON
            yield str(path), lineno, obj


def _records_hub(hub_id: str, subset: str, split: str) -> Iterator[tuple[str, int, object]]:
    import datasets  # only the hub path needs it at import time

    try:
        ds = datasets.load_dataset(hub_id, data_dir=subset, split=split)
    except (ConnectionError, FileNotFoundError, ValueError) as exc:
        raise DataError(f"cannot load '{hub_id}' (subset {subset}, split {split}) from the hub: {exc}. "
                        "Offline? Point HH_RLHF_DIR or data.data_dir at a local folder in the HH layout") from None
    name = f"{hub_id}/{subset}/{split}"
    for i, row in enumerate(ds, start=1):
        yield name, i, row


def is_local(data_dir: str) -> bool:
    return Path(data_dir).exists() or data_dir.startswith((".", "/", "~"))


def local_subsets(data_dir: str) -> list[str]:
    """Subset folders present under a local HH-layout folder (any name, not only the four official ones)."""
    root = Path(data_dir).expanduser()
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (any(p.glob("*.jsonl.gz")) or any(p.glob("*.jsonl"))))


def load_comparisons(data_dir: str, subsets: Iterable[str] = SUBSETS, split: str | None = "test",
                     strict: bool = False) -> tuple[list[Comparison], LoadReport]:
    """Load and validate comparisons; bad records are skipped and counted (or raise in strict mode).

    `data_dir` is a local folder in the HH layout (`<subset>/<split>.jsonl.gz`) or a hub dataset id.
    `split=None` reads every `*.jsonl(.gz)` file of each subset folder (local only).
    """
    report = LoadReport()
    out: list[Comparison] = []
    local = is_local(data_dir)
    if local and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"data folder not found: {data_dir}")
    for subset in subsets:
        records = (_records_local(Path(data_dir).expanduser(), subset, split) if local
                   else _records_hub(data_dir, subset, split or "train"))
        for file, lineno, obj in records:
            result = obj if obj in FILE_PROBLEMS else parse_record(obj, subset, f"{file}:{lineno}")
            if isinstance(result, str):
                if strict:
                    raise DataError(f"{file}:{lineno}: {result}")
                report.reject(file, result)
            else:
                report.kept[file] += 1
                out.append(result)
    if report.total_rejected():  # once per process: every stage of `hh-ray run` loads the same files
        summary = f"skipped {report.total_rejected()} malformed HH records ({report.summary()})"
        log.log(logging.DEBUG if summary in _WARNED else logging.WARNING, summary)
        _WARNED.add(summary)
    return out, report


def prompt_bucket(prompt: str) -> float:
    """A stable number in [0, 1) from the prompt text, so a prompt always lands on the same side of a split."""
    digest = hashlib.sha1(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_holdout(items: list[Comparison], fraction: float) -> tuple[list[Comparison], list[Comparison]]:
    """(train, holdout) by prompt hash: no prompt appears on both sides, and the split is order-independent."""
    train = [c for c in items if prompt_bucket(c.prompt) >= fraction]
    held = [c for c in items if prompt_bucket(c.prompt) < fraction]
    return train, held


def mix_subsets(items: list[Comparison], weights: dict[str, float], seed: int) -> list[Comparison]:
    """Reweight subsets: weight w keeps round(w * n) of a subset's n comparisons (repeating them when w > 1).

    The helpful/harmless proportion is an experiment axis of the paper; this is its knob. The result is
    shuffled with `seed`.
    """
    rng = random.Random(seed)
    by_subset: dict[str, list[Comparison]] = {}
    for c in items:
        by_subset.setdefault(c.subset, []).append(c)
    unknown = set(weights) - set(by_subset)
    if unknown:
        raise DataError(f"subset_weights names subsets not loaded: {', '.join(sorted(unknown))}")
    out: list[Comparison] = []
    for subset, group in sorted(by_subset.items()):
        want = round(weights.get(subset, 1.0) * len(group))
        full, rest = divmod(want, len(group))
        out.extend(group * full)
        out.extend(rng.sample(group, rest))
    rng.shuffle(out)
    return out


def unique_prompts(items: Iterable[Comparison]) -> list[str]:
    """Prompts in first-seen order without repeats (PPO samples its own responses to them)."""
    return list(dict.fromkeys(c.prompt for c in items))
