"""`hh-ray submit`: send a job to a Ray cluster through the Jobs API, print its id, follow logs and status.

Ray 2.60 turns token authentication on by default. The token comes from `--token`, else from where Ray's own
clients look (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`, `~/.ray/auth_token`); nothing here switches auth off.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import yaml

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def entrypoint_for(command: str, config_path: str | None, overrides: list[str]) -> str:
    """The shell command the job runs on the cluster: `hh-ray <command> --config <file> k=v ...`."""
    parts = ["hh-ray", command]
    if config_path:
        parts += ["--config", config_path]
    parts += overrides
    return " ".join(shlex.quote(p) for p in parts)


def load_runtime_env(path: str | None, config_path: str | None) -> dict:
    """The job's runtime env: the given YAML, else `jobs/runtime_env.yaml` beside the config when present."""
    candidates = [path] if path else ([str(Path(config_path).parent / "runtime_env.yaml")] if config_path else [])
    for c in candidates:
        p = Path(c)
        if p.is_file():
            env = yaml.safe_load(p.read_text()) or {}
            if not isinstance(env, dict):
                raise ValueError(f"{p}: a runtime env must be a mapping")
            return env
        if path:
            raise FileNotFoundError(f"runtime env file not found: {p}")
    return {}


def client_for(address: str, token: str | None):
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    return JobSubmissionClient(address, headers=headers)


def follow(client, job_id: str, poll_s: float = 1.0, out=sys.stdout) -> str:
    """Stream new log text and status changes until the job ends; returns the final status."""
    seen = 0
    last_status = None
    while True:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        logs = client.get_job_logs(job_id)
        if len(logs) > seen:
            out.write(logs[seen:])
            out.flush()
            seen = len(logs)
        if status != last_status:
            print(f"[submit] job {job_id}: {status}", file=sys.stderr, flush=True)
            last_status = status
        if status in TERMINAL:
            return status
        time.sleep(poll_s)


def _submit_with_retry(client, entrypoint: str, runtime_env: dict | None, wait_s: float = 90.0) -> str:
    """A freshly started head answers "No available agent" until its job agent is up; wait for it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            print("[submit] cluster's job agent not ready yet; retrying", file=sys.stderr, flush=True)
            time.sleep(3)


def submit_job(args) -> int:
    """CLI entry: submit, print the job id, follow unless --no-follow; exit 0 only on SUCCEEDED."""
    if args.config and not Path(args.config).is_file():
        raise FileNotFoundError(f"config file not found: {args.config}")
    if args.config:  # validate here, so a typo fails now and not minutes later on the cluster
        from hh_ray.config import load_config
        from hh_ray.ops.plan import plan_job, refusal, resolve_cluster

        cfg = load_config(args.config, args.overrides)
        # the capacity plan first: a job that cannot fit is refused before anything is submitted
        plan = plan_job(cfg, resolve_cluster(getattr(args, "cluster", None), cfg, args.config))
        if refusal(plan):
            print(f"hh-ray: error: {refusal(plan)}", file=sys.stderr)
            return 2
    client = client_for(args.address, args.token)
    runtime_env = load_runtime_env(args.runtime_env, args.config)
    entrypoint = entrypoint_for(args.entrypoint, args.config, list(args.overrides))
    job_id = _submit_with_retry(client, entrypoint, runtime_env or None)
    print(job_id, flush=True)
    if args.no_follow:
        return 0
    status = follow(client, job_id)
    return 0 if status == "SUCCEEDED" else 1
