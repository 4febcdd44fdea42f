"""Alembic environment: runs on the connection that :func:`hub.db.migrate` hands over."""

from __future__ import annotations

from alembic import context

from hub.db import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic` command line: build an engine from the ini's URL
    from hub.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
