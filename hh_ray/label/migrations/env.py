"""Alembic environment: runs on the connection `Store.migrate()` hands over (no alembic.ini needed)."""

from alembic import context

from hh_ray.label.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("hh-ray migrations run through hh_ray.label.store.Store.migrate(), which passes a connection")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
