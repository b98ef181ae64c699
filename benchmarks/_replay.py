"""The floor of a script-based operation: the same EVALSHA calls, sent raw with redis-py.

A pattern's operation is recorded twice, on two key ids, through a ScriptBook that
notes every ``run``, and every plain command it sends (a lock's ``SET NX``).
Comparing the two recordings tells, for each key and argument, whether it is a
constant, depends on the key id, or is made fresh for each call (a lock token, a
sliding-log member). The replay then sends the very same scripts and commands with
``client.execute_command``, substituting the key id and a cheap per-call unique
string, with no validation, no result parsing and no objects: what a careful
engineer would write by hand.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from aioredis_patterns import ScriptBook

Arg = str | bytes | int | float


@dataclass(frozen=True)
class Call:
    name: str
    keys: tuple[Arg, ...]
    args: tuple[Arg, ...]
    script: bool = True
    """False for a plain command: *name* is the command, *args* the rest of it."""


class RecordingBook(ScriptBook):
    """A ScriptBook that notes each script call and plain command before sending it."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.calls: list[Call] = []

    async def run(
        self, name: str, keys: Sequence[str | bytes] = (), args: Iterable[Arg] = ()
    ) -> Any:
        args = tuple(args)
        self.calls.append(Call(name, tuple(keys), args))
        return await super().run(name, keys, args)

    async def send_command(self, *args: Any) -> Any:
        self.calls.append(Call(str(args[0]), (), tuple(args[1:]), script=False))
        return await super().send_command(*args)


Operation = Callable[[ScriptBook, str, str], Awaitable[object]]
"""One pattern operation run with a given book, key id and caller-made unique string."""


async def record(client: Redis, operation: Operation, key_id: str, unique: str) -> list[Call]:
    """The script calls one *operation* on *key_id* makes."""
    book = RecordingBook(client)
    await operation(book, key_id, unique)
    return book.calls


# Stand-ins for the key id and the caller's per-call unique string in a template
# (not str.format: keys may hold braces).
_ID = "\x00id\x00"
_UNIQUE = "\x00unique\x00"

# A part of a replayed call: ("const", value), ("template", text) or ("unique", slot).
_Part = tuple[str, Any]


def _parts(
    first: Sequence[Arg],
    second: Sequence[Arg],
    names: tuple[str, str, str, str],
    slots: dict[Arg, int],
) -> list[_Part]:
    id_a, id_b, unique_a, unique_b = names
    parts: list[_Part] = []
    for a, b in zip(first, second, strict=True):
        if a == b:
            parts.append(("const", a))
            continue
        if isinstance(a, str) and isinstance(b, str):
            template = a.replace(id_a, _ID).replace(unique_a, _UNIQUE)
            if template != a and template.replace(_ID, id_b).replace(_UNIQUE, unique_b) == b:
                parts.append(("template", template))
                continue
        # Made fresh per call by the pattern (a token, a member): one unique string
        # per call, shared by every position that held the same value when recorded.
        parts.append(("unique", slots.setdefault(a, len(slots))))
    return parts


def _fill(parts: list[_Part], key_id: str, unique: str) -> list[Any]:
    out: list[Any] = []
    for kind, value in parts:
        if kind == "const":
            out.append(value)
        elif kind == "template":
            out.append(value.replace(_ID, key_id).replace(_UNIQUE, unique))
        else:
            out.append(f"{unique}.{value}")
    return out


class Replay:
    """Sends the recorded scripts raw, for a given key id and per-call unique string."""

    def __init__(
        self,
        client: Redis,
        book: ScriptBook,
        calls: list[tuple[str, list[_Part], list[_Part], bool]],
    ) -> None:
        self._client = client
        self._calls = calls
        # each step: the command's fixed head, then the parts filled in per call
        self._steps: list[tuple[tuple[Any, ...], list[_Part]]] = [
            (
                ("EVALSHA_RO" if book[name].read_only else "EVALSHA", book[name].sha, len(keys))
                if script
                else (name,),
                keys + args,
            )
            for name, keys, args, script in calls
        ]
        self.names = [name for name, _, _, _ in calls]
        """The recorded script names and plain command names, in order."""
        self.label = "raw " + " + ".join(
            f"EVALSHA {name}" if script else name for name, _, _, script in calls
        )
        """How the floor row names itself: ``raw SET + EVALSHA lock_release``."""

    @classmethod
    async def build(
        cls,
        client: Redis,
        book: ScriptBook,
        operation: Operation,
    ) -> Replay:
        """Record *operation* on two key ids and build the raw replay of its calls.

        The key ids are ``replay-a`` and ``replay-b``: prepare their state first.
        """
        names = ("replay-a", "replay-b", "unique-a", "unique-b")
        first = await record(client, operation, names[0], names[2])
        second = await record(client, operation, names[1], names[3])
        if [c.name for c in first] != [c.name for c in second] or not first:
            raise RuntimeError(f"cannot replay: the calls differ between runs: {first} {second}")
        slots: dict[Arg, int] = {}
        calls = []
        for a, b in zip(first, second, strict=True):
            keys = _parts(a.keys, b.keys, names, slots)
            args = _parts(a.args, b.args, names, slots)
            calls.append((a.name, keys, args, a.script))
        return cls(client, book, calls)

    def arguments(self, key_id: str, unique: str) -> list[tuple[list[Any], list[Any]]]:
        """(keys, args) of each recorded call, for *key_id* and a per-call *unique*."""
        return [
            (_fill(keys, key_id, unique), _fill(args, key_id, unique))
            for _, keys, args, _ in self._calls
        ]

    async def __call__(self, key_id: str, unique: str) -> None:
        execute: Callable[..., Awaitable[Any]] = self._client.execute_command
        for head, parts in self._steps:
            await execute(*head, *_fill(parts, key_id, unique))
