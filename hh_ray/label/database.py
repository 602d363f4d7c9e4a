"""The store's core: one engine and sessionmaker per URL, and the schema's Alembic revision.

SQLite (a file in the service folder) by default, PostgreSQL by URL. Migrations live under `migrations/`; `migrate()`
runs at service startup, and replicas only check the revision."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.orm import sessionmaker

from .errors import SchemaError
from .schema import AuditLog, Base, User

MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    """An engine on one database; one short transaction per call, safe across threads and processes."""

    def __init__(self, url: str):
        self.url = url
        kwargs: dict = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # WAL lets several replicas read while one writes
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    # ---- schema versions ----------------------------------------------------------------------------------
    def _alembic(self):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return cfg

    def migrate(self) -> str:
        """Bring the schema to the newest revision (Alembic, programmatically); returns that revision."""
        from alembic import command

        cfg = self._alembic()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return self.revision()

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic()).get_current_head()

    def check_schema(self) -> None:
        have, want = self.revision(), self.head()
        if have != want:
            raise SchemaError(f"database schema at revision {have}, the code needs {want}; run the service "
                               "startup (it migrates) or Store.migrate()")

    def dispose(self) -> None:
        self.engine.dispose()

    def audit(self, user_id: int | None, action: str, detail: str = "") -> None:
        with self.sessions.begin() as s:
            s.add(AuditLog(user_id=user_id, action=action, detail=detail))

    def audit_log(self) -> list[tuple[str, str, str]]:
        with self.sessions() as s:
            rows = s.execute(select(AuditLog.action, AuditLog.detail, User.name)
                             .join(User, User.id == AuditLog.user_id, isouter=True).order_by(AuditLog.id)).all()
            return [(a, d, n or "") for a, d, n in rows]

    def count(self, table: type[Base]) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(table))
