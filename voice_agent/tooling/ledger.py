"""The idempotency ledger: a request with a key that already ran never runs again.

A SQLite file on this host (WAL), so a repeat is caught across calls, runtimes and restarts.
Every operation is one short transaction run on the ledger's own single thread: operations keep
their order (a release queued after a claim always runs after it, even when the claiming task was
cancelled mid-await) and the event loop never blocks on the disk.

A claim is made before the tool runs. A completed claim stores the result, which every repeat
receives; a failed or cancelled run releases its claim so the request may be tried again. A claim
left "running" by a process that died is taken over after `stale_after_s`.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from pydantic_core import to_jsonable_python

T = TypeVar("T")

LEDGER_FILE = "tool_ledger.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tool_ledger (
    key TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    call_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done')),
    token TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    completed_at REAL,
    result TEXT
)
"""


@dataclass(frozen=True, slots=True)
class LedgerClaim:
    """This run owns the key until it completes or releases it."""

    key: str
    token: str


@dataclass(frozen=True, slots=True)
class LedgerDone:
    """The key already ran; `result` is what it returned."""

    key: str
    result: Any


@dataclass(frozen=True, slots=True)
class LedgerBusy:
    """Another run holds the key right now."""

    key: str


class IdempotencyLedger:
    """Claims, results and releases of idempotency keys in a SQLite file."""

    def __init__(self, *, path: Path, stale_after_s: float = 600.0) -> None:
        self.path = path
        self._stale_after_s = stale_after_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tool-ledger")
        self._db: sqlite3.Connection | None = None  # used only on the executor's thread

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> IdempotencyLedger:
        """The ledger at `<data_dir>/tool_ledger.sqlite3`."""
        return cls(path=data_dir / LEDGER_FILE)

    @staticmethod
    def new_token() -> str:
        """A fresh claim token (make it before claiming, so a cancelled claim can be released)."""
        return uuid.uuid4().hex

    async def claim(
        self, key: str, *, tool: str, call_id: str, token: str | None = None
    ) -> LedgerClaim | LedgerDone | LedgerBusy:
        """Claim `key` for a run, or say it is done (with its result) or busy."""
        token = token or self.new_token()
        return await self._run(lambda db: self._claim(db, key, tool, call_id, token))

    async def complete(self, claim: LedgerClaim, result: Any) -> None:
        """Store the result of a claimed run; later claims of the key receive it."""
        text = json.dumps(to_jsonable_python(result, fallback=str), ensure_ascii=False)
        await self._run(lambda db: self._complete(db, claim, text))

    async def release(self, key: str, token: str) -> None:
        """Give up a claim that did not complete (safe if it was never made)."""
        await self._run(lambda db: self._release(db, key, token))

    async def lookup(self, key: str) -> LedgerDone | LedgerBusy | None:
        """What the ledger holds for `key`, without claiming it."""
        return await self._run(lambda db: self._lookup(db, key))

    async def aclose(self) -> None:
        """Close the database and stop the ledger's thread."""
        if self._db is not None:
            await self._run(lambda db: db.close())
            self._db = None
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: op(self._connection()))

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    def _claim(
        self, db: sqlite3.Connection, key: str, tool: str, call_id: str, token: str
    ) -> LedgerClaim | LedgerDone | LedgerBusy:
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT state, claimed_at, result FROM tool_ledger WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO tool_ledger (key, tool, call_id, state, token, claimed_at) "
                    "VALUES (?, ?, ?, 'running', ?, ?)",
                    (key, tool, call_id, token, now),
                )
                outcome: LedgerClaim | LedgerDone | LedgerBusy = LedgerClaim(key, token)
            elif row[0] == "done":
                outcome = LedgerDone(key, json.loads(row[2]))
            elif now - row[1] > self._stale_after_s:  # its owner died mid-run
                db.execute(
                    "UPDATE tool_ledger SET token = ?, claimed_at = ?, call_id = ? WHERE key = ?",
                    (token, now, call_id, key),
                )
                outcome = LedgerClaim(key, token)
            else:
                outcome = LedgerBusy(key)
            db.execute("COMMIT")
            return outcome
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @staticmethod
    def _complete(db: sqlite3.Connection, claim: LedgerClaim, result: str) -> None:
        db.execute(
            "UPDATE tool_ledger SET state = 'done', result = ?, completed_at = ? "
            "WHERE key = ? AND token = ?",
            (result, time.time(), claim.key, claim.token),
        )

    @staticmethod
    def _release(db: sqlite3.Connection, key: str, token: str) -> None:
        db.execute(
            "DELETE FROM tool_ledger WHERE key = ? AND token = ? AND state = 'running'",
            (key, token),
        )

    @staticmethod
    def _lookup(db: sqlite3.Connection, key: str) -> LedgerDone | LedgerBusy | None:
        row = db.execute("SELECT state, result FROM tool_ledger WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return LedgerDone(key, json.loads(row[1])) if row[0] == "done" else LedgerBusy(key)
