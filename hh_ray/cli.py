"""The `hh-ray` command: parse arguments, load the job config, call one driver."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="job YAML (see jobs/); defaults apply when omitted")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value, e.g. ppo.steps=5")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hh-ray", description="Distributed RLHF on Ray (Bai et al. 2022, Anthropic HH)")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect HH-RLHF data").add_subparsers(dest="data_command", required=True)
    stats = data.add_parser("stats", help="per subset: kept, rejects by reason, length percentiles")
    stats.add_argument("--data-dir", default=None, help="HH-layout folder or hub id (default: HH_RLHF_DIR or ../shared/data/hh-rlhf)")
    stats.add_argument("--split", default="test", help="split file to read; 'all' reads every *.jsonl.gz")
    stats.add_argument("--tokenizer", default=None, help="tokenizer for token lengths (default: BPE trained on the data)")
    stats.add_argument("--json", action="store_true", help="print one JSON object")

    _add_config(sub.add_parser("sft", help="fine-tune the initial policy on chosen HH dialogues"))
    pm = sub.add_parser("pm", help="train a preference model (or `pm eval`)")
    pm_sub = pm.add_subparsers(dest="pm_command")
    _add_config(pm_sub.add_parser("train", help="train a PM (the default: `hh-ray pm --config ...`)"))
    ev = pm_sub.add_parser("eval", help="evaluate a saved PM on a folder in the HH layout")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--data-dir", required=True)
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--batch-size", type=int, default=32)
    _add_config(sub.add_parser("ppo", help="PPO against the PM with a KL penalty to the initial policy"))
    _add_config(sub.add_parser("run", help="the whole pipeline: data -> tokenizer -> SFT -> PM -> PPO -> report"))
    sm = sub.add_parser("submit", help="submit a job to a Ray cluster through the Jobs API and follow it")
    sm.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://head:8265")
    sm.add_argument("--no-follow", action="store_true", help="print the job id and return")
    sm.add_argument("--token", default=None, help="Ray auth token (default: RAY_AUTH_TOKEN or Ray's token file)")
    sm.add_argument("--runtime-env", default=None, help="runtime env YAML (default: jobs/runtime_env.yaml when present)")
    sm.add_argument("--entrypoint", default="run", choices=["run", "sft", "pm", "ppo"])
    sm.add_argument("--cluster", default=None, help="cluster config the capacity plan checks (default: ray.cluster)")
    _add_config(sm)
    pl = sub.add_parser("plan", help="capacity plan: memory per group and GPU, placement on the cluster's node types")
    pl.add_argument("--cluster", default=None, help="launcher YAML or KubeRay manifest (default: the job's ray.cluster)")
    pl.add_argument("--gpu-memory-gb", type=float, default=80.0, help="GPU memory where a node type does not say")
    pl.add_argument("--json", action="store_true", help="print one JSON object")
    _add_config(pl)
    return parser


def _config(args):
    from hh_ray.config import load_config

    return load_config(args.config, args.overrides)


def _data_stats(args) -> int:
    from hh_ray.config import default_data_dir
    from hh_ray.data.hh import SUBSETS, is_local, local_subsets
    from hh_ray.data.stats import data_stats

    data_dir = args.data_dir or default_data_dir()
    subsets = local_subsets(data_dir) if is_local(data_dir) else list(SUBSETS)
    split = None if args.split == "all" else args.split
    if args.tokenizer:
        from hh_ray.data.tokenize import load_tokenizer

        tok = load_tokenizer(args.tokenizer)
    else:
        import tempfile

        from hh_ray.data.hh import load_comparisons
        from hh_ray.data.tokenize import train_tokenizer

        items, _ = load_comparisons(data_dir, subsets, split)
        with tempfile.TemporaryDirectory() as tmp:
            tok = train_tokenizer((c.chosen_dialogue for c in items), 8192, tmp)
    stats = data_stats(data_dir, subsets, split, tok)
    if args.json:
        print(json.dumps(stats))
    else:
        for subset, s in stats.items():
            rej = ", ".join(f"{k}={v}" for k, v in s["rejected"].items()) or "none"
            print(f"{subset}: kept {s['kept']} of {s['lines']} (rejected: {rej})")
            for key in ("prompt_tokens", "response_tokens", "prompt_chars", "response_chars"):
                print(f"  {key:16s} " + " ".join(f"{k}={v:g}" for k, v in s[key].items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pm"] and (len(argv) == 1 or argv[1] not in ("train", "eval", "-h", "--help")):
        argv.insert(1, "train")  # `hh-ray pm --config X` trains
    args = build_parser().parse_args(argv)
    from hh_ray.config import ConfigError
    from hh_ray.data.hh import DataError

    try:
        if args.command == "data":
            return _data_stats(args)
        if args.command == "pm" and args.pm_command == "eval":
            from hh_ray.driver.pm import evaluate_checkpoint

            return evaluate_checkpoint(args.checkpoint, args.data_dir, args.json, args.batch_size)
        if args.command == "submit":
            from hh_ray.ops.submit import submit_job

            return submit_job(args)
        if args.command == "plan":
            from hh_ray.ops.plan import run_plan

            return run_plan(_config(args), args.config, args.cluster, args.gpu_memory_gb, args.json)
        cfg = _config(args)
        if args.command == "sft":
            from hh_ray.driver.sft import run_sft

            run_sft(cfg)
        elif args.command == "pm":
            from hh_ray.driver.pm import run_pm

            run_pm(cfg)
        elif args.command == "ppo":
            from hh_ray.driver.ppo import run_ppo

            run_ppo(cfg)
        elif args.command == "run":
            from hh_ray.driver.pipeline import run_pipeline

            run_pipeline(cfg)
        return 0
    except (ConfigError, DataError, FileNotFoundError, ValueError) as exc:  # PlanError is a ValueError
        print(f"hh-ray: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
