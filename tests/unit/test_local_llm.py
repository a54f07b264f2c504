"""The offline demo LLM's server command line."""

from __future__ import annotations

import os

import pytest

from voice_agent.devstack import local_llm
from voice_agent.devstack.local_llm import llm_threads, local_llm_process


@pytest.mark.parametrize(("cpus", "expected"), [(1, 1), (2, 2), (16, 2)])
def test_threads_are_one_per_cpu_the_server_may_use_at_most_two(cpus: int, expected: int) -> None:
    """Pinned to one core the server gets one thread (two would share it); otherwise two."""
    assert llm_threads(cpus) == expected


@pytest.mark.parametrize(("affinity", "expected"), [({1}, "1"), ({0, 1}, "2")])
def test_server_threads_follow_the_affinity_it_inherits(
    monkeypatch: pytest.MonkeyPatch, affinity: set[int], expected: str
) -> None:
    """The command line asks llama.cpp for as many threads as the CPUs it will run on."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: affinity)
    monkeypatch.setattr(local_llm, "demo_model_path", lambda: "model.gguf")
    argv = local_llm_process(port=8000).argv
    assert argv[argv.index("--n_threads") + 1] == expected
