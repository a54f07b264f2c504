"""The simulated caller behind `voice-agent call`."""
