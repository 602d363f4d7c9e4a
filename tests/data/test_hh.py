"""The data layer on the real local HH files and on malformed fixtures written here."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from hh_ray.data.hh import (
    BAD_JSON,
    EMPTY_RESPONSE,
    IDENTICAL,
    MISSING_KEY,
    NO_FINAL_ASSISTANT,
    PROMPT_MISMATCH,
    REASONS,
    SUBSETS,
    DataError,
    load_comparisons,
    mix_subsets,
    split_holdout,
    split_prompt,
    split_turns,
)


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        return [line for line in fh if line.strip()]


@pytest.mark.parametrize("subset", SUBSETS)
def test_kept_plus_rejected_is_line_count_and_transcripts_rebuild(hh_dir, subset):
    path = hh_dir / subset / "test.jsonl.gz"
    items, report = load_comparisons(str(hh_dir), [subset])
    lines = _lines(path)
    rejected = sum(report.rejected.get(str(path), Counter()).values())
    assert report.kept[str(path)] == len(items)
    assert len(items) + rejected == len(lines)
    originals = {}
    for i, line in enumerate(lines, start=1):
        originals[f"{path}:{i}"] = json.loads(line)
    for c in items:
        rec = originals[c.source]
        assert c.prompt + c.chosen == rec["chosen"]
        assert c.prompt + c.rejected == rec["rejected"]
        assert c.prompt.endswith("\n\nAssistant:")


def _write(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


GOOD = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
MALFORMED = [
    ("{not json", BAD_JSON),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: a"}, MISSING_KEY),
    ({"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi"}, NO_FINAL_ASSISTANT),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: ho\n\nAssistant: b"}, PROMPT_MISMATCH),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: same", "rejected": "\n\nHuman: hi\n\nAssistant: same"}, IDENTICAL),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: ", "rejected": "\n\nHuman: hi\n\nAssistant: b"}, EMPTY_RESPONSE),
]


def test_every_reject_reason_is_counted_and_good_rows_survive(tmp_path):
    from hh_ray.data.hh import BAD_UTF8, NOT_GZIP, TRUNCATED

    # record-level reasons here; the file-level ones in test_damaged_files_are_counted_per_file_and_reason
    assert {r for _, r in MALFORMED} == set(REASONS) - {BAD_UTF8, TRUNCATED, NOT_GZIP}
    _write(tmp_path / "helpful-base" / "test.jsonl.gz", [GOOD] + [row for row, _ in MALFORMED] + [GOOD])
    items, report = load_comparisons(str(tmp_path), ["helpful-base"])
    assert len(items) == 2
    counts = report.rejected[str(tmp_path / "helpful-base" / "test.jsonl.gz")]
    assert counts == Counter({r: 1 for _, r in MALFORMED})


@pytest.mark.parametrize("row,reason", MALFORMED)
def test_strict_mode_names_file_line_and_reason(tmp_path, row, reason):
    path = tmp_path / "harmless-base" / "test.jsonl.gz"
    _write(path, [GOOD, row])
    with pytest.raises(DataError) as exc:
        load_comparisons(str(tmp_path), ["harmless-base"], strict=True)
    assert str(exc.value) == f"{path}:2: {reason}"


def test_missing_folder_and_subset_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        load_comparisons(str(tmp_path / "nope"), ["helpful-base"])
    with pytest.raises(DataError, match="no test.jsonl.gz for subset 'helpful-base'"):
        load_comparisons(str(tmp_path), ["helpful-base"])


def test_split_prompt_and_turns():
    t = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d"
    assert split_prompt(t) == ("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:", " d")
    assert split_prompt("\n\nHuman: a\n\nAssistant: b\n\nHuman: c") is None
    assert split_turns(t) == [("Human", "a"), ("Assistant", "b"), ("Human", "c"), ("Assistant", "d")]


def test_holdout_split_is_by_prompt_and_mixing_weights(hh_dir):
    items, _ = load_comparisons(str(hh_dir), SUBSETS)
    train, held = split_holdout(items, 0.2)
    assert len(train) + len(held) == len(items)
    assert not {c.prompt for c in train} & {c.prompt for c in held}
    assert 0.15 < len(held) / len(items) < 0.25
    mixed = mix_subsets(train, {"harmless-base": 2.0, "helpful-online": 0.5}, seed=1)
    by = Counter(c.subset for c in mixed)
    base = Counter(c.subset for c in train)
    assert by["harmless-base"] == 2 * base["harmless-base"]
    assert by["helpful-online"] == round(0.5 * base["helpful-online"])
    assert by["helpful-base"] == base["helpful-base"]
    assert mix_subsets(train, {"harmless-base": 2.0}, seed=1) == mix_subsets(train, {"harmless-base": 2.0}, seed=1)
    with pytest.raises(DataError, match="not loaded: bogus"):
        mix_subsets(train, {"bogus": 1.0}, seed=0)


def test_damaged_files_are_counted_per_file_and_reason(tmp_path):
    import gzip
    import json as _json

    from hh_ray.data.hh import BAD_UTF8, NOT_GZIP, TRUNCATED, load_comparisons

    good = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
    lines = "".join(_json.dumps(good) + "\n" for _ in range(200)).encode()
    for name in ("truncated", "plain", "utf8"):
        (tmp_path / name).mkdir()
    (tmp_path / "truncated" / "test.jsonl.gz").write_bytes(gzip.compress(lines)[:-40])  # cut inside the stream
    (tmp_path / "plain" / "test.jsonl.gz").write_bytes(lines)  # text wearing a .gz name
    (tmp_path / "utf8" / "test.jsonl.gz").write_bytes(gzip.compress(lines + b"\xff\xfe not utf-8\n" + lines))
    items, report = load_comparisons(str(tmp_path), ["truncated", "plain", "utf8"])
    by_file = {k.split("/")[-2]: dict(v) for k, v in report.rejected.items()}
    assert by_file["truncated"] == {TRUNCATED: 1} and by_file["plain"] == {NOT_GZIP: 1}
    assert by_file["utf8"] == {BAD_UTF8: 1}
    assert report.kept[str(tmp_path / "utf8" / "test.jsonl.gz")] == 400
    assert 0 < report.kept[str(tmp_path / "truncated" / "test.jsonl.gz")] < 200  # what could be read is kept
    assert len(items) == sum(report.kept.values())
