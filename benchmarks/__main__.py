"""``python -m benchmarks``: measure every pattern against the floor and the peers.

Each pattern has its own module here. A module whose pattern cannot be imported yet
is skipped with a note, so the benchmark runs at every stage of the project.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import json
import shlex
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

from aioredis_patterns import ScriptBook, connect

from ._harness import Bench, Group, looping, run_comparison
from ._profile import profile
from ._report import format_comparison, write_chart, write_json, write_markdown
from ._results import GroupResult, RunResult
from ._scaling import run_scaling
from ._server import machine_facts, start_server

MODULES = ("floor", "atomic", "lock", "ratelimit", "cache", "pubsub", "autopipeline")
ROOT = Path(__file__).resolve().parent.parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark aioredis_patterns against raw redis-py and peer libraries.",
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per case and mode (default 5.0)"
    )
    parser.add_argument("--tasks", type=int, default=50, help="concurrent tasks (default 50)")
    parser.add_argument(
        "--rounds", type=int, default=100, help="interleaved rounds per case (default 100)"
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated modules to run ({', '.join(MODULES)}); implies --no-docs",
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip 1k/1M keyspace runs")
    parser.add_argument("--no-memory", action="store_true", help="skip MEMORY USAGE runs")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: render docs/benchmarks.md and .png again from docs/benchmarks.json",
    )
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help="write only benchmarks/results/, not docs/benchmarks.{json,md,png}",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any group, case or memory row could not be measured (the CI smoke run)",
    )
    return parser


def _not_measured(run: RunResult) -> list[str]:
    """What the run could not measure, one line each: empty when everything ran."""
    missing: list[str] = []
    for group in run.groups:
        if group.status != "ok":
            missing.append(f"{group.key}: {group.status}")
        for comparison in group.comparisons:
            cases = [comparison.ours, comparison.floor, *comparison.peers]
            missing += [
                f"{comparison.name} / {m.label}: {m.unavailable}"
                for m in cases
                if m is not None and m.unavailable
            ]
        missing += [
            f"memory {row.algorithm} limit {row.limit}: {row.note or 'no figure'}"
            for row in group.memory
            if row.bytes is None
        ]
    return missing


def _load(name: str) -> ModuleType | str:
    """The benchmark module, or why its pattern is not available yet."""
    try:
        return importlib.import_module(f"benchmarks.{name}")
    except ImportError as exc:
        return f"not available yet ({type(exc).__name__}: {exc})"


async def _run_group(bench: Bench, module: ModuleType, args: argparse.Namespace) -> GroupResult:
    async with AsyncExitStack() as stack:
        bench.stack = stack
        await bench.client.flushall()
        group: Group = await module.build(bench)
        result = GroupResult(group.key, group.title, notes=list(group.notes))
        print(f"\n=== {group.title} ===")
        for comparison in group.comparisons:
            measured = await run_comparison(bench, comparison)
            result.comparisons.append(measured)
            print(format_comparison(measured, bench.tasks), flush=True)
        if group.profile is not None and not args.no_profile:
            seconds = max(2 * bench.duration, 2.0)
            for case in (group.profile.ours, group.profile.floor):
                if case is None or not case.runnable:
                    continue
                if case.stream is not None:
                    target = case.stream(1)
                else:
                    assert case.make is not None
                    target = looping(case.make(0))
                try:
                    summary = await profile(case.label, target, seconds)
                except RuntimeError as exc:
                    print(f"  ! profile of {case.label} skipped: {exc}")
                    result.notes.append(f"Profile of {case.label} skipped: {exc}")
                    break
                result.profiles.append(summary)
                layers = ", ".join(
                    f"{name} {us:.1f}" for name, us in summary.layers_us.items() if us >= 0.05
                )
                print(
                    f"  profile {case.label}: {summary.us_per_op:.1f} CPU µs/op "
                    f"({summary.wall_us_per_op:.1f} wall): {layers}"
                )
        if group.memory is not None and not args.no_memory:
            await bench.client.flushall()
            result.memory = await group.memory()
            for row in result.memory:
                print(
                    f"  MEMORY USAGE {row.algorithm:<40} limit {row.limit:>7,}: "
                    f"{'-' if row.bytes is None else f'{row.bytes:,} B'} {row.note}"
                )
        if not args.no_scaling:
            for scaling in group.scaling:
                result.scaling.append(await run_scaling(bench, group.key, scaling))
    return result


async def _main(args: argparse.Namespace, url: str, port: int) -> RunResult:
    started = time.perf_counter()
    client = await connect(url)
    try:
        book = ScriptBook.for_client(client)
        facts = await machine_facts(client)
        print(
            f"{facts['cpu']}, {facts['nproc']} cores, load {facts['loadavg_at_start']}; "
            f"Python {facts['python']}; Redis {facts['redis_server']}; "
            f"redis-py {facts['redis_py']}, hiredis {facts['hiredis']}"
        )
        bench = Bench(
            url=url,
            port=port,
            client=client,
            book=book,
            duration=args.duration,
            tasks=args.tasks,
            rounds=args.rounds,
            stack=AsyncExitStack(),
        )
        wanted = [m for m in args.only.split(",") if m] or list(MODULES)
        run = RunResult(meta={})
        for name in wanted:
            module = _load(name)
            if isinstance(module, str):
                print(f"\n=== {name}: {module} ===")
                run.groups.append(GroupResult(name, name, status=module))
                continue
            run.groups.append(await _run_group(bench, module, args))
        run.meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python -m benchmarks " + shlex.join(sys.argv[1:]),
            "duration": args.duration,
            "tasks": args.tasks,
            "rounds": args.rounds,
            "total_seconds": round(time.perf_counter() - started, 1),
            "machine": facts,
            "peer_versions": bench.peer_versions,
        }
        return run
    finally:
        await client.aclose()


def _render(data: dict[str, Any], docs: Path = ROOT / "docs") -> None:
    analysis = ROOT / "benchmarks" / "analysis.md"
    write_markdown(
        data,
        docs / "benchmarks.md",
        analysis.read_text("utf-8") if analysis.exists() else None,
    )
    write_chart(data, docs / "benchmarks.png")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render:
        _render(json.loads((ROOT / "docs" / "benchmarks.json").read_text("utf-8")))
        print("rendered docs/benchmarks.md and docs/benchmarks.png from docs/benchmarks.json")
        return 0
    if args.duration <= 0 or args.tasks < 1 or args.rounds < 1:
        raise SystemExit("--duration must be > 0, --tasks and --rounds >= 1")
    unknown = [m for m in args.only.split(",") if m and m not in MODULES]
    if unknown:
        raise SystemExit(
            f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}"
        )
    server = start_server()
    try:
        run = asyncio.run(_main(args, server.url, server.port))
    finally:
        server.close()
    results = ROOT / "benchmarks" / "results"
    write_json(run, results / "latest.json")
    for group in run.groups:
        for summary in group.profiles:
            name = "".join(ch if ch.isalnum() else "-" for ch in summary.label).strip("-")
            (results / f"profile-{group.key}-{name}.txt").write_text(summary.text, "utf-8")
    missing = _not_measured(run)
    if args.strict and missing:
        print("\nnot measured:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    if args.only or args.no_docs:
        # Rendered next to the JSON, so that a short run still exercises the renderer.
        _render(run.as_json(), results)
        print(f"\nwrote {results}/latest.json, benchmarks.md and .png (docs/ left as they were)")
        return 0
    write_json(run, ROOT / "docs" / "benchmarks.json")
    _render(run.as_json())
    print(f"\nwrote {results / 'latest.json'}, docs/benchmarks.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
