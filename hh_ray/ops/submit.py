"""`hh-ray submit`: send a job to a Ray cluster through the Jobs API, print its id, follow logs and status.

Ray 2.60 turns token authentication on by default. hh-ray finds the token itself, in this order: `--token`,
`RAY_AUTH_TOKEN`, the file named by `RAY_AUTH_TOKEN_PATH`, `~/.ray/auth_token` (where `ray start` writes it),
and sends it as a bearer header, so no `RAY_AUTH_MODE` setting is needed on the laptop. Every failure to
reach or be admitted by the cluster is one `SubmitError` line that names the problem and the fix.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import yaml

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def entrypoint_for(command: str, config_path: str | None, overrides: list[str]) -> str:
    """The shell command the job runs on the cluster: `hh-ray <command> --config <file> k=v ...`."""
    parts = ["hh-ray", *(["label", "serve"] if command == "label" else [command])]
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


class SubmitError(RuntimeError):
    """The cluster could not be reached, refused the token, or is not a Ray dashboard; one line says which."""


def resolve_token(flag: str | None) -> str | None:
    """The Ray auth token: --token, RAY_AUTH_TOKEN, the file at RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if flag:
        return flag.strip()
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise SubmitError(f"RAY_AUTH_TOKEN_PATH={path} names no file; point it at the cluster's auth_token file")
        return p.read_text().strip()
    default = Path.home() / ".ray" / "auth_token"
    return default.read_text().strip() if default.is_file() else None


def explain(address: str, exc: BaseException) -> SubmitError:
    """One line for the ways reaching a cluster fails, from the exception text Ray's client raises."""
    text = f"{type(exc).__name__}: {exc}"
    if "Invalid authentication token" in text or "Forbidden" in text or "403" in text:
        return SubmitError(f"the Ray cluster at {address} refused the auth token; pass the cluster's token with "
                           f"--token or RAY_AUTH_TOKEN (on the head: cat ~/.ray/auth_token)")
    if "Missing authentication token" in text or "Unauthorized" in text or "401" in text:
        return SubmitError(f"the Ray cluster at {address} requires an auth token and none was found; pass --token, "
                           f"set RAY_AUTH_TOKEN, or copy the head's ~/.ray/auth_token to this machine")
    if "Version check returned" in text or "404" in text:
        return SubmitError(f"{address} answers HTTP but is not a Ray dashboard (Jobs API not found); use the "
                           f"dashboard address, e.g. http://<head>:8265")
    return SubmitError(f"cannot reach a Ray dashboard at {address} ({type(exc).__name__}); check the address and "
                       f"that the cluster is up (e.g. `ray dashboard cluster/aws-gpu.yaml` or a kubectl port-forward)")


def client_for(address: str, token: str | None):
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as exc:  # noqa: BLE001 - every way of not reaching the cluster becomes one line
        raise explain(address, exc) from None


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


def _submit_with_retry(client, entrypoint: str, runtime_env: dict | None, wait_s: float = 90.0,
                       pause_s: float = 3.0) -> str:
    """A freshly started head answers "No available agent" until its job agent is up, and a busy one may drop a
    request (a connection or read error, after `client_for` reached it): wait for it, up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except (RuntimeError, OSError) as exc:  # requests' ConnectionError and Timeout are OSErrors
            transient = isinstance(exc, OSError) or "No available agent" in str(exc)
            if not transient or time.monotonic() > deadline:
                raise
            why = "dropped the request" if isinstance(exc, OSError) else "has no job agent ready yet"
            print(f"[submit] the cluster {why}; retrying", file=sys.stderr, flush=True)
            time.sleep(pause_s)


def submit_job(args) -> int:
    """CLI entry: submit, print the job id, follow unless --no-follow; exit 0 only on SUCCEEDED."""
    if args.config and not Path(args.config).is_file():
        raise FileNotFoundError(f"config file not found: {args.config}")
    if args.config:  # validate here, so a typo fails now and not minutes later on the cluster
        from hh_ray.config import load_config
        from hh_ray.ops.plan import plan_job, refusal, resolve_cluster

        if args.entrypoint not in ("label", "online"):  # the CLI validates these (their modules sit above ops)
            cfg = load_config(args.config, args.overrides)
            # the capacity plan first: a job that cannot fit is refused before anything is submitted
            plan = plan_job(cfg, resolve_cluster(getattr(args, "cluster", None), cfg, args.config))
            if refusal(plan):
                print(f"hh-ray: error: {refusal(plan)}", file=sys.stderr)
                return 2
    client = client_for(args.address, resolve_token(args.token))
    runtime_env = load_runtime_env(args.runtime_env, args.config)
    overrides = list(args.overrides) + (["fresh=true"] if getattr(args, "fresh", False) else [])
    entrypoint = entrypoint_for(args.entrypoint, args.config, overrides)
    try:
        job_id = _submit_with_retry(client, entrypoint, runtime_env or None)
    except Exception as exc:  # noqa: BLE001
        raise explain(args.address, exc) from None
    print(job_id, flush=True)
    if args.no_follow:
        return 0
    status = follow(client, job_id)
    return 0 if status == "SUCCEEDED" else 1
