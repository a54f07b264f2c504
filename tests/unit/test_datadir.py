"""Personal data stays private: what we write under the data dir is 0600 in 0700 directories,
whatever the umask."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.report_samples import sample_record
from voice_agent.call_record import CallJournal, FileRecordSink
from voice_agent.datadir import private_dir
from voice_agent.devstack.processes import ManagedProcess
from voice_agent.postcall.spool import RecordSpool
from voice_agent.postcall.store import ReportStore


@pytest.fixture(autouse=True)
def _permissive_umask() -> Iterator[None]:
    """A umask that would leave files world-readable: the modes must not depend on it."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_journal_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    """A call's journal and its directory are the owner's only."""
    journal = CallJournal(directory=tmp_path / "calls", call_id="p1", room="call-p1", user_id=None)
    journal.finish("user_left")
    assert _mode(journal.path) == 0o600
    assert _mode(journal.path.parent) == 0o700


async def test_spool_and_record_files_are_0600(tmp_path: Path) -> None:
    """Spooled records and file-sink records are the owner's only."""
    spool = RecordSpool(directory=tmp_path / "spool")
    spooled = await spool.write(sample_record("p2"))
    await FileRecordSink(tmp_path / "records").submit(sample_record("p3"))
    assert _mode(spooled) == 0o600
    assert _mode(spooled.parent) == 0o700
    record = tmp_path / "records" / "p3.json"
    assert _mode(record) == 0o600
    assert _mode(record.parent) == 0o700


async def test_sqlite_store_and_its_wal_are_0600(tmp_path: Path) -> None:
    """The report store's SQLite file, and the WAL SQLite makes beside it, are 0600."""
    path = tmp_path / "voice_agent.sqlite3"
    async with await ReportStore.open(f"sqlite:///{path}") as store:
        await store.add_call(sample_record("p4"), source="agent")
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()
        assert _mode(wal) == 0o600
    assert _mode(path) == 0o600


async def test_child_log_file_is_0600(tmp_path: Path) -> None:
    """A supervised child's log file is the owner's only."""

    async def ready() -> bool:
        return True

    log = tmp_path / "logs" / "child.log"
    child = ManagedProcess(
        name="echo", argv=[sys.executable, "-c", "print('hi')"], ready=ready, log_file=log
    )
    await child.start()
    await child.wait()
    await child.stop()
    assert _mode(log) == 0o600
    assert _mode(log.parent) == 0o700


def test_an_existing_open_data_dir_is_tightened(tmp_path: Path) -> None:
    """A data dir left world-readable by an older version becomes 0700."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)  # noqa: S103 - the permissive state under test
    private_dir(data)
    assert _mode(data) == 0o700


def test_a_shared_sticky_directory_is_left_open(tmp_path: Path) -> None:
    """Pointing a log or data directory straight at a `/tmp`-like directory does not close it
    to the other users of the host."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # noqa: S103 - a /tmp-like directory
    private_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
