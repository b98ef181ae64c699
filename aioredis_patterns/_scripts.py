"""ScriptBook: every Lua script of the toolkit, loaded by SHA, with a NOSCRIPT fallback.

A pattern never sends EVAL or EVALSHA itself: it asks the book of its client.
There is one book per client (:meth:`ScriptBook.for_client`), shared by every
pattern object built on that client, so the scripts are loaded once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from ._exceptions import (
    InsufficientBalance,
    InsufficientStock,
    InvalidArgument,
    LimitExceeded,
    NotAnInteger,
    ScriptError,
)
from ._fastpath import sender
from ._slots import check_same_slot, is_cluster

__all__ = ["Script", "ScriptBook", "ScriptStats", "register_error_code"]

KeyT = str | bytes
ArgT = str | bytes | int | float

ErrorFactory = Callable[[str], Exception]
"""Builds the exception for one error code from the detail text after the code."""


def _two_ints(detail: str) -> tuple[int, int]:
    first, second = detail.split()[:2]
    return int(first), int(second)


_ERROR_CODES: dict[str, ErrorFactory] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "NOT_INTEGER": NotAnInteger,
    "LIMIT_EXCEEDED": lambda d: LimitExceeded(*_two_ints(d)),
    "INSUFFICIENT_STOCK": lambda d: InsufficientStock(*_two_ints(d)),
    "INSUFFICIENT_BALANCE": lambda d: InsufficientBalance(*_two_ints(d)),
}


def register_error_code(code: str, factory: ErrorFactory) -> None:
    """Map the Lua error reply ``redis.error_reply('CODE detail')`` to an exception.

    *factory* receives the detail text (everything after ``CODE``). Codes are
    upper-case words; registering an existing code with another factory is a bug
    and raises :class:`ValueError`.
    """
    if not code.isupper() or " " in code:
        raise ValueError(f"error codes are upper-case words, got {code!r}")
    known = _ERROR_CODES.get(code)
    if known is not None and known is not factory:
        raise ValueError(f"error code {code!r} is already registered")
    _ERROR_CODES[code] = factory


@dataclass(frozen=True)
class Script:
    """One registered Lua script."""

    name: str
    source: str
    sha: str
    read_only: bool
    command: str
    """``EVALSHA``, or ``EVALSHA_RO`` for a read-only script (except on a cluster client
    reading from primaries only: see :meth:`ScriptBook.register`)."""
    fallback: str
    """``EVAL``, or ``EVAL_RO`` for a read-only script: sent on NOSCRIPT and in pipelines."""

    @classmethod
    def from_source(cls, name: str, source: str, *, encoding: str = "utf-8") -> Script:
        """The script *source*, whose SHA1 is that of the bytes a client sends.

        *encoding* is the client's: the server hashes the source as it arrives.
        """
        sha = hashlib.sha1(source.encode(encoding), usedforsecurity=False).hexdigest()
        first_line = source.lstrip().split("\n", 1)[0]
        read_only = first_line.startswith("#!lua") and "no-writes" in first_line
        suffix = "_RO" if read_only else ""
        return cls(
            name=name,
            source=source,
            sha=sha,
            read_only=read_only,
            command="EVALSHA" + suffix,
            fallback="EVAL" + suffix,
        )


@dataclass
class ScriptStats:
    """Counters of one book. Read them; do not write them."""

    evalsha: int = 0
    """EVALSHA or EVALSHA_RO calls sent."""
    eval_fallbacks: int = 0
    """Calls that met NOSCRIPT and were sent again as EVAL (which re-caches the script)."""
    loads: int = 0
    """Scripts sent with SCRIPT LOAD."""
    pipelined: int = 0
    """Script calls queued in a pipeline (always as EVAL, so they cannot meet NOSCRIPT)."""


_INCLUDE = "-- #include "
_SCRIPT_SUFFIX = re.compile(r" script: [0-9a-f]{40}, on @user_script:\d+\.$")


def _builtin_sources() -> dict[str, str]:
    """The scripts under ``lua/``, by name, with ``-- #include _name`` lines expanded.

    Files whose name starts with ``_`` are helper preludes, not scripts: Redis has
    no ``require``, so a helper is pasted where a script asks for it.
    """
    folder = resources.files(__package__ or "aioredis_patterns").joinpath("lua")
    texts = {
        entry.name.removesuffix(".lua"): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".lua")
    }

    def expand(line: str) -> str:
        if line.startswith(_INCLUDE):
            return texts[line.removeprefix(_INCLUDE).strip()].rstrip("\n")
        return line

    return {
        name: "\n".join(expand(line) for line in text.split("\n"))
        for name, text in texts.items()
        if not name.startswith("_")
    }


_BUILTINS: dict[str, str] = _builtin_sources()
_BOOK_ATTRIBUTE = "_aioredis_patterns_script_book"
"""Where a client keeps its shared book: the book refers to the client, so a client
and its book are a cycle the garbage collector frees together. (A weak-keyed map
from client to book never let either go: its value kept its key alive.)"""

_BOOKS: weakref.WeakKeyDictionary[Any, ScriptBook] = weakref.WeakKeyDictionary()
"""Books of client-like objects without an instance ``__dict__`` (kept while they live)."""


def _text_encoding(client: Any) -> str:
    """The encoding *client* sends text in (UTF-8 unless it was made with another)."""
    try:
        encoding = client.get_encoder().encoding
    except Exception:  # a client-like object without redis-py's encoder
        return "utf-8"
    return encoding if isinstance(encoding, str) else "utf-8"


def _read_only_by_keys(client: Any) -> bool:
    """Whether a read-only script on cluster *client* is better sent as EVALSHA/EVAL.

    redis-py routes EVALSHA and EVAL by their KEYS itself, but for EVALSHA_RO and
    EVAL_RO it asks a node with COMMAND GETKEYS, twice per call, and cannot route
    one with no keys at all. The _RO forms only matter where reads may go to
    replicas; a ``no-writes`` script is refused writes under EVALSHA too.
    """
    return not getattr(client, "read_from_replicas", False) and (
        getattr(client, "load_balancing_strategy", None) is None
    )


def _is_noscript(exc: ResponseError) -> bool:
    # redis-py strips a leading "ERR " and maps "NOSCRIPT" to NoScriptError, but a
    # proxy may answer "ERR NOSCRIPT ..." which arrives as a plain ResponseError.
    return isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")


class ScriptBook:
    """Lua scripts of one client, run by SHA with a NOSCRIPT fallback.

    Args:
        client: a ``redis.asyncio.Redis`` or ``RedisCluster``.
        builtins: register every script under ``aioredis_patterns/lua/`` (the default).

    Use :meth:`for_client` to get the book shared by all patterns on a client.
    """

    def __init__(self, client: Any, *, builtins: bool = True) -> None:
        self._client = client
        self._cluster = is_cluster(client)
        self._encoding = _text_encoding(client)
        self._read_only_as_plain = self._cluster and _read_only_by_keys(client)
        # on a pooled connection of its own where that loses nothing (see _fastpath)
        self._send = sender(client)
        self._scripts: dict[str, Script] = {}
        self.stats = ScriptStats()
        if builtins:
            for name, source in _BUILTINS.items():
                self.register(name, source)

    @classmethod
    def for_client(cls, client: Any) -> ScriptBook:
        """The one book shared by every pattern on *client*, made on first use."""
        try:
            # the instance's own dict: a proxying client's __getattr__ is not asked
            attributes = vars(client)
        except TypeError:
            attributes = None
        book: ScriptBook | None
        if attributes is None:
            book = _BOOKS.get(client)
            if book is None:
                book = _BOOKS[client] = cls(client)
            return book
        book = attributes.get(_BOOK_ATTRIBUTE)
        if book is None:
            book = attributes[_BOOK_ATTRIBUTE] = cls(client)
        return book

    @property
    def client(self) -> Any:
        """The client this book runs scripts on."""
        return self._client

    def register(self, name: str, source: str) -> Script:
        """Add a script under *name* (replacing nothing: a name is registered once).

        A first line ``#!lua flags=no-writes`` marks the script read-only; it then
        runs with EVALSHA_RO, which replicas accept (on a cluster client that reads
        from primaries only, with EVALSHA, which redis-py routes by the keys alone).

        Raises:
            ValueError: another source is registered under *name*, or *source* has
                text the client's encoding cannot send.
        """
        script = Script.from_source(name, source, encoding=self._encoding)
        if script.read_only and self._read_only_as_plain:
            script = dataclasses.replace(script, command="EVALSHA", fallback="EVAL")
        known = self._scripts.get(name)
        if known is not None and known.sha != script.sha:
            raise ValueError(f"a different script is already registered as {name!r}")
        self._scripts[name] = script
        return script

    def __contains__(self, name: object) -> bool:
        return name in self._scripts

    def __getitem__(self, name: str) -> Script:
        try:
            return self._scripts[name]
        except KeyError:
            raise KeyError(f"no script registered as {name!r}") from None

    @property
    def scripts(self) -> Mapping[str, Script]:
        """The registered scripts by name."""
        return dict(self._scripts)

    async def load_all(self) -> None:
        """Send SCRIPT LOAD for every registered script, in one round trip.

        Each SHA the server returns is checked against the SHA1 computed here, so a
        server or proxy that rewrites scripts is caught at startup, not at first use.
        On a cluster client the scripts are loaded on every primary.
        """
        scripts = list(self._scripts.values())
        if not scripts:
            return
        if self._cluster:
            shas = [await self._client.script_load(s.source) for s in scripts]
        else:
            async with self._client.pipeline(transaction=False) as pipe:
                for s in scripts:
                    pipe.script_load(s.source)
                shas = await pipe.execute()
        self.stats.loads += len(scripts)
        for script, sha in zip(scripts, shas, strict=True):
            got = sha.decode() if isinstance(sha, bytes) else str(sha)
            if got != script.sha:
                raise ScriptError(script.name, f"server returned SHA {got}, expected {script.sha}")

    async def run(self, name: str, keys: Sequence[KeyT] = (), args: Sequence[ArgT] = ()) -> Any:
        """Run script *name* with EVALSHA (EVALSHA_RO when read-only).

        On NOSCRIPT it sends EVAL with the source, which caches the script on that
        server again, counts the fallback, and later calls go back to EVALSHA.

        Raises:
            CrossSlotKeys: on a cluster client, when *keys* span hash slots.
            ScriptError: the script failed with an error that has no own class.
            The exception mapped to the script's ``CODE`` for a ``redis.error_reply``.
            redis.exceptions.ResponseError: a subclass of it that redis-py raises
                for the server's condition, such as ``OutOfMemoryError`` when a
                write is refused at ``maxmemory``.
        """
        script = self._scripts[name]
        if self._cluster:
            check_same_slot(self._client, keys)
        self.stats.evalsha += 1
        try:
            return await self._send((script.command, script.sha, len(keys), *keys, *args))
        except ResponseError as exc:
            if not _is_noscript(exc):
                raise self.translate(name, exc) from exc
        self.stats.eval_fallbacks += 1
        try:
            return await self._send((script.fallback, script.source, len(keys), *keys, *args))
        except ResponseError as exc:
            raise self.translate(name, exc) from exc

    async def send_command(self, *args: Any) -> Any:
        """Send one plain command on the path :meth:`run` uses, and return the raw reply.

        For commands whose reply needs no parsing (``SET ... NX``, ``GET``): redis-py's
        reply callbacks are not applied, on a plain client and on ``autopipeline()``'s,
        alone or batched. Through a cluster or single-connection client, or while
        redis-py's metrics are on, the command goes through ``execute_command`` and
        its callback applies.
        """
        return await self._send(args)

    def queue(
        self, pipe: Any, name: str, keys: Sequence[KeyT] = (), args: Sequence[ArgT] = ()
    ) -> None:
        """Queue script *name* on a redis-py pipeline.

        It is queued as EVAL with the full source: a pipeline cannot fall back after
        NOSCRIPT without replaying the commands that already ran, so it never sends
        EVALSHA. Execute the pipeline with ``raise_on_error=False`` and pass error
        results to :meth:`translate` to get the typed exception.
        """
        script = self._scripts[name]
        if self._cluster:
            check_same_slot(self._client, keys)
        self.stats.pipelined += 1
        pipe.execute_command(script.fallback, script.source, len(keys), *keys, *args)

    def translate(self, name: str, exc: BaseException) -> BaseException:
        """Map an error reply of script *name* to the toolkit's exception for its code.

        Anything that is not a Redis error reply is returned unchanged, and so is a
        reply redis-py already gave its own class (``OutOfMemoryError``,
        ``ReadOnlyError``, ``BusyLoadingError``...): a pattern raises the same
        exception for a server's condition whether it sent a script or a plain
        command.
        """
        if type(exc) is not ResponseError:
            return exc
        # An error raised from a helper function arrives with " script: <sha>, on
        # @user_script:<line>." appended; the code and detail come before it.
        message = _SCRIPT_SUFFIX.sub("", str(exc).removeprefix("ERR "))
        code, _, detail = message.partition(" ")
        factory = _ERROR_CODES.get(code)
        if factory is not None:
            try:
                return factory(detail)
            except (ValueError, TypeError):
                pass  # a malformed detail is reported as a ScriptError below
        return ScriptError(name, message)
