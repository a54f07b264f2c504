"""The idempotency ledger: a request with a key that already ran never runs again.

Two backends behind one interface, chosen by `IdempotencyLedger.from_settings`:

- a SQLite file on this host (the default, `ledger_sqlite.py`): a repeat is caught across the
  calls, runtimes and restarts of the workers that share the file;
- PostgreSQL when `VOICE_AGENT_DATABASE_URL` names one (`ledger_postgres.py`): a retry that lands
  on another host's worker is caught too.

A claim is made before the tool runs. A completed claim stores the result, which every repeat
receives; a failed or cancelled run releases its claim so the request may be tried again. A claim
left "running" by a process that died is taken over after `stale_after_s`. Both backends keep the
operations on one key in the order they were asked for, even when the asking task is cancelled
mid-await: a release queued after a claim always runs after it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic_core import to_jsonable_python

from voice_agent.closing import AsyncClosing
from voice_agent.database_url import normalise_url
from voice_agent.exceptions import ConfigError

if TYPE_CHECKING:
    from voice_agent.settings import Settings

LEDGER_FILE = "tool_ledger.sqlite3"


@dataclass(frozen=True, slots=True)
class LedgerClaim:
    """This run owns the key until it completes or releases it."""

    key: str
    token: str


@dataclass(frozen=True, slots=True)
class LedgerDone:
    """The key already ran; `result` is what it returned."""

    key: str
    result: Any


@dataclass(frozen=True, slots=True)
class LedgerBusy:
    """Another run holds the key right now."""

    key: str


ClaimOutcome = LedgerClaim | LedgerDone | LedgerBusy


class LedgerBackend(Protocol):
    """Where claims live; `result` arrives as JSON text and leaves parsed."""

    name: str

    async def claim(
        self, key: str, *, tool: str, call_id: str, token: str, stale_after_s: float
    ) -> ClaimOutcome: ...

    async def complete(self, claim: LedgerClaim, result: str) -> None: ...

    async def release(self, key: str, token: str) -> None: ...

    async def lookup(self, key: str) -> LedgerDone | LedgerBusy | None: ...

    async def aclose(self) -> None: ...


class IdempotencyLedger(AsyncClosing):
    """Claims, results and releases of idempotency keys (SQLite file or PostgreSQL)."""

    def __init__(
        self,
        *,
        path: Path | None = None,
        database_url: str | None = None,
        stale_after_s: float = 600.0,
    ) -> None:
        if (path is None) == (database_url is None):
            raise ValueError("a ledger needs exactly one of a SQLite path or a database URL")
        self.path = path
        self._stale_after_s = stale_after_s
        self._backend: LedgerBackend
        # Imported here: the backends import this module's result types.
        if path is not None:
            from voice_agent.tooling.ledger_sqlite import SQLiteLedger

            self._backend = SQLiteLedger(path=path)
        else:
            assert database_url is not None
            from voice_agent.tooling.ledger_postgres import PostgresLedger

            self._backend = PostgresLedger(url=database_url)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> IdempotencyLedger:
        """The ledger at `<data_dir>/tool_ledger.sqlite3`."""
        return cls(path=data_dir / LEDGER_FILE)

    @classmethod
    def from_settings(cls, settings: Settings) -> IdempotencyLedger:
        """PostgreSQL when `VOICE_AGENT_DATABASE_URL` names one, else the data dir's file."""
        if settings.database_url and is_postgres_url(settings.database_url):
            return cls(database_url=settings.database_url)
        return cls.in_data_dir(settings.data_dir)

    @property
    def backend(self) -> str:
        """The backend's name: sqlite or postgresql."""
        return self._backend.name

    @staticmethod
    def new_token() -> str:
        """A fresh claim token (make it before claiming, so a cancelled claim can be released)."""
        return uuid.uuid4().hex

    async def claim(
        self, key: str, *, tool: str, call_id: str, token: str | None = None
    ) -> ClaimOutcome:
        """Claim `key` for a run, or say it is done (with its result) or busy."""
        return await self._backend.claim(
            key,
            tool=tool,
            call_id=call_id,
            token=token or self.new_token(),
            stale_after_s=self._stale_after_s,
        )

    async def complete(self, claim: LedgerClaim, result: Any) -> None:
        """Store the result of a claimed run; later claims of the key receive it."""
        text = json.dumps(to_jsonable_python(result, fallback=str), ensure_ascii=False)
        await self._backend.complete(claim, text)

    async def release(self, key: str, token: str) -> None:
        """Give up a claim that did not complete (safe if it was never made)."""
        await self._backend.release(key, token)

    async def lookup(self, key: str) -> LedgerDone | LedgerBusy | None:
        """What the ledger holds for `key`, without claiming it."""
        return await self._backend.lookup(key)

    async def aclose(self) -> None:
        """Finish pending operations and close the database."""
        await self._backend.aclose()


def is_postgres_url(url: str) -> bool:
    """True when a database URL names PostgreSQL (any driver spelling we accept)."""
    # SQLAlchemy only once a database is configured: a worker without one never loads it.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(normalise_url(url)).get_backend_name() == "postgresql"
    except (ConfigError, ArgumentError):  # the report store reports a bad URL at start-up
        return False
