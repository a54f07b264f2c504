"""The deploy artefacts name only commands, flags, settings, ports and paths that exist."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy_artefacts import ROOT, problems

DEPLOY = ROOT / "deploy"


def test_the_deploy_artefacts_name_only_what_exists() -> None:
    """Every command, flag, variable, port, probe path and metric in deploy/ is real."""
    assert problems(DEPLOY) == []


@pytest.mark.parametrize(
    ("path", "old", "new", "expected"),
    [
        (
            "systemd/voice-agent-worker.service",
            "worker --processes auto",
            "worker --procesess auto",
            "is not a valid command",
        ),
        ("k8s/configmap.yaml", "VOICE_AGENT_MAX_JOBS:", "VOICE_AGENT_MAX_JOB:", "is not a setting"),
        ("k8s/agent-worker.yaml", "path: /healthz", "path: /health", "does not serve"),
        ("k8s/token-service.yaml", "containerPort: 8080", "containerPort: 8081", "declares port"),
        (
            "k8s/agent-worker.yaml",
            "terminationGracePeriodSeconds: 660",
            "terminationGracePeriodSeconds: 30",
            "shorter than the drain timeout",
        ),
        ("k8s/agent-worker.yaml", "name: voice_agent_worker_load", "name: load", "no process"),
        ("compose.yaml", 'VOICE_AGENT_PORT: "8080"', 'VOICE_AGENT_PORT: "80800"', "invalid"),
        ("k8s/redis.yaml", "replicas: 1", "replicas: [1", "does not parse"),
    ],
)
def test_a_wrong_name_in_an_artefact_is_caught(
    tmp_path: Path, path: str, old: str, new: str, expected: str
) -> None:
    """Planting one wrong flag, setting, path, port, grace, metric or syntax is reported."""
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    target = copy / path
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    found = problems(copy)
    assert any(expected in p for p in found), found
