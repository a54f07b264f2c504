"""Self-hosted real-time voice agent server on LiveKit."""

__version__ = "0.1.0"
