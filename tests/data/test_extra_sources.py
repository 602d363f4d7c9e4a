"""data.extra: exported online folders join the PM's training side with a weight; the static held-out is untouched."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from hh_ray.config import ConfigError, DataConfig, ExtraData, load_config
from hh_ray.data import DataError, load_train_holdout


def _write(folder, subset, records):
    (folder / subset).mkdir(parents=True)
    with gzip.open(folder / subset / "train.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    (folder / subset / "meta").mkdir()
    (folder / subset / "meta" / "train.jsonl").write_text("{}\n" * len(records))  # a sidecar is never data


def _rec(i):
    ctx = f"\n\nHuman: question {i}\n\nAssistant:"
    return {"chosen": f"{ctx} good {i}", "rejected": f"{ctx} bad {i}"}


def test_extra_folders_weighted_and_static_holdout_unchanged(hh_dir, tmp_path):
    _write(tmp_path / "r0", "online-helpful", [_rec(i) for i in range(3)])
    _write(tmp_path / "r1", "online-harmless", [_rec(i) for i in range(3, 5)])
    base = DataConfig(data_dir=str(hh_dir), subsets=["helpful-base"], max_examples=50)
    train0, held0, _ = load_train_holdout(base, 0)
    mixed = DataConfig(data_dir=str(hh_dir), subsets=["helpful-base"], max_examples=50,
                       extra=[ExtraData(str(tmp_path / "r0"), 2.0), ExtraData(str(tmp_path / "r1"), 1.0)])
    train, held, _ = load_train_holdout(mixed, 0)
    assert held == held0  # the static held-out pairs stay the yardstick
    online = Counter((c.subset, c.chosen.strip()) for c in train if c.subset.startswith("online-"))
    assert online == Counter({("online-helpful", f"good {i}"): 2 for i in range(3)}
                             | {("online-harmless", f"good {i}"): 1 for i in range(3, 5)})
    assert len(train) == len(train0) + 8  # the static side is capped by max_examples, online data is not


def test_extra_bad_input(hh_dir, tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_train_holdout(DataConfig(data_dir=str(hh_dir), subsets=["helpful-base"],
                                      extra=[ExtraData(str(tmp_path / "nope"))]), 0)
    with pytest.raises(ConfigError, match=r"data.extra\[0\]"):
        load_config(None, ["data.extra=[{dir: x, weight: -1}]"])
