"""AtomicOps: the seed's Lua operations under contention, bad input and retries."""

from __future__ import annotations

import enum
import math
import random
from datetime import timedelta
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis, RedisCluster

from aioredis_patterns import (
    AsyncLock,
    AtomicOps,
    CrossSlotKeys,
    InsufficientBalance,
    InsufficientStock,
    InvalidArgument,
    LimitExceeded,
    NotAnInteger,
    ScriptBook,
    connect,
)

BAD_AMOUNTS: list[Any] = [
    0,
    -1,
    1.5,
    2.0,
    True,
    math.nan,
    math.inf,
    "inf",
    "5",
    "abc",
    None,
    2**53,
]


class Quantity(enum.IntEnum):
    ONE = 1
    TWO = 2


async def snapshot(client: Redis | RedisCluster, *keys: str) -> dict[str, Any]:
    """Value and TTL of each key, to prove a refused call changed nothing."""
    return {k: (await client.get(k), await client.pttl(k)) for k in keys}


class TestContention:
    async def test_concurrent_random_transfers_conserve_the_total(
        self, topology: Redis | RedisCluster
    ) -> None:
        """200 concurrent random transfers among 5 accounts keep the sum and never go negative."""
        ops = AtomicOps(topology)
        accounts = [f"{{bank}}:acct:{i}" for i in range(5)]
        for key in accounts:
            await topology.set(key, 100)
        outcomes = {"ok": 0, "refused": 0}
        rng = random.Random(7)
        plan = [(rng.sample(accounts, 2), rng.randint(1, 60)) for _ in range(200)]

        async def one(pair: list[str], amount: int) -> None:
            try:
                await ops.transfer(pair[0], pair[1], amount)
                outcomes["ok"] += 1
            except InsufficientBalance:
                outcomes["refused"] += 1

        async with anyio.create_task_group() as tg:
            for pair, amount in plan:
                tg.start_soon(one, pair, amount)
        balances = [int(await topology.get(k)) for k in accounts]
        assert sum(balances) == 500
        assert min(balances) >= 0
        assert outcomes["ok"] + outcomes["refused"] == 200
        assert outcomes["ok"] > 0

    async def test_concurrent_deductions_never_oversell(
        self, topology: Redis | RedisCluster
    ) -> None:
        """200 concurrent deductions of 1 against stock 150: exactly 150 succeed, stock ends 0."""
        ops = AtomicOps(topology)
        await topology.set("inventory:sku", 150)
        results: list[int] = []
        refused = 0

        async def one() -> None:
            nonlocal refused
            try:
                results.append(await ops.deduct_inventory("inventory:sku", 1))
            except InsufficientStock as exc:
                assert exc.available == 0
                refused += 1

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(one)
        assert len(results) == 150
        assert refused == 50
        assert sorted(results) == list(range(150))
        assert await topology.get("inventory:sku") == b"0"

    async def test_concurrent_mixed_quantities_succeed_exactly_as_stock_allows(
        self, redis: Redis
    ) -> None:
        """Deductions of 1..5 units: the units sold plus the stock left equal the stock at start."""
        ops = AtomicOps(redis)
        await redis.set("inventory:mixed", 300)
        sold = 0
        rng = random.Random(3)

        async def one(quantity: int) -> None:
            nonlocal sold
            try:
                left = await ops.deduct_inventory("inventory:mixed", quantity)
            except InsufficientStock as exc:
                assert exc.available < quantity
            else:
                assert left >= 0
                sold += quantity

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(one, rng.randint(1, 5))
        left = int(await redis.get("inventory:mixed"))
        assert left >= 0
        assert sold + left == 300

    async def test_compare_and_swap_has_exactly_one_winner_per_round(
        self, topology: Redis | RedisCluster
    ) -> None:
        """50 contenders swap from the same value each round: one wins, 49 lose, for 20 rounds."""
        ops = AtomicOps(topology)
        await topology.set("cas:version", "0")
        for round_number in range(20):
            current = str(round_number)
            wins: list[int] = []

            async def contend(
                contender: int, current: str = current, wins: list[int] = wins
            ) -> None:
                if await ops.compare_and_swap("cas:version", current, str(int(current) + 1)):
                    wins.append(contender)

            async with anyio.create_task_group() as tg:
                for contender in range(50):
                    tg.start_soon(contend, contender)
            assert len(wins) == 1
        assert await topology.get("cas:version") == b"20"


class TestSemantics:
    async def test_compare_and_swap_keeps_ttl_and_none_means_absent(self, redis: Redis) -> None:
        """A swap keeps the key's TTL; expected=None swaps only when the key is missing."""
        ops = AtomicOps(redis)
        assert await ops.compare_and_swap("k", None, "a") is True
        assert await ops.compare_and_swap("k", None, "b") is False
        await redis.pexpire("k", 60_000)
        assert await ops.compare_and_swap("k", "a", "c") is True
        assert await redis.get("k") == b"c"
        assert 0 < await redis.pttl("k") <= 60_000
        assert await ops.compare_and_swap("missing", "a", "b") is False
        assert await redis.exists("missing") == 0

    async def test_increment_with_limit_reports_current_and_limit(self, redis: Redis) -> None:
        """An increment past the limit raises LimitExceeded(current, limit) and writes nothing."""
        ops = AtomicOps(redis)
        assert await ops.increment_with_limit("quota", 7, 10) == 7
        with pytest.raises(LimitExceeded) as caught:
            await ops.increment_with_limit("quota", 4, 10)
        assert (caught.value.current, caught.value.limit) == (7, 10)
        assert await ops.increment_with_limit("quota", 3, 10) == 10
        assert await redis.get("quota") == b"10"

    async def test_increment_ttl_is_set_when_the_call_creates_the_key(self, redis: Redis) -> None:
        """ttl applies to a key the increment creates; an existing key keeps its own expiry."""
        ops = AtomicOps(redis)
        await ops.increment_with_limit("window", 1, 10, ttl=5.0)
        assert 4000 < await redis.pttl("window") <= 5000
        await redis.set("zero", 0)
        await ops.increment_with_limit("zero", 1, 10, ttl=5.0)
        assert await redis.pttl("zero") == -1

    async def test_missing_keys_count_as_zero(self, redis: Redis) -> None:
        """A missing counter is 0: deducting from it is refused, incrementing starts at 0."""
        ops = AtomicOps(redis)
        with pytest.raises(InsufficientStock) as caught:
            await ops.deduct_inventory("nothing", 1)
        assert (caught.value.available, caught.value.requested) == (0, 1)
        with pytest.raises(InsufficientBalance) as balance:
            await ops.transfer("nobody", "somebody", 1)
        assert (balance.value.balance, balance.value.requested) == (0, 1)
        assert await ops.increment_with_limit("fresh", 2, 3) == 2
        assert await redis.exists("nothing", "nobody", "somebody") == 0

    async def test_transfer_returns_both_balances(self, redis: Redis) -> None:
        """transfer moves the amount and returns (from_balance, to_balance) afterwards."""
        ops = AtomicOps(redis)
        await redis.set("points:alice", 100)
        await redis.set("points:bob", 5)
        assert await ops.transfer("points:alice", "points:bob", 40) == (60, 45)


class TestLargeNumbers:
    async def test_refusals_of_large_amounts_carry_exact_figures(self, redis: Redis) -> None:
        """Amounts of 10**14 and more keep every digit in the typed errors' attributes."""
        ops = AtomicOps(redis)
        await redis.set("stock", 10**15 - 1)
        await redis.set("counter", 10**14)
        await redis.set("from", 123456789012345)
        with pytest.raises(InsufficientStock) as stock:
            await ops.deduct_inventory("stock", 10**15)
        assert (stock.value.available, stock.value.requested) == (10**15 - 1, 10**15)
        with pytest.raises(LimitExceeded) as limit:
            await ops.increment_with_limit("counter", 1, 10**14)
        assert (limit.value.current, limit.value.limit) == (10**14, 10**14)
        with pytest.raises(InsufficientBalance) as balance:
            await ops.transfer("from", "to", 10**15)
        assert (balance.value.balance, balance.value.requested) == (123456789012345, 10**15)

    async def test_a_retry_with_a_large_result_returns_the_first_result(self, redis: Redis) -> None:
        """Idempotency records keep every digit, so a retry above 10**14 is recognised."""
        ops = AtomicOps(redis)
        await redis.set("stock", 10**15)
        await redis.set("from", 2 * 10**15)
        assert await ops.deduct_inventory("stock", 1, idempotency_key="o1") == 10**15 - 1
        assert await ops.deduct_inventory("stock", 1, idempotency_key="o1") == 10**15 - 1
        first = await ops.transfer("from", "to", 10**15, idempotency_key="t1")
        assert first == (10**15, 10**15)
        assert await ops.transfer("from", "to", 10**15, idempotency_key="t1") == first
        assert (await redis.get("stock"), await redis.get("to")) == (
            b"999999999999999",
            b"1" + b"0" * 15,
        )

    async def test_a_transfer_past_2_53_is_refused_before_any_write(self, redis: Redis) -> None:
        """A destination that would pass 2**53 - 1 raises LimitExceeded; neither balance moves."""
        ops = AtomicOps(redis)
        await redis.set("from", 10)
        await redis.set("to", 2**53 - 2)
        before = await snapshot(redis, "from", "to")
        with pytest.raises(LimitExceeded) as caught:
            await ops.transfer("from", "to", 2)
        assert (caught.value.current, caught.value.limit) == (2**53 - 2, 2**53 - 1)
        assert await snapshot(redis, "from", "to") == before
        assert await ops.transfer("from", "to", 1) == (9, 2**53 - 1)


class TestIdempotency:
    async def test_retried_deduction_returns_the_first_result_once_applied(
        self, redis: Redis
    ) -> None:
        """The same idempotency key returns the first call's result without deducting again."""
        ops = AtomicOps(redis, idempotency_ttl=60)
        await redis.set("stock", 10)
        assert await ops.deduct_inventory("stock", 3, idempotency_key="order-1") == 7
        assert await ops.deduct_inventory("stock", 3, idempotency_key="order-1") == 7
        assert await ops.deduct_inventory("stock", 3, idempotency_key="order-2") == 4
        assert await redis.get("stock") == b"4"
        record = "{stock}:idempotency:order-1"
        assert 0 < await redis.pttl(record) <= 60_000

    async def test_retried_transfer_returns_the_first_result_once_applied(
        self, redis: Redis
    ) -> None:
        """A retried transfer with the same idempotency key moves the amount only once."""
        ops = AtomicOps(redis)
        await redis.set("a", 100)
        first = await ops.transfer("a", "b", 30, idempotency_key="tx-9")
        await ops.transfer("b", "a", 5)
        again = await ops.transfer("a", "b", 30, idempotency_key="tx-9")
        assert first == again == (70, 30)
        assert (await redis.get("a"), await redis.get("b")) == (b"75", b"25")

    async def test_idempotency_key_reused_with_other_amount_is_refused(self, redis: Redis) -> None:
        """Reusing an idempotency key with a different quantity raises and changes nothing."""
        ops = AtomicOps(redis)
        await redis.set("stock", 10)
        await ops.deduct_inventory("stock", 2, idempotency_key="order-1")
        with pytest.raises(InvalidArgument, match="reused"):
            await ops.deduct_inventory("stock", 3, idempotency_key="order-1")
        assert await redis.get("stock") == b"8"

    async def test_refused_deduction_leaves_no_record(self, redis: Redis) -> None:
        """A deduction refused for stock records nothing, so the same key succeeds later."""
        ops = AtomicOps(redis)
        with pytest.raises(InsufficientStock):
            await ops.deduct_inventory("stock", 2, idempotency_key="order-1")
        await redis.set("stock", 5)
        assert await ops.deduct_inventory("stock", 2, idempotency_key="order-1") == 3


class TestBadInput:
    @pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=repr)
    async def test_bad_amounts_raise_before_any_write(self, redis: Redis, amount: Any) -> None:
        """Zero, negatives, floats, bools, NaN, inf and strings raise ValueError; keys unchanged."""
        ops = AtomicOps(redis)
        await redis.set("stock", 10)
        await redis.set("from", 10)
        await redis.set("counter", 1)
        keys = ("stock", "from", "to", "counter")
        before = await snapshot(redis, *keys)
        with pytest.raises(ValueError, match="must be"):
            await ops.deduct_inventory("stock", amount)
        with pytest.raises(ValueError, match="must be"):
            await ops.transfer("from", "to", amount)
        with pytest.raises(ValueError, match="must be"):
            await ops.increment_with_limit("counter", amount, 100)
        with pytest.raises(ValueError, match="must be"):
            await ops.increment_with_limit("counter", 1, amount)
        assert await snapshot(redis, *keys) == before

    async def test_invalid_argument_is_a_value_error(self) -> None:
        """InvalidArgument is both the toolkit's error and a ValueError."""
        assert issubclass(InvalidArgument, ValueError)

    async def test_transfer_to_the_same_key_is_refused(self, redis: Redis) -> None:
        """from_key == to_key raises InvalidArgument and the balance is unchanged."""
        ops = AtomicOps(redis)
        await redis.set("acct", 10)
        with pytest.raises(InvalidArgument, match="two different keys"):
            await ops.transfer("acct", "acct", 5)
        assert await redis.get("acct") == b"10"

    @pytest.mark.parametrize(
        "stored", [b"abc", b"1.5", b"1e3", b" 7", b"99999999999999999", b"007", b"-0", b"00"]
    )
    async def test_non_integer_stored_values_raise_not_an_integer(
        self, redis: Redis, stored: bytes
    ) -> None:
        """A counter INCRBY would refuse raises NotAnInteger naming the key; nothing changes."""
        ops = AtomicOps(redis)
        await redis.set("bad", stored)
        await redis.set("good", 10)
        for call in (
            ops.deduct_inventory("bad", 1),
            ops.increment_with_limit("bad", 1, 10),
            ops.transfer("bad", "good", 1),
            ops.transfer("good", "bad", 1),
        ):
            with pytest.raises(NotAnInteger) as caught:
                await call
            assert caught.value.key == "bad"
        assert await redis.get("bad") == stored
        assert await redis.get("good") == b"10"

    @pytest.mark.parametrize(
        "argv",
        [
            ["0", "1000"],
            ["-3", "1000"],
            ["nan", "1000"],
            ["1.5", "1000"],
            ["inf", "1000"],
            ["2", "0"],
        ],
    )
    async def test_scripts_recheck_arguments_before_writing(
        self, redis: Redis, argv: list[str]
    ) -> None:
        """Called directly with bad ARGV, the Lua script refuses before its first write."""
        book = ScriptBook.for_client(redis)
        await redis.set("stock", 10)
        with pytest.raises(InvalidArgument):
            await book.run("deduct_inventory", ["stock", "record"], argv)
        assert await redis.get("stock") == b"10"
        assert await redis.exists("record") == 0

    async def test_bad_keys_and_values_raise_before_any_round_trip(self, redis: Redis) -> None:
        """Empty keys, non-string values and bad ttls raise InvalidArgument."""
        ops = AtomicOps(redis)
        with pytest.raises(InvalidArgument):
            await ops.compare_and_swap("", "a", "b")
        with pytest.raises(InvalidArgument):
            await ops.compare_and_swap("k", "a", ["not", "a", "value"])
        with pytest.raises(InvalidArgument):
            await ops.increment_with_limit("k", 1, 10, ttl=0)
        with pytest.raises(InvalidArgument):
            await ops.deduct_inventory("k", 1, idempotency_key="")
        with pytest.raises(InvalidArgument):
            AtomicOps(redis, idempotency_ttl=math.inf)
        assert await redis.dbsize() == 0

    @pytest.mark.parametrize("ttl", [1e13, timedelta.max, 1e300], ids=repr)
    async def test_durations_past_2_53_ms_raise_before_any_round_trip(
        self, redis: Redis, ttl: Any
    ) -> None:
        """A ttl the scripts cannot hold raises InvalidArgument in Python, before sending."""
        before = (await redis.info("stats"))["total_commands_processed"]
        with pytest.raises(InvalidArgument, match="at most 9007199254740991 ms"):
            AtomicOps(redis, idempotency_ttl=ttl)
        with pytest.raises(InvalidArgument, match="at most 9007199254740991 ms"):
            await AtomicOps(redis).increment_with_limit("k", 1, 10, ttl=ttl)
        after = (await redis.info("stats"))["total_commands_processed"]
        assert after == before + 1  # the first INFO itself
        assert await redis.dbsize() == 0

    async def test_durations_too_large_for_a_float_raise_invalid_argument(
        self, redis: Redis
    ) -> None:
        """An int duration past a float's range raises InvalidArgument, not OverflowError."""
        with pytest.raises(InvalidArgument):
            AtomicOps(redis, idempotency_ttl=10**400)
        with pytest.raises(InvalidArgument):
            await AtomicOps(redis).increment_with_limit("k", 1, 10, ttl=10**400)
        with pytest.raises(InvalidArgument):
            AsyncLock(redis, "job", ttl=10**400)
        assert await redis.dbsize() == 0

    async def test_amounts_with_thousands_of_digits_raise_invalid_argument(
        self, redis: Redis
    ) -> None:
        """An amount past Python's int-to-text limit raises InvalidArgument, not ValueError."""
        ops = AtomicOps(redis)
        with pytest.raises(InvalidArgument, match="amount"):
            await ops.increment_with_limit("k", 10**5000, 10)
        with pytest.raises(InvalidArgument, match="ttl"):
            await ops.increment_with_limit("k", 1, 10, ttl=10**5000)
        assert await redis.dbsize() == 0

    async def test_int_enum_amounts_are_applied_as_their_integer(self, redis_url: str) -> None:
        """An IntEnum amount passes validation and is applied, not refused by the Lua script."""
        for client in (Redis.from_url(redis_url), await connect(redis_url, encoding="latin-1")):
            try:
                ops = AtomicOps(client)
                await client.delete("stock", "counter", "from", "to")
                await client.set("stock", 5)
                await client.set("from", 5)
                assert await ops.increment_with_limit("counter", Quantity.TWO, 10) == 2
                with pytest.raises(LimitExceeded) as caught:
                    await ops.increment_with_limit("counter", 1, Quantity.TWO)
                assert (caught.value.current, caught.value.limit) == (2, 2)
                assert await ops.deduct_inventory("stock", Quantity.TWO, idempotency_key="o") == 3
                assert await ops.deduct_inventory("stock", Quantity.TWO, idempotency_key="o") == 3
                assert await ops.transfer("from", "to", Quantity.ONE) == (4, 1)
            finally:
                await client.aclose()


class TestCluster:
    async def test_cross_slot_keys_are_refused_before_any_round_trip(
        self, redis_cluster: RedisCluster
    ) -> None:
        """On a cluster client, keys in different slots raise CrossSlotKeys and nothing is sent."""
        ops = AtomicOps(redis_cluster)
        await redis_cluster.set("points:alice", 10)
        stats_before = await redis_cluster.info("stats", target_nodes=RedisCluster.ALL_NODES)
        with pytest.raises(CrossSlotKeys) as caught:
            await ops.transfer("points:alice", "points:bob", 5)
        assert caught.value.keys == ("points:alice", "points:bob")
        stats_after = await redis_cluster.info("stats", target_nodes=RedisCluster.ALL_NODES)
        sent = sum(
            stats_after[node]["total_commands_processed"]
            - stats_before[node]["total_commands_processed"]
            for node in stats_after
        )
        assert sent == len(stats_after)  # only the second INFO itself, once per node
        assert await redis_cluster.get("points:alice") == b"10"

    async def test_hash_tagged_keys_work_on_a_cluster(self, redis_cluster: RedisCluster) -> None:
        """Keys sharing a {tag} transfer atomically on a cluster, idempotency record included."""
        ops = AtomicOps(redis_cluster)
        await redis_cluster.set("{user:1}:points", 10)
        result = await ops.transfer(
            "{user:1}:points", "{user:1}:reserved", 4, idempotency_key="r-1"
        )
        assert result == (6, 4)
        assert await ops.transfer(
            "{user:1}:points", "{user:1}:reserved", 4, idempotency_key="r-1"
        ) == (6, 4)
