"""Schema migrations: an ordered list of versioned steps, applied at open in one transaction.

Why not alembic: the store has three tables, two backends and no ORM; alembic would bring a
second configuration, a script directory and autogeneration we would not use. What it gives that
matters here is kept: every step has a version, applied versions are recorded in
`schema_migrations`, steps run in order inside the same transaction as their bookkeeping (both
SQLite and PostgreSQL have transactional DDL), and a database newer than the code is refused.

Concurrent openers (the token service and the post-call worker start together) are serialised:
SQLite by the store's `BEGIN IMMEDIATE`, PostgreSQL by a transaction-scoped advisory lock.

Each step describes the tables as they were at its version, never by importing `schema.py`
(which is the latest shape): a fresh database replays every step, so an old step must not
already contain what a later step adds. `tests/unit/test_store.py` checks that the migrated
database matches `schema.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from voice_agent.exceptions import ConfigError
from voice_agent.logging import get_logger
from voice_agent.postcall.schema import UTCDateTime, json_type, schema_migrations

log = get_logger("postcall.store")

# pg_advisory_xact_lock key: "voice_agent.schema" as an arbitrary fixed 63-bit number.
_PG_LOCK_KEY = 0x766F6963655F6167


@dataclass(frozen=True)
class Migration:
    """One schema step."""

    version: int
    name: str
    apply: Callable[[sa.Connection], None]


def _v1_initial(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "calls",
        md,
        sa.Column("call_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("needs_review", sa.Boolean, nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("room", sa.String(256), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("record_complete", sa.Boolean, nullable=False),
        sa.Column("turns", sa.Integer, nullable=False),
        sa.Column("record", json_type(), nullable=False),
        sa.Column("report", json_type()),
        sa.Column("summary", sa.Text),
        sa.Column("resolution_status", sa.String(32)),
        sa.Column("sentiment", sa.String(16)),
        sa.Column("search_text", sa.Text, nullable=False),
        sa.Index("ix_calls_started", sa.text("started_at DESC"), sa.text("call_id DESC")),
        sa.Index("ix_calls_status_started", "status", "started_at"),
        sa.Index("ix_calls_review_started", "needs_review", "started_at"),
    )
    sa.Table(
        "job_events",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column(
            "call_id",
            sa.String(128),
            sa.ForeignKey("calls.call_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.Float(precision=53), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("detail", json_type(), nullable=False),
        sa.Index("ix_job_events_call", "call_id", "id"),
    )
    sa.Table(
        "integrations",
        md,
        sa.Column("idempotency_key", sa.String(256), primary_key=True),
        sa.Column(
            "call_id",
            sa.String(128),
            sa.ForeignKey("calls.call_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("result", json_type(), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("at", sa.Float(precision=53), nullable=False),
        sa.Index("ix_integrations_call", "call_id", "at"),
    )
    md.create_all(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "calls, job events and integrations", _v1_initial),
)


def _apply(conn: sa.Connection) -> int:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
    schema_migrations.create(conn, checkfirst=True)
    applied = set(conn.scalars(sa.select(schema_migrations.c.version)))
    known = {m.version for m in MIGRATIONS}
    if unknown := applied - known:
        raise ConfigError(
            f"the report database has schema version {max(unknown)}, newer than this code "
            f"knows ({max(known)}); upgrade voice-agent or point VOICE_AGENT_DATABASE_URL elsewhere"
        )
    for migration in sorted(MIGRATIONS, key=lambda m: m.version):
        if migration.version in applied:
            continue
        migration.apply(conn)
        conn.execute(
            schema_migrations.insert().values(
                version=migration.version, name=migration.name, applied_at=datetime.now(UTC)
            )
        )
        log.info("store.migrated", version=migration.version, name=migration.name)
    return max(known)


async def migrate(engine: AsyncEngine) -> int:
    """Bring the database to the latest schema in one transaction; the schema version."""
    async with engine.begin() as conn:
        return await conn.run_sync(_apply)
