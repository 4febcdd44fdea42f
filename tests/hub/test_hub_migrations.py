"""The hub's schema is owned by its Alembic migrations: they match the models, upgrade in place and keep data."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from hub.db import Base, make_engine, migrate
from tests.kit.hub import DATABASES, PgDatabase, pg_available


@pytest.fixture(params=DATABASES)
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/hub.db"
        return
    reason = pg_available()
    if reason:
        pytest.skip(reason)
    pg = PgDatabase()
    yield pg.url
    pg.drop()


def test_migrations_match_the_models(db_url):
    engine = make_engine(db_url)
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_upgrade_keeps_data(db_url):
    engine = make_engine(db_url)
    migrate(engine, "0001")
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO media (id, node, upload_id, content_type, size, sha256, path, received_at) "
                          "VALUES ('n/m1', 'n', NULL, 'image/jpeg', 3, 'x', '/tmp/x', 1.0)"))
    migrate(engine, "0006")
    with engine.begin() as c:  # a rollout from before pipeline rollouts: a model rollout after the upgrade
        c.execute(sa.text("INSERT INTO rollouts (model, version, \"group\", canary, watch_s, checks, state, canaries, "
                          "saved, stats, nodes, created_at, updated_at) VALUES ('m', '2', 'g', 1, 60, '{}', 'done', "
                          "'[]', '{}', '{}', '{}', 1.0, 1.0)"))
    migrate(engine)
    with engine.begin() as c:
        assert c.execute(sa.text("SELECT id, size FROM media")).all() == [("n/m1", 3)]
        c.execute(sa.text("INSERT INTO media (id, node, content_type, size, sha256, path, received_at) "
                          "VALUES (:id, 'n', 'x', 1, 'x', 'x', 1.0)"), {"id": "n" * 64 + "/" + "m" * 64})
        assert c.execute(sa.text("SELECT model, kind FROM rollouts")).all() == [("m", "model")]
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0008"
        assert c.execute(sa.text("SELECT count(*) FROM model_drift")).scalar() == 0  # 0008: drift series
    engine.dispose()
