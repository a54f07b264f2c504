"""The agent worker: LiveKit dispatch, one entrypoint task per call (see `worker.py`)."""

from voice_agent.agent.backoff import ReconnectPolicy
from voice_agent.agent.job import Entrypoint, JobContext
from voice_agent.agent.worker import AgentWorker, WorkerOptions

__all__ = ["AgentWorker", "Entrypoint", "JobContext", "ReconnectPolicy", "WorkerOptions"]
