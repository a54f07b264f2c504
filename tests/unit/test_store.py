"""The report store on real SQLite and real PostgreSQL: migrations, dedup, claims, reads."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from tests.helpers import make_settings
from tests.report_samples import BASE_T, sample_record, sample_report, sample_ticket
from voice_agent.database_url import normalise_url
from voice_agent.exceptions import ConfigError, InvalidCursorError, UnknownCallError
from voice_agent.postcall import schema
from voice_agent.postcall.models import CallStatus, IntegrationResult
from voice_agent.postcall.store import ReportStore


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'reports.sqlite3'}"
        return
    base: str = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base.rsplit("/", 1)[0] + f"/{name}"
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[ReportStore]:
    async with await ReportStore.open(store_url) as s:
        yield s


async def test_reopen_applies_no_migration_twice(store_url: str) -> None:
    """Opening an up-to-date database again records each schema version exactly once."""
    for _ in range(3):
        s = await ReportStore.open(store_url)
        await s.close()
    async with await ReportStore.open(store_url) as s, s.connection() as conn:
        rows = (await conn.execute(sa.select(schema.schema_migrations.c.version))).all()
    assert [r.version for r in rows] == [1]


async def test_concurrent_opens_migrate_once(store_url: str) -> None:
    """Processes opening a new database together leave one schema, migrated once."""
    stores = await asyncio.gather(*(ReportStore.open(store_url) for _ in range(4)))
    async with stores[0].connection() as conn:
        count = await conn.scalar(sa.select(sa.func.count()).select_from(schema.schema_migrations))
    for s in stores:
        await s.close()
    assert count == 1


async def test_migrated_tables_match_the_schema_module(store: ReportStore) -> None:
    """The migrations build exactly the columns that queries are written against."""
    async with store.connection() as conn:
        found = await conn.run_sync(
            lambda c: {
                t: {col["name"] for col in sa.inspect(c).get_columns(t)}
                for t in sa.inspect(c).get_table_names()
            }
        )
    expected = {t.name: {c.name for c in t.columns} for t in schema.metadata.sorted_tables}
    assert found == expected


async def test_refuses_a_database_newer_than_the_code(store_url: str) -> None:
    """A schema version this code does not know stops the store from opening."""
    async with await ReportStore.open(store_url) as s, s._engine.begin() as conn:
        await conn.execute(
            schema.schema_migrations.insert().values(
                version=999, name="from the future", applied_at=datetime.now(UTC)
            )
        )
    with pytest.raises(ConfigError, match="newer than this code"):
        await ReportStore.open(store_url)


async def test_add_call_inserts_a_queued_call(store: ReportStore) -> None:
    """A new call is stored queued, unclaimed, with its whole record."""
    assert await store.add_call(sample_record("c-1"), source="agent") is True
    call = await store.get_call("c-1")
    assert call is not None
    assert call.status is CallStatus.QUEUED
    assert call.attempts == 0
    assert call.source == "agent"
    assert call.record == sample_record("c-1")
    assert call.report is None
    assert call.job_history == []
    assert call.integrations == []


async def test_add_call_twice_keeps_one_call(store: ReportStore) -> None:
    """The same call handed over again is a duplicate: False, and nothing changes."""
    await store.add_call(sample_record("c-1"), source="agent")
    again = sample_record("c-1", lines=(("user", "something else"),))
    assert await store.add_call(again, source="webhook") is False
    call = await store.get_call("c-1")
    assert call is not None
    assert call.record == sample_record("c-1")
    assert call.source == "agent"


async def test_complete_record_replaces_a_partial_one(store: ReportStore) -> None:
    """A partial record (from a crashed agent's journal) gives way to the complete one."""
    partial = sample_record("c-1", complete=False, lines=(("agent", "Hello!"),))
    await store.add_call(partial, source="webhook")
    assert await store.add_call(sample_record("c-1"), source="agent") is False
    call = await store.get_call("c-1")
    assert call is not None
    assert call.record.complete
    assert call.turns == 5
    assert call.ended_at is not None


async def test_partial_record_never_replaces_a_complete_one(store: ReportStore) -> None:
    """A late partial record leaves the complete one alone."""
    await store.add_call(sample_record("c-1"), source="agent")
    await store.add_call(sample_record("c-1", complete=False), source="webhook")
    call = await store.get_call("c-1")
    assert call is not None
    assert call.record.complete


async def test_partial_record_with_more_turns_replaces_a_thinner_partial_one(
    store: ReportStore,
) -> None:
    """A journal recovered later (more turns) replaces the webhook's thinner partial record;
    a partial one with fewer turns does not replace it back."""
    thin = sample_record("c-1", complete=False, lines=(("agent", "Hello!"),))
    rich = sample_record("c-1", complete=False)
    await store.add_call(thin, source="webhook")
    await store.add_call(rich, source="journal")
    await store.add_call(thin, source="webhook")
    call = await store.get_call("c-1")
    assert call is not None
    assert call.turns == 5
    assert not call.record.complete
    assert await store.record_state("c-1") == (False, 5)


async def test_claim_marks_processing_and_counts_the_attempt(store: ReportStore) -> None:
    """Claiming a queued call makes it processing with one attempt, and returns it."""
    await store.add_call(sample_record("c-1"), source="agent")
    claimed = await store.claim("c-1")
    assert claimed is not None
    assert claimed.status is CallStatus.PROCESSING
    assert claimed.attempts == 1


async def test_claim_of_a_held_call_is_refused(store: ReportStore) -> None:
    """While one worker processes a call, a second claim gets None."""
    await store.add_call(sample_record("c-1"), source="agent")
    assert await store.claim("c-1") is not None
    assert await store.claim("c-1") is None


async def test_claim_of_unknown_or_done_call_is_refused(store: ReportStore) -> None:
    """Unknown and finished calls cannot be claimed."""
    await store.add_call(sample_record("c-1"), source="agent")
    await store.set_status("c-1", CallStatus.DONE)
    assert await store.claim("c-1") is None
    assert await store.claim("nobody") is None


async def test_claim_is_exclusive_across_concurrent_workers(store_url: str) -> None:
    """Eight workers with their own connections race for one call; exactly one wins."""
    workers = [await ReportStore.open(store_url) for _ in range(8)]
    try:
        await workers[0].add_call(sample_record("c-1"), source="agent")
        results = await asyncio.gather(*(w.claim("c-1") for w in workers))
        call = await workers[0].get_call("c-1")
    finally:
        for w in workers:
            await w.close()
    assert sum(r is not None for r in results) == 1
    assert call is not None
    assert call.attempts == 1


async def test_claim_takes_over_a_stale_processing_call(store: ReportStore) -> None:
    """A processing claim older than the lease (its worker died) can be claimed again."""
    await store.add_call(sample_record("c-1"), source="agent")
    await store.claim("c-1")
    again = await store.claim("c-1", lease_s=0)
    assert again is not None
    assert again.attempts == 2


async def test_dead_call_can_be_claimed_again(store: ReportStore) -> None:
    """A dead-lettered call is claimable (the staff retry), its last error kept."""
    await store.add_call(sample_record("c-1"), source="agent")
    await store.claim("c-1")
    await store.set_status("c-1", CallStatus.DEAD, error="ticket service answered 503")
    claimed = await store.claim("c-1")
    assert claimed is not None
    assert claimed.last_error == "ticket service answered 503"


async def test_report_round_trip(store: ReportStore) -> None:
    """A saved report comes back whole, and the call shows its summary and review flag."""
    await store.add_call(sample_record("c-1"), source="agent")
    stored = sample_report(needs_review=True)
    await store.save_report("c-1", stored)
    call = await store.get_call("c-1")
    assert call is not None
    assert call.report == stored
    assert call.needs_review is True
    assert call.summary == stored.report.summary
    assert call.resolution_status == "follow_up_needed"
    assert call.sentiment == "neutral"


async def test_integration_upsert_keeps_one_result_per_key(store: ReportStore) -> None:
    """Saving the same idempotency key again replaces the result instead of adding one."""
    await store.add_call(sample_record("c-1"), source="agent")
    await store.save_integration("c-1", sample_ticket("c-1", ok=False))
    await store.save_integration("c-1", sample_ticket("c-1", ok=True, at=BASE_T + 300))
    call = await store.get_call("c-1")
    assert call is not None
    assert call.integrations == [sample_ticket("c-1", ok=True, at=BASE_T + 300)]
    assert await store.get_integration("c-1:ticket") == call.integrations[0]
    assert await store.get_integration("c-1:nothing") is None


async def test_job_history_keeps_order_and_detail(store: ReportStore) -> None:
    """Job events come back in the order written, with their details."""
    await store.add_call(sample_record("c-1"), source="agent")
    await store.add_job_event("c-1", "queued", source="agent")
    await store.add_job_event("c-1", "started", attempt=1)
    await store.add_job_event("c-1", "failed", attempt=1, error="timeout", retry_in_s=2.5)
    call = await store.get_call("c-1")
    assert call is not None
    assert [(e.event, e.detail) for e in call.job_history] == [
        ("queued", {"source": "agent"}),
        ("started", {"attempt": 1}),
        ("failed", {"attempt": 1, "error": "timeout", "retry_in_s": 2.5}),
    ]
    assert all(e.at > BASE_T for e in call.job_history)


async def test_writes_for_unknown_calls_raise(store: ReportStore) -> None:
    """Events, reports, statuses and integrations for a call the store lacks are refused."""
    with pytest.raises(UnknownCallError):
        await store.add_job_event("ghost", "started")
    with pytest.raises(UnknownCallError):
        await store.save_report("ghost", sample_report())
    with pytest.raises(UnknownCallError):
        await store.set_status("ghost", CallStatus.DONE)
    with pytest.raises(UnknownCallError):
        await store.save_integration("ghost", sample_ticket("ghost"))


async def test_times_are_utc_aware(store: ReportStore) -> None:
    """Every datetime the store returns is aware and in UTC."""
    await store.add_call(sample_record("c-1"), source="agent")
    call = await store.get_call("c-1")
    assert call is not None
    assert call.started_at == datetime.fromtimestamp(BASE_T, UTC)
    for value in (call.started_at, call.ended_at, call.created_at, call.updated_at):
        assert value is not None
        assert value.utcoffset() == timedelta(0)


async def _fill(store: ReportStore) -> None:
    """Five calls an hour apart, c-0 oldest; c-1 needs review, c-3 is dead, c-4 has a report."""
    for i in range(5):
        await store.add_call(sample_record(f"c-{i}", started_at=BASE_T + 3600 * i), source="agent")
    await store.save_report("c-1", sample_report("Wifi router keeps rebooting", needs_review=True))
    await store.save_report("c-4", sample_report("Password reset worked"))
    await store.set_status("c-3", CallStatus.DEAD, error="boom")


def _ids(page: object) -> list[str]:
    return [c.call_id for c in page.items]  # type: ignore[attr-defined]


async def test_list_is_newest_first(store: ReportStore) -> None:
    """Without filters the list holds every call, newest first."""
    await _fill(store)
    assert _ids(await store.list_calls()) == ["c-4", "c-3", "c-2", "c-1", "c-0"]


async def test_list_filters_by_date_range(store: ReportStore) -> None:
    """`since` is inclusive and `until` exclusive, on the call's start."""
    await _fill(store)
    start = datetime.fromtimestamp(BASE_T, UTC)
    page = await store.list_calls(
        since=start + timedelta(hours=1), until=start + timedelta(hours=3)
    )
    assert _ids(page) == ["c-2", "c-1"]


async def test_list_filters_by_status_and_review(store: ReportStore) -> None:
    """Status and needs_review filters keep only matching calls."""
    await _fill(store)
    assert _ids(await store.list_calls(status=CallStatus.DEAD)) == ["c-3"]
    assert _ids(await store.list_calls(needs_review=True)) == ["c-1"]
    assert "c-1" not in _ids(await store.list_calls(needs_review=False))


async def test_list_search_matches_summary_and_transcript_case_blind(store: ReportStore) -> None:
    """`query` finds words in the summary or transcript, whatever their case."""
    await _fill(store)
    assert _ids(await store.list_calls(query="WIFI router")) == ["c-1"]
    assert len((await store.list_calls(query="invoice 4471")).items) == 5
    assert _ids(await store.list_calls(query="c-2")) == ["c-2"]


async def test_list_search_treats_wildcards_literally(store: ReportStore) -> None:
    """A `%` or `_` in the search is a character, not a SQL wildcard."""
    await _fill(store)
    assert (await store.list_calls(query="%")).items == []
    assert (await store.list_calls(query="c_2")).items == []


async def test_pagination_visits_every_call_once(store: ReportStore) -> None:
    """Following cursors yields every call once, in order, then no cursor."""
    for i in range(7):  # three share a start time: the call id breaks the tie
        await store.add_call(
            sample_record(f"p-{i}", started_at=BASE_T + 60 * min(i, 3)), source="agent"
        )
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await store.list_calls(limit=2, cursor=cursor)
        seen += _ids(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["p-6", "p-5", "p-4", "p-3", "p-2", "p-1", "p-0"]


async def test_cursor_is_stable_when_new_calls_arrive(store: ReportStore) -> None:
    """Calls added after the first page do not shift the next page."""
    await _fill(store)
    first = await store.list_calls(limit=2)
    await store.add_call(sample_record("new", started_at=BASE_T + 99_999), source="agent")
    second = await store.list_calls(limit=2, cursor=first.next_cursor)
    assert _ids(first) == ["c-4", "c-3"]
    assert _ids(second) == ["c-2", "c-1"]


async def test_foreign_cursor_is_rejected(store: ReportStore) -> None:
    """A cursor the store did not make raises InvalidCursorError."""
    with pytest.raises(InvalidCursorError):
        await store.list_calls(cursor="not-a-cursor")


@pytest.mark.parametrize(
    "content",
    [
        ["2025-03-14T10:00:00+00:00", "c-1\u0000"],  # NUL: PostgreSQL text cannot hold it
        ["0001-01-01T00:00:00+23:59", "c-1"],  # before year 1 once in UTC
        ["2025-03-14T10:00:00", "c-1"],  # naive
        ["2025-03-14T10:00:00+00:00", 7],
    ],
)
async def test_forged_cursor_is_rejected(store: ReportStore, content: list[object]) -> None:
    """A well-formed cursor holding what the store never writes raises InvalidCursorError."""
    forged = base64.urlsafe_b64encode(json.dumps(content).encode()).decode()
    with pytest.raises(InvalidCursorError):
        await store.list_calls(cursor=forged)


async def test_summary_fields_of_a_listed_call(store: ReportStore) -> None:
    """A list line carries turns, duration and report fields without the record."""
    await _fill(store)
    line = (await store.list_calls(query="wifi")).items[0]
    assert line.turns == 5
    assert line.duration_s == pytest.approx(16.5)
    assert line.summary == "Wifi router keeps rebooting"
    assert line.needs_review


async def test_set_status_keeps_the_last_error(store: ReportStore) -> None:
    """An error given with a status is kept; a later status without one leaves it."""
    await store.add_call(sample_record("c-1"), source="agent")
    await store.set_status("c-1", CallStatus.DEAD, error="ticket service answered 503")
    await store.set_status("c-1", CallStatus.QUEUED)
    call = await store.get_call("c-1")
    assert call is not None
    assert call.status is CallStatus.QUEUED
    assert call.last_error == "ticket service answered 503"


async def test_status_and_its_event_are_written_together(store: ReportStore) -> None:
    """The step that moved a call to a status is in its history whenever the status is seen,
    with the error it carried; an unknown call changes nothing."""
    await store.add_call(sample_record("c-1"), source="agent")
    await store.set_status(
        "c-1", CallStatus.DEAD, error="503 from tickets", event="dead", job_try=5
    )
    call = await store.get_call("c-1")
    assert call is not None
    assert call.status is CallStatus.DEAD
    last = call.job_history[-1]
    assert (last.event, last.detail) == ("dead", {"job_try": 5, "error": "503 from tickets"})
    with pytest.raises(UnknownCallError):
        await store.set_status("nope", CallStatus.DONE, event="done")


async def test_ping_answers(store: ReportStore) -> None:
    """A healthy database answers the ping."""
    await store.ping()


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    """The SQLite database is in write-ahead-log mode with a busy timeout."""
    async with await ReportStore.open(f"sqlite:///{tmp_path / 'x.db'}") as s, s.connection() as c:
        assert (await c.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await c.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 10_000


def test_default_url_is_a_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    """Without VOICE_AGENT_DATABASE_URL the store is data_dir/voice_agent.sqlite3."""
    url = ReportStore.url_from_settings(make_settings(data_dir=tmp_path))
    assert url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'voice_agent.sqlite3'}"


def test_postgres_urls_use_asyncpg() -> None:
    """postgresql:// and postgres:// URLs are driven by asyncpg; other schemes are refused."""
    assert normalise_url("postgresql://u:p@db/x") == "postgresql+asyncpg://u:p@db/x"
    assert normalise_url("postgres://db/x") == "postgresql+asyncpg://db/x"
    with pytest.raises(ConfigError, match="mysql"):
        normalise_url("mysql://db/x")


async def test_integration_result_survives_json_types(store: ReportStore) -> None:
    """Nested JSON in an integration result comes back equal."""
    await store.add_call(sample_record("c-1"), source="agent")
    result = IntegrationResult(
        name="webhook",
        idempotency_key="c-1:webhook",
        ok=True,
        result={"status": 202, "body": {"accepted": [1, 2.5, None, "x"]}},
        at=BASE_T,
    )
    await store.save_integration("c-1", result)
    assert await store.get_integration("c-1:webhook") == result
