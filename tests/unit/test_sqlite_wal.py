"""Switching a SQLite file to WAL while other processes open it (voice_agent/sqlite_wal.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from voice_agent.sqlite_wal import enable_wal


class _Contended:
    """A connection whose WAL switch loses to another opener `losses` times."""

    def __init__(self, losses: int, error: str = "database is locked") -> None:
        self.losses = losses
        self.error = error
        self.tries = 0

    def execute(self, sql: str, /) -> None:
        assert sql == "PRAGMA journal_mode=WAL"
        self.tries += 1
        if self.tries <= self.losses:
            raise sqlite3.OperationalError(self.error)


def test_a_lost_race_is_tried_again_until_the_switch_succeeds() -> None:
    db = _Contended(losses=3)
    enable_wal(db, timeout_s=10.0)
    assert db.tries == 4


def test_a_switch_still_locked_at_the_timeout_raises() -> None:
    db = _Contended(losses=10_000)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        enable_wal(db, timeout_s=0.05)
    assert 1 < db.tries < 10_000


def test_other_errors_are_not_retried() -> None:
    db = _Contended(losses=5, error="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        enable_wal(db, timeout_s=10.0)
    assert db.tries == 1


def test_a_real_file_ends_in_wal_mode(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    try:
        enable_wal(db, timeout_s=1.0)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()
