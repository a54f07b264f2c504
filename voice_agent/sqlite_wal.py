"""Switching a SQLite file to WAL when several processes may open it at the same moment.

Switching a new file from its rollback journal to WAL takes an exclusive lock after reading the
header under a shared one. When several processes open a new database at once (the token
service and the post-call worker starting together, one agent worker per core), SQLite answers
the losers "database is locked" at once rather than calling the busy handler, since waiting
while holding the shared lock could deadlock; the busy timeout does not cover it. So the switch
is retried, with backoff, for as long as the caller's lock timeout. Once a file is in WAL it
stays so, and the pragma no longer needs the exclusive lock.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Protocol

from voice_agent.backoff import ReconnectPolicy

_RETRY = ReconnectPolicy(initial_delay_s=0.005, max_delay_s=0.2)


class _Executes(Protocol):
    def execute(self, sql: str, /) -> Any: ...


def enable_wal(db: _Executes, *, timeout_s: float) -> None:
    """Put `db`'s file in WAL mode, waiting up to `timeout_s` while another connection holds it.

    Blocks between tries: call it where blocking is allowed (a worker thread, a sync tool).
    """
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            attempt += 1
            delay = _RETRY.delay_s(attempt)
            if "locked" not in str(e) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
