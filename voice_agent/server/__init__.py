"""The token service: voice tokens, health, metrics and the web client."""
