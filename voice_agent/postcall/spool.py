"""The local spool: call records on disk until Redis has them.

The agent writes a record here before it touches Redis, so a record survives a Redis outage and a
crash of the agent right after the call. Each record is one file, `<call_id>.json`, written to a
temporary name, fsynced, renamed into place and the directory fsynced: a reader sees the whole
record or none of it, and a power cut after `write` returns does not lose it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from pydantic import ValidationError

from voice_agent.call_record import CallRecord
from voice_agent.datadir import open_private, private_dir
from voice_agent.logging import get_logger
from voice_agent.postcall.queue import valid_call_id

log = get_logger("postcall.spool")

SUFFIX = ".json"


class RecordSpool:
    """A directory of call records waiting for the queue."""

    def __init__(self, *, directory: Path) -> None:
        self.directory = directory

    def path_for(self, call_id: str) -> Path:
        """The spool file of a call (the id is checked: it becomes a file name)."""
        if not valid_call_id(call_id):
            raise ValueError(f"not a valid call id: {call_id!r}")
        return self.directory / f"{call_id}{SUFFIX}"

    async def write(self, record: CallRecord) -> Path:
        """Write the record durably; its path."""
        return await asyncio.to_thread(self._write, record)

    def _write(self, record: CallRecord) -> Path:
        final = self.path_for(record.call_id)
        private_dir(self.directory)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        data = record.model_dump_json().encode()
        fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    def read(self, call_id: str) -> CallRecord | None:
        """The spooled record of a call, or None (also for an unreadable file, which is logged)."""
        path = self.path_for(call_id)
        try:
            return CallRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as e:
            log.error("spool.unreadable", call_id=call_id, path=str(path), error=str(e)[:300])
            return None

    def remove(self, call_id: str) -> None:
        """Forget a delivered record."""
        with contextlib.suppress(FileNotFoundError):
            self.path_for(call_id).unlink()

    def pending(self) -> list[str]:
        """Call ids waiting in the spool, oldest first."""
        if not self.directory.is_dir():
            return []
        found: list[tuple[float, str]] = []
        for path in self.directory.glob(f"*{SUFFIX}"):
            call_id = path.name.removesuffix(SUFFIX)
            if not valid_call_id(call_id):
                continue  # a temporary file (dot-prefixed) or something that is not ours
            with contextlib.suppress(FileNotFoundError):
                found.append((path.stat().st_mtime, call_id))
        return [call_id for _, call_id in sorted(found)]
