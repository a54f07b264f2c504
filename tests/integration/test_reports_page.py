"""The reports page in real Chromium against the real app and a real SQLite store.

The app runs on a free loopback port with three stored calls (a good one, one that needs review,
one dead-lettered). The tests sign in with the staff token, filter the list, read a report and
use the retry button, and save the screenshots in docs/screenshots/.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, Route
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests.chromium import headless_chromium, keep_screenshot
from tests.helpers import make_settings
from tests.report_samples import BASE_T, sample_record, sample_report, sample_ticket
from voice_agent.call_record import CallEvent
from voice_agent.devstack.processes import free_port
from voice_agent.postcall.models import CallStatus, IntegrationResult
from voice_agent.postcall.store import ReportStore
from voice_agent.server.app import create_app

pytestmark = pytest.mark.integration

STAFF_TOKEN = "reports-page-staff-token-0123456789"
WAIT_MS = 15_000

DEAD_ERROR = "ticket: service answered 503 after 5 tries"
GOOD, REVIEW, DEAD = "5e0c8d1f2a3b4c6d", "9b1f3e7a2c4d6e80", "c47a90d2e1f3b5a6"

# Runs before the page's scripts: records CSP violations and uncaught errors.
_RECORDER = """
window.__test = { csp: [], errors: [] };
document.addEventListener("securitypolicyviolation", (e) => {
  window.__test.csp.push(`${e.violatedDirective} ${e.blockedURI}`);
});
window.addEventListener("error", (e) => window.__test.errors.push(String(e.message)));
"""


async def _fill(store: ReportStore) -> None:
    """Three realistic calls, an hour apart."""
    good = sample_record(
        GOOD,
        started_at=BASE_T,
        user_id="customer-7",
        lines=(
            ("agent", "Hello! How can I help you today?"),
            ("user", "I cannot log in, the password reset email never arrives."),
            ("agent", "I have sent a new reset link to the address on your account."),
            ("user", "Got it, that worked. Thank you!"),
            ("agent", "Glad it works. Have a nice day!"),
        ),
    )
    await store.add_call(good, source="agent")
    await store.save_report(
        GOOD,
        sample_report(
            "Customer could not log in; a new password reset link was sent and worked.",
            resolution="resolved",
            sentiment="positive",
            confidence=0.93,
        ),
    )
    await store.save_integration(GOOD, sample_ticket(GOOD))
    await store.save_integration(
        GOOD,
        IntegrationResult(
            name="email_draft",
            idempotency_key=f"{GOOD}:email_draft",
            ok=True,
            result={"stored": True},
            at=BASE_T + 121,
        ),
    )
    for event, detail in (
        ("queued", {"source": "agent"}),
        ("started", {"attempt": 1}),
        ("report.generated", {"model": "gpt-4o-mini", "attempts": 1}),
        ("integration.ticket", {"ok": True}),
        ("done", {}),
    ):
        await store.add_job_event(GOOD, event, **detail)
    await store.set_status(GOOD, CallStatus.DONE)

    # The caller of GOOD again, whose app claims this call continues GOOD (verified) and
    # DEAD (another caller's call: stays an unverified claim).
    review = sample_record(REVIEW, started_at=BASE_T + 3600, user_id="customer-7")
    for room in (f"call-{GOOD}", f"call-{DEAD}"):
        review.events.append(
            CallEvent(at=BASE_T + 3601, event="reconnect_claimed", data={"claimed_room": room})
        )
    await store.add_call(review, source="agent")
    await store.save_report(REVIEW, sample_report(needs_review=True, confidence=0.41))
    await store.set_status(REVIEW, CallStatus.DONE)

    dead = sample_record(
        DEAD,
        started_at=BASE_T + 7200,
        user_id="customer-12",
        lines=(
            ("agent", "Hello! How can I help you today?"),
            ("user", "My router keeps rebooting every few minutes since the update."),
            ("agent", "I am sorry. I will open a ticket for our network team."),
        ),
    )
    await store.add_call(dead, source="webhook")
    await store.claim(DEAD)
    await store.save_integration(DEAD, sample_ticket(DEAD, ok=False))
    await store.add_job_event(DEAD, "failed", attempt=5, error="ticket service answered 503")
    await store.set_status(
        DEAD, CallStatus.DEAD, error="ticket: service answered 503 after 5 tries"
    )


@pytest.fixture(scope="module")
async def reports_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The app on a free loopback port, its store holding three calls; the /reports URL."""
    data_dir = tmp_path_factory.mktemp("reports-app")
    settings = make_settings(data_dir=data_dir, staff_token=STAFF_TOKEN)
    async with await ReportStore.open(ReportStore.url_from_settings(settings)) as store:
        await _fill(store)
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/reports"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, with background networking off."""
    async with headless_chromium() as chromium:
        yield chromium


@contextlib.asynccontextmanager
async def _page(browser: Browser, *, width: int = 1280, height: int = 800) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": width, "height": height})
    await context.add_init_script(_RECORDER)
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        yield page
        assert await page.evaluate("window.__test.csp") == []
        assert await page.evaluate("window.__test.errors") == []
    finally:
        await context.close()


async def _screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    """Save docs/screenshots/`name` when missing or with UPDATE_SCREENSHOTS=1 (the tree stays
    clean on ordinary runs); the page is rendered either way."""
    keep_screenshot(await page.screenshot(full_page=full_page), name)


async def _signed_in(page: Page, url: str) -> None:
    await page.goto(url)
    await page.get_by_label("Staff token").fill(STAFF_TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await page.locator("#calls-rows tr").first.wait_for()


_ROW_IDS = "() => [...document.querySelectorAll('#calls-rows tr')].map(r => r.dataset.callId)"


async def _rows_become(page: Page, expected: list[str]) -> None:
    """Wait (bounded) until the list shows exactly `expected`; fail showing what it shows."""
    try:
        await page.wait_for_function(
            f"(expected) => JSON.stringify(({_ROW_IDS})()) === JSON.stringify(expected)",
            arg=expected,
        )
    except PlaywrightTimeoutError:
        pytest.fail(f"the list shows {await page.evaluate(_ROW_IDS)}, expected {expected}")


async def test_wrong_token_is_refused_on_the_form(browser: Browser, reports_url: str) -> None:
    """A wrong token keeps the sign-in form up with an error and stores nothing."""
    async with _page(browser) as page:
        await page.goto(reports_url)
        await page.get_by_label("Staff token").fill("not-the-staff-token")
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_text("That token was not accepted.").wait_for()
        assert await page.locator("#list-view").is_hidden()
        assert await page.evaluate("sessionStorage.length") == 0


async def test_sign_in_lists_the_calls_newest_first(browser: Browser, reports_url: str) -> None:
    """After signing in the list shows every call, newest first, and the token stays out of
    the URL."""
    async with _page(browser) as page:
        await _signed_in(page, reports_url)
        await _rows_become(page, [DEAD, REVIEW, GOOD])
        assert STAFF_TOKEN not in page.url
        row = page.locator(f'tr[data-call-id="{REVIEW}"]')
        await row.get_by_text("Needs review").wait_for()
        await page.locator(f'tr[data-call-id="{DEAD}"]').get_by_text("Failed").wait_for()
        await _screenshot(page, "reports-list.png")


async def test_filters_narrow_the_list(browser: Browser, reports_url: str) -> None:
    """Status, needs-review and search filters each narrow the list; Clear restores it."""
    async with _page(browser) as page:
        await _signed_in(page, reports_url)
        await page.get_by_label("Status").select_option("dead")
        await page.get_by_role("button", name="Apply").click()
        await _rows_become(page, [DEAD])
        await page.get_by_role("button", name="Clear").click()
        await _rows_become(page, [DEAD, REVIEW, GOOD])
        await page.get_by_label("Needs review").select_option("true")
        await page.get_by_role("button", name="Apply").click()
        await _rows_become(page, [REVIEW])
        await page.get_by_role("button", name="Clear").click()
        await _rows_become(page, [DEAD, REVIEW, GOOD])
        await page.get_by_label("Search").fill("password reset")
        await page.keyboard.press("Enter")
        await _rows_become(page, [GOOD])
        await page.get_by_label("Search").fill("")
        await page.get_by_label("From").fill("2030-01-01")
        await page.get_by_role("button", name="Apply").click()
        await page.get_by_text("No calls match these filters.").wait_for()


async def test_report_view_shows_the_whole_report(browser: Browser, reports_url: str) -> None:
    """Opening a call shows its summary, draft email, transcript, tool audit and latency chart."""
    async with _page(browser) as page:
        await _signed_in(page, reports_url)
        await page.locator(f'tr[data-call-id="{GOOD}"] a').click()
        await page.locator("#detail-heading").wait_for()
        detail = page.locator("#detail")
        await detail.get_by_text("a new password reset link was sent and worked").wait_for()
        assert await page.locator("#detail-heading").evaluate("h => h === document.activeElement")
        await detail.get_by_text("Draft — not sent.").wait_for()
        assert await detail.locator(".badge.resolution-resolved").count() == 1
        assert await detail.locator(".transcript li").count() == 5
        assert await detail.locator(".transcript li.interrupted").count() == 1
        tool_rows = detail.locator(".tool-audit tbody tr")
        assert await tool_rows.count() == 2
        assert "lookup_invoice" in await tool_rows.first.inner_text()
        assert "declined" in await tool_rows.nth(1).inner_text()
        await page.locator("#latency-chart svg rect.seg").first.wait_for()
        assert (
            await page.locator("#latency-chart svg rect.seg").count() == 10
        )  # 2 turns, 5 stages each
        desc = await page.locator("#latency-chart svg desc").text_content()
        assert desc is not None
        assert "Median voice-to-voice" in desc
        assert await detail.locator(".latency-table tbody tr").count() == 2
        assert "T-1042" in await detail.locator("#s-ticket").locator("..").inner_text()
        assert await detail.get_by_text("report.generated").count() == 1
        await _screenshot(page, "reports-detail.png")
        await _screenshot(page, "reports-detail-full.png", full_page=True)


async def test_review_reasons_are_shown(browser: Browser, reports_url: str) -> None:
    """A report that needs review says why."""
    async with _page(browser) as page:
        await _signed_in(page, reports_url)
        await page.goto(f"{reports_url}#call={REVIEW}")
        await page.locator("#detail").get_by_text("not confident in this report").wait_for()


async def test_reconnect_claims_link_only_when_verified(browser: Browser, reports_url: str) -> None:
    """The app's reconnect claims are shown as claims; only the verified one is a link."""
    async with _page(browser) as page:
        await _signed_in(page, reports_url)
        await page.goto(f"{reports_url}#call={REVIEW}")
        claims = page.locator("#detail ul.claims li")
        await claims.first.wait_for()
        assert await claims.count() == 2
        verified = page.locator('#detail ul.claims li[data-verified="true"]')
        assert await verified.locator("a").get_attribute("href") == f"#call={GOOD}"
        unverified = page.locator('#detail ul.claims li[data-verified="false"]')
        assert await unverified.locator("a").count() == 0
        assert "not verified" in await unverified.inner_text()
        await verified.locator("a").click()
        await page.locator("#detail").get_by_text("a new password reset link was sent").wait_for()


async def test_dead_call_offers_retry_and_shows_its_error(
    browser: Browser, reports_url: str
) -> None:
    """A dead call shows its last error and failed integration; Retry POSTs with the bearer
    token and shows the JSON error when the server refuses."""
    async with _page(browser) as page:
        seen: list[tuple[str, str | None]] = []

        async def refuse(route: Route) -> None:
            request = route.request
            seen.append((request.method, await request.header_value("authorization")))
            await route.fulfill(
                status=409, json={"error": "conflict", "detail": "the call is being processed"}
            )

        await page.route("**/api/calls/*/retry", refuse)
        await _signed_in(page, reports_url)
        await page.locator(f'tr[data-call-id="{DEAD}"] a').click()
        await page.locator("#detail").get_by_text(DEAD_ERROR).wait_for()
        failed_ticket = page.locator("#detail .integrations li", has_text="ticket")
        await failed_ticket.get_by_text("ticket service answered 503").wait_for()
        await page.get_by_role("button", name="Retry").click()
        await page.get_by_text("conflict: the call is being processed").wait_for()
        await _screenshot(page, "reports-dead.png")
        assert seen == [("POST", f"Bearer {STAFF_TOKEN}")]


async def test_keyboard_opens_a_call_and_goes_back(browser: Browser, reports_url: str) -> None:
    """A call opens from the keyboard and the back link returns focus to it in the list."""
    async with _page(browser) as page:
        await _signed_in(page, reports_url)
        await page.locator(f'tr[data-call-id="{REVIEW}"] a').focus()
        await page.keyboard.press("Enter")
        await page.locator("#detail-heading").wait_for()
        await page.locator("#back-link").focus()
        await page.keyboard.press("Enter")
        await page.wait_for_function(
            "(id) => document.activeElement?.closest('tr')?.dataset.callId === id", arg=REVIEW
        )


async def test_phone_width_has_no_sideways_scroll(browser: Browser, reports_url: str) -> None:
    """At phone width the list and the report fit the screen (no horizontal scrolling)."""
    async with _page(browser, width=390, height=844) as page:
        await _signed_in(page, reports_url)
        fits = "document.documentElement.scrollWidth <= window.innerWidth"
        assert await page.evaluate(fits)
        await page.locator(f'tr[data-call-id="{GOOD}"] a').click()
        await page.locator("#latency-chart svg rect.seg").first.wait_for()
        assert await page.evaluate(fits)
        await _screenshot(page, "reports-phone.png")
