"""Ports for the servers a test or the dev stack starts: free, outside the ephemeral range, and
never handed out twice."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from voice_agent.devstack import processes
from voice_agent.devstack.processes import free_port, free_udp_range


def _ephemeral() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_free_ports_are_outside_the_ephemeral_range_and_never_repeat() -> None:
    """No outgoing connection can be given a port picked before its server binds it (LiveKit
    exits at once on a port it cannot bind), and two picks in a row never collide."""
    low, high = _ephemeral()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if low <= p <= high]
    for port in ports[:20]:  # and each is bindable on every interface right now
        with socket.socket() as s:
            s.bind(("", port))


def test_a_port_in_use_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port something listens on (on any interface) is skipped for the next free one."""
    held = socket.socket()
    held.bind(("", 0))
    taken = held.getsockname()[1]
    real_choice, calls = random.choice, []

    def choice(candidates: range) -> int:  # the held port first, twice; then at random
        calls.append(1)
        return taken if len(calls) <= 2 else real_choice(candidates)

    monkeypatch.setattr(random, "choice", choice)
    monkeypatch.setattr(processes, "_handed_out", set())
    try:
        assert free_port() != taken
        assert len(calls) >= 3
    finally:
        held.close()


def test_udp_ranges_are_free_disjoint_and_outside_the_ephemeral_range() -> None:
    """Each LiveKit server gets media ports no client socket and no other server can hold."""
    low, high = _ephemeral()
    ranges = [free_udp_range() for _ in range(5)]
    ports = [p for first, last in ranges for p in range(first, last + 1)]
    assert all(last - first == 99 for first, last in ranges)
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if low <= p <= high]
    assert not {free_port() for _ in range(50)} & set(ports)
