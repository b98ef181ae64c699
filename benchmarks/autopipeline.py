"""The patterns on an ``autopipeline()`` client, against the floor, the pool and the peers.

Every comparison here is one the pattern's own module makes, rebuilt with our
pattern on ``autopipeline(bench.client)``. The floor stays the raw redis-py call
on the pool, and the peers are unchanged; the same pattern on the pool is added
as the first peer. Serially a lone command runs directly, so the serial columns
show only what the client's dispatch adds; the concurrent columns show what
sharing pipelines between tasks is worth.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

from aioredis_patterns import autopipeline

from . import atomic, cache, lock, ratelimit
from ._harness import ON_POOL, Bench, Case, Comparison, Group

TITLE = "autopipeline(): the patterns with concurrent commands in shared pipelines"

# The comparisons to repeat, by module: one of the four atomic operations (they
# cost the same), every lock row, every rate-limit algorithm and the cache reads.
WANTED: dict[ModuleType, tuple[str, ...]] = {
    atomic: ("atomic increment_with_limit",),
    lock: (
        "lock acquire+release",
        "lock acquire+release, fencing=False",
        "lock async with (watchdog)",
        "lock async with (watchdog), fencing=False",
    ),
    ratelimit: tuple(f"rate limit {a} allow" for a in ratelimit.ALGORITHMS),
    cache: ("cache get (hit)", "cache get_or_load (hit)"),
}


async def build(bench: Bench) -> Group:
    piped = await bench.stack.enter_async_context(autopipeline(bench.client))
    comparisons: list[Comparison] = []
    for module, names in WANTED.items():
        on_pool = {c.name: c for c in (await module.build(bench)).comparisons}
        bench_piped = dataclasses.replace(bench, ours_client=piped)
        for comparison in (await module.build(bench_piped)).comparisons:
            if comparison.name not in names:
                continue
            pool_case = on_pool[comparison.name].ours
            comparisons.append(
                dataclasses.replace(
                    comparison,
                    name=f"{comparison.name}, autopipeline",
                    ours=Case(f"{comparison.ours.label}, autopipeline", comparison.ours.make),
                    peers=[
                        Case(f"{pool_case.label}{ON_POOL}", pool_case.make),
                        *comparison.peers,
                    ],
                )
            )
    return Group(
        key="autopipeline",
        title=TITLE,
        comparisons=comparisons,
        notes=[
            "Each row is the pattern's own comparison with our pattern on"
            " `autopipeline(client)`; the first peer is the same pattern on the pool.",
            "Serially a lone command runs directly, without a pipeline: the serial ratio"
            " to the pool row is what the autopipeline client's dispatch adds per command"
            " (its bookkeeping and two more coroutine calls).",
        ],
    )
