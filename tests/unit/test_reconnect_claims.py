"""A caller's `reconnect_of` claim is linked only once the store confirms it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.helpers import AppClient, make_settings
from tests.report_samples import BASE_T, sample_record
from voice_agent.call_record import CallEvent, CallRecord
from voice_agent.postcall.store import ReportStore
from voice_agent.server.app import create_app

STAFF_TOKEN = "staff-token-for-claims-0123456789"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}


def _claiming(call_id: str, claimed_room: str, *, user_id: str | None, at: float) -> CallRecord:
    record = sample_record(call_id, started_at=at, user_id=user_id)
    record.events.append(
        CallEvent(at=at + 1, event="reconnect_claimed", data={"claimed_room": claimed_room})
    )
    return record


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AppClient]:
    settings = make_settings(data_dir=tmp_path, staff_token=STAFF_TOKEN)
    async with await ReportStore.open(ReportStore.url_from_settings(settings)) as store:
        await store.add_call(sample_record("lost", started_at=BASE_T, user_id="ada"), source="t")
        records = [
            _claiming("again", "call-lost", user_id="ada", at=BASE_T + 60),
            _claiming("mallory", "call-lost", user_id="mallory", at=BASE_T + 90),
            _claiming("ghost", "call-never-seen", user_id="ada", at=BASE_T + 120),
            _claiming("self", "call-self", user_id="ada", at=BASE_T + 150),
            _claiming("anon", "call-lost", user_id=None, at=BASE_T + 180),
            _claiming("before", "call-again", user_id="ada", at=BASE_T + 30),
        ]
        for record in records:
            await store.add_call(record, source="t")
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


@pytest.mark.parametrize(
    ("call_id", "verified", "check"),
    [
        ("again", True, "same_caller"),
        ("mallory", False, "other_caller"),
        ("ghost", False, "unknown_call"),
        ("self", False, "same_call"),
        ("anon", False, "other_caller"),
        ("before", False, "not_earlier"),
    ],
)
async def test_claim_is_verified_only_for_an_earlier_call_of_the_same_caller(
    client: AppClient, call_id: str, verified: bool, check: str
) -> None:
    """The detail names the claim and whether the store confirms it, and why not."""
    resp = await client.get(f"/api/calls/{call_id}", headers=STAFF)
    assert resp.status == 200
    [claim] = (await resp.json())["reconnect_claims"]
    assert claim["verified"] is verified
    assert claim["check"] == check


async def test_call_without_a_claim_has_none(client: AppClient) -> None:
    """A call the app did not claim to continue lists no claims."""
    body = await (await client.get("/api/calls/lost", headers=STAFF)).json()
    assert body["reconnect_claims"] == []


async def test_claim_in_an_old_record_is_still_only_a_claim(tmp_path: Path) -> None:
    """Records from before the rename (`reconnect_of` events) are read as claims too."""
    settings = make_settings(data_dir=tmp_path, staff_token=STAFF_TOKEN)
    old = sample_record("old", started_at=BASE_T + 10, user_id="bob")
    old.events.append(
        CallEvent(at=BASE_T + 11, event="reconnect_of", data={"previous_room": "call-gone"})
    )
    async with await ReportStore.open(ReportStore.url_from_settings(settings)) as store:
        await store.add_call(old, source="t")
    async with TestClient(TestServer(create_app(settings))) as c:
        body = await (await c.get("/api/calls/old", headers=STAFF)).json()
    assert body["reconnect_claims"] == [
        {
            "claimed_room": "call-gone",
            "claimed_call_id": "gone",
            "verified": False,
            "check": "unknown_call",
        }
    ]
