"""HH-RLHF data: loading, validation, mixing, splitting and tokenization (no Ray, no models)."""

from __future__ import annotations

from hh_ray.data.hh import (  # noqa: F401  (the data layer's public names)
    SUBSETS,
    Comparison,
    DataError,
    LoadReport,
    load_comparisons,
    mix_subsets,
    split_holdout,
    unique_prompts,
)


def load_train_holdout(data_cfg, seed: int) -> tuple[list[Comparison], list[Comparison], LoadReport]:
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
    return train, held, report
