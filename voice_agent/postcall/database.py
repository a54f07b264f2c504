"""The store's database engine: SQLite pragmas and transaction control (URLs: `database_url.py`).

SQLite gets WAL (readers never wait for the writer), a busy timeout (writers queue instead of
failing), foreign keys, and its transactions from us rather than from the driver: a write
transaction starts with `BEGIN IMMEDIATE`, taking the write lock up front so two writers never
deadlock upgrading a read lock; a connection with the `sqlite_begin="DEFERRED"` execution option
(the store's readers) starts a plain deferred `BEGIN` and reads a WAL snapshot. A new file is
switched to WAL once by `prepare`, before the pool's first connection, since processes opening it
together race for that switch (`voice_agent/sqlite_wal.py`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from voice_agent.database_url import normalise_url
from voice_agent.datadir import private_file
from voice_agent.exceptions import ConfigError
from voice_agent.sqlite_wal import enable_wal

DEFAULT_TIMEOUT_S = 10.0


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so `BEGIN` is ours (see the module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; WAL keeps it
        cursor.close()

    return on_connect


def _sqlite_begin(conn: sa.Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    conn.exec_driver_sql(f"BEGIN {mode}")


def create_engine(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> AsyncEngine:
    """An async engine for a user's database URL, set up for its backend.

    `timeout_s` bounds a connection attempt and one statement, waiting for a lock included:
    an unavailable store fails a step within it instead of hanging the job.
    """
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise ConfigError("the report store needs a SQLite file, not an in-memory database")
        private_file(Path(database))
        engine = create_async_engine(parsed, connect_args={"timeout": timeout_s})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(int(timeout_s * 1000)))
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"timeout": timeout_s, "command_timeout": timeout_s},
    )


async def prepare(engine: AsyncEngine, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Ready the database file before first use: a SQLite file is put in WAL mode (off the event
    loop, waiting up to `timeout_s` for other openers); other backends need nothing."""
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return
    path = engine.url.database

    def switch() -> None:
        db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
        try:
            enable_wal(db, timeout_s=timeout_s)
        finally:
            db.close()

    await asyncio.to_thread(switch)
