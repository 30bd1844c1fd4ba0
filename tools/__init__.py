"""Benchmarks that produce the figures of docs/RESULTS.md. Run each from the repository root as a module:

    python -m tools.bench_latency --help

Shared helpers live in ``tools/_common.py``.
"""
