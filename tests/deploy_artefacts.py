"""Reads the deploy artefacts (container image, compose, Kubernetes, systemd) and checks that
everything they name exists: commands and flags in the CLI, variables in `Settings`, ports our
processes listen on, probe paths among the routes of the app on that port, metric names among
the ones we export, and files the image copies. `problems(deploy_dir)` lists what is wrong."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tests.helpers import make_settings
from voice_agent.agent.runner import worker_health_app
from voice_agent.cli import _parser
from voice_agent.metrics import TOKEN_SERVICE_REGISTRY, WORKER_REGISTRY
from voice_agent.server.app import create_app
from voice_agent.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[1]
# Our image; every container or service running it runs `voice-agent`.
OUR_IMAGE = "voice-agent:"
# Variables our containers may carry that are not settings: the runtime's, not ours.
FOREIGN_ENV = frozenset({"PATH", "PYTHONUNBUFFERED", "HF_HUB_OFFLINE", "CMAKE_ARGS", "FORCE_CMAKE"})
_URL = re.compile(r"https?://[^/\s'\"]+?:(\d+)(/[\w./-]*)")


@dataclass
class Process:
    """One of our processes as an artefact starts it."""

    where: str
    argv: list[str]  # after `voice-agent`
    env: dict[str, str | None] = field(default_factory=dict)  # None: a value from a secret
    ports: list[int] = field(default_factory=list)  # declared container ports
    probes: list[tuple[int, str]] = field(default_factory=list)  # (port, HTTP path)
    stop_grace_s: float | None = None


@dataclass
class Artefacts:
    processes: list[Process] = field(default_factory=list)
    metric_names: list[tuple[str, str]] = field(default_factory=list)  # (where, metric)
    webhook_paths: list[tuple[str, int | None, str]] = field(default_factory=list)
    exposed: list[int] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def problems(deploy: Path) -> list[str]:
    """Everything the artefacts under `deploy` name that does not exist."""
    found = Artefacts()
    _read_yaml(deploy, found)
    _read_containerfile(deploy / "Containerfile", found)
    for unit in sorted((deploy / "systemd").glob("*.service")):
        _read_unit(unit, found)
    return found.problems + list(_check(found))


# -- reading ----------------------------------------------------------------------------------


def _read_yaml(deploy: Path, found: Artefacts) -> None:
    documents: list[tuple[str, dict[str, Any]]] = []
    for path in sorted([*deploy.rglob("*.yaml"), *deploy.rglob("*.yml")]):
        where = str(path.relative_to(deploy))
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            found.problems.append(f"{where}: does not parse: {e}")
            continue
        if not docs:
            found.problems.append(f"{where}: is empty")
        documents += [(where, d) for d in docs if isinstance(d, dict)]
    config_maps = {
        d["metadata"]["name"]: d.get("data", {})
        for _, d in documents
        if d.get("kind") == "ConfigMap"
    }
    for where, doc in documents:
        if "services" in doc and where.endswith("compose.yaml"):
            _read_compose(where, doc, found)
        elif doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
            _read_workload(where, doc, config_maps, found)
        elif doc.get("kind") == "HorizontalPodAutoscaler":
            for metric in doc["spec"].get("metrics", []):
                if metric["type"] == "Pods":
                    found.metric_names.append((where, metric["pods"]["metric"]["name"]))
        elif "rules" in doc and "prometheus" in doc:  # prometheus-adapter values
            for rule in doc["rules"].get("custom", []):
                name = rule["seriesQuery"].split("{", 1)[0].strip("'\" ")
                found.metric_names.append((where, name))
        elif "livekit" in doc and isinstance(doc["livekit"], dict):  # LiveKit chart values
            for url in doc["livekit"].get("webhook", {}).get("urls", []):
                found.webhook_paths.append((where, None, "/" + url.split("/", 3)[3]))


def _read_workload(
    where: str, doc: dict[str, Any], config_maps: dict[str, dict[str, str]], found: Artefacts
) -> None:
    spec = doc["spec"]["template"]["spec"]
    for container in spec["containers"]:
        if not str(container.get("image", "")).startswith(OUR_IMAGE):
            continue
        label = f"{where} {doc['metadata']['name']}/{container['name']}"
        argv = [*container.get("command", ["voice-agent"]), *container.get("args", [])]
        if argv[0] != "voice-agent":
            found.problems.append(f"{label}: runs {argv[0]!r}, not voice-agent")
            continue
        env: dict[str, str | None] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                name = source["configMapRef"]["name"]
                if name not in config_maps:
                    found.problems.append(f"{label}: no ConfigMap {name!r} in the manifests")
                env.update(config_maps.get(name, {}))
        for item in container.get("env", []):
            env[item["name"]] = item.get("value")
        named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        probes = []
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            http = container.get(kind, {}).get("httpGet")
            if http is not None:
                port = named.get(http["port"], http["port"])
                probes.append((int(port), http["path"]))
        found.processes.append(
            Process(
                where=label,
                argv=argv[1:],
                env=env,
                ports=[int(p) for p in named.values()],
                probes=probes,
                stop_grace_s=spec.get("terminationGracePeriodSeconds"),
            )
        )


def _read_compose(where: str, doc: dict[str, Any], found: Artefacts) -> None:
    for name, service in doc["services"].items():
        environment = service.get("environment", {})
        config = environment.get("LIVEKIT_CONFIG") if isinstance(environment, dict) else None
        if config is not None:  # the LiveKit server's own configuration, inline
            try:
                livekit = yaml.safe_load(config)
            except yaml.YAMLError as e:
                found.problems.append(f"{where} {name}: LIVEKIT_CONFIG does not parse: {e}")
                continue
            for url in livekit.get("webhook", {}).get("urls", []):
                port, path = _URL.match(url).groups()  # type: ignore[union-attr]
                found.webhook_paths.append((f"{where} {name}", int(port), path))
        if not str(service.get("image", "")).startswith(OUR_IMAGE):
            continue
        command = service.get("command", ["serve"])
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        probes = []
        test = service.get("healthcheck", {}).get("test", [])
        for port, path in _URL.findall(" ".join(test) if isinstance(test, list) else test):
            probes.append((int(port), path))
        ports = [int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])]
        grace = service.get("stop_grace_period")
        found.processes.append(
            Process(
                where=f"{where} {name}",
                argv=argv,
                env={k: None if v is None else str(v) for k, v in environment.items()},
                ports=ports,
                probes=probes,
                stop_grace_s=_seconds(grace) if grace is not None else 10.0,  # compose's default
            )
        )


def _read_unit(unit: Path, found: Artefacts) -> None:
    where = f"systemd/{unit.name}"
    env: dict[str, str | None] = {}
    argv: list[str] | None = None
    grace: float | None = None
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("Environment="):
            for pair in shlex.split(line.removeprefix("Environment=")):
                key, _, value = pair.partition("=")
                env[key] = value
        elif line.startswith("ExecStart="):
            argv = shlex.split(line.removeprefix("ExecStart="))
        elif line.startswith("TimeoutStopSec="):
            grace = _seconds(line.removeprefix("TimeoutStopSec="))
    if argv is None:
        found.problems.append(f"{where}: no ExecStart")
    elif Path(argv[0]).name == "voice-agent":
        found.processes.append(Process(where=where, argv=argv[1:], env=env, stop_grace_s=grace))


def _read_containerfile(path: Path, found: Artefacts) -> None:
    text = re.sub(r"\\\n", " ", path.read_text())  # join continued lines
    stages: list[dict[str, Any]] = []
    for raw in text.splitlines():
        word, _, rest = raw.strip().partition(" ")
        if word == "FROM":
            stages.append({"env": {}, "entrypoint": [], "cmd": None, "expose": []})
        elif not stages:
            continue
        elif word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stages[-1]["env"][key] = value
        elif word == "EXPOSE":
            stages[-1]["expose"] += [int(p) for p in rest.split() if p.isdigit()]
        elif word == "COPY" and "--from=" not in rest:
            found.copied += shlex.split(rest)[:-1]
        elif word == "ENTRYPOINT":
            stages[-1]["entrypoint"] = json.loads(rest)
        elif word == "CMD":
            stages[-1]["cmd"] = json.loads(rest)
    for i, stage in enumerate(stages):
        if stage["entrypoint"] != ["voice-agent"]:
            continue  # a build stage, or LiveKit's image
        argv = stage["cmd"] or []
        found.processes.append(
            Process(where=f"Containerfile stage {i} CMD", argv=argv, env=stage["env"])
        )
        found.exposed += stage["expose"]


def _seconds(value: str | int | float) -> float:
    text = str(value).strip()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?", text)
    if match is None:
        return float("nan")
    return float(match.group(1)) * units[match.group(2) or "s"]


# -- checking ---------------------------------------------------------------------------------


def _variables() -> dict[str, str]:
    """Each environment variable a setting reads, and the field it sets."""
    return {env_name(field): field for field in Settings.model_fields}


def _routes(app_routes: Any) -> set[str]:
    return {r.resource.canonical for r in app_routes if r.resource is not None}


def _check(found: Artefacts) -> Iterator[str]:
    variables = _variables()
    token_routes = _routes(create_app(make_settings()).router.routes())
    worker_routes = _routes(worker_health_app(lambda: ({}, 200)).router.routes())
    parser = _parser()
    listening: set[int] = set()
    for process in found.processes:
        try:
            args = parser.parse_args(process.argv)
        except SystemExit:
            yield f"{process.where}: `voice-agent {' '.join(process.argv)}` is not a valid command"
            continue
        for name in process.env:
            if name not in variables and name not in FOREIGN_ENV:
                yield f"{process.where}: {name} is not a setting"
        values = {
            variables[k]: v
            for k, v in process.env.items()
            if k in variables and v is not None and "${" not in v
        }
        try:
            settings = make_settings(**values)
        except ValidationError as e:
            yield f"{process.where}: invalid settings: {e}"
            continue
        ports, routes = _served(args.command, settings, token_routes, worker_routes)
        listening |= set(ports)
        for port in process.ports:
            if port not in ports:
                yield f"{process.where}: declares port {port}; `{args.command}` listens on {ports}"
        for port, path in process.probes:
            if port not in ports:
                yield f"{process.where}: probes port {port}; `{args.command}` listens on {ports}"
            elif path not in routes:
                yield f"{process.where}: probes {path}, which `{args.command}` does not serve"
        grace = process.stop_grace_s
        if args.command == "worker" and grace is not None and grace < settings.drain_timeout_s:
            yield (
                f"{process.where}: stops after {grace:g} s, shorter than the "
                f"drain timeout ({settings.drain_timeout_s:g} s)"
            )
    # What some /metrics serves: a metric in neither registry is on no page an autoscaler reads.
    exported = {m.name for r in (WORKER_REGISTRY, TOKEN_SERVICE_REGISTRY) for m in r.collect()}
    for where, metric in found.metric_names:
        if metric not in exported:
            yield f"{where}: scales on {metric}, which no process exports"
    for where, hook_port, path in found.webhook_paths:
        if path not in token_routes:
            yield f"{where}: webhook path {path} is not a token service route"
        if hook_port is not None and hook_port not in listening:
            yield f"{where}: webhook port {hook_port} is not where the token service listens"
    for port in found.exposed:
        if port not in listening:
            yield f"Containerfile: exposes {port}, where none of our processes listens"
    for source in found.copied:
        if not (ROOT / source).exists():
            yield f"Containerfile: copies {source}, which is not in the repository"


def _served(
    command: str, settings: Settings, token_routes: set[str], worker_routes: set[str]
) -> tuple[list[int], set[str]]:
    """The ports a command listens on with these settings, and the paths it serves there."""
    if command == "serve":
        return [settings.port], token_routes
    if command == "worker" and settings.worker_metrics_port:
        return [settings.worker_metrics_port], worker_routes
    return [], set()
