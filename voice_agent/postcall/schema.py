"""The report store's tables as SQLAlchemy Core sees them now (the latest migration's shape).

`migrations.py` builds these tables step by step; this module is what queries are written
against. Times of day are UTC `DateTime`s (`UTCDateTime` keeps them aware on every backend);
event times inside a call's history stay epoch seconds, as in the models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite keeps no zone, so it is added on read)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the report store; use UTC-aware times")
        value = value.astimezone(UTC)
        # SQLite compares the stored text, so every value must be written in one zone and format.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type() -> sa.types.TypeEngine[Any]:
    """JSON, as JSONB on PostgreSQL."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


metadata = sa.MetaData()

calls = sa.Table(
    "calls",
    metadata,
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
)

job_events = sa.Table(
    "job_events",
    metadata,
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
)

integrations = sa.Table(
    "integrations",
    metadata,
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
)

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)
