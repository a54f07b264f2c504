"""`GET /api/calls` and `GET /api/calls/{call_id}`: what staff read about calls, and `/reports`.

Both API routes are staff-only (`staff.py`) and never cached. Query parameters are validated
here and a bad one is a 400 that names it. The reports page itself is a public shell: it holds
no data and fetches everything from the API with the staff member's Bearer token.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TypedDict

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import MultiMapping

from voice_agent.exceptions import InvalidCursorError
from voice_agent.logging import bind_context, get_logger
from voice_agent.postcall.models import CallStatus
from voice_agent.postcall.store import MAX_PAGE, ReportStore
from voice_agent.server.errors import error_response
from voice_agent.server.reconnect_claims import verify_claims
from voice_agent.server.staff import StaffIdentity, staff_only
from voice_agent.settings import Settings

log = get_logger("calls_api")

REPORT_STORE = web.AppKey("report_store", ReportStore)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
CALL_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_PARAMS = frozenset({"since", "until", "status", "needs_review", "q", "limit", "cursor"})
_MAX_QUERY = 200
_MAX_CURSOR = 512


def report_store_context(
    settings: Settings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that opens the report store for the app's lifetime."""

    async def report_store(app: web.Application) -> AsyncIterator[None]:
        store = await ReportStore.open(
            ReportStore.url_from_settings(settings), timeout_s=settings.database_timeout_s
        )
        app[REPORT_STORE] = store
        try:
            yield
        finally:
            await store.close()

    return report_store


class BadParameter(ValueError):
    """A query parameter failed validation; `name` says which."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name = name


def _parse_time(name: str, raw: str, *, end_of_day: bool) -> datetime:
    """An ISO date or datetime as UTC; a bare `until` date covers that whole day."""
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            moment = datetime.combine(day, time(), tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        moment = datetime.fromisoformat(raw)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError as e:
        raise BadParameter(name, "expected an ISO date (2025-03-14) or datetime") from e
    except OverflowError as e:  # 9999-12-31 as an end of day, or shifted to UTC past year 9999
        raise BadParameter(name, "outside the dates this API can compare") from e


class CallFilters(TypedDict, total=False):
    """`ReportStore.list_calls` keyword arguments, as parsed from the query string."""

    since: datetime
    until: datetime
    status: CallStatus
    needs_review: bool
    query: str
    limit: int
    cursor: str


def _one(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise BadParameter(name, "given more than once")
    return values[0] if values else None


def parse_filters(query: MultiMapping[str]) -> CallFilters:
    """The list filters in a query string; `BadParameter` names the first bad one."""
    unknown = sorted(set(query) - _PARAMS)
    if unknown:
        raise BadParameter(unknown[0], f"unknown parameter; expected one of {sorted(_PARAMS)}")
    filters = CallFilters()
    if (raw := _one(query, "since")) is not None:
        filters["since"] = _parse_time("since", raw, end_of_day=False)
    if (raw := _one(query, "until")) is not None:
        filters["until"] = _parse_time("until", raw, end_of_day=True)
    if "since" in filters and "until" in filters and filters["until"] <= filters["since"]:
        raise BadParameter("until", "must be after since")
    if (raw := _one(query, "status")) is not None:
        try:
            filters["status"] = CallStatus(raw)
        except ValueError as e:
            raise BadParameter("status", f"one of {[s.value for s in CallStatus]}") from e
    if (raw := _one(query, "needs_review")) is not None:
        if raw not in ("true", "false"):
            raise BadParameter("needs_review", "true or false")
        filters["needs_review"] = raw == "true"
    if (raw := _one(query, "q")) is not None:
        if len(raw) > _MAX_QUERY:
            raise BadParameter("q", f"at most {_MAX_QUERY} characters")
        if not raw.isprintable():  # PostgreSQL text cannot hold NUL; no search needs controls
            raise BadParameter("q", "control characters are not searchable")
        filters["query"] = raw
    if (raw := _one(query, "limit")) is not None:
        # ASCII digits only: str.isdigit also accepts '²' (which int() refuses) and '٣'.
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
            raise BadParameter("limit", f"an integer from 1 to {MAX_PAGE}")
        filters["limit"] = int(raw)
    if (raw := _one(query, "cursor")) is not None:
        if not raw or len(raw) > _MAX_CURSOR:
            raise BadParameter("cursor", "not a cursor from this API")
        filters["cursor"] = raw
    return filters


def _bad_parameter(e: BadParameter) -> web.Response:
    return error_response(400, "bad_request", {"parameter": e.name, "message": str(e)})


@staff_only
async def list_calls(request: web.Request, staff: StaffIdentity) -> web.StreamResponse:
    """GET /api/calls: one page of calls, newest first, filtered."""
    try:
        filters = parse_filters(request.query)
    except BadParameter as e:
        return _bad_parameter(e)
    try:
        page = await request.app[REPORT_STORE].list_calls(**filters)
    except InvalidCursorError as e:
        return _bad_parameter(BadParameter("cursor", str(e)))
    log.info("calls.listed", staff=staff.identity, count=len(page.items))
    return web.json_response(page.model_dump(mode="json"), headers=NO_STORE)


@staff_only
async def get_call(request: web.Request, staff: StaffIdentity) -> web.StreamResponse:
    """GET /api/calls/{call_id}: everything about one call."""
    call_id = request.match_info["call_id"]
    if not CALL_ID_RE.fullmatch(call_id):
        return error_response(400, "bad_request", {"parameter": "call_id", "message": "invalid"})
    bind_context(call_id=call_id)
    call = await request.app[REPORT_STORE].get_call(call_id)
    if call is None:
        return error_response(404, "not_found", "no call with this id", headers=NO_STORE)
    claims = await verify_claims(request.app[REPORT_STORE], call)
    log.info("calls.read", call_id=call_id, staff=staff.identity)
    body = call.model_dump(mode="json")
    body["reconnect_claims"] = [claim.model_dump(mode="json") for claim in claims]
    return web.json_response(body, headers=NO_STORE)


def reports_page(web_root: Path) -> Handler:
    """GET /reports: the static page shell (public; it holds no data)."""

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(web_root / "reports.html", headers={"Cache-Control": "no-cache"})

    return page


def add_routes(app: web.Application, *, web_root: Path) -> None:
    """Register the staff API and the reports page."""
    app.router.add_get("/api/calls", list_calls)
    app.router.add_get("/api/calls/{call_id}", get_call)
    app.router.add_get("/reports", reports_page(web_root))
