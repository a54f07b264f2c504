"""The ledger's PostgreSQL backend: one table shared by every worker on every host.

SQLAlchemy Core over asyncpg, like the report store. Each operation is one statement in its own
transaction, so it is safe with any number of processes: a claim is an
`INSERT ... ON CONFLICT DO UPDATE ... WHERE the old claim is stale RETURNING token`, which either
takes the key or leaves it to its owner, never both. Times are the database server's clock, so
hosts whose clocks disagree still agree on when a claim went stale.

Operations on one key run in the order they were asked for, in tasks the ledger owns: a claim
whose caller was cancelled mid-await still finishes before that caller's release starts, so no
claim is left behind a release that ran first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from voice_agent.database_url import normalise_url, safe_url
from voice_agent.logging import get_logger
from voice_agent.tooling.ledger import ClaimOutcome, LedgerBusy, LedgerClaim, LedgerDone

T = TypeVar("T")

log = get_logger("tooling.ledger")

# pg_advisory_xact_lock key serialising the table's creation: "va_ledgr" as a 63-bit number.
_SCHEMA_LOCK_KEY = 0x76615F6C65646772
# A claim rarely needs a second try (only when the holder released between our two statements).
_CLAIM_TRIES = 3

_metadata = sa.MetaData()
tool_ledger = sa.Table(
    "tool_ledger",
    _metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("tool", sa.Text, nullable=False),
    sa.Column("call_id", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("token", sa.Text, nullable=False),
    sa.Column("claimed_at", sa.Float(precision=53), nullable=False),
    sa.Column("completed_at", sa.Float(precision=53)),
    sa.Column("result", sa.Text),
    sa.CheckConstraint("state IN ('running', 'done')", name="tool_ledger_state"),
)
# Seconds since the epoch on the database server, at the moment the statement runs.
_NOW: sa.ColumnElement[float] = sa.literal_column(
    "extract(epoch from clock_timestamp())::double precision"
)


class PostgresLedger:
    """The `LedgerBackend` in a PostgreSQL table."""

    name = "postgresql"

    def __init__(self, *, url: str, pool_size: int = 2) -> None:
        self._url = url
        self._engine: AsyncEngine = create_async_engine(
            normalise_url(url), pool_pre_ping=True, pool_size=pool_size, max_overflow=4
        )
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()
        self._tails: dict[str, asyncio.Task[Any]] = {}
        self._pending: set[asyncio.Task[Any]] = set()

    async def claim(
        self, key: str, *, tool: str, call_id: str, token: str, stale_after_s: float
    ) -> ClaimOutcome:
        async def op(conn: AsyncConnection) -> ClaimOutcome:
            for _ in range(_CLAIM_TRIES):
                if await _take(conn, key, tool, call_id, token, stale_after_s):
                    return LedgerClaim(key, token)
                held = await _lookup(conn, key)
                if held is not None:
                    return held
            return LedgerBusy(key)  # the key keeps changing hands: someone else is on it

        return await self._run(key, op)

    async def complete(self, claim: LedgerClaim, result: str) -> None:
        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                tool_ledger.update()
                .where(tool_ledger.c.key == claim.key, tool_ledger.c.token == claim.token)
                .values(state="done", result=result, completed_at=_NOW)
            )

        await self._run(claim.key, op)

    async def release(self, key: str, token: str) -> None:
        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                tool_ledger.delete().where(
                    tool_ledger.c.key == key,
                    tool_ledger.c.token == token,
                    tool_ledger.c.state == "running",
                )
            )

        await self._run(key, op)

    async def lookup(self, key: str) -> LedgerDone | LedgerBusy | None:
        return await self._run(key, lambda conn: _lookup(conn, key))

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending))
        await self._engine.dispose()

    async def _run(self, key: str, op: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `op` in one transaction, after every earlier operation on `key`."""
        previous = self._tails.get(key)

        async def ordered() -> T:
            if previous is not None:
                await asyncio.wait({previous})
            await self._ensure_schema()
            async with self._engine.begin() as conn:
                return await op(conn)

        task = asyncio.create_task(ordered(), name="tool-ledger")
        self._tails[key] = task
        self._pending.add(task)
        task.add_done_callback(lambda done: self._forget(key, done))
        # The task is ours: a cancelled caller stops waiting, the operation still completes.
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]
        if not task.cancelled():
            # Mark the error retrieved: a caller still waiting gets it through the shield; one
            # that was cancelled has nothing left that depends on it.
            task.exception()

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        async with self._schema_lock:
            if self._schema_ready:
                return
            async with self._engine.begin() as conn:
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
                await conn.run_sync(_metadata.create_all, checkfirst=True)
            self._schema_ready = True
            log.info("tool.ledger_opened", backend=self.name, url=safe_url(self._url))


async def _take(
    conn: AsyncConnection, key: str, tool: str, call_id: str, token: str, stale_after_s: float
) -> bool:
    """Insert a running claim, or take over a stale one; True when the key is now ours."""
    insert = pg_insert(tool_ledger).values(
        key=key, tool=tool, call_id=call_id, state="running", token=token, claimed_at=_NOW
    )
    statement = insert.on_conflict_do_update(
        index_elements=[tool_ledger.c.key],
        set_={
            "token": insert.excluded.token,
            "claimed_at": insert.excluded.claimed_at,
            "call_id": insert.excluded.call_id,
        },
        # Only a running claim older than the stale age changes hands; a done key never does.
        where=(tool_ledger.c.state == "running")
        & (tool_ledger.c.claimed_at < _NOW - stale_after_s),
    ).returning(tool_ledger.c.token)
    taken: str | None = (await conn.execute(statement)).scalar_one_or_none()
    return taken == token


async def _lookup(conn: AsyncConnection, key: str) -> LedgerDone | LedgerBusy | None:
    row = (
        await conn.execute(
            sa.select(tool_ledger.c.state, tool_ledger.c.result).where(tool_ledger.c.key == key)
        )
    ).one_or_none()
    if row is None:
        return None
    state, result = row
    return LedgerDone(key, json.loads(result)) if state == "done" else LedgerBusy(key)
