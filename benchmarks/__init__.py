"""Benchmarks: every pattern against the raw redis-py floor and against peer libraries.

Run ``python -m benchmarks`` (or ``nox -s bench``). It starts its own ``redis-server``,
prints ops/s and ratios, and writes ``benchmarks/results/latest.json``, then
``docs/benchmarks.json``, ``docs/benchmarks.md`` and ``docs/benchmarks.png``.
Ratios are measured in one run; absolute numbers drift from run to run.
"""
