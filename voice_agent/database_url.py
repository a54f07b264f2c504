"""`VOICE_AGENT_DATABASE_URL`, as the report store and the tool ledger both read it.

One URL names the database of both (SQLite file or PostgreSQL); this is where a user's URL
becomes the async driver's, and where it is rendered for logs without its password.
"""

from __future__ import annotations

from voice_agent.exceptions import ConfigError


def safe_url(url: str) -> str:
    """The URL with any password hidden, for logs."""
    from sqlalchemy.engine import make_url  # imported when a database is used (~25 MB)

    return make_url(url).render_as_string(hide_password=True)


def normalise_url(url: str) -> str:
    """The async driver URL for a user's database URL (`postgresql://` → asyncpg, etc.)."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return url
    raise ConfigError(
        f"VOICE_AGENT_DATABASE_URL must be a postgresql:// or sqlite:/// URL, got {_scheme(url)!r}"
    )


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "(no scheme)"
