"""How cost grows with the keyspace: the same operation over 1,000 and 1,000,000 keys."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from ._harness import Bench, Op, ScalingCase, measure, rotating
from ._server import TEMPLATE, fill_keyspace
from ._stats import median

SIZES = (1_000, 1_000_000)


@dataclass
class ScalingResult:
    group: str
    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    paired: dict[str, list[float]] = field(default_factory=dict)
    """Per round, ops/s with the large keyspace over ops/s with the small one, by mode."""

    def ratio(self, mode: str) -> float | None:
        """The median per-round ratio of the large keyspace to the small one."""
        ratios = self.paired.get(mode)
        return median(ratios or [])

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "rows": self.rows,
            "serial_ratio_large_to_small": _r(self.ratio("serial")),
            "concurrent_ratio_large_to_small": _r(self.ratio("concurrent")),
            "paired_ratios": {mode: [_r(x) for x in xs] for mode, xs in self.paired.items()},
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


async def _fill(bench: Bench, case: ScalingCase, size: int) -> dict[str, Any]:
    """Build *size* copies of the case's per-key state in db 0; the row's facts."""
    await case.prepare(TEMPLATE)
    started = time.perf_counter()
    created, note = await fill_keyspace(bench.client, size)
    fill_seconds = time.perf_counter() - started
    memory = await bench.client.info("memory")
    return {
        "keys": size,
        "redis_keys": created,
        "dbsize": await bench.client.dbsize(),
        "used_memory_mb": round(int(memory["used_memory"]) / 2**20, 1),
        "fill_seconds": round(fill_seconds, 2),
        "note": note,
    }


def scaling_rounds(duration: float, rounds: int) -> tuple[int, float]:
    """Rounds per keyspace size and mode, and seconds per round, of a scaling case.

    Each size gets half the comparisons' time per mode (at least 0.2 s), in as many
    rounds as they get but none shorter than 25 ms: five rounds read 0.74-1.19x
    serially for operations whose best rounds differed by 4%.
    """
    total = max(duration / 2, 0.2)
    count = max(1, min(rounds, round(total / 0.025)))
    return count, total / count


async def run_scaling(bench: Bench, group: str, case: ScalingCase) -> ScalingResult:
    """Measure *case* serially and at ``bench.tasks`` with each keyspace size.

    Both keyspaces exist at once, in db 0 and db 1 of the benchmark's own server,
    and SWAPDB (constant time) moves the one to measure into db 0, where the
    client works. So the sizes alternate round by round, and the ratio is the
    median of per-round ratios, as for every other comparison.
    """
    result = ScalingResult(group, case.name)
    rounds, seconds = scaling_rounds(bench.duration, bench.rounds)
    small, large = SIZES
    try:
        await bench.client.flushall()
        rows = {small: await _fill(bench, case, small)}
        await bench.client.swapdb(0, 1)  # the small keyspace waits in db 1
        rows[large] = await _fill(bench, case, large)
        in_db0 = large
        ops = {size: (_ops(case, size, 1), _ops(case, size, bench.tasks)) for size in SIZES}
        rates: dict[tuple[int, str], list[float]] = {}
        for round_no in range(rounds):
            order = SIZES if round_no % 2 == 0 else SIZES[::-1]
            for size in order:
                if size != in_db0:
                    await bench.client.swapdb(0, 1)
                    in_db0 = size
                warmup = 0.1 if round_no == 0 else 0.0
                for mode, mode_ops in zip(("serial", "concurrent"), ops[size], strict=True):
                    rate = await measure(bench, mode_ops, seconds, warmup=warmup)
                    rates.setdefault((size, mode), []).append(rate)
        for mode in ("serial", "concurrent"):
            result.paired[mode] = [
                big / little
                for big, little in zip(rates[large, mode], rates[small, mode], strict=True)
                if little
            ]
        for size in SIZES:
            row = rows[size]
            row["serial_ops_per_s"] = round(max(rates[size, "serial"]), 1)
            row["concurrent_ops_per_s"] = round(max(rates[size, "concurrent"]), 1)
            result.rows.append(row)
            print(
                f"  {case.name:<44} {size:>9,} keys  {row['serial_ops_per_s']:>9,.0f}/s serial  "
                f"{row['concurrent_ops_per_s']:>9,.0f}/s at {bench.tasks}  "
                f"(filled in {row['fill_seconds']:.1f} s)"
            )
        serial, concurrent = _r(result.ratio("serial")), _r(result.ratio("concurrent"))
        print(
            f"  {case.name:<44} 1M/1k, median of {rounds} paired rounds: "
            f"{serial} serial, {concurrent} at {bench.tasks}"
        )
    except Exception as exc:  # reported, so one broken case does not end the run
        result.error = f"{type(exc).__name__}: {exc}"
        print(f"  ! {case.name}: {result.error}")
    finally:
        await bench.client.flushall()
    return result
