"""The local spool: durable, atomic files of call records waiting for Redis."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.report_samples import sample_record
from voice_agent.postcall.spool import RecordSpool


async def test_written_record_reads_back_equal(tmp_path: Path) -> None:
    """A record written to the spool reads back equal, as `<call_id>.json`."""
    spool = RecordSpool(directory=tmp_path / "spool")
    record = sample_record("s1")
    path = await spool.write(record)
    assert path == tmp_path / "spool" / "s1.json"
    assert spool.read("s1") == record


async def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    """After a write the directory holds exactly the record file, private to its owner."""
    spool = RecordSpool(directory=tmp_path)
    await spool.write(sample_record("s1"))
    assert [p.name for p in tmp_path.iterdir()] == ["s1.json"]
    assert os.stat(tmp_path / "s1.json").st_mode & 0o077 == 0


async def test_pending_lists_oldest_first_and_remove_forgets(tmp_path: Path) -> None:
    """`pending` lists call ids oldest first; `remove` takes one out (twice is harmless)."""
    spool = RecordSpool(directory=tmp_path)
    for i, call_id in enumerate(["b", "a", "c"]):
        path = await spool.write(sample_record(call_id))
        os.utime(path, (1000 + i, 1000 + i))
    (tmp_path / ".a.json.123.tmp").write_text("{}")  # a writer that died mid-write
    assert spool.pending() == ["b", "a", "c"]
    spool.remove("a")
    spool.remove("a")
    assert spool.pending() == ["b", "c"]


def test_call_ids_that_are_not_file_names_are_refused(tmp_path: Path) -> None:
    """A call id with path characters never becomes a path."""
    spool = RecordSpool(directory=tmp_path)
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="not a valid call id"):
            spool.path_for(bad)


def test_unreadable_file_reads_as_none_and_is_logged(tmp_path: Path) -> None:
    """A corrupt spool file is reported, not raised."""
    (tmp_path / "s2.json").write_text("{not json")
    with capture_logs() as logs:
        assert RecordSpool(directory=tmp_path).read("s2") is None
    assert logs[0]["event"] == "spool.unreadable"
    assert logs[0]["call_id"] == "s2"


def test_missing_directory_has_nothing_pending(tmp_path: Path) -> None:
    """Before the first write there is nothing to flush."""
    assert RecordSpool(directory=tmp_path / "absent").pending() == []
