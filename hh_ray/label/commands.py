"""`hh-ray label serve | user add | export`: what the CLI's `label` block calls."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from .auth import create_user, reset_password
from .config import LabelConfig, load_label_config
from .export import export_campaign
from .store import Store


def connect_ray(cfg: LabelConfig) -> None:
    """The local in-process Ray by default; a cluster address (or RAY_ADDRESS, as in a submitted job) otherwise."""
    import ray

    from hh_ray.workers.cluster import init_ray, ray_address

    if not ray.is_initialized():
        init_ray(ray_address(cfg.ray.address), cfg.ray.num_cpus)


ADMIN_PASSWORD_FILE = "admin-password"


def show_admin_password(cfg: LabelConfig, password: str) -> str:
    """The first admin's one-time password, shown once: on the terminal that started the service, else (stdout is
    a log, e.g. a Ray job's, readable through the dashboard) in a file only the owner can read."""
    if sys.stdout.isatty():
        return f"[label] admin account: name 'admin', one-time password {password} (change it at first login)"
    path = (Path(cfg.dir) / ADMIN_PASSWORD_FILE).resolve()  # absolute: a Ray job runs in a folder of its own
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # also when the file was there before with other modes
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return (f"[label] admin account: name 'admin'; its one-time password is in {path} (mode 0600, not shown "
            "here because stdout is not a terminal); change it at first login, then delete the file")


def serve_command(cfg: LabelConfig, stop: threading.Event | None = None) -> int:
    """Start the service, print its URL (and where the first admin's one-time password is), run until Ctrl-C."""
    import ray
    from ray import serve

    from .serve import ensure_admin, start_service, stop_service

    stop = stop or threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    connect_ray(cfg)
    running = start_service(cfg)
    try:
        password = ensure_admin(running.store)
        print(f"[label] serving {running.url}  (campaigns: {', '.join(c.name for c in cfg.campaigns)})", flush=True)
        if password:  # shown once to the operator's terminal, never into a log
            print(show_admin_password(cfg, password), flush=True)
        else:
            print("[label] an admin account exists already; `hh-ray label user add NAME --role admin` adds one",
                  flush=True)
        print("[label] Ctrl-C stops the service", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        print("[label] stopping", flush=True)
        stop_service(running)
        serve.shutdown()
        ray.shutdown()
        signal.signal(signal.SIGINT, previous)
    return 0


def user_command(cfg: LabelConfig, action: str, name: str, role: str = "labeler") -> int:
    """`user add` (a one-time password), `user password` (a new one-time password: the owner changes it at the
    next login), `user disable` (sessions end, logins fail) and `user enable`."""
    store = Store(cfg.db_url)
    store.migrate()
    try:
        if action == "add":
            user, password = create_user(store, name, role)
            print(f"user {user.name} ({user.role}); one-time password: {password}")
        elif action == "password":
            print(f"user {name}: new one-time password: {reset_password(store, name)}")
        else:
            store.set_active(name, action == "enable")
            print(f"user {name}: {action}d")
    finally:
        store.dispose()
    return 0


def export_command(cfg: LabelConfig, campaign: str | None, out: str) -> int:
    store = Store(cfg.db_url)
    store.check_schema()
    summary = export_campaign(store, campaign, out, cfg.test_fraction)
    store.audit(None, "export", f"cli campaign={campaign or '*'} records={summary.total} out={out}")
    for rel, n in sorted(summary.files.items()):
        print(f"{out}/{rel}: {n}")
    print(f"exported {summary.total} comparisons to {out}")
    store.dispose()
    return 0


def run_label(args) -> int:
    """Dispatch the parsed `hh-ray label ...` arguments; service errors print one line and return 2."""
    from .store import LabelError

    cfg = load_label_config(args.config, args.overrides)
    try:
        if args.label_command == "serve":
            return serve_command(cfg)
        if args.label_command == "user":
            return user_command(cfg, args.user_command, args.name, getattr(args, "role", "labeler"))
        return export_command(cfg, args.campaign, args.out)
    except LabelError as exc:
        print(f"hh-ray: error: {exc}", file=sys.stderr)
        return 2
