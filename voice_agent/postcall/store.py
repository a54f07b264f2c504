"""The report store: calls, their reports, side effects and job history, in SQL.

SQLAlchemy Core over asyncio (aiosqlite or asyncpg): one query language for both backends, a
maintained connection pool, and dialect-aware upserts, without an ORM's session state. SQLite is
the default (a file under the data directory; `database.py` sets it up); PostgreSQL is used when
`VOICE_AGENT_DATABASE_URL` says so.

Every write is a single conditional statement, so it is safe with several processes on one
database: `claim` is an `UPDATE ... WHERE status allows it RETURNING`, `add_call` an
`INSERT ... ON CONFLICT DO NOTHING` followed by an update that only a complete record can make.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from voice_agent.call_record import CallRecord
from voice_agent.closing import AsyncClosing
from voice_agent.database_url import safe_url
from voice_agent.exceptions import InvalidCursorError, UnknownCallError
from voice_agent.logging import get_logger
from voice_agent.postcall import database, migrations
from voice_agent.postcall.models import (
    CallDetail,
    CallPage,
    CallStatus,
    CallSummary,
    IntegrationResult,
    JobEvent,
    StoredReport,
)
from voice_agent.postcall.schema import calls, integrations, job_events
from voice_agent.settings import Settings

log = get_logger("postcall.store")

MAX_PAGE = 200
# A `processing` claim older than this is taken to belong to a worker that died.
DEFAULT_LEASE_S = 300.0

_SUMMARY_COLUMNS = (
    calls.c.call_id,
    calls.c.status,
    calls.c.needs_review,
    calls.c.started_at,
    calls.c.ended_at,
    calls.c.user_id,
    calls.c.summary,
    calls.c.resolution_status,
    calls.c.sentiment,
    calls.c.turns,
    calls.c.attempts,
    calls.c.updated_at,
)


# A result row of any shape (SQLAlchemy 2.1 types rows by their column types).
AnyRow = sa.Row[*tuple[Any, ...]]


def _utc(epoch_s: float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _search_text(record: CallRecord, stored: StoredReport | None) -> str:
    """Everything a staff search may match, lower-cased once at write time."""
    parts = [record.call_id, record.room, record.user_id or ""]
    parts += [turn.text for turn in record.transcript]
    if stored is not None:
        report = stored.report
        parts += [report.summary, report.ticket.title, report.ticket.category]
        parts += [item.text for item in report.action_items]
    return "\n".join(p for p in parts if p).lower()


def encode_cursor(started_at: datetime, call_id: str) -> str:
    """An opaque cursor for the page after the call (started_at, call_id)."""
    raw = json.dumps([started_at.isoformat(), call_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (started_at, call_id) inside a cursor; `InvalidCursorError` if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started, call_id = json.loads(raw)
        at = datetime.fromisoformat(started)
        if at.tzinfo is None:
            raise ValueError("a cursor's time is aware")
        at = at.astimezone(UTC)
    except (binascii.Error, ValueError, TypeError, OverflowError) as e:
        raise InvalidCursorError("not a cursor from this API") from e
    # A forged cursor's id must not reach SQL as NUL (PostgreSQL refuses it) or control bytes.
    if not isinstance(call_id, str) or not call_id.isprintable():
        raise InvalidCursorError("not a cursor from this API")
    return at, call_id


class ReportStore(AsyncClosing):
    """Calls and their post-call reports, on SQLite or PostgreSQL."""

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = engine.execution_options(sqlite_begin="DEFERRED")
        self._dialect = engine.dialect.name

    # -- lifecycle -------------------------------------------------------------------------

    @staticmethod
    def url_from_settings(settings: Settings) -> str:
        """The database URL: `VOICE_AGENT_DATABASE_URL`, else a SQLite file in the data dir."""
        if settings.database_url:
            return settings.database_url
        path = (settings.data_dir / "voice_agent.sqlite3").resolve()
        return f"sqlite+aiosqlite:///{path}"

    @classmethod
    async def open(cls, url: str, *, timeout_s: float = database.DEFAULT_TIMEOUT_S) -> ReportStore:
        """Connect, create the database if needed and bring its schema up to date; a step that
        waits longer than `timeout_s` for the database fails."""
        engine = database.create_engine(url, timeout_s=timeout_s)
        store = cls(engine=engine)
        try:
            await database.prepare(engine, timeout_s=timeout_s)
            version = await migrations.migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        log.info(
            "store.opened",
            backend=store._dialect,
            schema_version=version,
            url=safe_url(url),
        )
        return store

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

    async def aclose(self) -> None:
        """`close()`, under the name `async with` uses."""
        await self.close()

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        async with self._reader.connect() as conn:
            await conn.execute(sa.select(1))

    # -- writes ----------------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Any:
        """INSERT with this dialect's ON CONFLICT support."""
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def add_call(self, record: CallRecord, *, source: str) -> bool:
        """Insert a new call as queued (True); a known call only trades a partial record for a
        complete one, or for a partial one with more turns (False)."""
        now = _now()
        values = self._record_values(record)
        stmt = (
            self._insert(calls)
            .values(
                call_id=record.call_id,
                status=CallStatus.QUEUED.value,
                needs_review=False,
                source=source[:32],
                created_at=now,
                updated_at=now,
                attempts=0,
                **values,
            )
            .on_conflict_do_nothing(index_elements=[calls.c.call_id])
            .returning(calls.c.call_id)
        )
        async with self._engine.begin() as conn:
            inserted = (await conn.execute(stmt)).first() is not None
            if inserted:
                log.info("store.call_added", call_id=record.call_id, source=source)
                return True
            richer = sa.true() if record.complete else calls.c.turns < len(record.transcript)
            replaced = await conn.execute(
                calls.update()
                .where(
                    calls.c.call_id == record.call_id,
                    calls.c.record_complete.is_(False),
                    richer,
                )
                .values(updated_at=now, **values)
                .returning(calls.c.report)
            )
            row = replaced.first()
            if row is not None:
                await self._refresh_search(conn, record, row.report)
                log.info(
                    "store.record_replaced",
                    call_id=record.call_id,
                    source=source,
                    complete=record.complete,
                )
                return False
        log.info("store.call_duplicate", call_id=record.call_id, source=source)
        return False

    @staticmethod
    def _record_values(record: CallRecord) -> dict[str, Any]:
        return {
            "user_id": record.user_id,
            "room": record.room,
            "started_at": _utc(record.started_at),
            "ended_at": _utc(record.ended_at),
            "record_complete": record.complete,
            "turns": len(record.transcript),
            "record": record.model_dump(mode="json"),
            "search_text": _search_text(record, None),
        }

    async def _refresh_search(
        self, conn: AsyncConnection, record: CallRecord, report: dict[str, Any] | None
    ) -> None:
        if report is None:
            return
        stored = StoredReport.model_validate(report)
        await conn.execute(
            calls.update()
            .where(calls.c.call_id == record.call_id)
            .values(search_text=_search_text(record, stored))
        )

    async def record_state(self, call_id: str) -> tuple[bool, int] | None:
        """(complete, transcript turns) of the record the store holds for a call, or None."""
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(calls.c.record_complete, calls.c.turns).where(
                        calls.c.call_id == call_id
                    )
                )
            ).first()
        return None if row is None else (bool(row.record_complete), int(row.turns))

    async def claim(self, call_id: str, *, lease_s: float = DEFAULT_LEASE_S) -> CallDetail | None:
        """Mark a queued (or dead) call processing and count the attempt; None when it is
        unknown, done, or held by another worker whose claim is younger than `lease_s`."""
        now = _now()
        claimable = sa.or_(
            calls.c.status.in_([CallStatus.QUEUED.value, CallStatus.DEAD.value]),
            sa.and_(
                calls.c.status == CallStatus.PROCESSING.value,
                calls.c.updated_at < now - timedelta(seconds=lease_s),
            ),
        )
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    calls.update()
                    .where(calls.c.call_id == call_id, claimable)
                    .values(
                        status=CallStatus.PROCESSING.value,
                        attempts=calls.c.attempts + 1,
                        updated_at=now,
                    )
                    .returning(calls.c.attempts)
                )
            ).first()
            if row is None:
                log.info("store.claim_refused", call_id=call_id)
                return None
            log.info("store.claimed", call_id=call_id, attempt=row.attempts)
            return await self._detail(conn, call_id)

    async def add_job_event(self, call_id: str, event: str, **detail: Any) -> None:
        """Append one step to the call's post-call history."""
        async with self._engine.begin() as conn:
            await self._require(conn, call_id)
            await _append_event(conn, call_id, event, detail)

    async def save_report(self, call_id: str, stored: StoredReport) -> None:
        """Keep the call's report (replacing an earlier one) and what the list shows of it."""
        report = stored.report
        async with self._engine.begin() as conn:
            record_json = (
                await conn.execute(sa.select(calls.c.record).where(calls.c.call_id == call_id))
            ).scalar_one_or_none()
            if record_json is None:
                raise UnknownCallError(call_id)
            record = CallRecord.model_validate(record_json)
            await conn.execute(
                calls.update()
                .where(calls.c.call_id == call_id)
                .values(
                    report=stored.model_dump(mode="json"),
                    needs_review=stored.needs_review,
                    summary=report.summary,
                    resolution_status=report.resolution_status,
                    sentiment=report.sentiment,
                    search_text=_search_text(record, stored),
                    updated_at=_now(),
                )
            )
        log.info("store.report_saved", call_id=call_id, needs_review=stored.needs_review)

    async def set_status(
        self,
        call_id: str,
        status: CallStatus,
        *,
        error: str | None = None,
        event: str | None = None,
        **detail: Any,
    ) -> None:
        """Move the call to `status`; `error`, when given, becomes its last error. `event`
        (with `detail`, and the error) is appended to the history in the same transaction, so
        whoever sees the new status also sees the step that led to it."""
        values: dict[str, Any] = {"status": status.value, "updated_at": _now()}
        if error is not None:
            values["last_error"] = error[:4000]
        async with self._engine.begin() as conn:
            result = await conn.execute(
                calls.update().where(calls.c.call_id == call_id).values(**values)
            )
            if result.rowcount == 0:
                raise UnknownCallError(call_id)
            if event is not None:
                if error is not None:
                    detail = {**detail, "error": error}
                await _append_event(conn, call_id, event, detail)
        log.info("store.status", call_id=call_id, status=status.value, error=error)

    async def save_integration(self, call_id: str, result: IntegrationResult) -> None:
        """Record a side effect's outcome, replacing any earlier one with the same key."""
        values = result.model_dump(mode="json")
        stmt = self._insert(integrations).values(call_id=call_id, **values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[integrations.c.idempotency_key],
            set_={k: stmt.excluded[k] for k in ("name", "ok", "result", "error", "at")},
        )
        async with self._engine.begin() as conn:
            await self._require(conn, call_id)
            await conn.execute(stmt)
        log.info(
            "store.integration_saved",
            call_id=call_id,
            integration=result.name,
            ok=result.ok,
        )

    async def _require(self, conn: AsyncConnection, call_id: str) -> None:
        found = await conn.scalar(sa.select(calls.c.call_id).where(calls.c.call_id == call_id))
        if found is None:
            raise UnknownCallError(call_id)

    # -- reads -----------------------------------------------------------------------------

    async def get_integration(self, idempotency_key: str) -> IntegrationResult | None:
        """The recorded outcome for this idempotency key, if any."""
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(integrations).where(integrations.c.idempotency_key == idempotency_key)
                )
            ).first()
        return None if row is None else _integration(row)

    async def get_call(self, call_id: str) -> CallDetail | None:
        """Everything about one call, or None."""
        async with self._reader.connect() as conn:
            return await self._detail(conn, call_id)

    async def _detail(self, conn: AsyncConnection, call_id: str) -> CallDetail | None:
        row = (await conn.execute(sa.select(calls).where(calls.c.call_id == call_id))).first()
        if row is None:
            return None
        events = await conn.execute(
            sa.select(job_events.c.at, job_events.c.event, job_events.c.detail)
            .where(job_events.c.call_id == call_id)
            .order_by(job_events.c.id)
        )
        done = await conn.execute(
            sa.select(integrations)
            .where(integrations.c.call_id == call_id)
            .order_by(integrations.c.at, integrations.c.idempotency_key)
        )
        return CallDetail(
            **_summary_fields(row),
            room=row.room,
            source=row.source,
            created_at=row.created_at,
            last_error=row.last_error,
            record=CallRecord.model_validate(row.record),
            report=None if row.report is None else StoredReport.model_validate(row.report),
            integrations=[_integration(r) for r in done],
            job_history=[JobEvent(at=r.at, event=r.event, detail=r.detail) for r in events],
        )

    async def list_calls(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        status: CallStatus | None = None,
        needs_review: bool | None = None,
        query: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> CallPage:
        """Calls newest first (started_at, then call_id, descending), filtered; `since` is
        inclusive and `until` exclusive. `InvalidCursorError` for a cursor not from here."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        conditions: list[sa.ColumnElement[bool]] = []
        if since is not None:
            conditions.append(calls.c.started_at >= since)
        if until is not None:
            conditions.append(calls.c.started_at < until)
        if status is not None:
            conditions.append(calls.c.status == status.value)
        if needs_review is not None:
            conditions.append(calls.c.needs_review.is_(needs_review))
        if query and query.strip():
            conditions.append(calls.c.search_text.contains(query.strip().lower(), autoescape=True))
        if cursor is not None:
            after_started, after_id = decode_cursor(cursor)
            conditions.append(
                sa.or_(
                    calls.c.started_at < after_started,
                    sa.and_(calls.c.started_at == after_started, calls.c.call_id < after_id),
                )
            )
        stmt = (
            sa.select(*_SUMMARY_COLUMNS)
            .where(*conditions)
            .order_by(calls.c.started_at.desc(), calls.c.call_id.desc())
            .limit(limit + 1)
        )
        async with self._reader.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        items = [CallSummary(**_summary_fields(r)) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = encode_cursor(last.started_at, last.call_id)
        return CallPage(items=items, next_cursor=next_cursor)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """A read connection, for tests and diagnostics that need raw SQL."""
        async with self._reader.connect() as conn:
            yield conn


async def _append_event(
    conn: AsyncConnection, call_id: str, event: str, detail: dict[str, Any]
) -> None:
    """One step of the call's post-call history, in the caller's transaction."""
    entry = JobEvent(at=time.time(), event=event, detail=detail)
    await conn.execute(job_events.insert().values(call_id=call_id, **entry.model_dump(mode="json")))


def _summary_fields(row: AnyRow) -> dict[str, Any]:
    duration = (
        round((row.ended_at - row.started_at).total_seconds(), 3)
        if row.ended_at is not None
        else None
    )
    return {
        "call_id": row.call_id,
        "status": CallStatus(row.status),
        "needs_review": row.needs_review,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "duration_s": duration,
        "user_id": row.user_id,
        "summary": row.summary,
        "resolution_status": row.resolution_status,
        "sentiment": row.sentiment,
        "turns": row.turns,
        "attempts": row.attempts,
        "updated_at": row.updated_at,
    }


def _integration(row: AnyRow) -> IntegrationResult:
    return IntegrationResult(
        name=row.name,
        idempotency_key=row.idempotency_key,
        ok=row.ok,
        result=row.result,
        error=row.error,
        at=row.at,
    )
