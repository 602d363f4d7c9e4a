"""Sync against async PPO on the quickstart: does one-version-behind rollout learn as well as the synchronous loop?

    .venv/bin/python -m benchmarks.async_quickstart --run runs/quickstart --out bench-async --seeds 0 1

From a finished quickstart run's SFT policy and PM, runs the quickstart's PPO stage once per seed and mode:
`sync`, `async` (one version behind, decoupled PPO: the trainer's old logprobs, each token weighted by
pi_trainer / pi_engine) and `async-engine` (one version behind, plain PPO against the engine's logprobs).
Writes `async_quickstart.json` (held-out PM score before/after, each step's reward, samples/s; runs already in
it are kept, so modes can be added later) and `async_quickstart_reward.png` (every run's reward curve,
overlaid). Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

MODES = {"sync": ["ppo.async_rollout=false"], "async": ["ppo.async_rollout=true"],
         "async-engine": ["ppo.async_rollout=true", "ppo.algo.old_logprobs=engine"]}


def run_one(job: str, source: Path, run_dir: Path, seed: int, mode: str) -> dict:
    from hh_ray.config import load_config
    from hh_ray.driver.ppo import run_ppo
    from hh_ray.driver.runlog import read_metrics

    run_dir.mkdir(parents=True, exist_ok=True)
    for stage in ("sft", "pm"):  # the same policy and PM for every run
        if not (run_dir / stage).exists():
            os.symlink((source / stage).resolve(), run_dir / stage)
    cfg = load_config(job, [f"run_dir={run_dir}", f"seed={seed}", *MODES[mode], "logging.tensorboard=false"])
    result = run_ppo(cfg)
    rows = read_metrics(run_dir / "ppo" / "metrics.jsonl")
    return {"seed": seed, "mode": mode, "score_before": result["before"]["eval/pm_score"],
            "score_after": result["after"]["eval/pm_score"], "kl_after": result["after"]["eval/kl"],
            "reward": [r["objective/reward"] for r in rows], "samples_per_s": [r["perf/samples_per_s"] for r in rows]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished quickstart run folder (its sft/ and pm/ are used)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--job", default="jobs/quickstart.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=["sync", "async"])
    args = ap.parse_args(argv)
    source, out = Path(args.run), Path(args.out)
    for stage in ("sft", "pm"):
        if not (source / stage / "config.json").is_file():
            raise SystemExit(f"{source / stage} holds no model; run the quickstart first (hh-ray run)")
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "async_quickstart.json"
    runs = json.loads(saved.read_text()) if saved.is_file() else []
    for seed in args.seeds:
        for mode in args.modes:
            run = run_one(args.job, source, out / f"{mode}-seed{seed}", seed, mode)
            runs = [r for r in runs if (r["seed"], r["mode"]) != (seed, mode)] + [run]
            saved.write_text(json.dumps(runs, indent=1))
            print(f"[async-quickstart] seed {seed} {mode}: held-out PM score {run['score_before']:.3f} -> "
                  f"{run['score_after']:.3f}", flush=True)
    plot(runs, out / "async_quickstart_reward.png")
    return 0


LABELS = {"sync": "sync", "async": "async, decoupled PPO", "async-engine": "async, PPO on engine logprobs"}


def plot(runs: list[dict], png: Path) -> None:
    """Every run's reward curve, sorted by mode then seed."""
    from hh_ray.report.plots import line_plot

    runs = sorted(runs, key=lambda r: (list(LABELS).index(r["mode"]), r["seed"]))
    line_plot(list(range(1, len(runs[0]["reward"]) + 1)),
              {f"{LABELS[r['mode']]}, seed {r['seed']}": r["reward"] for r in runs}, "PPO step", "reward per sample",
              "Quickstart PPO, sync vs async (one version behind)", png)


if __name__ == "__main__":
    raise SystemExit(main())
