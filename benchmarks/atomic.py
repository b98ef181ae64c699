"""AtomicOps: each operation against a raw EVALSHA of the same script via redis-py.

The peer is redis-py's own ``register_script`` object (EVALSHA with a NOSCRIPT
fallback), the usual way to run a Lua script from Python without a toolkit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aioredis_patterns import AtomicOps, ScriptBook

from ._harness import Bench, Case, Comparison, Group, Op, OpFactory, ScalingCase, Unique
from ._replay import Replay

TITLE = "AtomicOps"

BIG = 10**12
"""Starting stock and balances: no run gets near zero, so every call succeeds."""

LIMIT = 10**15


@dataclass
class _Spec:
    name: str
    prepare: Callable[[str], Awaitable[object]]
    """Sets up the keys of one key id (a worker, or a recording)."""
    run: Callable[[AtomicOps, str, str], Awaitable[object]]
    """One operation on one key id, with a per-call unique string."""


async def build(bench: Bench) -> Group:
    client = bench.client
    ours, ours_book = bench.ours
    ops = AtomicOps(ours, scripts=ours_book)

    async def no_setup(_key_id: str) -> None:
        return None

    async def set_cas(key_id: str) -> None:
        await client.set(f"atomic:cas:{key_id}", "v1")

    async def set_stock(key_id: str) -> None:
        await client.set(f"atomic:stock:{key_id}", BIG)

    async def set_accounts(key_id: str) -> None:
        await client.set(f"atomic:acct:{key_id}:a", BIG)

    specs = [
        _Spec(
            "compare_and_swap",
            set_cas,
            lambda o, k, _n: o.compare_and_swap(f"atomic:cas:{k}", "v1", "v1"),
        ),
        _Spec(
            "increment_with_limit",
            no_setup,
            lambda o, k, _n: o.increment_with_limit(f"atomic:iwl:{k}", 1, LIMIT),
        ),
        _Spec(
            "deduct_inventory",
            set_stock,
            lambda o, k, _n: o.deduct_inventory(f"atomic:stock:{k}", 1),
        ),
        _Spec(
            "deduct_inventory, idempotency key",
            set_stock,
            lambda o, k, u: o.deduct_inventory(
                f"atomic:stock:{k}", 1, idempotency_key=f"order-{u}"
            ),
        ),
        _Spec(
            "transfer",
            set_accounts,
            lambda o, k, _n: o.transfer(f"atomic:acct:{k}:a", f"atomic:acct:{k}:b", 1),
        ),
    ]

    comparisons = []
    for spec in specs:
        for worker in range(bench.tasks):
            await spec.prepare(str(worker))
        for key_id in ("replay-a", "replay-b"):
            await spec.prepare(key_id)

        def run_with(
            book: ScriptBook, key_id: str, unique: str, spec: _Spec = spec
        ) -> Awaitable[object]:
            return spec.run(AtomicOps(client, scripts=book), key_id, unique)

        replay = await Replay.build(client, bench.book, run_with)
        comparisons.append(
            Comparison(
                name=f"atomic {spec.name}",
                ours=Case(f"AtomicOps.{spec.name.split(',')[0]}", _ours(ops, spec)),
                floor=Case(f"raw EVALSHA {'+'.join(replay.names)}", _floor(replay)),
                round_trips=1,
                peers=[await _redis_py_script(bench, spec, replay)],
            )
        )

    async def prepare_counter(key_id: str) -> None:
        await client.set(f"atomic:scale:{key_id}", 0)

    scaling = [
        ScalingCase(
            "AtomicOps.increment_with_limit",
            prepare_counter,
            lambda key_id: ops.increment_with_limit(f"atomic:scale:{key_id}", 1, LIMIT),
        )
    ]
    return Group(
        key="atomic",
        title=TITLE,
        comparisons=comparisons,
        scaling=scaling,
        profile=comparisons[1],
    )


def _ours(ops: AtomicOps, spec: _Spec) -> OpFactory:
    unique = Unique("ours")

    def make(worker: int) -> Op:
        key_id = str(worker)

        def op() -> Awaitable[object]:
            return spec.run(ops, key_id, unique())

        return op

    return make


def _floor(replay: Replay) -> OpFactory:
    unique = Unique("floor")

    def make(worker: int) -> Op:
        key_id = str(worker)

        def op() -> Awaitable[None]:
            return replay(key_id, unique())

        return op

    return make


async def _redis_py_script(bench: Bench, spec: _Spec, replay: Replay) -> Case:
    """redis-py ``register_script`` objects running the same scripts with the same args."""
    client = bench.client

    async def setup() -> OpFactory:
        scripts = [client.register_script(bench.book[name].source) for name in replay.names]

        unique = Unique("peer")

        def make(worker: int) -> Op:
            key_id = str(worker)

            async def op() -> None:
                for script, (keys, args) in zip(
                    scripts, replay.arguments(key_id, unique()), strict=True
                ):
                    await script(keys=keys, args=args)

            return op

        return make

    return await bench.peer(f"redis-py register_script ({spec.name})", "redis", setup)
