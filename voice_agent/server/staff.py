"""Staff authentication for the reports API: who may read calls, and who may not.

In jwt mode staff present a Bearer JWT from the host application, verified exactly like caller
tokens (`auth.CallerAuthenticator`), whose `roles` claim holds `staff`. In anonymous (dev) mode
they present `VOICE_AGENT_STAFF_TOKEN` as the Bearer token, compared in constant time; with no
staff token configured the API answers 503 rather than ever being open.

Handlers use `@staff_only` (it passes the `StaffIdentity` in) or call `require_staff` and turn a
`StaffAccessDenied` into its response with `.response()`. The denial is answered here, not by
raising an aiohttp HTTP exception, so the `WWW-Authenticate` header survives the error middleware.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from voice_agent.exceptions import AuthError
from voice_agent.logging import get_logger
from voice_agent.server.auth import CallerAuthenticator, bearer_token
from voice_agent.server.errors import error_response
from voice_agent.settings import AuthMode, Settings

log = get_logger("staff")

STAFF_ROLE = "staff"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="voice-agent staff"'}


@dataclass(frozen=True)
class StaffIdentity:
    """A member of staff the server let in."""

    identity: str  # the JWT subject, or "staff-token" for the shared dev token
    method: Literal["jwt", "staff_token"]


class StaffAccessDenied(Exception):
    """Why a request may not see staff data; `.response()` is the JSON answer."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail

    def response(self) -> web.Response:
        """The JSON error, with the Bearer challenge on a 401."""
        headers = dict(_CHALLENGE) if self.status == 401 else None
        return error_response(self.status, self.error, self.detail, headers=headers)


def _unauthorized(detail: str) -> StaffAccessDenied:
    return StaffAccessDenied(401, "unauthorized", detail)


class StaffAuthenticator:
    """Turns an `Authorization` header into a `StaffIdentity`, or raises `StaffAccessDenied`."""

    def __init__(self, settings: Settings) -> None:
        self._mode = settings.auth_mode
        self._jwt = CallerAuthenticator(settings) if self._mode is AuthMode.JWT else None
        token = settings.staff_token.get_secret_value() if settings.staff_token else None
        self._token = token.encode() if token else None

    def authenticate(self, authorization: str | None) -> StaffIdentity:
        """The staff member behind this header value."""
        if self._jwt is not None:
            return self._from_jwt(self._jwt, authorization)
        if self._token is None:
            raise StaffAccessDenied(
                503,
                "unavailable",
                "staff access not configured: set VOICE_AGENT_STAFF_TOKEN "
                "(`voice-agent dev` generates one)",
            )
        given = _bearer(authorization)
        if not hmac.compare_digest(given.encode(), self._token):
            raise _unauthorized("unknown staff token")
        return StaffIdentity(identity="staff-token", method="staff_token")

    @staticmethod
    def _from_jwt(jwt: CallerAuthenticator, authorization: str | None) -> StaffIdentity:
        _bearer(authorization)  # the same 401s for a missing or malformed header in both modes
        try:
            caller = jwt.authenticate(authorization)
        except AuthError as e:
            raise _unauthorized(str(e)) from e
        if STAFF_ROLE not in caller.roles:
            raise StaffAccessDenied(403, "forbidden", "the token lacks the 'staff' role")
        return StaffIdentity(identity=caller.identity, method="jwt")


def _bearer(authorization: str | None) -> str:
    try:
        return bearer_token(authorization)
    except AuthError as e:
        raise _unauthorized(str(e)) from e


STAFF_AUTH = web.AppKey("staff_auth", StaffAuthenticator)


def require_staff(request: web.Request) -> StaffIdentity:
    """The staff member making this request; `StaffAccessDenied` (logged) otherwise."""
    try:
        return request.app[STAFF_AUTH].authenticate(request.headers.get("Authorization"))
    except StaffAccessDenied as e:
        log.warning(
            "staff.denied",
            status=e.status,
            reason=e.detail,
            method=request.method,
            path=request.path,
        )
        raise


StaffHandler = Callable[[web.Request, StaffIdentity], Awaitable[web.StreamResponse]]


def staff_only(handler: StaffHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a handler so only staff reach it; it receives the `StaffIdentity` too."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            staff = require_staff(request)
        except StaffAccessDenied as e:
            return e.response()
        return await handler(request, staff)

    return guarded
