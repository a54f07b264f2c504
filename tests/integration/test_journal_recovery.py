"""Orphaned journals: a call whose agent process died is handed over from its journal, once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import strip_project_env
from tests.integration.postcall_support import (
    ROOT,
    events_of,
    eventually,
    fast_options,
    fresh_redis,
    postcall_settings,
    report_json,
    running_worker,
    wait_for_status,
)
from voice_agent.call_record import CallJournal, TranscriptTurn
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.postcall.handover import PostCallSink
from voice_agent.postcall.models import CallStatus
from voice_agent.postcall.recovery import RECOVERED_EVENT, JournalRecovery, is_live
from voice_agent.settings import Settings
from voice_agent.testing.openai_script import ChatReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI

pytestmark = pytest.mark.integration

# A call's agent in its own process: journals a greeting and a question, then holds the
# journal (the call is live) until killed, or dies at once when told to.
AGENT = """
import os, signal, sys, time
from pathlib import Path
from voice_agent.call_record import CallJournal, TranscriptTurn
from voice_agent.devstack.livekit_server import LiveKitEndpoint
journal = CallJournal(directory=Path(sys.argv[1]), call_id=sys.argv[2], room="call-x", user_id="u1")
now = time.time()
journal.add_turn(TranscriptTurn(speaker="agent", text="Hello!", started_at=now, ended_at=now,
                                kind="greeting"))
journal.add_turn(TranscriptTurn(speaker="user", text="My VPN is down.", started_at=now,
                                ended_at=now))
print("journaled", flush=True)
if sys.argv[3] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""


@contextlib.asynccontextmanager
async def agent_process(journals: Path, call_id: str, mode: str) -> AsyncIterator[None]:
    """A process that journals a call and then dies (`die`) or keeps it live (`live`)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT, str(journals), call_id, mode,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"journaled"
        if mode == "die":
            await proc.wait()
        yield
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _recovery(settings: Settings, sink: PostCallSink) -> JournalRecovery:
    return JournalRecovery(directory=settings.data_dir / "calls", sink=sink, grace_s=0.0)


async def test_orphaned_journal_is_handed_over_as_a_partial_record_and_removed_once_stored(
    redis_url: str, tmp_path: Path
) -> None:
    """An agent killed mid-call left only its journal: a sweep hands it over (partial, with a
    recovered_from_journal event), the journal stays until the store has the call, then goes."""
    url = await fresh_redis(redis_url)
    async with ScriptedOpenAI(chat=[ChatReply(text=report_json())]) as models:
        settings = postcall_settings(tmp_path, url, models.base_url)
        journal = settings.data_dir / "calls" / "j1.jsonl"
        async with agent_process(journal.parent, "j1", "die"):
            pass
        async with PostCallSink.from_settings(settings) as sink:
            recovery = _recovery(settings, sink)
            assert await recovery.sweep() == 1
            assert journal.exists()  # handed over, not stored yet
            assert await recovery.sweep() == 0  # on its way: not handed over twice
            queued = await sink.queue.get_record("j1")
            async with running_worker(settings, fast_options(settings)) as deps:
                call = await wait_for_status(deps.store, "j1", CallStatus.DONE)
                mark = await deps.queue.stored("j1")
            assert await recovery.sweep() == 0
    assert queued is not None
    assert queued.source == "journal"
    assert not call.record.complete
    assert [t.text for t in call.record.transcript] == ["Hello!", "My VPN is down."]
    assert [e.event for e in call.record.events] == [RECOVERED_EVENT]
    assert mark is not None
    assert not mark.complete
    assert mark.turns == 2
    assert not journal.exists()  # the post-call worker shares this data dir
    assert events_of(call).count("started") == 1


async def test_journal_of_a_live_call_is_left_alone(redis_url: str, tmp_path: Path) -> None:
    """A journal whose call still runs (its process holds the lock) is not handed over."""
    url = await fresh_redis(redis_url)
    settings = postcall_settings(tmp_path, url, None)
    journal = settings.data_dir / "calls" / "j2.jsonl"
    async with (
        agent_process(journal.parent, "j2", "live"),
        PostCallSink.from_settings(settings) as sink,
    ):
        assert is_live(journal)
        assert await _recovery(settings, sink).sweep() == 0
        assert not await sink.queue.has_record("j2")
    assert journal.exists()
    assert not is_live(journal)


async def test_call_handed_over_normally_is_not_recorded_again_from_its_journal(
    redis_url: str, tmp_path: Path
) -> None:
    """The agent's host (its own data dir) finished the call and handed it over; once the
    post-call worker (another data dir) has stored it, the sweep removes the journal and hands
    nothing over."""
    url = await fresh_redis(redis_url)
    agent_host, postcall_host = tmp_path / "agent", tmp_path / "postcall"
    async with ScriptedOpenAI(chat=[ChatReply(text=report_json())]) as models:
        agent_settings = postcall_settings(agent_host, url, models.base_url)
        journal = CallJournal(
            directory=agent_host / "calls", call_id="j3", room="call-j3", user_id=None
        )
        journal.add_turn(TranscriptTurn(speaker="user", text="Hi", started_at=1.0, ended_at=2.0))
        record = journal.finish("user_left")
        async with PostCallSink.from_settings(agent_settings) as sink:
            await sink.submit(record)
            worker_settings = postcall_settings(postcall_host, url, models.base_url)
            async with running_worker(worker_settings, fast_options(worker_settings)) as deps:
                await wait_for_status(deps.store, "j3", CallStatus.DONE)

                async def marked() -> bool:
                    return await deps.queue.stored("j3") is not None

                await eventually(marked, what="the stored mark")
                assert journal.path.exists()  # another host's journal: not the worker's to remove
                assert await _recovery(agent_settings, sink).sweep() == 0
                page = await deps.store.list_calls()
                call = await deps.store.get_call("j3")
    assert not journal.path.exists()
    assert [c.call_id for c in page.items] == ["j3"]
    assert call is not None
    assert call.record.complete
    assert call.source == "agent"
    assert events_of(call).count("started") == 1


async def test_the_worker_command_hands_over_orphaned_journals(
    redis_url: str, livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """`voice-agent worker` with REDIS_URL sweeps its data dir: a journal left by a dead agent
    reaches the post-call queue as a journal hand-over, with no call on the worker."""
    url = await fresh_redis(redis_url)
    settings = postcall_settings(tmp_path / "data", url, None)
    journal = settings.data_dir / "calls" / "j4.jsonl"
    async with agent_process(journal.parent, "j4", "die"):
        pass
    env = strip_project_env(dict(os.environ)) | {
        "LIVEKIT_URL": livekit_server.ws_url,
        "LIVEKIT_API_KEY": livekit_server.api_key,
        "LIVEKIT_API_SECRET": livekit_server.api_secret,
        "REDIS_URL": url,
        "VOICE_AGENT_DATA_DIR": str(settings.data_dir),
        "VOICE_AGENT_JOURNAL_RECOVERY_INTERVAL_S": "0.5",
        "VOICE_AGENT_AGENT_NAME": f"recovery-{uuid.uuid4().hex[:8]}",  # dispatched no calls
        "VOICE_AGENT_STT": "openai",  # nothing is asked of a model: no call comes
        "VOICE_AGENT_TTS": "openai",
        "OPENAI_API_KEY": "sk-unused",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voice_agent", "worker",
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with PostCallSink.from_settings(settings) as sink:

            async def handed_over() -> bool:
                return await sink.queue.has_record("j4")

            await eventually(handed_over, timeout_s=60, what="the journal's hand-over")
            queued = await sink.queue.get_record("j4")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            returncode = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert queued is not None
    assert queued.source == "journal"
    assert [t.text for t in queued.record.transcript] == ["Hello!", "My VPN is down."]
    assert returncode == 0
