"""Cross-cutting HTTP behaviour: request ids, JSON errors, security headers, CORS."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from voice_agent.logging import bound_contextvars, get_logger
from voice_agent.server import metrics
from voice_agent.server.errors import HTTP_ERROR_CODES, error_response

log = get_logger("http")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request an id, bind it to every log line, and turn failures into JSON."""
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _REQUEST_ID_RE.fullmatch(incoming) else secrets.token_hex(8)
    with bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            response = error_response(
                e.status,
                HTTP_ERROR_CODES.get(e.status, "http_error"),
                e.reason,
                headers={k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")},
            )
        except Exception:  # any unhandled error is a JSON 500, logged
            log.exception("http.unhandled_error", method=request.method, path=request.path)
            response = error_response(500, "internal_error", "the server failed; see its logs")
        response.headers["X-Request-ID"] = request_id
        metrics.HTTP_RESPONSES.labels(
            route=_route_label(request), status=f"{response.status // 100}xx"
        ).inc()
        return response


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(rtc_url: str) -> str:
    """A CSP for the web client: our own origin, plus the LiveKit server for signalling."""
    rtc = _origin_of(rtc_url)
    http_twin = rtc.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    ws_twin = http_twin.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "media-src 'self' blob: mediastream:",
            f"connect-src 'self' {ws_twin} {http_twin}",
            "worker-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ]
    )


def security_headers(rtc_url: str) -> Middleware:
    """Add the same hardening headers to every response."""
    headers = {
        "Content-Security-Policy": content_security_policy(rtc_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
        "Cross-Origin-Opener-Policy": "same-origin",
    }

    @web.middleware
    async def add_security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers.update(headers)
        return response

    return add_security_headers


def cors(allowed_origins: Iterable[str]) -> Middleware:
    """CORS for the listed origins only; with none listed, browsers get no cross-origin access."""
    allowed = frozenset(allowed_origins)

    @web.middleware
    async def apply_cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        permitted = origin is not None and origin in allowed
        if (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and request.path.startswith("/api/")
        ):
            if not permitted:
                return error_response(403, "forbidden", "origin not allowed")
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if permitted:
            assert origin is not None
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        return response

    return apply_cors
