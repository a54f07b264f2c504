"""The development stack: LiveKit server, Redis and our own processes, supervised as one tree."""
