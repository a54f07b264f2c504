"""`POST /api/voice-token`: authenticate, rate-limit, validate, mint, answer with no-store."""

from __future__ import annotations

import json
import time
import unicodedata
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voice_agent.exceptions import AuthError
from voice_agent.logging import bind_context, get_logger
from voice_agent.server import metrics
from voice_agent.server.auth import CallerAuthenticator
from voice_agent.server.errors import error_response
from voice_agent.server.rate_limit import TokenRateLimiter
from voice_agent.server.tokens import VoiceTokenMinter

log = get_logger("token_service")

AUTHENTICATOR = web.AppKey("authenticator", CallerAuthenticator)
RATE_LIMITER = web.AppKey("rate_limiter", TokenRateLimiter)
MINTER = web.AppKey("minter", VoiceTokenMinter)
TRUST_FORWARDED_FOR = web.AppKey("trust_forwarded_for", bool)
# What the app may execute (from the agent profile): {"actions": [...], "url_hosts": [...]}.
CLIENT_POLICY = web.AppKey("client_policy", dict[str, list[str]])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class VoiceTokenRequest(BaseModel):
    """The optional JSON body; the caller cannot choose its identity or its room."""

    model_config = ConfigDict(extra="forbid", strict=True)

    display_name: str | None = Field(None, min_length=1, max_length=64)

    @field_validator("display_name")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and (bad := _unprintable(value)) is not None:
            raise ValueError(f"must not contain {bad} (control or formatting characters)")
        return value


# Refused in a display name: controls (Cc), formatting characters (Cf: the bidirectional
# overrides and isolates U+202A-202E and U+2066-2069, zero-width joiners, ...), lone surrogates
# (Cs, which no UTF-8 token can carry) and the line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _unprintable(text: str) -> str | None:
    """The first refused character as `U+XXXX`, or None when there is none."""
    for char in text:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def client_ip(request: web.Request) -> str:
    """The caller's address; the last X-Forwarded-For hop only behind a trusted proxy."""
    if request.app[TRUST_FORWARDED_FOR]:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            return hops[-1]
    return request.remote or "unknown"


def _validation_detail(error: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in error.errors(include_url=False, include_input=False)
    ]


async def _parse_body(request: web.Request) -> VoiceTokenRequest | web.Response:
    raw = await request.read()  # aiohttp enforces client_max_size here (413)
    if not raw.strip():
        return VoiceTokenRequest()
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return error_response(400, "malformed_json", f"request body is not valid JSON: {e}")
    if not isinstance(data, dict):
        return error_response(
            400, "invalid_request", [{"field": "body", "message": "expected a JSON object"}]
        )
    try:
        return VoiceTokenRequest.model_validate(data)
    except ValidationError as e:
        return error_response(400, "invalid_request", _validation_detail(e))


def _rejected(outcome: str, response: web.Response, started: float) -> web.Response:
    metrics.TOKEN_REQUESTS.labels(outcome=outcome).inc()
    metrics.TOKEN_MINT_SECONDS.observe(time.perf_counter() - started)
    response.headers.update(NO_STORE)
    return response


async def _rate_limited(
    request: web.Request, scope: str, key: str, started: float
) -> web.Response | None:
    decision = await request.app[RATE_LIMITER].hit(scope, key)
    if decision.allowed:
        return None
    log.warning("token.rate_limited", scope=scope, retry_after_s=decision.retry_after_s)
    return _rejected(
        "rate_limited",
        error_response(
            429,
            "rate_limited",
            f"too many token requests for this {scope}; retry in {decision.retry_after_s} s",
            headers={"Retry-After": str(decision.retry_after_s)},
        ),
        started,
    )


async def voice_token(request: web.Request) -> web.Response:
    """Mint a short-lived LiveKit token for a new call with our agent dispatched."""
    started = time.perf_counter()
    ip = client_ip(request)
    if limited := await _rate_limited(request, "ip", ip, started):
        return limited
    try:
        caller = request.app[AUTHENTICATOR].authenticate(request.headers.get("Authorization"))
    except AuthError as e:
        log.warning("token.auth_failed", reason=str(e))
        return _rejected(
            "unauthorized",
            error_response(401, "unauthorized", str(e), headers={"WWW-Authenticate": "Bearer"}),
            started,
        )
    if not caller.anonymous and (
        limited := await _rate_limited(request, "identity", caller.identity, started)
    ):
        return limited
    body = await _parse_body(request)
    if isinstance(body, web.Response):
        log.info("token.invalid_request", status=body.status)
        return _rejected("invalid_request", body, started)

    grant = request.app[MINTER].mint(caller, display_name=body.display_name)
    elapsed = time.perf_counter() - started
    metrics.TOKEN_REQUESTS.labels(outcome="minted").inc()
    metrics.TOKEN_MINT_SECONDS.observe(elapsed)
    bind_context(call_id=grant.call_id)
    log.info(
        "token.minted",
        room=grant.room,
        identity=grant.identity,
        ttl_s=grant.expires_in,
        mint_ms=round(elapsed * 1000, 3),
    )
    response = {**grant.public_body(), "client_policy": request.app[CLIENT_POLICY]}
    return web.json_response(response, headers=NO_STORE)
