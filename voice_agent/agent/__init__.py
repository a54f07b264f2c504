"""The agent worker: LiveKit dispatch, one entrypoint task per call (see `worker.py`)."""

from voice_agent.agent.job import Entrypoint, JobContext
from voice_agent.agent.worker import AgentWorker, WorkerOptions
from voice_agent.backoff import ReconnectPolicy

__all__ = ["AgentWorker", "Entrypoint", "JobContext", "ReconnectPolicy", "WorkerOptions"]
