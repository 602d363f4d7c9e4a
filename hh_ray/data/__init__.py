"""HH-RLHF data: loading, validation, mixing, splitting and tokenization (no Ray, no models)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from hh_ray.data.hh import (  # noqa: F401  (the data layer's public names)
    SUBSETS,
    Comparison,
    DataError,
    LoadReport,
    load_comparisons,
    local_subsets,
    mix_subsets,
    split_holdout,
    unique_prompts,
)

if TYPE_CHECKING:
    from hh_ray.config import DataConfig


def load_train_holdout(data_cfg: DataConfig, seed: int) -> tuple[list[Comparison], list[Comparison], LoadReport]:
    """The job's comparisons: validated, split by prompt hash into train/holdout, train side reweighted.

    No training comparison at all is an error that names where the data was read and what was rejected.
    """
    items, report = load_comparisons(data_cfg.data_dir, data_cfg.subsets, data_cfg.split, data_cfg.strict)
    train, held = split_holdout(items, data_cfg.holdout_fraction)
    if not train:
        raise DataError(f"no usable training comparisons in {data_cfg.data_dir} (subsets {data_cfg.subsets}, "
                        f"split {data_cfg.split}); malformed records skipped: {report.summary() or 'none'}")
    train = mix_subsets(train, data_cfg.subset_weights, seed)
    if data_cfg.max_examples:
        train = train[: data_cfg.max_examples]
    extra = [c for x in data_cfg.extra for c in load_extra(x.dir, x.weight, data_cfg.strict, seed, report)]
    if extra:
        train = train + extra
        random.Random(seed + 1).shuffle(train)
    return train, held, report


def load_extra(folder: str, weight: float, strict: bool, seed: int, report: LoadReport) -> list[Comparison]:
    """The train split of every subset in an HH-layout folder, each subset's size times `weight`."""
    from pathlib import Path

    if not Path(folder).expanduser().is_dir():
        raise DataError(f"data.extra: folder not found: {folder}")
    subsets = local_subsets(folder)
    if not subsets:
        raise DataError(f"data.extra: no subset folders with train.jsonl.gz under {folder}")
    items, rep = load_comparisons(folder, subsets, "train", strict)
    report.kept.update(rep.kept)
    for file, counts in rep.rejected.items():
        report.rejected.setdefault(file, counts)
    return mix_subsets(items, {s: weight for s in {c.subset for c in items}}, seed) if items else []
