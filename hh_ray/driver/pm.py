"""`hh-ray pm` (train a preference model) and `hh-ray pm eval` (evaluate any saved PM on any HH folder)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from hh_ray.algo.batch import PairBatch, select
from hh_ray.algo.pm import pm_metrics
from hh_ray.config import JobConfig, train_dtype
from hh_ray.data import load_train_holdout
from hh_ray.data.hh import Comparison, DataError, LoadReport, load_comparisons, local_subsets, split_holdout
from hh_ray.data.tokenize import load_tokenizer, pm_input_ids
from hh_ray.driver.cluster import connect
from hh_ray.driver.runlog import write_json_atomic
from hh_ray.driver.sft import batches
from hh_ray.driver.stage import run_stage
from hh_ray.models.forward import PM_STATS, load_model, score_texts
from hh_ray.models.objectives import PairScores, PMObjective
from hh_ray.models.presets import resolve_model
from hh_ray.report.plots import reliability_diagram
from hh_ray.workers.trainer import TrainerGroup

PM_EVAL = "pm_eval.json"


def resolve_backbone(cfg: JobConfig) -> str:
    if cfg.pm.backbone != "sft":
        return resolve_model(cfg.pm.backbone)
    path = Path(cfg.run_dir) / "sft"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"pm.backbone is 'sft' but {path} holds no SFT policy; run `hh-ray sft` first")
    return str(path)


def metrics_for(pairs: list[Comparison], scores: list[list[float]]) -> dict:
    s = torch.tensor(scores, dtype=torch.float64)
    return pm_metrics(s[:, 0], s[:, 1], [c.subset for c in pairs], [len(c.chosen) for c in pairs],
                      [len(c.rejected) for c in pairs])


def write_eval(out_dir: Path, metrics: dict, extra: dict | None = None) -> dict:
    """pm_eval.json, pm_stats.json (score mean/std for PPO's normalized reward) and the reliability PNG."""
    write_json_atomic(out_dir / PM_EVAL, metrics | (extra or {}))
    write_json_atomic(out_dir / PM_STATS, {"mean": metrics["score_mean"], "std": max(metrics["score_std"], 1e-6)})
    reliability_diagram(metrics["calibration"], metrics["ece"], out_dir / "reliability.png")
    return metrics


def require_pm(path: Path, need_stats: bool = False) -> None:
    """A folder holding a trained PM (a scalar-head model), else one clear error; a random head scores noise."""
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no saved PM at {path} (config.json missing)")
    archs = json.loads((path / "config.json").read_text()).get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise DataError(f"{path} is not a preference model (architectures {archs}); pass a folder written by "
                        f"`hh-ray pm`, e.g. <run_dir>/pm")
    if need_stats and not (path / PM_STATS).is_file():
        raise DataError(f"{path} has no {PM_STATS} (score mean/std measured on held-out pairs), so PPO rewards "
                        f"would be raw scores; retrain the PM with data.holdout_fraction > 0 (e.g. 0.1)")


TEST_PM = "pm-test"


def run_pm(cfg: JobConfig, with_test_pm: bool = True) -> str:
    """Train on the train side, evaluate on held-out prompts, export to `<run_dir>/pm`; returns that path.

    With `pm.test_split`, the train side is cut in two halves by prompt: the PM PPO trains against learns from
    one, and a second, held-out "test" PM (`<run_dir>/pm-test`) from the other, to judge PPO's samples by a PM
    the policy never optimized (the paper's robustness check). `with_test_pm=False` trains the first alone.
    """
    train, held, _ = load_train_holdout(cfg.data, cfg.seed)
    if not cfg.pm.test_split:
        return train_pm(cfg, train, held, "pm")
    h = cfg.data.holdout_fraction
    first, second = split_holdout(train, h + (1 - h) / 2)  # prompt buckets [h, mid) and [mid, 1): equal halves
    out = train_pm(cfg, first, held, "pm")
    if with_test_pm:
        train_pm(cfg, second, held, TEST_PM)
    return out


def train_pm(cfg: JobConfig, train: list[Comparison], held: list[Comparison], name: str) -> str:
    """One PM on `train`, evaluated on `held`, exported to `<run_dir>/<name>`."""
    run_dir = Path(cfg.run_dir)
    out = run_dir / name
    backbone = resolve_backbone(cfg)
    tok = load_tokenizer(backbone, cfg.data.format)
    def encode(items):
        return PairBatch([pm_input_ids(tok, c.prompt, c.chosen, cfg.pm.max_tokens) for c in items],
                         [pm_input_ids(tok, c.prompt, c.rejected, cfg.pm.max_tokens) for c in items])
    train_enc, held_enc = encode(train), encode(held)
    t = cfg.pm.trainer
    bs = t.micro_batch_size * t.grad_accum_steps * t.num_ranks
    steps = max(1, int(cfg.pm.epochs * len(train) / bs))
    objective = PMObjective(cfg.pm.margin, cfg.pm.center_coef)
    connect(cfg.ray, cfg.run_dir)
    group = TrainerGroup(f"{name}-trainer", backbone, "pm", t, cfg.seed, train_dtype(cfg.model))

    def heldout() -> dict:
        m = metrics_for(held, group.forward(held_enc, PairScores()))
        return {"pm/heldout_accuracy": m["accuracy"], "pm/heldout_ece": m["ece"]}

    try:
        run_stage("pm", group, objective, steps,
                  lambda step: select(train_enc, batches(len(train), bs, cfg.seed, step - 1)),
                  run_dir / "checkpoints" / name, run_dir / f"{name}-logs", cfg, cfg.pm.log_every,
                  cfg.pm.checkpoint_every, show=("pm/loss", "pm/accuracy", "pm/units_per_s", "pm/heldout_accuracy"),
                  evaluate=heldout if held else None, eval_every=cfg.pm.eval_every,
                  label="test PM" if name == TEST_PM else "PM")
        group.export_hf(str(out))
        if held:
            result = metrics_for(held, group.forward(held_enc, PairScores()))
            write_eval(out, result, {"backbone": backbone, "train_pairs": len(train), "steps": steps})
            print(format_eval(result), file=sys.stderr)
        else:
            print("[pm] data.holdout_fraction=0: no held-out pairs, so no pm_stats.json; PPO will refuse this PM",
                  file=sys.stderr)
    finally:
        group.shutdown()
    print(f"[pm] saved to {out}")
    return str(out)


def format_eval(m: dict) -> str:
    lines = [f"PM accuracy {m['accuracy']:.3f} on {m['pairs']} pairs "
             f"(length baseline {m['length_baseline_accuracy']:.3f}), ECE {m['ece']:.3f}"]
    for name, s in m["per_subset"].items():
        lines.append(f"  {name:28s} accuracy {s['accuracy']:.3f}  length baseline "
                     f"{s.get('length_baseline_accuracy', float('nan')):.3f}  pairs {s['pairs']}")
    return "\n".join(lines)


def score_folder(pm: str | Path, data_dir: str | Path, max_tokens: int = 0, batch_size: int = 32
                 ) -> tuple[list[Comparison], LoadReport, list[list[float]]]:
    """A saved PM's [chosen, rejected] scores of every comparison in an HH-layout folder (every *.jsonl(.gz) under
    each subset folder), on this process's CPU; `max_tokens` 0 = what the PM's positions allow, at most 512."""
    if not Path(data_dir).is_dir():
        raise DataError(f"data folder not found: {data_dir}")
    subsets = local_subsets(str(data_dir))
    if not subsets:
        raise DataError(f"no subset folders with *.jsonl.gz under {data_dir}")
    pairs, report = load_comparisons(str(data_dir), subsets, split=None)
    if not pairs:
        raise DataError(f"no valid comparisons under {data_dir} ({report.summary()})")
    model, tok = load_model(str(pm), "pm"), load_tokenizer(str(pm))
    max_tokens = max_tokens or min(512, getattr(model.config, "max_position_embeddings", 512))
    prompts = [p.prompt for p in pairs]
    c = score_texts(model, tok, prompts, [p.chosen for p in pairs], max_tokens, batch_size)
    r = score_texts(model, tok, prompts, [p.rejected for p in pairs], max_tokens, batch_size)
    return pairs, report, torch.stack([c, r], 1).tolist()


def evaluate_checkpoint(checkpoint: str, data_dir: str, as_json: bool, batch_size: int = 32) -> int:
    """`hh-ray pm eval`: every comparison under `data_dir` scored; rejected records reported."""
    ck = Path(checkpoint)
    require_pm(ck)
    pairs, report, scores = score_folder(ck, data_dir, batch_size=batch_size)
    m = metrics_for(pairs, scores)
    rejected = {f: dict(cnt) for f, cnt in report.rejected.items()}
    out = {k: m[k] for k in ("accuracy", "pairs", "per_subset", "ece", "length_baseline_accuracy")}
    out["rejected"] = rejected
    png = ck / "reliability.png"
    reliability_diagram(m["calibration"], m["ece"], png, title=f"PM calibration on {Path(data_dir).name}")
    if as_json:
        print(json.dumps(out))
    else:
        print(format_eval(m))
        if rejected:
            print(f"rejected records: {report.summary()}")
        print(f"reliability diagram: {png}")
    return 0
