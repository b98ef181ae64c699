"""How cost grows with the keyspace: the same operation over 1,000 and 1,000,000 keys."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from ._harness import Bench, Op, ScalingCase, measure, rotating
from ._server import TEMPLATE, fill_keyspace

SIZES = (1_000, 1_000_000)


@dataclass
class ScalingResult:
    group: str
    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def ratio(self, column: str) -> float | None:
        """ops/s at the largest keyspace over ops/s at the smallest."""
        values = [row.get(column) for row in self.rows]
        if len(values) < 2 or not values[0] or not values[-1]:
            return None
        return float(values[-1]) / float(values[0])

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "rows": self.rows,
            "serial_ratio_large_to_small": _r(self.ratio("serial_ops_per_s")),
            "concurrent_ratio_large_to_small": _r(self.ratio("concurrent_ops_per_s")),
            "error": self.error,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _worker_ids(size: int, tasks: int, worker: int, rng: random.Random) -> list[str]:
    """Random key ids in ``range(size)`` that belong to *worker* (id % tasks == worker).

    Giving each worker its own ids keeps concurrent tasks off each other's keys
    (an uncontended lock stays uncontended), while still spreading over the keyspace.
    """
    ids = []
    for value in rng.sample(range(size), min(size, 4096)):
        own = value - value % tasks + worker
        if own >= size:
            own -= tasks
        ids.append(str(own))
    return ids


def _ops(case: ScalingCase, size: int, tasks: int) -> list[Op]:
    rng = random.Random(size)
    ops: list[Op] = []
    for worker in range(tasks):
        pick = rotating(_worker_ids(size, tasks, worker, rng))

        def op(pick: Any = pick) -> Any:
            return case.op(pick())

        ops.append(op)
    return ops


async def run_scaling(bench: Bench, group: str, case: ScalingCase) -> ScalingResult:
    """Measure *case* serially and at ``bench.tasks`` with each keyspace size."""
    result = ScalingResult(group, case.name)
    rounds = min(bench.rounds, 3)
    seconds = max(bench.duration / 2, 0.2) / rounds
    try:
        for size in SIZES:
            await bench.client.flushall()
            await case.prepare(TEMPLATE)
            started = time.perf_counter()
            created, note = await fill_keyspace(bench.client, size)
            fill_seconds = time.perf_counter() - started
            serial_ops, concurrent_ops = _ops(case, size, 1), _ops(case, size, bench.tasks)
            serial = concurrent = 0.0
            for round_no in range(rounds):  # alternate, keep the best round of each
                warmup = 0.1 if round_no == 0 else 0.0
                serial = max(serial, await measure(bench, serial_ops, seconds, warmup=warmup))
                concurrent = max(
                    concurrent, await measure(bench, concurrent_ops, seconds, warmup=warmup)
                )
            memory = await bench.client.info("memory")
            result.rows.append(
                {
                    "keys": size,
                    "redis_keys": created,
                    "dbsize": await bench.client.dbsize(),
                    "used_memory_mb": round(int(memory["used_memory"]) / 2**20, 1),
                    "fill_seconds": round(fill_seconds, 2),
                    "note": note,
                    "serial_ops_per_s": round(serial, 1),
                    "concurrent_ops_per_s": round(concurrent, 1),
                }
            )
            print(
                f"  {case.name:<44} {size:>9,} keys  {serial:>9,.0f}/s serial  "
                f"{concurrent:>9,.0f}/s at {bench.tasks}  (filled in {fill_seconds:.1f} s)"
            )
    except Exception as exc:  # reported, so one broken case does not end the run
        result.error = f"{type(exc).__name__}: {exc}"
        print(f"  ! {case.name}: {result.error}")
    finally:
        await bench.client.flushall()
    return result
