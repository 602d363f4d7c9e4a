"""`hh-ray data stats`: per subset, comparisons kept, rejects by reason, and length percentiles."""

from __future__ import annotations

from collections import Counter

from hh_ray.data.hh import load_comparisons


def _percentiles(values: list[int]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {}
    arr = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(arr, q)), 1) for q in (5, 50, 95, 99)} | {"max": int(arr.max())}


def data_stats(data_dir: str, subsets: list[str], split: str | None, tokenizer) -> dict:
    """{subset: {"kept", "rejected": {reason: n}, "prompt_chars", "prompt_tokens", "response_chars", ...}}."""
    out: dict[str, dict] = {}
    for subset in subsets:
        items, report = load_comparisons(data_dir, [subset], split, strict=False)
        rejected: Counter = Counter()
        for counts in report.rejected.values():
            rejected.update(counts)
        responses = [r for c in items for r in (c.chosen, c.rejected)]
        prompts = [c.prompt for c in items]
        def tok(texts):
            return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
        out[subset] = {
            "kept": len(items),
            "rejected": dict(sorted(rejected.items())),
            "lines": len(items) + sum(rejected.values()),
            "prompt_chars": _percentiles([len(p) for p in prompts]),
            "prompt_tokens": _percentiles(tok(prompts)),
            "response_chars": _percentiles([len(r) for r in responses]),
            "response_tokens": _percentiles(tok(responses)),
        }
    return out
