"""Orphaned call journals: calls whose agent died before anything handed them over.

Every call is journaled on its agent's host (`data_dir/calls/<call_id>.jsonl`), and the running
call holds an exclusive `flock` on its journal, which the kernel drops when the process dies. A
journal that nobody holds (and that has been quiet for `grace_s`, so a call that is just starting
is never taken) belongs to a call that is not live on this host.

Who recovers them: the agent worker, at start-up and every
`VOICE_AGENT_JOURNAL_RECOVERY_INTERVAL_S`. The journals are on the agent's host, which the
post-call worker need not share; the agent is the one process sure to see them, and a restarted
agent (the usual way a journal is orphaned) looks at once. It hands an orphan over through the
same path as a finished call (spool, then Redis), so the queue's and the store's rule of one
record per call id applies to it too. The post-call worker, which has the store, says in Redis
what the store holds of each call (`PostCallQueue.mark_stored`), and removes a journal itself
when it shares the data dir.

For each journal not held by a live call:

- the store holds the call with at least what the journal has: the journal is removed (a
  journal outlives its call until then, and no longer);
- the record is on its way (Redis holds one, or this host's spool): left for the next sweep;
- otherwise it is replayed into a record with a `recovered_from_journal` event (partial unless
  the journal reached its end line), handed over with source "journal", and removed once the
  store has it. A call handed over normally is never recorded twice: the queue and the store
  keep one record per call id (a complete one, else the one with the most turns).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Self

from voice_agent.call_record import CallEvent, CallJournal, CallRecord
from voice_agent.logging import get_logger
from voice_agent.postcall.handover import DELIVERY_ERRORS, PostCallSink
from voice_agent.postcall.queue import StoredMark, job_id_for, valid_call_id

log = get_logger("postcall.recovery")

SUFFIX = ".jsonl"
RECOVERED_EVENT = "recovered_from_journal"


def journal_path(directory: Path, call_id: str) -> Path:
    """The journal of a call under `directory` (the id is checked: it becomes a file name)."""
    if not valid_call_id(call_id):
        raise ValueError(f"not a valid call id: {call_id!r}")
    return directory / f"{call_id}{SUFFIX}"


def is_live(path: Path) -> bool:
    """True while a process on this host holds the journal's lock (its call is running)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our own lock
    return False


def replay_orphan(path: Path) -> CallRecord:
    """The journal's record, marked as recovered from it (raises for a journal with no call)."""
    record = CallJournal.replay(path)
    record.events.append(
        CallEvent(
            at=time.time(),
            event=RECOVERED_EVENT,
            data={"host": socket.gethostname(), "journal_complete": record.complete},
        )
    )
    return record


def forget_journal(directory: Path, call_id: str, mark: StoredMark) -> bool:
    """Remove the call's journal when the store holds at least what it has and its call is not
    live here; True when it was removed."""
    path = journal_path(directory, call_id)
    if not path.exists() or is_live(path):
        return False
    try:
        record = CallJournal.replay(path)
    except (OSError, ValueError):
        record = None  # unreadable or empty: nothing in it the store could lack
    if record is not None and not mark.covers(record):
        log.warning(
            "journal.richer_than_store",
            call_id=call_id,
            journal_turns=len(record.transcript),
            stored_turns=mark.turns,
        )
        return False
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    log.info("journal.removed", call_id=call_id, reason="stored")
    return True


class JournalRecovery:
    """Sweeps this host's journal directory and hands orphaned calls over."""

    def __init__(
        self,
        *,
        directory: Path,
        sink: PostCallSink,
        interval_s: float = 60.0,
        grace_s: float = 2.0,
    ) -> None:
        self._directory = directory
        self._sink = sink
        self._interval_s = interval_s
        self._grace_s = grace_s
        self._task: asyncio.Task[None] | None = None

    def _journals(self) -> list[tuple[str, Path]]:
        if not self._directory.is_dir():
            return []
        found = []
        for path in sorted(self._directory.glob(f"*{SUFFIX}")):
            call_id = path.name.removesuffix(SUFFIX)
            if valid_call_id(call_id):
                found.append((call_id, path))
        return found

    async def sweep(self) -> int:
        """Look at every journal once; how many orphans were handed over. Raises a delivery
        error when Redis does not answer (the next sweep tries again)."""
        handed = 0
        queue = self._sink.queue
        for call_id, path in self._journals():
            try:
                quiet_s = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if quiet_s < self._grace_s or is_live(path):
                continue
            mark = await queue.stored(call_id)
            if mark is not None and forget_journal(self._directory, call_id, mark):
                continue
            if mark is None and (
                self._sink.spool.read(call_id) is not None or await queue.has_record(call_id)
            ):
                continue  # on its way to the store
            try:
                record = await asyncio.to_thread(replay_orphan, path)
            except (OSError, ValueError) as e:
                log.error("journal.unreadable", call_id=call_id, error=str(e)[:300])
                continue
            if mark is not None and mark.covers(record):
                continue  # removed by forget_journal above unless it went live meanwhile
            # The store holds a thinner record already (its job is done): a job of its own
            # brings this one there (the report stays the one written before).
            job_id = None if mark is None else f"{job_id_for(call_id)}:journal"
            await self._sink.submit(record, source="journal", job_id=job_id)
            handed += 1
            log.warning(
                "journal.recovered",
                call_id=call_id,
                complete=record.complete,
                turns=len(record.transcript),
                quiet_s=round(quiet_s, 1),
            )
        return handed

    async def run(self) -> None:
        """Sweep now, then every `interval_s`, until cancelled."""
        while True:
            try:
                await self.sweep()
            except DELIVERY_ERRORS as e:
                log.warning("journal.sweep_failed", error=f"{type(e).__name__}: {e}"[:300])
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        """Run the sweeps in the background until `aclose`."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="journal-recovery")

    async def aclose(self) -> None:
        """Stop sweeping."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
