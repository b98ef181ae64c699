"""Timing loop and the shapes every benchmark module fills in.

A *case* is one way of doing a job (our pattern, the raw redis-py floor, a peer
library). Each case runs for a fixed time, serially (one task awaiting each call)
and with N concurrent tasks sharing one client, in interleaved rounds. The ops/s
shown are each case's best round; a ratio between two cases is the median of
their per-round ratios, so a burst of load from another process on a shared
machine spoils one round's ratio rather than the result. Ratios are only ever
taken between cases measured in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from redis.asyncio import Redis

from aioredis_patterns import ScriptBook

from ._stats import Interval, compare

Op = Callable[[], Awaitable[object]]
"""One operation, awaited once per iteration."""

OpFactory = Callable[[int], Op]
"""Builds the operation of worker *i* (0 for the serial run). Workers get their own
keys or objects where sharing would change the job (e.g. one lock per worker, so an
uncontended lock stays uncontended at 50 tasks)."""


Progress = Callable[[], int]
"""Returns how many items a running stream has delivered so far."""

StreamFactory = Callable[[int], AbstractAsyncContextManager[Progress]]
"""Starts a stream (e.g. publisher and consumer) with the given concurrency; while the
context is open it runs in the background, and the yielded function counts deliveries."""


@dataclass
class Case:
    """One way of doing a job: ours, the floor, or a peer library.

    Either *make* (an operation awaited in a loop) or *stream* (a background flow
    whose deliveries are counted, for pub/sub) is set, unless it is unavailable.
    """

    label: str
    make: OpFactory | None
    unavailable: str | None = None
    """Why this case cannot run here (shown in the output and the doc)."""
    stream: StreamFactory | None = None
    lacks: str | None = None
    """For a peer: the guarantee of our row that this peer does not give (e.g. "a
    fencing token"). Such a row prices that guarantee; it is not the same job, so the
    targets do not read it. The same job is then compared in another row, where our
    pattern runs without the guarantee (``fencing=False``, ``get`` + ``set``)."""

    by_hand: bool = False
    """For a peer: raw redis-py calls written by hand (the seed's code as written, the
    minimal lock), not a library. That is a floor of another shape, so the floor's
    target (at least 0.90x serially) applies to it rather than the peers' one."""

    def without(self, guarantee: str) -> Case:
        """This peer, in a row whose pattern gives *guarantee* and the peer does not."""
        return replace(self, lacks=guarantee)

    @property
    def runnable(self) -> bool:
        return self.unavailable is None and (self.make is not None or self.stream is not None)

    @classmethod
    def missing(cls, label: str, reason: str) -> Case:
        return cls(label, None, unavailable=reason)


ON_POOL = ", on the pool"
"""Suffix of a peer label that is our own pattern on the pool (the autopipeline group
compares with it): not a peer library, so no target reads it."""

CONTROL = "A/A control: GET against itself"
"""Name of the floor group's control: one operation measured as two cases. Its ratio,
which would be 1.00x on a quiet machine, shows how far noise moves a ratio in this run."""


@dataclass
class Comparison:
    """One pattern operation next to its floor and its peers."""

    name: str
    ours: Case
    floor: Case | None = None
    round_trips: int = 1
    """Round trips of the floor (and, by the pattern's contract, of ours)."""
    peers: list[Case] = field(default_factory=list)


@dataclass
class ScalingCase:
    """An operation measured with 1,000 and with 1,000,000 keys in the keyspace.

    *prepare* creates the state of one key id (``"TMPL"``); the harness copies every
    key it created a million times on the server, then *op* runs on key ids drawn at
    random from the whole keyspace.
    """

    name: str
    prepare: Callable[[str], Awaitable[object]]
    op: Callable[[str], Awaitable[object]]


@dataclass
class MemoryRow:
    """MEMORY USAGE of one limiter key (all its Redis keys) with a full window."""

    algorithm: str
    limit: int
    bytes: int | None
    redis_keys: int = 0
    calls: int = 0
    note: str = ""


@dataclass
class Group:
    """Everything one benchmark module measures for its pattern."""

    key: str
    title: str
    comparisons: list[Comparison] = field(default_factory=list)
    scaling: list[ScalingCase] = field(default_factory=list)
    memory: Callable[[], Awaitable[list[MemoryRow]]] | None = None
    profile: Comparison | None = None
    """An operation (ours, with its floor) to profile with py-spy."""
    notes: list[str] = field(default_factory=list)


@dataclass
class Measurement:
    """ops/s of one case, serial and concurrent, and commands the server saw per op."""

    label: str
    serial: float | None = None
    """The best round's ops/s."""
    concurrent: float | None = None
    round_trips_per_op: float | None = None
    commands_per_op: float | None = None
    unavailable: str | None = None
    lacks: str | None = None
    """See :attr:`Case.lacks`."""
    by_hand: bool = False
    """See :attr:`Case.by_hand`."""
    rounds: dict[str, list[float | None]] = field(
        default_factory=lambda: {"serial": [], "concurrent": []}
    )
    """ops/s of every round, by mode; None for a round that failed."""

    def record(self, mode: str, rate: float | None) -> None:
        """Add one round's ops/s (None: the round failed) and keep the best."""
        self.rounds[mode].append(rate)
        if rate is not None and rate > (getattr(self, mode) or 0.0):
            setattr(self, mode, rate)

    def over(self, other: Measurement, mode: str) -> float | None:
        """This case's ops/s over *other*'s: the median of the per-round ratios.

        The cases of one operation run back to back within each round, so a round's
        ratio compares them under the same machine load; the median over the rounds
        then ignores the rounds that another process disturbed.
        """
        return self.compared(other, mode)[0]

    def compared(self, other: Measurement, mode: str) -> tuple[float | None, Interval | None]:
        """:meth:`over` and its 95% confidence interval (see ``_stats``)."""
        if self.unavailable or other.unavailable:
            return None, None
        return compare(self.rounds[mode], other.rounds[mode])

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "serial_ops_per_s": _round(self.serial),
            "concurrent_ops_per_s": _round(self.concurrent),
            "round_trips_per_op": _round(self.round_trips_per_op, 2),
            "server_commands_per_op": _round(self.commands_per_op, 2),
            "unavailable": self.unavailable,
            "lacks": self.lacks,
            "by_hand": self.by_hand,
            "serial_rounds": [_round(r) for r in self.rounds["serial"]],
            "concurrent_rounds": [_round(r) for r in self.rounds["concurrent"]],
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class ComparisonResult:
    name: str
    round_trips: int
    ours: Measurement
    floor: Measurement | None
    peers: list[Measurement]


@dataclass
class Bench:
    """What every benchmark module gets: the server, clients and settings of this run."""

    url: str
    port: int
    client: Redis
    """The toolkit's client, made by ``aioredis_patterns.connect`` (the floor uses it too)."""
    book: ScriptBook
    duration: float
    tasks: int
    rounds: int
    stack: AsyncExitStack
    peer_versions: dict[str, str] = field(default_factory=dict)
    ours_client: Redis | None = None
    """The client our patterns run on, when it is not :attr:`client` (an autopipeline)."""

    @property
    def ours(self) -> tuple[Redis, ScriptBook]:
        """The client our patterns run on and its ScriptBook; floors and peers use ``client``."""
        if self.ours_client is None:
            return self.client, self.book
        return self.ours_client, ScriptBook.for_client(self.ours_client)

    async def peer(
        self,
        label: str,
        package: str,
        build: Callable[[], Awaitable[OpFactory]] | None = None,
        *,
        stream: Callable[[], Awaitable[StreamFactory]] | None = None,
    ) -> Case:
        """A peer case; one that fails to import or to set up is reported, not dropped."""
        try:
            if stream is not None:
                factory = await stream()
                self.peer_versions.setdefault(package, _version(package))
                return Case(label, None, stream=factory)
            assert build is not None
            make = await build()
        except Exception as exc:  # any failure is a fact to report, whatever its type
            reason = failure_reason(exc, package)
            print(f"  ! {label}: cannot run here: {reason}", file=sys.stderr)
            return Case.missing(label, reason)
        self.peer_versions.setdefault(package, _version(package))
        return Case(label, make)


def failure_reason(exc: BaseException, package: str = "") -> str:
    """Why a peer cannot run, for the output and the doc."""
    reason = f"{type(exc).__name__}: {exc}".strip()
    if not isinstance(exc, ImportError):
        return reason
    missing = getattr(exc, "name", None) or ""
    if package and missing.split(".")[0] == package:
        return f"not installed ({reason})"
    if missing == "distutils":
        reason += (
            f"; distutils left the standard library in Python 3.12 ({sys.version.split()[0]} here)"
        )
    return f"installed but its import fails ({reason})"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


async def _timed(ops: Sequence[Op], seconds: float) -> tuple[int, float]:
    """Run every op in its own task until the deadline; total calls and elapsed time."""
    counts = [0] * len(ops)
    deadline = time.perf_counter() + seconds

    async def worker(index: int, op: Op) -> None:
        n = 0
        while time.perf_counter() < deadline:
            await op()
            n += 1
        counts[index] = n

    start = time.perf_counter()
    if len(ops) == 1:
        await worker(0, ops[0])
    else:
        async with anyio.create_task_group() as tg:
            for index, op in enumerate(ops):
                tg.start_soon(worker, index, op)
    return sum(counts), time.perf_counter() - start


async def total_commands(client: Redis) -> int:
    """Commands the server has run so far, not counting INFO itself."""
    stats = await client.info("commandstats")
    return sum(
        int(entry.get("calls", 0))
        for name, entry in stats.items()
        if name != "cmdstat_info" and isinstance(entry, dict)
    )


async def measure(bench: Bench, ops: Sequence[Op], seconds: float, *, warmup: float) -> float:
    """ops/s of *ops* run for *seconds*, after *warmup* seconds not counted."""
    if warmup > 0:
        await _timed(ops, warmup)
    calls, elapsed = await _timed(ops, seconds)
    return calls / elapsed


async def measure_stream(
    factory: StreamFactory, tasks: int, seconds: float, *, warmup: float
) -> float:
    """Deliveries per second of a stream started afresh, after *warmup* seconds."""
    async with factory(tasks) as delivered:
        await anyio.sleep(max(warmup, 0.05))
        before, start = delivered(), time.perf_counter()
        await anyio.sleep(seconds)
        return (delivered() - before) / (time.perf_counter() - start)


@contextlib.asynccontextmanager
async def looping(op: Op) -> AsyncIterator[Progress]:
    """Run *op* in a loop in the background while the context is open; count calls."""
    count = 0
    running = True

    async def loop() -> None:
        nonlocal count
        while running:
            await op()
            count += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop)
        try:
            yield lambda: count
        finally:
            running = False


@contextlib.contextmanager
def _counting_writes() -> Iterator[list[int]]:
    """Count socket writes of every asyncio stream (redis-py, aioredis alike).

    Each request a client sends, whether one command or a pipeline, is one write
    followed by waiting for the reply: a round trip. Only used in a short untimed
    run, so the patch costs the timed runs nothing.
    """
    count = [0]
    original_write = asyncio.StreamWriter.write
    original_writelines = asyncio.StreamWriter.writelines

    def write(self: asyncio.StreamWriter, data: Any) -> None:
        count[0] += 1
        original_write(self, data)

    def writelines(self: asyncio.StreamWriter, data: Any) -> None:
        count[0] += 1
        original_writelines(self, data)

    asyncio.StreamWriter.write = write  # type: ignore[method-assign]
    asyncio.StreamWriter.writelines = writelines  # type: ignore[method-assign]
    try:
        yield count
    finally:
        asyncio.StreamWriter.write = original_write  # type: ignore[method-assign]
        asyncio.StreamWriter.writelines = original_writelines  # type: ignore[method-assign]


async def count_per_op(bench: Bench, op: Op, calls: int = 50) -> tuple[float, float]:
    """Round trips (socket writes) and server commands (with those run inside Lua) per op."""
    before = await total_commands(bench.client)
    with _counting_writes() as writes:
        for _ in range(calls):
            await op()
        sent = writes[0]
    # The INFO that reads the counters afterwards is not one of the op's commands.
    commands = await total_commands(bench.client) - before
    return sent / calls, commands / calls


def _describe(exc: BaseException) -> str:
    """``Type: message`` of *exc*, looking inside a task group's one-exception group."""
    inner = getattr(exc, "exceptions", None)
    while isinstance(inner, tuple) and len(inner) == 1:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return f"{type(exc).__name__}: {exc}"


async def run_comparison(bench: Bench, comparison: Comparison) -> ComparisonResult:
    """Measure every case of *comparison*, serially and at ``bench.tasks`` tasks."""
    cases = [comparison.ours, *([comparison.floor] if comparison.floor else []), *comparison.peers]
    results = {
        id(c): Measurement(c.label, unavailable=c.unavailable, lacks=c.lacks, by_hand=c.by_hand)
        for c in cases
    }
    live = [c for c in cases if c.runnable]
    slice_seconds = bench.duration / bench.rounds
    warmup = min(0.25, slice_seconds / 2)
    # The collection before each case then scans only what was made since: a full one
    # of the whole process (its 120,000 objects of imported peer libraries) took 55 ms,
    # longer than a round of one case.
    gc.collect()
    gc.freeze()
    try:
        await _run_rounds(bench, live, results, slice_seconds, warmup)
    finally:
        gc.unfreeze()
    return ComparisonResult(
        name=comparison.name,
        round_trips=comparison.round_trips,
        ours=results[id(comparison.ours)],
        floor=results[id(comparison.floor)] if comparison.floor else None,
        peers=[results[id(c)] for c in comparison.peers],
    )


async def _run_rounds(
    bench: Bench,
    live: list[Case],
    results: dict[int, Measurement],
    slice_seconds: float,
    warmup: float,
) -> None:
    for concurrent in (False, True):
        tasks = bench.tasks if concurrent else 1
        ops: dict[int, list[Op]] = {}
        for case in live:
            if case.make is None:
                continue
            try:
                ops[id(case)] = [case.make(i) for i in range(tasks)]
            except Exception as exc:
                results[id(case)].unavailable = f"setup failed: {_describe(exc)}"
        for round_no in range(bench.rounds):
            for case in rotated(live, round_no):
                result = results[id(case)]
                if result.unavailable:
                    continue
                gc.collect()  # no case pays for the garbage the previous one left
                try:
                    if case.stream is not None:
                        rate = await measure_stream(
                            case.stream, tasks, slice_seconds, warmup=warmup
                        )
                    else:
                        rate = await measure(
                            bench,
                            ops[id(case)],
                            slice_seconds,
                            warmup=warmup if round_no == 0 else 0.0,
                        )
                except Exception as exc:
                    result.unavailable = f"failed during the run: {_describe(exc)}"
                    print(f"  ! {case.label}: {result.unavailable}", file=sys.stderr)
                    continue
                result.record("concurrent" if concurrent else "serial", rate)
        if not concurrent:
            for case in live:
                result = results[id(case)]
                if id(case) in ops and not result.unavailable:
                    rt, commands = await count_per_op(bench, ops[id(case)][0])
                    result.round_trips_per_op, result.commands_per_op = rt, commands


def rotated(cases: Sequence[Case], by: int) -> list[Case]:
    """*cases* in order, starting at index *by* (modulo their number) and wrapping round."""
    if not cases:
        return []
    start = by % len(cases)
    return [*cases[start:], *cases[:start]]


class Unique:
    """Strings never repeated within a run: ``Unique("floor")()`` gives floor1, floor2...

    One per case (not per worker), so that neither another case nor the next mode
    of the same case meets an id (an idempotency key, a token) already used.
    """

    __slots__ = ("_n", "_tag")

    def __init__(self, tag: str) -> None:
        self._tag = tag
        self._n = 0

    def __call__(self) -> str:
        self._n += 1
        return f"{self._tag}{self._n}"


def rotating(names: Sequence[str]) -> Callable[[], str]:
    """A function returning *names* in turn, forever."""
    size = len(names)
    index = 0

    def pick() -> str:
        nonlocal index
        index = (index + 1) % size
        return names[index]

    return pick


async def close_quietly(closer: Callable[[], Awaitable[object]]) -> None:
    """Await a peer's close function, ignoring its errors (the run is over)."""
    with contextlib.suppress(Exception):
        await closer()
