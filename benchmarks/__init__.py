"""Benchmarks: each script prints its figures and writes them to docs/benchmarks.md."""
