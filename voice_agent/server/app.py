"""The token service application: routes, middleware and the resources it owns."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler
from livekit import api

from voice_agent.exceptions import AuthError
from voice_agent.logging import get_logger
from voice_agent.metrics import TOKEN_SERVICE_REGISTRY, metrics_endpoint
from voice_agent.profile import load_profile
from voice_agent.server import (
    calls_api,
    health,
    middleware,
    postcall_api,
    staff,
    static,
    token_api,
    webhooks,
)
from voice_agent.server.auth import CallerAuthenticator, bearer_token
from voice_agent.server.errors import error_response
from voice_agent.server.rate_limit import TokenRateLimiter
from voice_agent.server.tokens import VoiceTokenMinter
from voice_agent.settings import Settings

log = get_logger("server")

WEB_ROOT = Path(__file__).resolve().parents[2] / "web"
SETTINGS = web.AppKey("settings", Settings)


def _livekit_http_url(url: str) -> str:
    return url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)


async def _livekit_client(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    key, secret = settings.livekit_credentials()
    lkapi = api.LiveKitAPI(_livekit_http_url(settings.livekit_url), key, secret)
    redis_client = (
        aioredis.from_url(settings.redis_url, socket_connect_timeout=settings.readiness_timeout_s)  # type: ignore[no-untyped-call]  # redis 5 (arq needs <6)
        if settings.redis_url
        else None
    )
    app[health.READINESS_PROBES] = health.ReadinessProbes(
        livekit=health.livekit_probe(lkapi),
        redis=redis_client.ping if redis_client is not None else None,
        timeout_s=settings.readiness_timeout_s,
        store=lambda: app[calls_api.REPORT_STORE].ping(),
    )
    yield
    await lkapi.aclose()
    if redis_client is not None:
        await redis_client.aclose()


async def _rate_limiter(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[token_api.RATE_LIMITER].aclose()


def _metrics_guard(token: str | None) -> Handler:
    metrics = metrics_endpoint(TOKEN_SERVICE_REGISTRY)

    async def guarded(request: web.Request) -> web.StreamResponse:
        if token is not None:
            try:
                given = bearer_token(request.headers.get("Authorization"))
            except AuthError:
                given = ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                return error_response(401, "unauthorized", "metrics need the metrics bearer token")
        return await metrics(request)

    return guarded


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_ROOT / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(settings: Settings) -> web.Application:
    """Build the aiohttp application for `voice-agent serve`."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            middleware.security_headers(settings.browser_rtc_url),
            middleware.request_context,
            middleware.cors(settings.cors_origins),
        ],
    )
    app[SETTINGS] = settings
    app[token_api.AUTHENTICATOR] = CallerAuthenticator(settings)
    app[token_api.RATE_LIMITER] = TokenRateLimiter(
        settings.rate_limit_item, redis_url=settings.redis_url
    )
    app.cleanup_ctx.append(_rate_limiter)
    app[token_api.MINTER] = VoiceTokenMinter(settings)
    app[token_api.TRUST_FORWARDED_FOR] = settings.trust_forwarded_for
    app[token_api.CLIENT_POLICY] = load_profile(settings).client_actions.for_browser()
    app.cleanup_ctx.append(_livekit_client)
    app[staff.STAFF_AUTH] = staff.StaffAuthenticator(settings)
    app.cleanup_ctx.append(calls_api.report_store_context(settings))
    app[webhooks.WEBHOOK_OPTIONS] = webhooks.webhook_options(settings)
    app.cleanup_ctx.append(webhooks.postcall_queue_context(settings))

    secret = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    app.router.add_post("/api/voice-token", token_api.voice_token)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", _metrics_guard(secret))
    app.router.add_get("/", _index)
    calls_api.add_routes(app, web_root=WEB_ROOT)
    app.router.add_post("/webhooks/livekit", webhooks.livekit_webhook)
    postcall_api.add_routes(app)
    static.add_routes(app, root=WEB_ROOT / "static")
    return app


async def serve(settings: Settings) -> None:
    """Run the token service until cancelled (SIGINT/SIGTERM stop it cleanly)."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
    await site.start()
    log.info("server.started", url=f"http://{settings.host}:{settings.port}/")
    try:
        await asyncio.Event().wait()
    finally:
        log.info("server.stopping")
        await runner.cleanup()
