"""`python -m benchmarks --out DIR [--quick] [--only a,b]`: hh-ray's speed and memory, as ratios in one run.

Every pair of contenders runs interleaved in this same process run (A, B, A, B, ...), so a noisy machine
shifts both alike and the ratios hold. Writes DIR/results.json and DIR/results.md. Not part of the tests.
One module per benchmark; `benchmarks.common` holds what they share.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.async_packing import bench_async, bench_packing
from benchmarks.common import Fixture, machine
from benchmarks.pm import bench_pm
from benchmarks.ppo import bench_ppo
from benchmarks.rollout import bench_rollout
from benchmarks.scaling import bench_rollout_scaling
from benchmarks.sync import bench_sync
from benchmarks.trainer import bench_trainer
from benchmarks.trl_comparison import bench_trl
from hh_ray.files import write_text_atomic

BENCHES = {"rollout": bench_rollout, "pm": bench_pm, "sync": bench_sync, "scaling": bench_rollout_scaling,
           "ppo": bench_ppo, "async": bench_async, "packing": bench_packing, "trl": bench_trl,
           "trainer": bench_trainer}


def to_markdown(results: dict) -> str:
    lines = ["# hh-ray benchmarks", "", "Machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()), "",
             "| figure | value |", "|---|---|"]

    def walk(prefix, obj):
        for k, v in obj.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            elif isinstance(v, float):
                lines.append(f"| {prefix}{k} | {v:.4g} |")
            else:
                lines.append(f"| {prefix}{k} | {v} |")

    walk("", {k: v for k, v in results.items() if k != "machine"})
    return "\n".join(lines) + "\n"


def keep_plots(result: dict, out: Path) -> dict:
    """Benchmarks draw their PNGs in the temporary fixture folder: copy each `*_png` into `out`, path and all."""
    for key, value in result.items():
        if isinstance(value, dict):
            keep_plots(value, out)
        elif key.endswith("_png") and Path(value).is_file():
            result[key] = str(shutil.copy(value, out / Path(value).name))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="about 5 minutes on 2 cores")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHES))
    ap.add_argument("--models", default="", help="models the TRL comparison measures: comma-separated of tiny, "
                    "small, smollm2-135m (default: all; tiny with --quick)")
    ap.add_argument("--address", default="local", help="Ray cluster to run on ('auto' inside a cluster)")
    ap.add_argument("--gpus-per-actor", type=float, default=0.0,
                    help="GPUs per engine / rank / model actor (0 = CPU). Weight sync over NCCL and the "
                         "2-rank/2-engine scaling need whole, distinct GPUs (1)")
    args = ap.parse_args(argv)
    wanted = [b for b in (args.only.split(",") if args.only else BENCHES) if b]
    unknown = [b for b in wanted if b not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    if "trl" in wanted and importlib.util.find_spec("trl") is None:
        ap.error("the TRL comparison needs TRL: pip install -r benchmarks/requirements.txt (or leave out 'trl')")
    import ray

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    local = args.address == "local"
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False,
             **({"num_cpus": 6, "runtime_env": {"env_vars": {"RAY_AUTH_MODE": "disabled"}}} if local else {}))
    # a partial run (--only) updates its own keys in an existing results.json and keeps the others
    previous = out / "results.json"
    results: dict = json.loads(previous.read_text()) if previous.is_file() else {}
    results["machine"] = machine()
    with tempfile.TemporaryDirectory() as tmp:
        fx = Fixture(Path(tmp), args.quick, args.gpus_per_actor)
        fx.sizes = tuple(m for m in args.models.split(",") if m)
        for name in wanted:
            t0 = time.perf_counter()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            # a subset of a benchmark's figures (--models) replaces those figures and keeps the rest
            results[name] = results.get(name, {}) | keep_plots(BENCHES[name](fx, args.quick), out)
            results[name] |= {"bench_seconds": time.perf_counter() - t0, "quick": args.quick}
            write_text_atomic(out / "results.json", json.dumps(results, indent=2))
    if "pm" in results:
        results.setdefault("scaling", {})["trainer_2_over_1"] = results["pm"]["trainer_2_over_1"]
    write_text_atomic(out / "results.json", json.dumps(results, indent=2))
    write_text_atomic(out / "results.md", to_markdown(results))
    print(to_markdown(results))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
