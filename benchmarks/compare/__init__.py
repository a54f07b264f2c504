"""The side-by-side benchmark's parts: figures, process memory, competitor venvs and fixtures."""
