"""The targets docs/benchmarks.md reads from a run: which peer rows count as the same job,
which are raw calls written by hand (held to the floor's bar), and which only price what
a peer lacks."""

from __future__ import annotations

from typing import Any

from benchmarks._harness import ON_POOL
from benchmarks._report import _targets

ROUNDS = 30


def _case(label: str, rate: float, **marks: Any) -> dict[str, Any]:
    rounds = [rate] * ROUNDS
    return {"label": label, "serial_rounds": rounds, "concurrent_rounds": rounds, **marks}


def _run(peers: list[dict[str, Any]], *, ours: float = 100.0) -> list[str]:
    operation = {
        "name": "lock acquire+release",
        "ours": _case("ours", ours),
        "floor": _case("floor", 100.0),
        "peers": peers,
    }
    group = {"key": "lock", "operations": [operation], "scaling": []}
    return _targets([group], tasks=50)


def _line(lines: list[str], start: str) -> str:
    found = [line for line in lines if line.startswith(start)]
    assert len(found) == 1, lines
    return found[0]


def test_a_peer_library_doing_the_same_job_is_read_by_the_peers_target() -> None:
    """A peer library with no marks counts in "ahead of every peer library"."""
    lines = _run([_case("redis-py Lock", 80.0)])
    same_job = _line(lines, "- **Ahead of every peer library doing the same job, serially**")
    assert "ahead in 1 of 1 peer rows" in same_job
    assert not any("Not a target" in line for line in lines)


def test_a_peer_that_lacks_what_our_row_gives_is_tallied_apart_and_not_as_a_target() -> None:
    """A row whose peer lacks a guarantee is counted on the 'not a target' line only,
    and quoted there when it is behind."""
    lines = _run([_case("redis-py Lock", 80.0), _case("seed lock", 125.0, lacks="a fencing token")])
    same_job = _line(lines, "- **Ahead of every peer library doing the same job, serially**")
    assert "ahead in 1 of 1 peer rows" in same_job
    priced = _line(lines, "- *Not a target: peers that do less than our row, serially*")
    assert "behind in 1" in priced
    assert any("seed lock 0.80x" in line for line in lines)


def test_raw_calls_by_hand_are_held_to_the_floors_bar_not_to_ahead() -> None:
    """A by-hand row at 0.95x passes the floor's 0.90x bar and is not a peer-library row;
    one at 0.85x is named below the bar."""
    lines = _run(
        [
            _case("seed lock", 100 / 0.95, by_hand=True),
            _case("minimal lock", 100 / 0.85, by_hand=True),
        ]
    )
    by_hand = _line(lines, "- **Serial, at least 0.90x of the floor**: 1 of 2 rows against raw")
    assert "minimal lock 0.85x" in by_hand
    assert not any("peer library doing the same job" in line for line in lines)


def test_our_own_pattern_on_the_pool_is_never_a_peer() -> None:
    """The autopipeline group's 'on the pool' row is ours: no target reads it."""
    lines = _run([_case(f"AsyncLock{ON_POOL}", 200.0)])
    assert lines == [_line(lines, "- **Serial, at least 0.90x of the floor**: 1 of 1 operations")]
