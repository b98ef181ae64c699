"""Test matrix: `nox` runs tests on every supported Python, lint, typecheck, examples
and a smoke run of the benchmarks.

Python versions are read from the classifiers in pyproject.toml, so they are
listed once. With CI set, a missing interpreter is an error, not a skip.
"""

from __future__ import annotations

import os

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)
LATEST = PYTHONS[-1]

nox.needs_version = ">=2024.10.9"
nox.options.sessions = ["tests", "tests_uvloop", "lint", "typecheck", "examples", "bench_smoke"]
nox.options.error_on_missing_interpreters = bool(os.environ.get("CI"))
nox.options.reuse_existing_virtualenvs = not os.environ.get("CI")


def _install(session: nox.Session, *groups: str) -> None:
    """Install the project (not editable: tests see what a user gets) and dependency groups."""
    requirements: list[str] = []
    for group in groups:
        requirements += nox.project.dependency_groups(PYPROJECT, group)
    session.install(".", *requirements)


# Two pytest-xdist workers, each with its own redis-server processes: most tests
# wait on the server's clock (TTLs, windows, timeouts), so two workers take the
# suite from about 165 s to about 100 s even on two cores. Later options win:
# ``nox -s tests -- -n 0`` runs in one process.
WORKERS = ["-n", "2"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite against real redis-server processes it starts itself."""
    _install(session, "test")
    session.run("pytest", *WORKERS, *session.posargs)


# The tests whose patterns lean on the event loop itself: timers (the lock blocks'
# deadlines), transports (the connections' writes, pub/sub and stream readers),
# tasks and cancellation. The topology launchers and pure-Python tests are left out.
LOOP_SENSITIVE_TESTS = [
    "tests/test_event_loop.py",
    "tests/test_alarms.py",
    "tests/test_connection.py",
    "tests/test_scripts.py",
    "tests/test_round_trips.py",
    "tests/test_autopipeline.py",
    "tests/test_cache.py",
    "tests/test_cache_loader_errors.py",
    "tests/test_lock.py",
    "tests/test_lock_release.py",
    "tests/test_redlock.py",
    "tests/test_semaphore.py",
    "tests/test_pubsub.py",
    "tests/test_pubsub_edges.py",
    "tests/test_streams.py",
]


@nox.session(python=LATEST)
def tests_uvloop(session: nox.Session) -> None:
    """Run the loop-sensitive tests on uvloop, the loop uvicorn uses when it is installed."""
    _install(session, "test-uvloop")
    session.run(
        "pytest",
        *WORKERS,
        *(session.posargs or LOOP_SENSITIVE_TESTS),
        env={"AIOREDIS_PATTERNS_TEST_LOOP": "uvloop"},
    )


@nox.session(python=LATEST)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=LATEST)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and the examples."""
    _install(session, "typecheck")
    session.run("mypy", "--strict")


@nox.session(python=LATEST)
def examples(session: nox.Session) -> None:
    """Run every script in examples/ (and the tour) against a throwaway redis-server."""
    _install(session)
    session.run("python", "examples/_run_all.py", *session.posargs)


# aioredlock needs aioredis 1.x, which imports distutils (gone since Python 3.12): on
# 3.11 every peer library of the benchmark runs.
BENCH_PYTHON = "3.11" if "3.11" in PYTHONS else LATEST


@nox.session(python=BENCH_PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks against raw redis-py and peer libraries; writes docs/benchmarks.*.

    Not a default session. Pass options after ``--``, e.g. ``nox -s bench -- --duration 1``.
    """
    session.install(".", "-r", "benchmarks/requirements.txt")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=BENCH_PYTHON)
def bench_smoke(session: nox.Session) -> None:
    """Run every benchmark case once, briefly, and fail if any could not run.

    It times nothing worth reading (0.05 s per case) and asserts no speed: it keeps
    the benchmark, its peer libraries and the docs renderer working between the
    full runs of ``nox -s bench``. The 1M-key scaling rows and the profiles are left
    to those.
    """
    session.install(".", "-r", "benchmarks/requirements.txt")
    session.run(
        "python",
        "-m",
        "benchmarks",
        "--duration",
        "0.05",
        "--rounds",
        "1",
        "--no-scaling",
        "--no-profile",
        "--no-docs",
        "--strict",
    )
