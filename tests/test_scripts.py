"""ScriptBook: load by SHA, NOSCRIPT fallback, pipelines, read-only scripts, error mapping."""

from __future__ import annotations

import gc
import hashlib
import weakref
from collections.abc import Callable

import anyio
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import DataError, OutOfMemoryError

from aioredis_patterns import (
    AsyncCache,
    AsyncLock,
    AsyncRateLimiter,
    AtomicOps,
    InsufficientStock,
    InvalidArgument,
    ScriptBook,
    ScriptError,
    autopipeline,
    connect,
    register_error_code,
)
from aioredis_patterns._scripts import _BUILTINS
from aioredis_patterns._slots import derived_key, slot_of
from aioredis_patterns.testing import RedisServer
from tests.conftest import command_calls

from ._helpers import client_of_full_server, fill_until_refused

SCRIPT_COMMANDS = ("evalsha", "evalsha_ro", "eval", "eval_ro", "script|load")


async def cluster_calls(cluster: RedisCluster) -> dict[str, int]:
    """INFO commandstats call counts summed over every node of *cluster*."""
    stats = await cluster.info("commandstats", target_nodes=RedisCluster.ALL_NODES)
    total: dict[str, int] = {}
    for node in stats.values():
        for name, fields in node.items():
            if name.startswith("cmdstat_"):
                total[name] = total.get(name, 0) + int(fields["calls"])
    return total


class Oops(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


register_error_code("TEST_OOPS", Oops)


async def run_every_atomic_op(ops: AtomicOps, redis: Redis) -> None:
    await redis.set("stock", 10)
    await redis.set("from", 10)
    assert await ops.compare_and_swap("cas", None, "a") is True
    assert await ops.increment_with_limit("counter", 1, 5) == 1
    assert await ops.deduct_inventory("stock", 1) == 9
    assert await ops.transfer("from", "to", 1) == (9, 1)


class TestLoading:
    async def test_every_lua_file_is_registered_with_its_local_sha(self, redis: Redis) -> None:
        """A new book holds every script under lua/, each with the SHA1 of its source."""
        book = ScriptBook(redis)
        assert set(book.scripts) == set(_BUILTINS)
        assert {"compare_and_swap", "transfer"} <= set(book.scripts)
        for script in book.scripts.values():
            assert script.sha == hashlib.sha1(script.source.encode()).hexdigest()

    async def test_load_all_is_one_round_trip_and_matches_server_shas(self, redis: Redis) -> None:
        """load_all sends one SCRIPT LOAD per script in one pipeline; the server agrees on SHAs."""
        book = ScriptBook(redis)
        before = await redis.info("stats")
        await book.load_all()
        after = await redis.info("stats")
        assert book.stats.loads == len(book.scripts)
        # total_commands_processed also counts the two INFO calls around it.
        assert after["total_commands_processed"] - before["total_commands_processed"] == (
            len(book.scripts) + 1
        )
        exists = await redis.script_exists(*(s.sha for s in book.scripts.values()))
        assert all(exists)

    async def test_one_book_per_client_shared_by_patterns(self, redis: Redis) -> None:
        """for_client returns the same book for a client; scripts= overrides it."""
        shared = ScriptBook.for_client(redis)
        assert ScriptBook.for_client(redis) is shared
        assert AtomicOps(redis)._book is shared
        other = ScriptBook(redis)
        assert AtomicOps(redis, scripts=other)._book is other

    async def test_register_refuses_a_different_source_under_a_taken_name(
        self, redis: Redis
    ) -> None:
        """Registering another source under an existing name raises instead of replacing."""
        book = ScriptBook(redis)
        book.register("mine", "return 1")
        book.register("mine", "return 1")  # the same source again is fine
        with pytest.raises(ValueError, match="already registered"):
            book.register("mine", "return 2")


SLOW = """
local started = redis.call('TIME')
repeat
  local now = redis.call('TIME')
until (now[1] - started[1]) * 1000000 + (now[2] - started[2]) >= tonumber(ARGV[1])
return 'slow'
"""


class TestSending:
    async def test_script_calls_survive_a_server_restart(self, redis_server: RedisServer) -> None:
        """After a restart a script call reconnects by the client's retry, then re-sends as EVAL."""
        client = await connect(redis_server.url)
        ops = AtomicOps(client)
        assert await ops.increment_with_limit("restart:n", 1, 10) == 1
        await anyio.to_thread.run_sync(redis_server.restart)
        assert await ops.increment_with_limit("restart:n", 1, 10) >= 1
        assert ScriptBook.for_client(client).stats.eval_fallbacks == 1
        await client.aclose()

    async def test_a_call_cancelled_while_its_script_runs_leaves_the_connection_in_step(
        self, redis_url: str
    ) -> None:
        """A script call cancelled before its reply never hands that reply to the next call."""
        client = await connect(redis_url, max_connections=1)
        book = ScriptBook.for_client(client)
        book.register("test_slow", SLOW)
        book.register("test_echo", "return ARGV[1]")
        with anyio.move_on_after(0.05) as scope:
            await book.run("test_slow", args=(300_000,))
        assert scope.cancelled_caught
        assert await book.run("test_echo", args=("fresh",)) == b"fresh"
        assert await client.get("nothing") is None
        await client.aclose()

    @pytest.mark.parametrize(("encoding", "sent"), [("utf-8", b"\xc3\xa9"), ("latin-1", b"\xe9")])
    async def test_text_arguments_are_encoded_as_the_client_says(
        self, redis_url: str, encoding: str, sent: bytes
    ) -> None:
        """A script receives text arguments in the client's encoding, UTF-8 or not."""
        client = await connect(redis_url, encoding=encoding)
        book = ScriptBook.for_client(client)
        book.register("test_echo", "return ARGV[1]")
        assert await book.run("test_echo", args=("é",)) == sent
        await client.aclose()

    @pytest.mark.parametrize("value", [True, object(), None])
    async def test_an_argument_redis_cannot_take_raises_data_error(
        self, redis_url: str, value: object
    ) -> None:
        """An argument Redis has no form for raises redis-py's DataError, and nothing is sent."""
        client = await connect(redis_url)
        book = ScriptBook.for_client(client)
        book.register("test_echo", "return ARGV[1]")
        before = await command_calls(client, "evalsha", "eval")
        with pytest.raises(DataError):
            await book.run("test_echo", args=(value,))  # type: ignore[arg-type]
        assert await command_calls(client, "evalsha", "eval") == before
        await client.aclose()

    async def test_autopipeline_books_send_their_calls_in_batches(self, redis: Redis) -> None:
        """On an autopipeline() client, 50 concurrent script calls share a few pipelines."""
        async with autopipeline(redis) as piped:
            ops = AtomicOps(piped)
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(ops.increment_with_limit, f"piped:{i % 5}", 1, 100)
        assert piped.stats.batched + piped.stats.direct == 50  # none sent around it
        assert piped.stats.batches < 25
        assert sum([int(await redis.get(f"piped:{i}")) for i in range(5)]) == 50


class TestEvalsha:
    async def test_after_load_all_operations_use_evalsha_only(
        self, redis: Redis, book: ScriptBook
    ) -> None:
        """Once loaded, every operation is EVALSHA: INFO commandstats shows no EVAL."""
        ops = AtomicOps(redis)
        before = await command_calls(redis, *SCRIPT_COMMANDS)
        await run_every_atomic_op(ops, redis)
        after = await command_calls(redis, *SCRIPT_COMMANDS)
        delta = {c: after[c] - before[c] for c in SCRIPT_COMMANDS}
        assert delta == {"evalsha": 4, "evalsha_ro": 0, "eval": 0, "eval_ro": 0, "script|load": 0}
        assert book.stats.eval_fallbacks == 0

    async def test_after_script_flush_operations_fall_back_and_recache(
        self, redis: Redis, book: ScriptBook
    ) -> None:
        """After SCRIPT FLUSH each operation succeeds via EVAL once, then EVALSHA again."""
        ops = AtomicOps(redis)
        await redis.script_flush()
        before = await command_calls(redis, *SCRIPT_COMMANDS)
        await run_every_atomic_op(ops, redis)
        middle = await command_calls(redis, *SCRIPT_COMMANDS)
        assert book.stats.eval_fallbacks == 4
        assert middle["eval"] - before["eval"] == 4
        assert middle["evalsha"] - before["evalsha"] == 4  # each met NOSCRIPT first
        await redis.delete("cas", "counter", "to")
        await run_every_atomic_op(ops, redis)
        after = await command_calls(redis, *SCRIPT_COMMANDS)
        assert after["eval"] == middle["eval"]
        assert after["evalsha"] - middle["evalsha"] == 4
        assert book.stats.eval_fallbacks == 4

    async def test_err_prefixed_noscript_reply_also_falls_back(self, redis: Redis) -> None:
        """A reply "ERR NOSCRIPT ..." (as some proxies send) triggers the EVAL fallback too."""
        book = ScriptBook(redis, builtins=False)
        # First run answers like a proxy that lost the script; the EVAL re-run succeeds.
        book.register(
            "proxy_like",
            "if redis.call('SET', KEYS[1], 1, 'NX') then\n"
            "  return redis.error_reply('ERR NOSCRIPT No matching script')\n"
            "end\n"
            "return 'ran'",
        )
        await book.load_all()
        assert await book.run("proxy_like", ["seen"]) == b"ran"
        assert book.stats.eval_fallbacks == 1

    async def test_read_only_scripts_run_with_evalsha_ro(self, redis: Redis) -> None:
        """A script whose first line is `#!lua flags=no-writes` is sent as EVALSHA_RO."""
        book = ScriptBook(redis, builtins=False)
        script = book.register("peek", "#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])")
        assert script.read_only
        await redis.set("k", "v")
        await book.load_all()
        before = await command_calls(redis, "evalsha_ro", "evalsha")
        assert await book.run("peek", ["k"]) == b"v"
        after = await command_calls(redis, "evalsha_ro", "evalsha")
        assert after["evalsha_ro"] - before["evalsha_ro"] == 1
        assert after["evalsha"] == before["evalsha"]


class TestPipeline:
    async def test_scripts_in_a_pipeline_after_script_flush_all_succeed(
        self, redis: Redis, book: ScriptBook
    ) -> None:
        """A pipeline mixing scripts and commands after SCRIPT FLUSH returns every result right."""
        await redis.script_flush()
        await redis.set("stock", 5)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set("plain", "x")
            book.queue(pipe, "deduct_inventory", ["stock"], [2, 1000])
            book.queue(pipe, "increment_with_limit", ["counter"], [3, 10, 0])
            pipe.get("plain")
            book.queue(pipe, "deduct_inventory", ["stock"], [2, 1000])
            results = await pipe.execute()
        assert results == [True, 3, 3, b"x", 1]
        assert book.stats.pipelined == 3
        assert await redis.get("stock") == b"1"

    async def test_script_errors_in_a_pipeline_translate_to_typed_exceptions(
        self, redis: Redis, book: ScriptBook
    ) -> None:
        """With raise_on_error=False, translate() turns a script's error reply into its class."""
        await redis.set("stock", 1)
        async with redis.pipeline(transaction=False) as pipe:
            book.queue(pipe, "deduct_inventory", ["stock"], [5, 1000])
            pipe.get("stock")
            results = await pipe.execute(raise_on_error=False)
        error = book.translate("deduct_inventory", results[0])
        assert isinstance(error, InsufficientStock)
        assert (error.available, error.requested) == (1, 5)
        assert results[1] == b"1"


class TestErrors:
    async def test_registered_error_code_maps_to_its_exception(self, redis: Redis) -> None:
        """redis.error_reply('CODE detail') raises the class registered for CODE, with detail."""
        book = ScriptBook(redis, builtins=False)
        book.register("fails", "return redis.error_reply('TEST_OOPS something broke')")
        with pytest.raises(Oops) as caught:
            await book.run("fails")
        assert caught.value.detail == "something broke"

    async def test_error_raised_from_a_lua_helper_keeps_its_code(self, redis: Redis) -> None:
        """error(redis.error_reply(...)) inside a function maps too, despite Redis's suffix."""
        book = ScriptBook(redis, builtins=False)
        book.register(
            "nested",
            "local function f() error(redis.error_reply('TEST_OOPS deep')) end\nf()\nreturn 1",
        )
        with pytest.raises(Oops) as caught:
            await book.run("nested")
        assert caught.value.detail == "deep"

    async def test_unknown_error_raises_script_error_naming_the_script(self, redis: Redis) -> None:
        """A runtime error without a known code raises ScriptError with the script's name."""
        book = ScriptBook(redis, builtins=False)
        book.register("bad_incr", "return redis.call('INCR', KEYS[1])")
        await redis.set("text", "abc")
        with pytest.raises(ScriptError, match="bad_incr") as caught:
            await book.run("bad_incr", ["text"])
        assert caught.value.script == "bad_incr"
        assert "not an integer" in caught.value.detail

    async def test_a_write_refused_at_maxmemory_raises_redis_pys_oom_error(
        self, redis_server_factory: Callable[..., RedisServer]
    ) -> None:
        """At maxmemory a script's refused write raises OutOfMemoryError, as a plain SET does."""
        async with client_of_full_server(redis_server_factory) as client:
            assert await fill_until_refused(client) > 0
            book = ScriptBook.for_client(client)
            with pytest.raises(OutOfMemoryError):
                await AtomicOps(client, scripts=book).increment_with_limit("counter", 1, 10)
            with pytest.raises(OutOfMemoryError):
                await client.set("counter", 1)
            async with client.pipeline(transaction=False) as pipe:
                book.queue(pipe, "increment_with_limit", ["counter"], [1, 10, 0])
                (queued,) = await pipe.execute(raise_on_error=False)
            assert isinstance(book.translate("increment_with_limit", queued), OutOfMemoryError)
            assert await client.exists("counter") == 0

    def test_error_codes_must_be_upper_case_words(self) -> None:
        """register_error_code refuses lower-case codes and a second factory for a code."""
        with pytest.raises(ValueError, match="upper-case"):
            register_error_code("oops", Oops)
        with pytest.raises(ValueError, match="already registered"):
            register_error_code("TEST_OOPS", KeyError)


class TestDerivedKeys:
    @pytest.mark.parametrize(
        "key",
        ["lock:order:123", "user:{42}:profile", "a{b", "plain", "x{y}z{w}"],
    )
    async def test_companion_keys_share_the_slot_on_a_real_cluster(
        self, redis_cluster: RedisCluster, key: str
    ) -> None:
        """derived_key's companion hashes to the key's own slot, as the cluster computes it."""
        companion = derived_key(key, ":meta")
        slots = [await redis_cluster.cluster_keyslot(k) for k in (key, companion)]
        assert slots[0] == slots[1] == slot_of(key)

    @pytest.mark.parametrize("key", ["a{}b", "a}b", "{}", "{}{x}"])
    def test_keys_whose_slot_no_companion_can_share_are_refused(self, key: str) -> None:
        """A key with braces but no usable tag raises InvalidArgument rather than mis-slotting."""
        with pytest.raises(InvalidArgument, match="no \\{hash tag\\}"):
            derived_key(key, ":meta")


class TestEncoding:
    async def test_a_non_ascii_script_loads_and_runs_by_sha_on_a_latin1_client(
        self, redis_url: str
    ) -> None:
        """On a latin-1 client a non-ASCII script loads with a matching SHA and runs by SHA."""
        client = await connect(redis_url, encoding="latin-1")
        try:
            book = ScriptBook(client, builtins=False)
            book.register("greet", "return 'caf\u00e9'")
            await book.load_all()
            before = await command_calls(client, "evalsha", "eval")
            assert await book.run("greet") == b"caf\xe9"
            after = await command_calls(client, "evalsha", "eval")
            assert (after["evalsha"] - before["evalsha"], after["eval"] - before["eval"]) == (1, 0)
            assert book.stats.eval_fallbacks == 0
        finally:
            await client.aclose()


class TestReadOnlyOnCluster:
    async def test_a_read_only_script_on_a_cluster_sends_no_command_getkeys(
        self, redis_cluster: RedisCluster
    ) -> None:
        """A rate-limit peek on a cluster is one script command, without COMMAND GETKEYS first."""
        limiter = AsyncRateLimiter(redis_cluster, limit=5, window=60)
        await ScriptBook.for_client(redis_cluster).load_all()
        assert (await limiter.allow("user:1")).allowed
        before = await cluster_calls(redis_cluster)
        result = await limiter.peek("user:1")
        after = await cluster_calls(redis_cluster)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        assert result.remaining == 4
        assert delta.get("cmdstat_command|getkeys", 0) == 0
        scripts = ("cmdstat_evalsha", "cmdstat_evalsha_ro", "cmdstat_eval", "cmdstat_eval_ro")
        assert sum(delta.get(k, 0) for k in scripts) == 1

    async def test_a_read_only_script_without_keys_runs_on_a_cluster(
        self, redis_cluster: RedisCluster
    ) -> None:
        """A no-writes script that takes no keys runs on a cluster client, as a writing one does."""
        book = ScriptBook(redis_cluster, builtins=False)
        book.register("answer", "return 42")
        book.register("answer_ro", "#!lua flags=no-writes\nreturn 42")
        assert await book.run("answer") == 42
        assert await book.run("answer_ro") == 42
        assert await book.run("answer_ro") == 42


class TestLifetime:
    async def test_a_closed_and_dropped_client_is_freed(self, redis_server: RedisServer) -> None:
        """A connect() client, used by every pattern, closed and dropped, is garbage-collected."""
        client = await connect(redis_server.url)
        await client.set("res:k", "v")
        async with AsyncLock(client, "res:lock", ttl=5):
            pass
        await AsyncCache(client, namespace="res:c:").get_or_load("k", _load_one)
        await AsyncRateLimiter(client, limit=5, window=1).allow("res")
        await AtomicOps(client).increment_with_limit("res:n", 1, 5)
        async with autopipeline(client) as piped:
            await piped.get("res:k")
        freed = weakref.ref(client)
        await client.aclose()
        del client, piped
        gc.collect()
        assert freed() is None


async def _load_one() -> int:
    return 1
