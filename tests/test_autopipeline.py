"""autopipeline(): concurrent commands share pipelines; replies, errors, faults stay per caller."""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aioredis_patterns import (
    AsyncLock,
    AsyncRateLimiter,
    AtomicOps,
    InvalidArgument,
    LimitExceeded,
    ScriptBook,
    autopipeline,
    connect,
)
from aioredis_patterns.testing import FaultProxy, RedisServer

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup


async def reads_processed(client: Redis) -> int:
    """The server's count of socket reads that carried commands (INFO stats)."""
    return int((await client.info("stats"))["total_reads_processed"])


async def gather(*calls: Any) -> list[Any]:
    """Run the awaitables concurrently, started in order; each result or exception."""
    results: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        try:
            results[i] = await calls[i]
        except Exception as exc:
            results[i] = exc

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(one, i)
    return results


def whole(score: Any) -> int:
    """A caller's strict score cast: raises ValueError for a score that is not whole."""
    value = float(score)
    if not value.is_integer():
        raise ValueError(f"score {score!r} is not whole")
    return int(value)


class TestBatching:
    async def test_concurrent_commands_reach_the_server_in_few_reads(self, redis: Redis) -> None:
        """200 concurrent INCRs arrive in under 20 server reads; a plain client needs over 150."""
        async with autopipeline(redis) as piped:
            before = await reads_processed(redis)
            replies = await gather(*(piped.incr("n") for _ in range(200)))
            piped_reads = await reads_processed(redis) - before - 1
            stats = piped.stats
        assert sorted(replies) == list(range(1, 201))
        assert stats.direct + stats.batched == 200
        assert stats.batched >= 190
        assert 1 <= stats.batches <= 10
        assert stats.largest_batch >= 50
        assert stats.failed_batches == 0

        before = await reads_processed(redis)
        await gather(*(redis.incr("n") for _ in range(200)))
        plain_reads = await reads_processed(redis) - before - 1
        assert piped_reads < 20 < 150 < plain_reads

    async def test_on_a_cluster_a_batch_is_split_by_node(self, redis_cluster: RedisCluster) -> None:
        """200 concurrent INCRs over keys on every primary take under 30 reads in all."""

        async def reads() -> int:
            stats = await redis_cluster.info("stats", target_nodes=RedisCluster.PRIMARIES)
            return sum(int(node["total_reads_processed"]) for node in stats.values())

        keys = [f"n{i}" for i in range(200)]
        async with autopipeline(redis_cluster) as piped:
            before = await reads()
            replies = await gather(*(piped.incr(k) for k in keys))
            batched = await reads() - before - 3  # the INFO calls themselves
        assert replies == [1] * 200
        assert {redis_cluster.keyslot(k) // 5462 for k in keys} == {0, 1, 2}
        assert batched < 30

    async def test_the_cluster_view_shares_the_wrapped_clients_state(
        self, redis_cluster: RedisCluster
    ) -> None:
        """State set through the view lands on the wrapped client; its pipeline is the client's."""
        async with autopipeline(redis_cluster) as piped:
            assert isinstance(piped, RedisCluster)
            piped.read_from_replicas = True
            assert redis_cluster.read_from_replicas is True
            piped.read_from_replicas = False
            pipe = piped.pipeline()
            pipe.set("a", 1).set("b", 2).get("a")
            assert await pipe.execute() == [True, True, b"1"]
            await piped.aclose()  # a no-op: the wrapped client owns the connections
        assert await redis_cluster.get("b") == b"2"

    async def test_max_batch_bounds_one_batch(self, redis: Redis) -> None:
        """With max_batch=10, 100 concurrent commands take at least 9 server reads."""
        async with autopipeline(redis, max_batch=10) as piped:
            before = await reads_processed(redis)
            replies = await gather(*(piped.incr("n") for _ in range(100)))
            reads = await reads_processed(redis) - before - 1
        assert sorted(replies) == list(range(1, 101))
        assert reads >= 9

    async def test_each_caller_gets_its_own_parsed_reply_or_error(
        self, topology: Redis | RedisCluster
    ) -> None:
        """In one batch, replies are parsed as redis-py parses them and an error hits one caller."""
        await topology.hset("{t}h", mapping={"a": "1"})
        await topology.set("{t}s", "text")
        async with autopipeline(topology) as piped:
            got = await gather(
                piped.set("{t}k", "v"),
                piped.get("{t}k"),
                piped.hgetall("{t}h"),
                piped.incr("{t}s"),  # not an integer: an error for this caller only
                piped.exists("{t}k", "{t}h", "{t}missing"),
                piped.set("{t}nx", "1", nx=True),
            )
        assert got[0] is True
        assert got[1] == b"v"
        assert got[2] == {b"a": b"1"}
        assert isinstance(got[3], ResponseError)
        assert "not an integer" in str(got[3])
        assert got[4] == 2
        assert got[5] is True

    async def test_blocking_commands_do_not_hold_up_a_batch(self, redis: Redis) -> None:
        """A BLPOP issued among batched GETs runs on its own connection; the GETs return at once."""
        async with autopipeline(redis) as piped:
            done: dict[str, float] = {}
            start = time.monotonic()

            async def timed(label: str, call: Any) -> None:
                await call
                done[label] = time.monotonic() - start

            async with anyio.create_task_group() as tg:
                tg.start_soon(timed, "first", piped.get("a"))  # runs directly
                tg.start_soon(timed, "blpop", piped.blpop(["empty"], timeout=1))
                for i in range(10):
                    tg.start_soon(timed, f"get{i}", piped.get("a"))
        assert done["blpop"] >= 0.9
        assert max(t for label, t in done.items() if label != "blpop") < 0.5

    async def test_scripts_fall_back_to_eval_inside_a_batch(
        self, topology: Redis | RedisCluster
    ) -> None:
        """After SCRIPT FLUSH, 50 concurrent atomic operations in batches all succeed via EVAL."""
        async with autopipeline(topology) as piped:
            book = ScriptBook.for_client(piped)
            await book.load_all()
            await topology.script_flush()
            ops = AtomicOps(piped)
            keys = [f"c{i % 10}" for i in range(50)]  # on several nodes of a cluster
            replies = await gather(*(ops.increment_with_limit(k, 1, 1000) for k in keys))
        assert not [r for r in replies if isinstance(r, Exception)]
        assert sum([int(await topology.get(f"c{i}")) for i in range(10)]) == 50
        assert book.stats.eval_fallbacks >= 1

    async def test_rate_limit_stays_exact_under_200_concurrent_calls(
        self, topology: Redis | RedisCluster
    ) -> None:
        """A limit of 50 admits exactly 50 of 200 concurrent allow() calls sent in batches."""
        async with autopipeline(topology) as piped:
            limiter = AsyncRateLimiter(piped, limit=50, window=60, algorithm="sliding_window")
            results = await gather(*(limiter.allow("user") for _ in range(200)))
        assert sum(r.allowed for r in results) == 50

    @pytest.mark.parametrize("fencing", [True, False])
    async def test_a_lock_serialises_tasks_on_the_piped_client(
        self, topology: Redis | RedisCluster, fencing: bool
    ) -> None:
        """20 tasks doing read-modify-write under one AsyncLock on the piped client lose nothing."""

        async def add_one(client: Redis | RedisCluster) -> None:
            async with AsyncLock(client, "counter", ttl=5, timeout=10, fencing=fencing):
                value = int(await client.get("plain") or 0)
                await anyio.sleep(0.001)  # others run meanwhile, and queue their commands
                await client.set("plain", value + 1)

        async with autopipeline(topology) as piped:
            with anyio.fail_after(20):
                await gather(*(add_one(piped) for _ in range(20)))
        assert await topology.get("plain") == b"20"

    async def test_a_lone_command_keeps_its_reply_parsing_and_script_errors(
        self, redis: Redis
    ) -> None:
        """Alone on the client, a command gets redis-py's parsed reply, a script its own errors."""
        async with autopipeline(redis) as piped:
            assert await piped.set("lone", "v") is True
            assert isinstance(await piped.time(), tuple)
            assert await piped.hset("lone:h", mapping={"a": "1"}) == 1
            assert await piped.hgetall("lone:h") in ({b"a": b"1"}, {"a": "1"})
            await redis.script_flush()
            ops = AtomicOps(piped)
            assert await ops.increment_with_limit("lone:n", 2, 3) == 2
            with pytest.raises(LimitExceeded):
                await ops.increment_with_limit("lone:n", 2, 3)
        assert piped.stats.batched == 0
        assert ScriptBook.for_client(piped).stats.eval_fallbacks == 1

    async def test_a_book_sends_plain_commands_unparsed_alone_and_in_a_batch(
        self, redis: Redis
    ) -> None:
        """book.send_command's SET NX answers b'OK' or None alone and batched; piped.set() True."""
        async with autopipeline(redis) as piped:
            book = ScriptBook.for_client(piped)
            alone = await book.send_command("SET", "raw:a", "1", "NX")
            direct_before = piped.stats.direct
            replies = await gather(
                piped.get("raw:a"),  # runs directly, so the commands below queue behind it
                *(book.send_command("SET", f"raw:{i}", "1", "NX") for i in range(5)),
                book.send_command("SET", "raw:a", "2", "NX"),
                piped.set("raw:parsed", "1"),
            )
        assert alone == b"OK"
        assert replies[0] == b"1"
        assert replies[1:6] == [b"OK"] * 5
        assert replies[6] is None
        assert replies[7] is True
        assert piped.stats.direct == direct_before + 1
        assert piped.stats.batched == 7
        assert await redis.get("raw:a") == b"1"


class TestIsolation:
    async def test_an_unencodable_argument_fails_only_its_own_caller(
        self, redis_server: RedisServer
    ) -> None:
        """A None argument in a batch raises DataError for its caller; the rest are answered."""
        client = await connect(redis_server.url)
        try:
            async with autopipeline(client) as piped:
                replies = await gather(
                    piped.set("iso:first", 1),  # runs directly, so the rest batch
                    piped.set("iso:a", "a"),
                    piped.set("iso:bad", None),  # type: ignore[arg-type]
                    piped.set("iso:b", "b"),
                    piped.incr("iso:n"),
                )
            assert piped.stats.batched == 4
            assert isinstance(replies[2], DataError)
            assert [replies[0], replies[1], replies[3], replies[4]] == [True, True, True, 1]
            assert await client.mget("iso:a", "iso:b") == [b"a", b"b"]
        finally:
            await client.aclose()

    async def test_a_failing_reply_callback_fails_only_its_own_caller(
        self, redis_server: RedisServer
    ) -> None:
        """A caller's reply parser raising in a batch fails that caller; the rest are answered."""
        client = await connect(redis_server.url)
        try:
            await client.zadd("iso:z", {"m": 1.5})
            async with autopipeline(client) as piped:
                replies = await gather(
                    piped.set("iso:first", 1),  # runs directly, so the rest batch
                    piped.zrange("iso:z", 0, -1, withscores=True, score_cast_func=whole),
                    piped.set("iso:a", "a"),
                    piped.incr("iso:n"),
                )
            assert isinstance(replies[1], ValueError)
            assert [replies[0], replies[2], replies[3]] == [True, True, 1]
        finally:
            await client.aclose()

    async def test_a_failing_reply_callback_leaves_no_reply_unread(
        self, redis_server: RedisServer
    ) -> None:
        """A reply parser failing in a batch leaves no reply behind it to be read as another's."""
        client = await connect(redis_server.url, max_connections=1)
        slow = "for i = 1, 40000000 do end return 'slow'"  # ~0.3 s of server time
        try:
            await client.zadd("iso:z", {"m": 1.5})
            async with autopipeline(client) as piped:
                await gather(
                    piped.set("iso:first", 1),  # runs directly, so the rest batch
                    piped.zrange("iso:z", 0, -1, withscores=True, score_cast_func=whole),
                    piped.eval(slow, 0),
                )
                assert await piped.echo("mine") == b"mine"
                assert await piped.get("iso:first") == b"1"
        finally:
            await client.aclose()

    async def test_on_a_cluster_an_unencodable_argument_fails_only_its_own_caller(
        self, redis_cluster: RedisCluster
    ) -> None:
        """On a cluster, a None argument fails its caller alone; the others are answered."""
        keys = [f"iso:{i}" for i in range(12)]
        async with autopipeline(redis_cluster) as piped:
            replies = await gather(
                piped.set("iso:first", 1),  # runs directly, so the rest batch
                *(piped.set(k, None if i == 5 else "v") for i, k in enumerate(keys)),  # type: ignore[arg-type]
            )
        assert isinstance(replies[6], DataError)
        assert replies[:6] + replies[7:] == [True] * 12
        assert [await redis_cluster.get(k) for k in keys] == [b"v"] * 5 + [None] + [b"v"] * 6


class TestFaults:
    async def test_cancelled_callers_leave_the_rest_of_the_batch_unharmed(
        self, redis: Redis
    ) -> None:
        """Cancelling half the callers of a batch leaves the others' replies right and in sync."""
        async with autopipeline(redis) as piped:
            replies: list[int] = []

            async def incr(cancel: bool) -> None:
                with anyio.CancelScope() as scope:
                    if cancel:
                        scope.cancel()  # delivered at the first await, after queueing
                    replies.append(await piped.incr("n"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(incr, False)  # runs directly, so the rest queue
                for i in range(100):
                    tg.start_soon(incr, i % 2 == 0)
            assert len(replies) >= 51
            assert len(set(replies)) == len(replies)
            # Nothing was left unread on a connection: every reply still matches its command.
            assert int(await piped.get("n")) in range(max(replies), 102)
            echoes = await gather(*(piped.echo(str(i)) for i in range(20)))
            assert echoes == [str(i).encode() for i in range(20)]
            assert await piped.echo("still in sync") == b"still in sync"

    async def test_killed_server_fails_every_caller_then_recovers(
        self, redis_server: RedisServer
    ) -> None:
        """With the server killed, each batched caller gets ConnectionError; restarted, replies."""
        client = await connect(redis_server.url, timeout=0.5, retries=0)
        try:
            async with autopipeline(client) as piped:
                await piped.set("k", "v")
                redis_server.kill()
                with anyio.fail_after(5):
                    failed = await gather(*(piped.get("k") for _ in range(20)))
                assert all(isinstance(r, RedisConnectionError) for r in failed), failed
                assert piped.stats.failed_batches >= 1
                redis_server.start()
                with anyio.fail_after(5):
                    assert await gather(*(piped.set("k", i) for i in range(20))) == [True] * 20
        finally:
            await client.aclose()

    async def test_black_holed_link_times_out_each_caller_then_heals(
        self, redis_server: RedisServer
    ) -> None:
        """With the link black-holed, batched callers time out within 2 s; restored, they answer."""
        with FaultProxy(redis_server.port) as proxy:
            client = await connect(proxy.url, timeout=0.3, retries=0)
            try:
                async with autopipeline(client) as piped:
                    await piped.set("k", "v")
                    proxy.blackhole()
                    started = time.monotonic()
                    failed = await gather(*(piped.get("k") for _ in range(20)))
                    assert time.monotonic() - started < 2
                    assert all(
                        isinstance(r, (RedisTimeoutError, RedisConnectionError)) for r in failed
                    ), failed
                    proxy.restore()
                    with anyio.fail_after(5):
                        assert await gather(*(piped.get("k") for _ in range(20))) == [b"v"] * 20
            finally:
                await client.aclose()

    async def test_exit_answers_queued_commands_then_runs_directly(self, redis: Redis) -> None:
        """Commands still queued when the block exits are answered; later ones run directly."""
        replies: list[int] = []

        async def incr(client: Redis) -> None:
            replies.append(await client.incr("n"))

        async with anyio.create_task_group() as outside, autopipeline(redis) as piped:
            for _ in range(50):
                outside.start_soon(incr, piped)
            await anyio.lowlevel.checkpoint()  # they start and queue; the block exits at once
        assert sorted(replies) == list(range(1, 51))
        assert await piped.incr("n") == 51

    async def test_cancelled_block_fails_its_queued_commands(self, redis: Redis) -> None:
        """Commands still queued, in any batch, when the block is cancelled get ConnectionError."""
        outcomes: list[object] = []

        async def incr(client: Redis) -> None:
            try:
                outcomes.append(await client.incr("n"))
            except RedisConnectionError as exc:
                outcomes.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as outside:
                with anyio.CancelScope() as scope:
                    async with autopipeline(redis, max_batch=10) as piped:
                        for _ in range(50):
                            outside.start_soon(incr, piped)
                        await anyio.lowlevel.checkpoint()  # queued now
                        scope.cancel()
                        await anyio.sleep(1)
        assert len(outcomes) == 50
        assert any(isinstance(o, RedisConnectionError) for o in outcomes)
        assert await redis.echo("in sync") == b"in sync"

    async def test_exception_in_block_propagates_as_itself(self, redis: Redis) -> None:
        """An exception raised in the block reaches the caller as itself, not in a group."""
        with pytest.raises(KeyError) as info:
            async with autopipeline(redis):
                raise KeyError("mine")
        assert not isinstance(info.value, ExceptionGroup)


class TestValidation:
    async def test_rejects_what_is_not_a_plain_client(self, redis: Redis) -> None:
        """A pipeline, a URL or a bad bound is refused with InvalidArgument before any I/O."""
        for bad in (redis.pipeline(), "redis://localhost"):
            with pytest.raises(InvalidArgument, match=r"redis\.asyncio\.Redis"):
                autopipeline(bad)  # type: ignore[arg-type]
        for kwargs in ({"concurrency": 0}, {"max_batch": True}, {"concurrency": 2.0}):
            with pytest.raises(InvalidArgument):
                autopipeline(redis, **kwargs)  # type: ignore[arg-type]
