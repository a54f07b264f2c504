"""JSON error responses: every error is `{"error": "...", "detail": ...}` with the right status."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def error_response(
    status: int,
    error: str,
    detail: Any = None,
    *,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON error body with `status`; `error` is a short stable code, `detail` explains."""
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)


# Stable error codes for the statuses aiohttp raises on its own.
HTTP_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}
