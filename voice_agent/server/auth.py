"""Who is asking: anonymous callers (dev) or Bearer JWTs issued by the host application.

In jwt mode the token must carry a valid signature (HS256 with a shared secret, or RS256 with the
host's public key), `exp`, `iss`, `aud` and `sub`; the caller's identity is `sub`. The client
never chooses its identity: in anonymous mode the server makes one up.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import jwt

from voice_agent.exceptions import AuthError, ConfigError
from voice_agent.settings import AuthMode, Settings

_IDENTITY_RE = re.compile(r"^[A-Za-z0-9_.:@+=-]{1,128}$")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller of the token service."""

    identity: str
    anonymous: bool
    roles: frozenset[str] = field(default_factory=frozenset)


def bearer_token(authorization: str | None) -> str:
    """The token in a `Bearer <token>` header value; `AuthError` with a safe message otherwise.

    A header that is not printable ASCII (aiohttp hands undecodable bytes on as surrogates)
    can hold no token of ours, and is refused here before anything encodes it.
    """
    if not authorization:
        raise AuthError("missing bearer token")
    if not (authorization.isascii() and authorization.isprintable()):
        raise AuthError("authorization header must be printable ASCII")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("authorization must be 'Bearer <token>'")
    return token.strip()


class CallerAuthenticator:
    """Turns an `Authorization` header into a `Caller`, or raises `AuthError`."""

    def __init__(self, settings: Settings) -> None:
        self._mode = settings.auth_mode
        self._audience = settings.auth_jwt_audience
        self._issuer = settings.auth_jwt_issuer
        self._key: Any = None
        self._algorithms: list[str] = []
        if self._mode is AuthMode.JWT:
            if settings.auth_jwt_secret is not None:
                self._key = settings.auth_jwt_secret.get_secret_value()
                self._algorithms = ["HS256"]
            elif settings.auth_jwt_public_key_file is not None:
                try:
                    self._key = settings.auth_jwt_public_key_file.read_text()
                except OSError as e:
                    raise ConfigError(
                        f"cannot read VOICE_AGENT_AUTH_JWT_PUBLIC_KEY_FILE: {e.strerror}"
                    ) from e
                self._algorithms = ["RS256"]

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller behind this header value; `AuthError` with a safe message otherwise."""
        if self._mode is AuthMode.ANONYMOUS:
            return Caller(identity=f"user-{secrets.token_hex(6)}", anonymous=True)
        token = bearer_token(authorization)
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as e:
            raise AuthError("token expired") from e
        except jwt.InvalidAudienceError as e:
            raise AuthError("token audience not accepted") from e
        except jwt.InvalidIssuerError as e:
            raise AuthError("token issuer not accepted") from e
        except jwt.InvalidSignatureError as e:
            raise AuthError("token signature invalid") from e
        except jwt.MissingRequiredClaimError as e:
            raise AuthError(f"token lacks the '{e.claim}' claim") from e
        except jwt.PyJWTError as e:
            raise AuthError("token malformed") from e
        subject = claims.get("sub")
        if not isinstance(subject, str) or not _IDENTITY_RE.fullmatch(subject):
            raise AuthError("token subject is not a usable identity")
        roles = claims.get("roles", [])
        role_set = (
            frozenset(r for r in roles if isinstance(r, str))
            if isinstance(roles, list)
            else frozenset()
        )
        return Caller(identity=subject, anonymous=False, roles=role_set)
