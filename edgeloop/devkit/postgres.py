"""A fresh database on the local PostgreSQL (127.0.0.1:5432, trust auth) for a test or a benchmark, dropped after."""

from __future__ import annotations

import uuid

__all__ = ["PG", "PgDatabase", "pg_available"]

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"


def pg_available() -> str | None:
    """None when PostgreSQL answers at 127.0.0.1:5432, else the reason."""
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means: not here
        return f"PostgreSQL at 127.0.0.1:5432 did not answer: {exc}"


class PgDatabase:
    """A fresh database on the local PostgreSQL, dropped afterwards."""

    def __init__(self) -> None:
        import psycopg

        self.name = f"edgeloop_{uuid.uuid4().hex[:10]}"
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        self.url = PG.format(db=self.name)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
