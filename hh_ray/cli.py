"""The `hh-ray` command: parse arguments, load the job config, call one driver."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import shlex
import signal
import sys
from pathlib import Path


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="job YAML (see jobs/); defaults apply when omitted")
    p.add_argument("--fresh", action="store_true",
                   help="start over: delete the stages' checkpoints and metrics in run_dir first (same as fresh=true)")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value, e.g. ppo.steps=5")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hh-ray",
                                     description="Distributed RLHF on Ray (Bai et al. 2022, Anthropic HH)")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect HH-RLHF data").add_subparsers(dest="data_command", required=True)
    stats = data.add_parser("stats", help="per subset: kept, rejects by reason, length percentiles")
    stats.add_argument("--data-dir", default=None,
                       help="HH-layout folder or hub id (default: HH_RLHF_DIR or ../shared/data/hh-rlhf)")
    stats.add_argument("--split", default="test", help="split file to read; 'all' reads every *.jsonl.gz")
    stats.add_argument("--tokenizer", default=None,
                       help="tokenizer for token lengths (default: BPE trained on the data)")
    stats.add_argument("--json", action="store_true", help="print one JSON object")

    models = sub.add_parser("models", help="list the model presets and where each one's weights come from")
    models.add_argument("--json", action="store_true")
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
    st = sub.add_parser("status", help="phase, step, last metrics and ETA of a run folder; is a command running on it")
    st.add_argument("run_dir", help="run folder")
    st.add_argument("--json", action="store_true")
    online = sub.add_parser("online", help="iterated online RLHF: rounds of collect -> retrain PM -> PPO, then Elo")
    online.add_argument("--config", help="online YAML (see jobs/online-quickstart.yaml)")
    online.add_argument("overrides", nargs="*", help="config overrides key.sub=value, e.g. rounds=3")
    sm = sub.add_parser("submit", help="submit a job to a Ray cluster through the Jobs API and follow it")
    sm.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://head:8265")
    sm.add_argument("--no-follow", action="store_true", help="print the job id and return")
    sm.add_argument("--token", default=None, help="Ray auth token (default: RAY_AUTH_TOKEN or Ray's token file)")
    sm.add_argument("--runtime-env", default=None,
                    help="runtime env YAML (default: jobs/runtime_env.yaml when present)")
    sm.add_argument("--entrypoint", default="run", choices=["run", "sft", "pm", "ppo", "label", "online"],
                    help="the hh-ray command the job runs; label = `hh-ray label serve`")
    sm.add_argument("--cluster", default=None, help="cluster config the capacity plan checks (default: ray.cluster)")
    _add_config(sm)
    pl = sub.add_parser("plan", help="capacity plan: memory per group and GPU, placement on the cluster's node types")
    pl.add_argument("--cluster", default=None,
                    help="launcher YAML or KubeRay manifest (default: the job's ray.cluster)")
    pl.add_argument("--gpu-memory-gb", type=float, default=80.0, help="GPU memory where a node type does not say")
    pl.add_argument("--json", action="store_true", help="print one JSON object")
    _add_config(pl)

    label = sub.add_parser("label", help="the labeling service (Ray Serve): serve, user add, export")
    label_sub = label.add_subparsers(dest="label_command", required=True)
    _add_config(label_sub.add_parser("serve",
                                     help="start the service; prints its URL and the admin's one-time password"))
    user = label_sub.add_parser("user", help="accounts").add_subparsers(dest="user_command", required=True)
    user_add = user.add_parser("add", help="create an account and print its one-time password")
    user_add.add_argument("name")
    user_add.add_argument("--role", default="labeler", choices=["labeler", "admin"])
    _add_config(user_add)
    for action, text in (("password", "give an account a new one-time password (changed at its next login)"),
                         ("disable", "disable an account: its sessions end and it cannot log in"),
                         ("enable", "re-enable a disabled account")):
        p = user.add_parser(action, help=text)
        p.add_argument("name")
        _add_config(p)
    export = label_sub.add_parser("export", help="write comparisons in HH's layout (train/test.jsonl.gz + sidecar)")
    export.add_argument("--campaign", default=None, help="one campaign (default: all)")
    export.add_argument("--out", required=True, help="output folder; usable as data.data_dir")
    _add_config(export)
    _add_analysis_commands(sub)
    return parser


# ---- the paper's analyses (issue 15): report, bon, tradeoff, alignment-tax, ood ----
ANALYSIS_COMMANDS = ("report", "bon", "tradeoff", "alignment-tax", "ood")


def _csv(cast):
    return lambda text: [cast(x) for x in text.split(",") if x.strip()]


def _list_models(as_json: bool) -> int:
    from hh_ray.models.presets import list_presets

    rows = list_presets()
    if as_json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['name']:14s} {r['kind']:11s} {r['source']}")
    return 0


def _add_analysis_commands(sub) -> None:
    rp = sub.add_parser("report", help="(re)build report.md and plots from whatever a run folder holds")
    rp.add_argument("--run", required=True, help="run folder")
    bon = sub.add_parser("bon", help="best-of-N from the initial policy on held-out prompts (analysis/bon.json)")
    bon.add_argument("--ns", type=_csv(int), default=[1, 2, 4, 8, 16, 32], help="e.g. 1,2,4,8,16,32")
    bon.add_argument("--prompts", type=int, default=32, help="held-out prompts")
    bon.add_argument("--policy", default="", help="HF folder (default: <run>/sft, else the run's initial preset)")
    bon.add_argument("--train-pm", default="", help="PM folder or substring:<t> (default: <run>/pm)")
    bon.add_argument("--test-pm", default="", help="held-out PM folder or substring:<t> (default: none)")
    bon.add_argument("--max-new-tokens", type=int, default=48)
    _add_config(bon)
    tr = sub.add_parser("tradeoff", help="PMs per harmless weight in the data mix, in the helpful/harmless plane")
    tr.add_argument("--harmless-weights", type=_csv(float), required=True, help="e.g. 0,0.5,1,2,4 (0: helpful only)")
    tr.add_argument("--harmless-only", action="store_true", help="and a PM trained on harmless-base alone")
    _add_config(tr)
    at = sub.add_parser("alignment-tax", help="lm-eval zero-shot accuracy before and after RLHF")
    at.add_argument("--before", required=True, help="HF folder before RLHF (e.g. <run>/sft)")
    at.add_argument("--after", required=True, help="HF folder after RLHF (e.g. <run>/ppo/policy)")
    at.add_argument("--run", required=True, help="run folder; writes <run>/analysis/alignment_tax.json")
    at.add_argument("--tasks", type=_csv(str), default=None, help="lm-eval task names (default: a stock list)")
    at.add_argument("--include-path", default="", help="folder of extra lm-eval task YAMLs")
    at.add_argument("--hh-tasks", type=int, default=0,
                    help="write local HH choice tasks of this many questions (no hub needed) and evaluate them")
    at.add_argument("--limit", type=int, default=0, help="first N examples per task (0 = all)")
    at.add_argument("--num-fewshot", type=int, default=0)
    at.add_argument("--device", default="cpu")
    ood = sub.add_parser("ood", help="Mahalanobis OOD detection of harmful requests (analysis/ood.json)")
    ood.add_argument("--model", required=True, help="HF folder or all-MiniLM-L6-v2")
    ood.add_argument("--run", required=True, help="run folder; writes <run>/analysis/ood.json")
    ood.add_argument("--data-dir", default="")
    ood.add_argument("--layer", type=int, default=-1, help="hidden-state index (0 = embeddings, -1 = last)")
    ood.add_argument("--layers", type=lambda t: [int(x) for x in t.split(",")], default=[],
                     help="several layers, e.g. 0,6,12,-1: the best on a validation split is reported")
    ood.add_argument("--val-prompts", type=int, default=100, help="requests per side choosing among --layers")
    ood.add_argument("--pooling", choices=["mean", "last"], default="mean")
    ood.add_argument("--text", choices=["first_turn", "prompt"], default="first_turn")
    ood.add_argument("--fit-prompts", type=int, default=400)
    ood.add_argument("--test-prompts", type=int, default=200)
    ood.add_argument("--shrinkage", type=float, default=0.1)


@contextlib.contextmanager
def _writer(args, run_dir: str, stop_grace_s: float | None = None):
    """Hold the run folder's lock (one writer per folder) for the command's life; with `stop_grace_s`, a SIGTERM
    or SIGINT checkpoints at the next step boundary instead (hh_ray.driver.stop) and Ray is shut down cleanly."""
    from hh_ray.driver import stop
    from hh_ray.files import RunLock

    if stop_grace_s is not None:  # first: a signal right after the lock is taken is a graceful stop too
        stop.install(stop_grace_s)
    lock = RunLock(run_dir, args.command_line).acquire()
    try:
        yield
    except Exception as exc:
        _point_at_worker_logs(exc, run_dir)
        raise
    finally:
        if stop.requested() and "ray" in sys.modules:
            import ray

            ray.shutdown()
        lock.release()
        stop.uninstall()


def _point_at_worker_logs(exc: Exception, run_dir: str) -> None:
    """A Ray error (an actor's exception or death) is printed by the caller; say where the workers' side of it is,
    since their output goes to the run folder, not the console (hh_ray.driver.cluster)."""
    from hh_ray.driver.cluster import WORKER_LOGS

    ray = sys.modules.get("ray")
    logs = Path(run_dir) / WORKER_LOGS
    if ray is not None and isinstance(exc, ray.exceptions.RayError) and logs.is_dir():
        print(f"hh-ray: the workers' output around this error is in {logs}/", file=sys.stderr, flush=True)


def _run_analysis(args) -> int:
    if args.command == "report":  # reads the run folder (report.md is rebuilt from it): no lock
        from hh_ray.report.report import write_report

        print(write_report(args.run))
    elif args.command == "bon":
        from hh_ray.analysis.best_of_n import BestOfNConfig
        from hh_ray.driver.analyses import run_best_of_n

        cfg = _config(args)
        with _writer(args, cfg.run_dir):
            run_best_of_n(cfg, BestOfNConfig(ns=args.ns, prompts=args.prompts, policy=args.policy,
                                             train_pm=args.train_pm, test_pm=args.test_pm,
                                             max_new_tokens=args.max_new_tokens))
    elif args.command == "tradeoff":
        from hh_ray.driver.analyses import run_harmless_sweep

        cfg = _config(args)
        with _writer(args, cfg.run_dir):
            run_harmless_sweep(cfg, args.harmless_weights, args.harmless_only)
    elif args.command == "alignment-tax":
        from hh_ray.analysis.alignment_tax import AlignmentTaxConfig, alignment_tax, hh_task_folder
        from hh_ray.config import default_data_dir

        cfg = AlignmentTaxConfig(before=args.before, after=args.after, run_dir=args.run, limit=args.limit,
                                 include_path=args.include_path, num_fewshot=args.num_fewshot, device=args.device)
        if args.hh_tasks:
            if args.include_path or args.tasks:
                raise ValueError("--hh-tasks writes and evaluates its own tasks; leave --include-path and --tasks out")
            cfg.include_path, cfg.tasks = hh_task_folder(args.run, default_data_dir(), args.hh_tasks)
        elif args.tasks:
            cfg.tasks = args.tasks
        with _writer(args, args.run):
            result = alignment_tax(cfg)
        for t in result.tasks:
            print(f"[alignment-tax] {t.task}: {t.before:.3f} ± {t.before_se:.3f} -> {t.after:.3f} ± {t.after_se:.3f}")
    elif args.command == "ood":
        from hh_ray.analysis.ood import OODConfig, ood_detection
        from hh_ray.models.presets import resolve_model

        with _writer(args, args.run):
            r = ood_detection(OODConfig(model=resolve_model(args.model), run_dir=args.run,
                                        data_dir=args.data_dir, layer=args.layer, layers=args.layers,
                                        val_prompts=args.val_prompts, pooling=args.pooling,
                                        text=args.text, fit_prompts=args.fit_prompts,
                                        test_prompts=args.test_prompts, shrinkage=args.shrinkage))
        print(f"[ood] AUROC {r.auroc:.3f} ± {r.auroc_se:.3f} at layer {r.layer} ({r.ood_subset} vs held-out "
              f"{r.in_subset})")
    return 0


def _config(args):
    from hh_ray.config import load_config

    return load_config(args.config, list(args.overrides) + (["fresh=true"] if args.fresh else []))


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


# the commands that run one driver on the job config: module and function, imported when called
DRIVERS = {"sft": ("hh_ray.driver.sft", "run_sft"), "pm": ("hh_ray.driver.pm", "run_pm"),
           "ppo": ("hh_ray.driver.ppo", "run_ppo"), "run": ("hh_ray.driver.pipeline", "run_pipeline")}
# the config loaders of the submit entrypoints whose configs are not job configs (their modules sit above ops)
CONFIG_LOADERS = {"label": ("hh_ray.label.config", "load_label_config"),
                  "online": ("hh_ray.driver.online", "load_online_config")}


def _parse(argv: list[str]) -> argparse.Namespace:
    if argv[:1] == ["pm"] and (len(argv) == 1 or argv[1] not in ("train", "eval", "-h", "--help")):
        argv = [argv[0], "train", *argv[1:]]  # `hh-ray pm --config X` trains
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["hh-ray", *argv])  # the lock file names its holder by it
    return args


def _dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; its errors go up to `main`, which turns them into one line and an exit code."""
    if args.command == "data":
        return _data_stats(args)
    if args.command == "models":
        return _list_models(args.json)
    if args.command == "status":  # reads the run folder: no lock
        from hh_ray.driver.status import format_status, run_status

        status = run_status(args.run_dir)
        print(json.dumps(status.to_json()) if args.json else format_status(status))
        return 0
    if args.command == "pm" and args.pm_command == "eval":
        from hh_ray.driver.pm import evaluate_checkpoint

        return evaluate_checkpoint(args.checkpoint, args.data_dir, args.json, args.batch_size)
    if args.command == "label":
        from hh_ray.label.commands import run_label

        return run_label(args)
    if args.command == "online":
        from hh_ray.driver.online import load_online_config, run_online

        online_cfg = load_online_config(args.config, args.overrides)
        with _writer(args, online_cfg.run_dir, online_cfg.job.ray.stop_grace_s):
            run_online(online_cfg)
        return 0
    if args.command in ANALYSIS_COMMANDS:
        try:
            return _run_analysis(args)
        except ValueError as exc:  # bad analysis input (a task name, a layer, too few prompts): one clear line
            print(f"hh-ray {args.command}: error: {exc}", file=sys.stderr)
            return 2
    if args.command == "submit":
        from hh_ray.ops.submit import submit_job

        if args.entrypoint in CONFIG_LOADERS and args.config:  # submit_job checks the job configs itself
            module, function = CONFIG_LOADERS[args.entrypoint]
            getattr(importlib.import_module(module), function)(args.config, args.overrides)
        return submit_job(args)
    if args.command == "plan":
        from hh_ray.ops.plan import run_plan

        return run_plan(_config(args), args.config, args.cluster, args.gpu_memory_gb, args.json)
    cfg = _config(args)
    module, function = DRIVERS[args.command]
    with _writer(args, cfg.run_dir, cfg.ray.stop_grace_s):
        getattr(importlib.import_module(module), function)(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from hh_ray.driver.progress import quiet_driver_libraries

    quiet_driver_libraries()
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    from hh_ray.config import ConfigError
    from hh_ray.data.hh import DataError
    from hh_ray.driver import stop
    from hh_ray.driver.resume import ResumeError
    from hh_ray.driver.status import NotARunFolder
    from hh_ray.files import DamagedFileError, RunFolderBusy
    from hh_ray.ops.plan import PlanError
    from hh_ray.ops.storage import SharedStorageError
    from hh_ray.ops.submit import SubmitError
    from hh_ray.workers.group import PlacementError
    from hh_ray.workers.rollout import StaleWeightsError

    try:
        return _dispatch(args)
    except (ConfigError, DataError, FileNotFoundError, PlacementError, StaleWeightsError, SubmitError,
            ResumeError, PlanError, SharedStorageError, DamagedFileError, RunFolderBusy, NotARunFolder) as exc:
        print(f"hh-ray: error: {exc}", file=sys.stderr)
        return 2
    except stop.Preempted as exc:  # checkpointed at a step boundary; groups and Ray are down by now
        print(f"hh-ray: stopped by {signal.Signals(exc.signum).name} {exc}; rerun the same command to resume",
              file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt as exc:  # the drivers' `finally` blocks have torn their actor groups down by now
        if stop.requested():  # the grace period ran out (or a second signal came) mid-step
            print(f"hh-ray: stopped by {signal.Signals(stop.signal_number()).name}: {exc}; the step was abandoned "
                  f"and the newest checkpoint stands; rerun the same command to resume", file=sys.stderr)
            return 128 + stop.signal_number()
        print("hh-ray: interrupted", file=sys.stderr)
        return 130

if __name__ == "__main__":
    sys.exit(main())
