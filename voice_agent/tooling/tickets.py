"""The local ticket store behind the example `create_ticket` tool (`tools/tickets.py`).

A SQLite file, `<data_dir>/tickets.sqlite3`, where the idempotency key is UNIQUE: creating a
ticket with a key that already made one returns that ticket and writes nothing, whoever calls
(the tool, a retry, the post-call worker). The methods are blocking; call them from async code
with `asyncio.to_thread`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from voice_agent.sqlite_wal import enable_wal

TICKETS_FILE = "tickets.sqlite3"

Priority = Literal["low", "normal", "high", "urgent"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    call_id TEXT,
    user_id TEXT,
    created_at REAL NOT NULL
)
"""
_COLUMNS = "id, title, description, priority, status, call_id, user_id, created_at"


class Ticket(BaseModel):
    """One support ticket."""

    ticket_id: str
    title: str
    description: str
    priority: Priority
    status: str
    call_id: str | None
    user_id: str | None
    created_at: float


class TicketStore:
    """Support tickets in a SQLite file (one connection per operation; safe across threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> TicketStore:
        """The store at `<data_dir>/tickets.sqlite3`."""
        return cls(data_dir / TICKETS_FILE)

    def create(
        self,
        *,
        idempotency_key: str,
        title: str,
        description: str,
        priority: Priority,
        call_id: str | None = None,
        user_id: str | None = None,
    ) -> tuple[Ticket, bool]:
        """The ticket for this key, and whether this call created it (False: it existed)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            cursor = db.execute(
                "INSERT INTO tickets (idempotency_key, title, description, priority, call_id, "
                "user_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (idempotency_key) DO NOTHING",
                (idempotency_key, title, description, priority, call_id, user_id, time.time()),
            )
            created = cursor.rowcount == 1
            row = db.execute(
                f"SELECT {_COLUMNS} FROM tickets WHERE idempotency_key = ?",  # noqa: S608  # fixed columns
                (idempotency_key,),
            ).fetchone()
            db.execute("COMMIT")
        return _ticket(row), created

    def get(self, ticket_id: str) -> Ticket | None:
        """The ticket with this id ("TCK-000042"), if any."""
        number = ticket_id.upper().removeprefix("TCK-")
        if not number.isdigit():
            return None
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM tickets WHERE id = ?",  # noqa: S608  # fixed columns
                (int(number),),
            ).fetchone()
        return _ticket(row) if row else None

    def tickets(self) -> list[Ticket]:
        """Every ticket, oldest first."""
        with self._connect() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM tickets ORDER BY id").fetchall()  # noqa: S608
        return [_ticket(r) for r in rows]

    def count(self) -> int:
        """How many tickets exist."""
        if not self.path.exists():
            return 0
        with self._connect() as db:
            (n,) = db.execute("SELECT COUNT(*) FROM tickets").fetchone()
        return int(n)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            enable_wal(db, timeout_s=10.0)
            db.execute(_SCHEMA)
            yield db
        finally:
            db.close()


def _ticket(row: tuple[object, ...]) -> Ticket:
    id_, title, description, priority, status, call_id, user_id, created_at = row
    return Ticket.model_validate(
        {
            "ticket_id": f"TCK-{id_:06d}",
            "title": title,
            "description": description,
            "priority": priority,
            "status": status,
            "call_id": call_id,
            "user_id": user_id,
            "created_at": created_at,
        }
    )
