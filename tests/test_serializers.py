"""Serializers: plain JSON by default, msgpack as a lazy extra, pickle by name, custom ones."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from typing import Any

import pytest
from redis.asyncio import Redis

from aioredis_patterns import (
    AsyncCache,
    AsyncPubSub,
    InvalidArgument,
    JsonSerializer,
    MsgpackSerializer,
    PickleSerializer,
    SerializationError,
    Serializer,
)
from aioredis_patterns._serializers import resolve_serializer

MISSING = object()


class Point:
    """A plain class: pickle stores it, JSON and msgpack refuse it."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    __hash__ = None  # type: ignore[assignment]


class ReversedText:
    """A custom serializer: UTF-8 text stored back to front."""

    def dumps(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise SerializationError(f"ReversedText stores str, not {type(value).__name__}")
        return value[::-1].encode()

    def loads(self, data: bytes) -> Any:
        return data.decode()[::-1]


class TestJson:
    def test_writes_compact_utf8_without_envelope(self):
        """JSON is compact, keeps non-ASCII text as UTF-8 and adds nothing around the value."""
        data = JsonSerializer().dumps({"name": "Zoë", "ids": [1, 2]})
        assert data == '{"name":"Zoë","ids":[1,2]}'.encode()
        assert json.loads(data) == {"name": "Zoë", "ids": [1, 2]}

    def test_round_trips_json_values(self):
        """JSON values, None included, decode to what was encoded."""
        serializer = JsonSerializer()
        values: list[Any] = [None, True, 0, -1.5, "", "text", [], {}, {"a": [1, {"b": None}]}]
        for value in values:
            assert serializer.loads(serializer.dumps(value)) == value

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), {1, 2}, b"raw"])
    def test_refuses_what_is_not_json_with_a_type_error(self, value):
        """NaN, infinities, sets, bytes, other objects: SerializationError (a TypeError)."""
        with pytest.raises(TypeError) as info:
            JsonSerializer().dumps(value)
        assert isinstance(info.value, SerializationError)

    def test_default_and_object_hook_extend_it(self):
        """default= encodes extra types and object_hook= rebuilds them."""
        serializer = JsonSerializer(
            default=lambda v: {"date": v.isoformat()},
            object_hook=lambda d: date.fromisoformat(d["date"]) if "date" in d else d,
        )
        assert serializer.loads(serializer.dumps([date(2024, 5, 1)])) == [date(2024, 5, 1)]


class TestMsgpack:
    def test_round_trips_and_keeps_bytes_apart_from_text(self):
        """msgpack keeps bytes and str distinct and decodes what it encoded."""
        serializer = MsgpackSerializer()
        value = {"raw": b"\x00\xff", "text": "x", "n": [1, 2.5, None]}
        assert serializer.loads(serializer.dumps(value)) == value

    def test_refuses_unsupported_types(self):
        """An object msgpack cannot pack raises SerializationError."""
        with pytest.raises(SerializationError):
            MsgpackSerializer().dumps(Point(1, 2))
        with pytest.raises(SerializationError):
            MsgpackSerializer().dumps(2**70)

    def test_is_imported_only_when_chosen(self):
        """Importing the package does not import msgpack; choosing the serializer does."""
        code = (
            "import sys, redis.asyncio, aioredis_patterns as p\n"
            "before = 'msgpack' in sys.modules\n"
            "p.AsyncCache(redis.asyncio.Redis(), serializer='msgpack')\n"
            "print(before, 'msgpack' in sys.modules)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        )
        assert done.stdout.split() == ["False", "True"]

    def test_missing_package_names_the_extra(self, monkeypatch):
        """Without msgpack installed, choosing it raises ModuleNotFoundError naming the extra."""
        monkeypatch.setitem(sys.modules, "msgpack", None)
        with pytest.raises(ModuleNotFoundError, match=r"aioredis_patterns\[msgpack\]"):
            resolve_serializer("msgpack")


class TestPickle:
    def test_round_trips_python_objects(self):
        """pickle stores objects JSON cannot (class instances, sets, tuples) unchanged."""
        serializer = PickleSerializer()
        value = {"p": Point(1, 2), "s": {1, 2}, "t": (1, "a")}
        assert serializer.loads(serializer.dumps(value)) == value

    def test_refuses_unpicklable_values(self):
        """A lambda cannot be pickled: SerializationError."""
        with pytest.raises(SerializationError):
            PickleSerializer().dumps(lambda: 1)


class TestChoosing:
    def test_names_and_objects(self):
        """Names pick built-ins; an object with dumps/loads is used as is; others refused."""
        assert isinstance(resolve_serializer("json"), JsonSerializer)
        assert isinstance(resolve_serializer("pickle"), PickleSerializer)
        custom = ReversedText()
        assert resolve_serializer(custom) is custom
        assert isinstance(custom, Serializer)
        with pytest.raises(InvalidArgument):
            resolve_serializer("yaml")
        with pytest.raises(InvalidArgument):
            resolve_serializer(object())  # type: ignore[arg-type]

    async def test_a_serializer_class_instead_of_an_instance_is_refused(self, redis: Redis) -> None:
        """Passing JsonSerializer (the class) raises InvalidArgument, not a miss on every read."""
        with pytest.raises(InvalidArgument, match="instance"):
            AsyncCache(redis, serializer=JsonSerializer)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="instance"):
            AsyncPubSub(redis, codec=MsgpackSerializer)
        await redis.set("k", b'{"a":1}')
        assert await AsyncCache(redis, serializer=JsonSerializer()).get("k") == {"a": 1}


class TestThroughRedis:
    @pytest.mark.parametrize("name", ["json", "msgpack", "pickle"])
    async def test_each_builtin_stores_none_apart_from_a_miss(self, redis: Redis, name):
        """Every built-in keeps a stored None and a value through Redis, apart from a miss."""
        cache = AsyncCache(redis, namespace=f"{name}:", serializer=name)
        await cache.set("none", None)
        await cache.set("value", {"a": [1, 2]})
        assert await cache.get("none", MISSING) is None
        assert await cache.get("value") == {"a": [1, 2]}
        assert await cache.get("absent", MISSING) is MISSING

    async def test_pickle_stores_objects_json_cannot(self, redis: Redis):
        """The pickle serializer stores a class instance and get_or_load returns it on a hit."""
        cache = AsyncCache(redis, namespace="pk:", serializer="pickle")

        async def load() -> Point:
            return Point(3, 4)

        assert await cache.get_or_load("p", load) == Point(3, 4)
        assert await cache.get("p") == Point(3, 4)

    async def test_custom_serializer_bytes_are_what_redis_holds(self, redis: Redis):
        """A custom serializer's bytes are stored verbatim and decoded by it on read."""
        cache = AsyncCache(redis, namespace="rev:", serializer=ReversedText())
        await cache.set("k", "hello")
        assert await redis.get("rev:k") == b"olleh"
        assert await cache.get("k") == "hello"
        with pytest.raises(SerializationError):
            await cache.set("k2", 5)
        assert await redis.exists("rev:k2") == 0

    async def test_bytes_of_another_serializer_are_a_logged_miss(self, redis: Redis, caplog):
        """msgpack bytes read by a JSON cache are corrupt to it: a miss, not a crash."""
        await AsyncCache(redis, namespace="x:", serializer="msgpack").set("k", {"a": 1})
        assert await AsyncCache(redis, namespace="x:").get("k", MISSING) is MISSING
        assert "does not decode" in caplog.text

    async def test_a_dict_with_int_keys_is_read_back_from_the_cache(self, redis: Redis) -> None:
        """A msgpack cache returns the int-keyed dict it stored, instead of a miss on every read."""
        cache = AsyncCache(redis, namespace="m:", serializer="msgpack")
        value: dict[Any, str] = {1: "one", 2: "two", None: "none", 1.5: "half"}
        await cache.set("k", value)
        assert await redis.exists("m:k") == 1
        assert await cache.get("k", "miss") == value
        assert (cache.stats.hits, cache.stats.misses) == (1, 0)
