# The product's everyday commands. `make run` and `make test` set up what they need first.
.PHONY: setup run test test-unit lint bench bench-compare

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/voice-agent dev

test: setup lint
	.venv/bin/pytest

test-unit: setup
	.venv/bin/pytest tests/unit

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

bench: setup
	.venv/bin/python benchmarks/token_throughput.py
	.venv/bin/python benchmarks/voice_pipeline.py

# Ours beside LiveKit Agents and Pipecat (installs them into .cache/bench-venvs on first use; about
# 25 minutes; not part of CI). A quick look: make bench-compare ARGS=--quick
bench-compare: setup
	.venv/bin/python benchmarks/compare_frameworks.py $(ARGS)
