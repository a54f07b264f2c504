"""The deployment as `docs/deploy.md` draws it, on loopback (`tests/cluster_stack.py`): two
LiveKit nodes sharing one Redis, two token services, two agent workers, two post-call workers
and PostgreSQL.

What the faults do to a call in flight, as asserted here:

- its worker drained (SIGTERM): the call goes on to its end on that worker, which takes no new
  call meanwhile and exits once the call is over; the call's record is complete;
- its worker killed (SIGKILL): the caller keeps the room and hears nothing more (its question
  goes unanswered), LiveKit offers the job to no other worker, and the call gets one partial
  record: the journal the restarted worker finds on its host hands it over at start-up, before
  LiveKit drops the dead agent (about 20 s) and its `room_finished` webhook arrives, which then
  finds the record present; one post-call job runs;
- its LiveKit node stopped (SIGTERM): the node drains, so the call goes on undisturbed to its
  end; the node takes no new room meanwhile and exits once its rooms are empty.

In each case a call placed meanwhile goes to what survives and is answered.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.cluster_stack import GREETING, PAIR, REPORT, Cluster, running_cluster
from tests.integration.stack import speech

pytestmark = pytest.mark.integration

QUESTION = "What are your opening hours?"
ANSWER = f"You said: {QUESTION}"
WAVES = 5  # two overlapping calls each
STEP_S = 60.0
SHUTTING_DOWN = 2  # livekit.NodeState


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """The whole cluster for this module's tests."""
    async with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        running.models.default_transcript = QUESTION
        yield running


def _other(name: str) -> str:
    return PAIR[1 - PAIR.index(name)]


async def _answered_call(cluster: Cluster, via: str) -> dict[str, Any]:
    """A call through token service `via` that must be answered."""
    result = await cluster.call(via, await speech(QUESTION))
    assert result["ok"], result
    assert result["turns"][-1]["agent_text"] == ANSWER
    return result


async def _until(probe: Any, what: str, timeout_s: float = STEP_S) -> Any:
    """Poll the async `probe` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while not (value := await probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
    return value


async def _worker_of(cluster: Cluster, call_id: str) -> str:
    async def probe() -> str | None:
        return cluster.worker_of_call(call_id)

    return str(await _until(probe, f"a worker to take {call_id}"))


async def _recorded_once(cluster: Cluster, call_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Every call's record once its report is done; each call id is in the store exactly once."""
    stored = {c: await cluster.stored(c, via=PAIR[i % 2]) for i, c in enumerate(call_ids)}
    listed = collections.Counter(await cluster.calls_listed())
    assert {c: listed[c] for c in call_ids} == dict.fromkeys(call_ids, 1)
    return stored


async def test_calls_spread_over_both_nodes_and_both_workers_with_one_report_each(
    cluster: Cluster,
) -> None:
    """Overlapping calls through both token services land on both LiveKit nodes and both agent
    workers (each at least 30 %), a client may signal through the node not holding its room,
    and every call gets exactly one report."""
    calls: list[dict[str, Any]] = []
    for wave in range(WAVES):
        await cluster.wait_for_rooms(0)  # the last wave's rooms are closed
        first_via = PAIR[wave % 2]
        status, grant = await cluster.token(first_via)
        assert status == 200, grant
        first = asyncio.create_task(cluster.call(first_via, await speech(QUESTION), grant=grant))
        # The second call starts once LiveKit counts the first one's room and its worker has
        # taken the job, so its placement sees the load; it signals through the first's node.
        rooms = await cluster.wait_for_rooms(1)
        first_node = next(name for name, count in rooms.items() if count == 1)
        await _worker_of(cluster, grant["room"].removeprefix("call-"))
        second = await _answered_call(cluster, first_node)
        calls += [
            {"via": first_via, "result": await first},
            {"via": first_node, "result": second},
        ]
    for call in calls:
        assert call["result"]["ok"], call["result"]
    placed = [
        {
            "via": c["via"],
            "node": c["node"],
            "worker": cluster.worker_of_call(c["result"]["call_id"]),
        }
        for c in _with_nodes(cluster, calls)
    ]
    nodes = collections.Counter(p["node"] for p in placed)
    workers = collections.Counter(p["worker"] for p in placed)
    assert set(nodes) == set(PAIR), placed
    assert min(nodes.values()) >= 0.3 * len(placed), placed
    assert set(workers) == set(PAIR), placed
    assert min(workers.values()) >= 0.3 * len(placed), placed
    assert any(p["via"] != p["node"] for p in placed), placed  # relayed signalling
    stored = await _recorded_once(cluster, [c["result"]["call_id"] for c in calls])
    for call in stored.values():
        assert call["status"] == "done", call.get("last_error")
        assert call["record"]["complete"]
        assert call["report"]["report"]["summary"] == REPORT["summary"]
        assert not call["report"]["needs_review"], call["report"]["review_reasons"]


def _with_nodes(cluster: Cluster, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each call with the node its room was on (from the nodes' logs: they outlive the room)."""
    return [{**c, "node": cluster.node_that_held(c["result"]["room"])} for c in calls]


async def test_the_token_rate_limit_holds_across_both_replicas(cluster: Cluster) -> None:
    """Ten tokens a minute for one client means ten across the two token services, not
    twenty: the eleventh to twentieth requests, alternating replicas, are refused."""
    # The limiter's windows are aligned minutes: keep the burst within one.
    while time.time() % 60 > 50:  # noqa: ASYNC110 - waiting for a wall-clock condition
        await asyncio.sleep(0.5)
    statuses = [(await cluster.token(PAIR[i % 2], client="203.0.113.9"))[0] for i in range(20)]
    assert statuses[:10] == [200] * 10
    assert statuses[10:] == [429] * 10


# Last in the module: it leaves one LiveKit node stopped (the workers are replaced as it goes).
async def test_a_drained_a_killed_worker_and_a_stopped_node_lose_no_call(
    cluster: Cluster,
) -> None:
    """Drain one worker (SIGTERM), kill another (SIGKILL), stop a LiveKit node (SIGTERM), each
    during a call: the call in flight ends as the module docstring says, a call placed meanwhile
    is answered by what survives, and every call has exactly one record."""
    question = await speech(QUESTION)
    made: list[str] = []

    # 1. Drain the worker carrying a call.
    status, grant = await cluster.token("a")
    assert status == 200, grant
    drained_call = grant["room"].removeprefix("call-")
    seen: dict[str, Any] = {}

    async def drain_its_worker() -> None:
        carrier = seen["drained"] = await _worker_of(cluster, drained_call)
        cluster.signal_worker(carrier, signal.SIGTERM)

        async def draining() -> bool:
            return bool(cluster.workers[carrier].events("worker.draining"))

        await _until(draining, f"worker {carrier} to drain")
        seen["meanwhile"] = await _answered_call(cluster, "b")

    result = await cluster.call("a", question, grant=grant, before_first_turn=drain_its_worker)
    assert result["ok"], result
    assert result["turns"][-1]["agent_text"] == ANSWER
    drained = seen["drained"]
    assert cluster.worker_of_call(seen["meanwhile"]["call_id"]) == _other(drained)
    assert await asyncio.wait_for(cluster.workers[drained].process.wait(), STEP_S) == 0
    made += [drained_call, seen["meanwhile"]["call_id"]]
    # Its replacement starts on the same host (data dir), as the orchestrator would.
    await cluster.start_parts([cluster.workers[drained]])

    # 2. Kill the worker carrying a call.
    status, grant = await cluster.token("b")
    assert status == 200, grant
    killed_call = grant["room"].removeprefix("call-")

    async def kill_its_worker() -> None:
        carrier = seen["killed"] = await _worker_of(cluster, killed_call)
        cluster.signal_worker(carrier, signal.SIGKILL)
        await cluster.workers[carrier].process.wait()
        seen["meanwhile"] = await _answered_call(cluster, "a")

    result = await cluster.call(
        "b", question, grant=grant, before_first_turn=kill_its_worker, turn_timeout_s=5
    )
    assert result["greeting"] == GREETING
    assert not result["ok"]  # the question is never answered
    assert result["turns"] == []
    killed = seen["killed"]
    assert cluster.worker_of_call(seen["meanwhile"]["call_id"]) == _other(killed)
    # No other worker was offered the dead worker's job.
    offers = [
        e
        for w in cluster.workers.values()
        for e in w.events("worker.job_offered")
        if e.get("call_id") == killed_call
    ]
    assert len(offers) == 1, offers
    made += [killed_call, seen["meanwhile"]["call_id"]]
    await cluster.start_parts([cluster.workers[killed]])

    # 3. Stop the LiveKit node holding a call's room.
    status, grant = await cluster.token("a")
    assert status == 200, grant
    node_call = grant["room"].removeprefix("call-")

    async def stop_its_node() -> None:
        async def holder() -> str | None:
            return await cluster.node_of_room(grant["room"])

        node = seen["node"] = await _until(holder, "the room to be placed")
        process = cluster.nodes[node].process
        assert process.pid is not None
        os.killpg(process.pid, signal.SIGTERM)

        async def shutting_down() -> bool:
            states = await cluster.node_states()
            return node in states and states[node].state == SHUTTING_DOWN

        await _until(shutting_down, f"node {node} to drain")
        seen["meanwhile"] = await _answered_call(cluster, _other(node))
        assert cluster.node_that_held(seen["meanwhile"]["room"]) == _other(node)

    result = await cluster.call("a", question, grant=grant, before_first_turn=stop_its_node)
    assert result["ok"], result
    assert result["turns"][-1]["agent_text"] == ANSWER
    stopped = seen["node"]
    await asyncio.wait_for(cluster.nodes[stopped].process.wait(), STEP_S)
    made += [node_call, seen["meanwhile"]["call_id"]]
    # The token service in front of the stopped node says it is not ready (the load balancer
    # takes it out); through the other one, calls go on.
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{cluster.tokens[stopped].port}/readyz") as resp,
    ):
        assert resp.status == 503
    after = await _answered_call(cluster, _other(stopped))
    assert cluster.node_that_held(after["room"]) == _other(stopped)
    made.append(after["call_id"])

    stored = await _recorded_once(cluster, made)
    for call_id, call in stored.items():
        assert call["status"] == "done", (call_id, call.get("last_error"))
        assert call["record"]["complete"] == (call_id != killed_call), call_id
    assert stored[killed_call]["report"][
        "needs_review"
    ]  # Its record is the journal the restarted worker found on its host: the greeting, then
    # nothing; the post-call job ran once.
    record = stored[killed_call]["record"]
    assert [(t["speaker"], t["text"]) for t in record["transcript"]] == [("agent", GREETING)]
    assert "recovered_from_journal" in [e["event"] for e in record["events"]]
    history = [e["event"] for e in stored[killed_call]["job_history"]]
    assert history.count("done") == 1, history
