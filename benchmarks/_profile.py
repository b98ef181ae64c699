"""Where one operation's CPU time goes: py-spy samples of this process, sorted into layers.

py-spy samples from outside the process (``--nonblocking``), so the operation runs
at full speed while it is observed. Only samples of the running thread count (no
``--idle``): waiting for Redis costs no CPU. The process's CPU time over the sampled
window, divided by the operations done in it, gives CPU microseconds per operation;
each layer gets its share of the samples. CPU time is used rather than wall time
because on a busy machine a descheduled process would otherwise charge its wait
for a core to whatever frame it was in (usually a socket write).

Each sample's stack is read from the innermost frame outwards; the first frame that
belongs to a known layer gets the sample. Standard-library helpers (json, uuid,
secrets, random, time...) are skipped over, so their cost lands on the layer that
called them: ``json.dumps`` called from the cache counts as the toolkit's time.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._harness import Progress

SAMPLE_RATE = 1000
"""py-spy samples per second."""

LAYERS = (
    "toolkit",
    "redis-py",
    "asyncio",
    "anyio",
    "selector (epoll)",
    "peer library",
    "benchmark loop",
    "other",
)

_PEERS = ("/aiocache/", "/cashews/", "/limits/", "/pottery/", "/aioredlock/", "/aioredis/")


@dataclass
class Profile:
    """Per-op microseconds by layer, and the toolkit's hottest lines."""

    label: str
    ops: int
    us_per_op: float
    """CPU microseconds per operation (process time over the sampled window)."""
    layers_us: dict[str, float]
    wall_us_per_op: float = 0.0
    hot_lines: list[tuple[str, float]] = field(default_factory=list)
    """("file:line function", microseconds per op) of toolkit code, hottest first."""
    text: str = ""
    """py-spy's collapsed stacks, for flamegraph tools."""

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "ops": self.ops,
            "cpu_us_per_op": round(self.us_per_op, 2),
            "wall_us_per_op": round(self.wall_us_per_op, 2),
            "layers_us_per_op": {k: round(v, 2) for k, v in self.layers_us.items()},
            "toolkit_hot_lines_us_per_op": [[k, round(v, 2)] for k, v in self.hot_lines],
        }


def _layer(path: str, function: str) -> str | None:
    if "/aioredis_patterns/" in path and "/testing/" not in path:
        return "toolkit"
    if "/site-packages/redis/" in path or "/redis/asyncio/" in path or "hiredis" in path:
        return "redis-py"
    if any(peer in path for peer in _PEERS):
        return "peer library"
    if path.endswith("selectors.py") and function.rpartition(".")[2] in {"select", "poll"}:
        return "selector (epoll)"
    if "/anyio/" in path:
        return "anyio"
    if "/asyncio/" in path:
        return "asyncio"
    if "/benchmarks/" in path:
        return "benchmark loop"
    return None


def _frame(text: str) -> tuple[str, str, str]:
    """(function, path, line) of one py-spy frame, ``function (path:line)``."""
    function, _, where = text.rpartition(" (")
    path, _, line = where.rstrip(")").rpartition(":")
    return function, path, line


def _short(path: str) -> str:
    marker = "/aioredis_patterns/"
    index = path.rfind(marker)
    return "aioredis_patterns/" + path[index + len(marker) :] if index >= 0 else path


def summarize(label: str, collapsed: str, ops: int, cpu_seconds: float) -> Profile:
    """Share *cpu_seconds* among layers as py-spy's collapsed stacks say, per op."""
    layers: dict[str, float] = defaultdict(float)
    lines: dict[str, float] = defaultdict(float)
    for record in collapsed.splitlines():
        stack, _, count_text = record.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if frames[0].startswith("Thread._bootstrap"):
            continue  # another thread (asyncio's child watcher): not the event loop
        seconds = float(count_text)
        for text in reversed(frames):
            function, path, line = _frame(text)
            layer = _layer(path, function)
            if layer is not None:
                layers[layer] += seconds
                if layer == "toolkit":
                    lines[f"{_short(path)}:{line} {function}"] += seconds
                break
        else:
            layers["other"] += seconds
    samples = sum(layers.values()) or 1.0
    scale = cpu_seconds * 1e6 / max(ops, 1) / samples
    return Profile(
        label=label,
        ops=ops,
        us_per_op=cpu_seconds * 1e6 / max(ops, 1),
        layers_us={layer: layers.get(layer, 0.0) * scale for layer in LAYERS},
        hot_lines=[
            (where, s * scale) for where, s in sorted(lines.items(), key=lambda i: -i[1])[:8]
        ],
        text=collapsed,
    )


def _read(path: str) -> str:
    try:
        return Path(path).read_text("utf-8")
    except OSError:
        return ""


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def profile(
    label: str, target: AbstractAsyncContextManager[Progress], seconds: float
) -> Profile:
    """Sample this process with py-spy for *seconds* while *target* runs in the background.

    *target* is entered (and warmed up) before sampling starts; its progress
    function tells how many operations or deliveries happened while sampled.

    Raises:
        RuntimeError: py-spy is missing or cannot attach (it needs ptrace rights).
    """
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed")
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "profile.txt")
        async with target as progress:
            await asyncio.sleep(0.2)  # warm caches and connections before sampling
            process = await asyncio.create_subprocess_exec(
                binary, "record", "--pid", str(os.getpid()),
                "--duration", f"{max(1, round(seconds))}", "--rate", str(SAMPLE_RATE),
                "--format", "raw", "--output", output,
                "--nonblocking", "--full-filenames",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            assert process.stdout is not None
            banner = await process.stdout.readline()
            if b"Sampling" not in banner:
                await process.wait()
                raise RuntimeError(f"py-spy did not start: {banner.decode(errors='replace')}")
            before, cpu, wall = progress(), time.process_time(), time.perf_counter()
            await process.wait()
            ops = progress() - before
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        collapsed = await asyncio.to_thread(_read, output)
        if process.returncode != 0 or not collapsed:
            tail = (await process.stdout.read()).decode(errors="replace")
            raise RuntimeError(f"py-spy failed: {tail.strip()}")
    summary = summarize(label, collapsed, ops, cpu)
    summary.wall_us_per_op = wall * 1e6 / max(ops, 1)
    return summary
