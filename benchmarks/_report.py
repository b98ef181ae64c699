"""Console tables, JSON, the markdown report and the PNG chart of one run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._harness import CONTROL, ON_POOL, ComparisonResult, Measurement
from ._results import RunResult
from ._scaling import scaling_rounds
from ._stats import Interval, compare, median, median_interval, verdict

# --- console ---------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ci(interval: Interval | None, digits: int = 2) -> str:
    return "" if interval is None else f" ({interval[0]:.{digits}f}-{interval[1]:.{digits}f})"


def _cmds(m: Measurement) -> str:
    return "-" if m.commands_per_op is None else f"{m.commands_per_op:.1f}"


def _rt(m: Measurement) -> str:
    return "-" if m.round_trips_per_op is None else f"{m.round_trips_per_op:.1f}"


def format_comparison(c: ComparisonResult, tasks: int) -> str:
    """The console block of one operation: ours, the floor and the peers, with ratios."""
    lines = [
        f"{c.name}",
        f"    {'':<58} {'serial/s':>10} {f'{tasks} tasks/s':>12} {'RT/op':>6} {'cmds/op':>8}"
        f"   ours/this serial, at {tasks}",
    ]

    def row(kind: str, m: Measurement, with_ratio: bool) -> str:
        label = f"{kind}{m.label}"
        if m.unavailable:
            return f"    {label:<58} not measured: {m.unavailable}"
        text = (
            f"    {label:<58} {_rate(m.serial):>10} {_rate(m.concurrent):>12} {_rt(m):>6}"
            f" {_cmds(m):>8}"
        )
        if with_ratio:
            for mode in ("serial", "concurrent"):
                value, interval = c.ours.compared(m, mode)
                text += f"   {_x(value):>6}{_ci(interval):<12}"
        return text

    lines.append(row("ours   ", c.ours, False))
    if c.floor is not None:
        lines.append(row("floor  ", c.floor, True))
    lines.extend(
        row("peer   ", p, True) + ("" if p.lacks is None else f"   ({_no(p.lacks)})")
        for p in c.peers
    )
    return "\n".join(lines)


# --- JSON --------------------------------------------------------------------------------


def write_json(run: RunResult, *paths: Path) -> None:
    text = json.dumps(run.as_json(), indent=2, sort_keys=False) + "\n"
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


# --- markdown (from the JSON, so a saved run can be rendered again) ----------------------

Data = dict[str, Any]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out


def _d_rate(m: Data, column: str) -> str:
    return _rate(m.get(f"{column}_ops_per_s"))


def _d_costs(m: Data) -> str:
    rt, cmds = m.get("round_trips_per_op"), m.get("server_commands_per_op")
    return f"{'-' if rt is None else f'{rt:.1f}'} / {'-' if cmds is None else f'{cmds:.1f}'}"


def _d_over(ours: Data, m: Data, column: str) -> tuple[float | None, Interval | None]:
    """ours/m in *column* ("serial" or "concurrent"): the median and its 95% interval,
    from the per-round ops/s the JSON keeps (see ``_stats``)."""
    if ours.get("unavailable") or m.get("unavailable"):
        return None, None
    return compare(ours[f"{column}_rounds"], m[f"{column}_rounds"])


def _d_ratio(ours: Data, m: Data, column: str, *, bold: bool = False) -> str:
    """The ratio cell: the median (bold if asked) and its 95% interval."""
    value, interval = _d_over(ours, m, column)
    return (f"**{_x(value)}**" if bold and value is not None else _x(value)) + _ci(interval)


def _machine(meta: Data) -> list[str]:
    m = meta["machine"]
    peers = ", ".join(f"{k} {v}" for k, v in sorted(meta.get("peer_versions", {}).items()))
    rows = [
        ["CPU", f"{m['cpu']}, {m['nproc']} cores (nproc)"],
        ["load average at start (1/5/15 min)", " / ".join(str(x) for x in m["loadavg_at_start"])],
        ["OS", m["platform"]],
        ["Python", f"{m['python']} ({m['python_implementation']})"],
        ["Redis server", str(m["redis_server"])],
        ["redis-py / hiredis / anyio", f"{m['redis_py']} / {m['hiredis']} / {m['anyio']}"],
        ["peer libraries", peers or "-"],
    ]
    return _table(["", ""], rows)


def _measured(data: Data) -> list[Data]:
    return [g for g in data["groups"] if g["status"] == "ok"]


def _control_note(groups: list[Data], tasks: int) -> list[str]:
    """The bullet quoting this run's A/A control, or nothing when it did not run."""
    for g in groups:
        for op in g["operations"] if g["key"] == "floor" else []:
            if op["name"] == CONTROL and op["floor"] and not op["floor"].get("unavailable"):
                serial, concurrent = (
                    _d_ratio(op["ours"], op["floor"], m) for m in ("serial", "concurrent")
                )
                return [
                    "- *Noise*: the A/A control runs one raw GET as two cases, measured like "
                    f"any other pair. In this run it read {serial} serially and {concurrent} "
                    f"at {tasks} tasks, where a quiet machine would read 1.00x."
                ]
    return []


_Row = tuple[str, float, Interval | None]
"""A ratio to judge: what it compares, its median and its 95% interval."""


def _quote(rows: list[_Row]) -> str:
    # Three digits: an interval ending at 0.997 is "behind", which 1.00 would hide.
    return "; ".join(f"{what} {_x(value)}{_ci(ci, 3)}" for what, value, ci in rows)


Pick = Callable[[Data], list[Data]]
"""Chooses, from one operation, the cases its ratios are taken against."""


def _floor_of(op: Data) -> list[Data]:
    return [op["floor"]] if op["floor"] else []


def _on_pool(peer: Data) -> bool:
    """Whether a "peer" is our own pattern on the pool (the autopipeline rows compare
    with it): not a peer at all, so no target reads it."""
    return bool(peer["label"].endswith(ON_POOL))


def _peers(*, same_job: bool, by_hand: bool | None = None) -> Pick:
    """The peers of an operation that do its job (or, not *same_job*, those that do
    less: ``lacks``), by hand or libraries (``by_hand``; None: either), never our own
    pattern on the pool."""

    def pick(op: Data) -> list[Data]:
        return [
            p
            for p in op["peers"]
            if not _on_pool(p)
            and (p.get("lacks") is None) == same_job
            and (by_hand is None or bool(p.get("by_hand")) == by_hand)
        ]

    return pick


def _ratios(groups: list[Data], column: str, pick: Pick) -> list[_Row]:
    """Every pattern row's ratio, in *column*, to each case that *pick* chooses."""
    rows: list[_Row] = []
    for g in groups:
        if g["key"] == "floor":
            continue
        for op in g["operations"]:
            for other in pick(op):
                value, ci = _d_over(op["ours"], other, column)
                if value is not None:
                    what = op["name"]
                    if other is not op["floor"]:
                        what += f" vs {other['label']}"
                    rows.append((what, value, ci))
    return rows


def _targets(groups: list[Data], tasks: int) -> list[str]:
    """The benchmark's targets, each read from this run's ratios and their intervals."""
    out: list[str] = []
    for what, pick in (
        ("operations", _floor_of),
        (
            "rows against raw calls written by hand (the seed's code) doing the same job",
            _peers(same_job=True, by_hand=True),
        ),
    ):
        floor = _ratios(groups, "serial", pick)
        if floor:
            below = [r for r in floor if r[1] < 0.9]
            out.append(
                f"- **Serial, at least 0.90x of the floor**: {len(floor) - len(below)} of "
                f"{len(floor)} {what}"
                + (f"; below: {_quote(below)}." if below else "; none below.")
            )
    for same_job in (True, False):
        for column, mode in (("serial", "serially"), ("concurrent", f"at {tasks} tasks")):
            rows = _ratios(
                groups, column, _peers(same_job=same_job, by_hand=False if same_job else None)
            )
            if rows:
                title = (
                    f"**Ahead of every peer library doing the same job, {mode}**"
                    if same_job
                    else f"*Not a target: peers that do less than our row, {mode}*"
                )
                out += _tally(title, rows)
    scaling = [s for g in groups for s in g["scaling"] if not s.get("error") and s["rows"]]
    for column, mode in (("serial", "serially"), ("concurrent", f"at {tasks} tasks")):
        ratios = [
            (s["name"], median(xs), median_interval(xs))
            for s in scaling
            if (xs := s["paired_ratios"].get(column))
        ]
        values = [v for _, v, _ in ratios if v is not None]
        if values:
            holds = sum(1 for _, _, ci in ratios if verdict(ci) == "level")
            out.append(
                f"- **Near-flat from 1,000 to 1,000,000 keys, {mode}**: 1M/1k "
                f"{min(values):.2f}-{max(values):.2f}x over {len(values)} operations; the "
                f"interval holds 1.00x in {holds} of them."
            )
    return out


def _tally(title: str, rows: list[_Row]) -> list[str]:
    """A target's line: how many of *rows* are ahead, level and behind, and which not ahead."""
    by: dict[str | None, list[_Row]] = {}
    for row in rows:
        by.setdefault(verdict(row[2]), []).append(row)
    ahead, level, behind = (by.get(v, []) for v in ("ahead", "level", "behind"))
    return [
        f"- {title}: ahead in {len(ahead)} of {len(rows)} peer rows (interval above 1.00x), "
        f"level in {len(level)} (interval holds 1.00x), behind in {len(behind)} (interval "
        "below 1.00x)"
        + (f"; {len(by[None])} have no interval (too few rounds)." if None in by else "."),
        *(f"  - {name}: {_quote(r)}." for name, r in (("Level", level), ("Behind", behind)) if r),
    ]


def _pattern_rows(groups: list[Data]) -> list[list[str]]:
    rows = []
    for g in groups:
        if g["key"] == "floor":
            continue
        for op in g["operations"]:
            ours, f = op["ours"], op["floor"]
            if ours.get("unavailable"):
                rows.append([op["name"], f"not measured: {ours['unavailable']}", *["-"] * 8])
                continue
            rows.append(
                [
                    op["name"],
                    _d_rate(ours, "serial"),
                    _d_rate(ours, "concurrent"),
                    _d_costs(ours),
                    f["label"] if f else "-",
                    _d_rate(f, "serial") if f else "-",
                    _d_rate(f, "concurrent") if f else "-",
                    _d_costs(f) if f else "-",
                    _d_ratio(ours, f, "serial", bold=True) if f else "-",
                    _d_ratio(ours, f, "concurrent", bold=True) if f else "-",
                ]
            )
    return rows


def _peer_rows(groups: list[Data], *, floor: bool) -> list[list[str]]:
    rows = []
    for g in groups:
        if (g["key"] == "floor") != floor:
            continue
        for op in g["operations"]:
            for p in op["peers"]:
                job = [] if floor else [_job(p)]
                if p.get("unavailable"):
                    rows.append([op["name"], p["label"], *job, "-", "-", "-", "-", "-"])
                    rows[-1][-1] = f"not measured: {p['unavailable']}"
                    continue
                rows.append(
                    [
                        op["name"],
                        p["label"],
                        *job,
                        _d_rate(p, "serial"),
                        _d_rate(p, "concurrent"),
                        _d_costs(p),
                        _d_ratio(op["ours"], p, "serial", bold=True),
                        _d_ratio(op["ours"], p, "concurrent", bold=True),
                    ]
                )
    return rows


def _job(peer: Data) -> str:
    """The "same job" cell of a peer row."""
    if _on_pool(peer):
        return "ours, on the pool"
    lacks = peer.get("lacks")
    if lacks is not None:
        return f"no: it has {_no(lacks)}"
    return "yes, by hand: the floor's bar" if peer.get("by_hand") else "yes"


def _no(guarantee: str) -> str:
    """ "a fencing token" -> "no fencing token"."""
    return "no " + guarantee.removeprefix("a ")


def _scaling_rows(groups: list[Data]) -> list[list[str]]:
    rows = []
    for g in groups:
        for s in g["scaling"]:
            if s.get("error"):
                rows.append([s["name"], "-", "-", "-", "-", f"failed: {s['error']}"])
                continue
            for row in s["rows"]:
                note = f" ({row['note']})" if row.get("note") else ""
                rows.append(
                    [
                        s["name"] + note,
                        f"{row['keys']:,}",
                        _rate(row["serial_ops_per_s"]),
                        _rate(row["concurrent_ops_per_s"]),
                        f"{row['used_memory_mb']:,} MB",
                        "",
                    ]
                )
            if s["rows"]:
                rows[-1][-1] = (
                    f"{_x(s['serial_ratio_large_to_small'])} / "
                    f"{_x(s['concurrent_ratio_large_to_small'])}"
                )
    return rows


def _memory_rows(groups: list[Data]) -> tuple[list[str], list[list[str]]]:
    limits: list[int] = sorted({m["limit"] for g in groups for m in g["memory"]})
    by_algorithm: dict[str, dict[int, str]] = {}
    for g in groups:
        for m in g["memory"]:
            cell = "-" if m["bytes"] is None else f"{m['bytes']:,} B"
            if m.get("note"):
                cell += f" ({m['note']})"
            by_algorithm.setdefault(m["algorithm"], {})[m["limit"]] = cell
    header = ["algorithm", *(f"limit {limit:,}" for limit in limits)]
    rows = [[a, *(cells.get(limit, "-") for limit in limits)] for a, cells in by_algorithm.items()]
    return header, rows


def _profile_section(groups: list[Data]) -> list[str]:
    out: list[str] = []
    for g in groups:
        profiles = g["profiles"]
        if not profiles:
            continue
        layers = [
            k
            for k in profiles[0]["layers_us_per_op"]
            if any(p["layers_us_per_op"].get(k, 0) >= 0.05 for p in profiles)
        ]
        out += ["", f"### {g['title']}: {profiles[0]['label']}", ""]
        header = ["per operation", *(p["label"] for p in profiles)]
        rows = [
            ["wall µs", *(f"{p['wall_us_per_op']:.1f}" for p in profiles)],
            ["CPU µs", *(f"{p['cpu_us_per_op']:.1f}" for p in profiles)],
        ]
        rows += [
            [f"CPU µs in {k}", *(f"{p['layers_us_per_op'].get(k, 0):.1f}" for p in profiles)]
            for k in layers
        ]
        out += _table(header, rows)
        hot = profiles[0]["toolkit_hot_lines_us_per_op"]
        if hot:
            out += ["", "Hottest toolkit lines (CPU µs per op, with the helpers they call):", ""]
            out += [f"- `{where}`: {us:.2f}" for where, us in hot]
    return out


def write_markdown(data: Data, path: Path, analysis: str | None) -> None:
    """docs/benchmarks.md from a run's JSON, with the hand-written *analysis* appended."""
    meta = data["meta"]
    groups = data["groups"]
    measured = _measured(data)
    tasks = meta["tasks"]
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m benchmarks` from docs/benchmarks.json; edit",
        "     benchmarks/analysis.md and re-render with `python -m benchmarks --render`. -->",
        "",
        f"Last run: {meta['date']}, {meta['total_seconds']:.0f} s, with:",
        "",
        "```",
        meta["command"],
        "```",
        "",
        "`nox -s bench -- <the same options>` runs the same in a fresh virtualenv with the "
        "peer libraries of `benchmarks/requirements.txt`. The benchmark starts its own "
        "`redis-server`.",
        "",
        "## Machine",
        "",
        *_machine(meta),
        "",
        "## How to read this",
        "",
        f"- Each case runs {meta['duration']} s per mode, split into {meta['rounds']} rounds "
        "interleaved with the other cases of the same operation, in an order that turns "
        "by one case each round so that no case always runs first; the ops/s columns show "
        "each case's best round. A ratio is the median, over the rounds, of the two cases' "
        "ops/s in the same round (they ran back to back), so a burst of load from another "
        "process spoils one round's ratio rather than the result. A garbage collection "
        "runs before every case's round, so that no case pays for the garbage another one "
        "left (it scans what was made since the comparison began; the rest of the heap is "
        "frozen). "
        f"*serial* is one task awaiting each call; *{tasks} tasks* is {tasks} tasks sharing "
        "one client (for pub/sub: handler tasks, see the notes).",
        "- After each ratio, in brackets, the 95% confidence interval of its median, "
        "from the per-round ratios, assuming nothing about the noise but that rounds are "
        "independent (the k-th smallest to the k-th largest round, k from the binomial "
        "distribution). A ratio whose interval holds 1.00x is a tie in this run; one whose "
        "interval lies above 1.00x is ahead.",
        *_control_note(measured, tasks),
        "- Redis runs on the same 2-core machine as the Python process, so both compete "
        "for the cores, as do other processes: see the load average above.",
        "- **ours/floor** is the pattern's ops/s over the raw redis-py call with the same "
        "round trips (for script operations: EVALSHA of the very same script with the same "
        "keys and arguments, sent with `execute_command`, nothing parsed). **ours/peer** is "
        "the pattern's ops/s over the peer's. Above 1.00x the pattern is faster.",
        '- *Same job*: a peer row reads "no" where the peer lacks something that our '
        "row gives: no peer lock draws a fencing token, the seed's `GetUser` has no "
        "stampede guard, and `limits`' `hit()` answers only admitted or not. Such a row "
        "prices what the peer lacks, and no target reads it. The same job is measured "
        "too: our lock with `fencing=False` against every lock peer; our cache's `get`, "
        "load and `set` against the seed's `GetUser`; `allow()` against `hit()` followed "
        "by `get_window_stats()`. The seed's code as written (and the minimal lock) is "
        "raw redis-py calls written by hand, not a library: a floor of another shape, "
        "held to the floor's bar (0.90x serially), while the peers' target (ahead) "
        "reads the peer libraries.",
        "- *RT / cmds per op*: round trips per operation, counted as socket writes of the "
        "client in an untimed run of 50 calls, and commands the server ran per operation "
        "(INFO commandstats), including those a Lua script runs: an EVALSHA whose script "
        "calls GET and SET counts 3.",
        "- Absolute numbers drift between runs and machines; only ratios from one run count.",
        "",
        *(
            ["## Targets, read from this run", "", *targets, ""]
            if (targets := _targets(measured, tasks))
            else []
        ),
        "![ops/s per operation, serial and concurrent](benchmarks.png)",
        "",
        "## Pattern operations against the raw redis-py floor",
        "",
        *_table(
            [
                "operation",
                "ours serial/s",
                f"ours {tasks} tasks/s",
                "ours RT / cmds",
                "floor",
                "floor serial/s",
                f"floor {tasks} tasks/s",
                "floor RT / cmds",
                "ours/floor serial",
                f"ours/floor {tasks} tasks",
            ],
            _pattern_rows(measured),
        ),
        "",
        "## Against peers",
        "",
        *_table(
            [
                "operation",
                "peer",
                "same job",
                "peer serial/s",
                f"peer {tasks} tasks/s",
                "peer RT / cmds",
                "ours/peer serial",
                f"ours/peer {tasks} tasks",
            ],
            _peer_rows(measured, floor=False),
        ),
    ]
    floor_rows = _peer_rows(measured, floor=True)
    if floor_rows:
        floor_group = next(g for g in measured if g["key"] == "floor")
        lines += [
            "",
            "## The floor itself: the toolkit's `connect()` client against a plain client",
            "",
            "The floor rows above use the toolkit's `connect()` client (a "
            "BlockingConnectionPool); here each command on it is compared with a plain "
            "`Redis.from_url` client (redis-py's default pool).",
            "",
            *_table(
                [
                    "command",
                    "connect() serial/s",
                    f"connect() {tasks} tasks/s",
                    "plain serial/s",
                    f"plain {tasks} tasks/s",
                    "connect()/plain serial",
                    f"connect()/plain {tasks} tasks",
                ],
                [
                    [
                        op["name"],
                        _d_rate(op["ours"], "serial"),
                        _d_rate(op["ours"], "concurrent"),
                        _d_rate(p, "serial"),
                        _d_rate(p, "concurrent"),
                        _d_ratio(op["ours"], p, "serial"),
                        _d_ratio(op["ours"], p, "concurrent"),
                    ]
                    for op in floor_group["operations"]
                    for p in op["peers"]
                ],
            ),
        ]
    skipped = [g for g in groups if g["status"] != "ok"]
    if skipped:
        lines += ["", "## Not measured in this run", ""]
        lines += [f"- {g['title']}: {g['status']}" for g in skipped]
    scaling = _scaling_rows(measured)
    if scaling:
        scaling_count, seconds = scaling_rounds(meta["duration"], meta["rounds"])
        scaling_total = round(scaling_count * seconds, 3)
        lines += [
            "",
            "## Scaling: 1,000 keys against 1,000,000 keys",
            "",
            "The lasting state of one key is cloned on the server (COPY keeps type and TTL) "
            "to fill the keyspace; each call then addresses a key drawn at random from the "
            "whole keyspace (each concurrent task from its own share of it). Both keyspaces "
            "exist at once, in db 0 and db 1, and SWAPDB moves the one to measure into db 0 "
            f"between rounds: each size gets {scaling_total:g} s per mode over "
            f"{scaling_count} interleaved rounds. ops/s are the best round; the ratio is "
            "the median of per-round ratios, as above.",
            "",
            *_table(
                [
                    "operation",
                    "keys",
                    "serial/s",
                    f"{tasks} tasks/s",
                    "used_memory",
                    f"1M/1k (serial / {tasks} tasks)",
                ],
                scaling,
            ),
        ]
    header, memory = _memory_rows(measured)
    if memory:
        lines += [
            "",
            "## MEMORY USAGE per rate-limited key, window full",
            "",
            "Bytes of all the Redis keys one limited key uses (`MEMORY USAGE ... SAMPLES 0`), "
            "after `limit` requests were admitted within one 60 s window (in at most 1,000 "
            "calls, each of cost `limit / 1000`).",
            "",
            *_table(header, memory),
        ]
    profiles = _profile_section(measured)
    if profiles:
        lines += [
            "",
            "## Where the time goes (py-spy)",
            "",
            "One operation of each pattern runs serially in a loop while py-spy samples the "
            "process (1,000 Hz, non-blocking), next to its floor. The process's CPU time per "
            "operation is shared among layers: each sample goes to the innermost frame of a "
            "known layer, and standard-library helpers (json, secrets, uuid) count for their "
            "caller. *asyncio* includes the socket system calls of the transport. Waiting "
            "for Redis costs no CPU: the wall time per operation includes it. Collapsed "
            "stacks for flamegraph tools: `benchmarks/results/profile-*.txt`.",
            *profiles,
        ]
    if analysis:
        lines += ["", analysis.strip()]
    notes = [n for g in groups for n in g.get("notes", [])]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- chart -------------------------------------------------------------------------------


def _bar_kind(peer: Data) -> str:
    """The colour key of a peer's bar."""
    if _on_pool(peer):
        return "pool"
    return "hand" if peer.get("by_hand") else "peer"


def write_chart(data: Data, path: Path) -> None:
    """Grouped horizontal bars: per operation ours, the floor and each peer; two panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    operations = [op for g in _measured(data) if g["key"] != "floor" for op in g["operations"]]
    if not operations:
        return
    meta = data["meta"]
    tasks = meta["tasks"]
    colours = {
        "ours": "#1f6feb",
        "pool": "#79c0ff",
        "floor": "#8b949e",
        "hand": "#c69026",
        "peer": "#f0883e",
    }
    names = {
        "ours": "aioredis_patterns",
        "pool": "aioredis_patterns on the pool (autopipeline rows)",
        "floor": "raw redis-py floor (same round trips)",
        "hand": "raw calls by hand (the seed's code)",
        "peer": "peer library",
    }
    fig_height = max(4.0, 0.2 * sum(3 + len(op["peers"]) for op in operations) + 1.5)
    fig, axes = plt.subplots(1, 2, figsize=(16, fig_height), sharey=True)
    for axis, column, title in (
        (axes[0], "serial", "serial (one task)"),
        (axes[1], "concurrent", f"{tasks} concurrent tasks"),
    ):
        y = 0.0
        ticks: list[float] = []
        for op in reversed(operations):
            bars = [(_bar_kind(p), p) for p in reversed(op["peers"])]
            bars += [("floor", op["floor"])] if op["floor"] else []
            bars.append(("ours", op["ours"]))
            start = y
            for kind, m in bars:
                value = m.get(f"{column}_ops_per_s")
                if value:
                    # a peer that does less than our row (not the same job) is hatched
                    hatch = "///" if m.get("lacks") else None
                    axis.barh(y, value, height=0.8, color=colours[kind], hatch=hatch)
                    axis.text(value, y, f" {value:,.0f}  {m['label']}", va="center", fontsize=6)
                    y += 1
            ticks.append((start + max(y - 1, start)) / 2)
            y += 1
        axis.set_title(f"ops/s, {title}, log scale", fontsize=10)
        axis.set_xscale("log")
        axis.set_xlim(800, 1_500_000)
        axis.set_yticks(ticks)
        axis.set_yticklabels(
            [op["name"].replace(", ", ",\n") for op in reversed(operations)], fontsize=8
        )
        axis.grid(axis="x", alpha=0.3)
    fig.legend(
        [
            *(Patch(color=c) for c in colours.values()),
            Patch(facecolor="white", edgecolor="black", hatch="///"),
        ],
        [*names.values(), "hatched: the peer does less (not the same job)"],
        loc="lower center",
        ncol=3,
        fontsize=9,
    )
    machine = meta["machine"]
    fig.suptitle(
        f"aioredis_patterns benchmarks, {meta['date']}: {machine['cpu']}, "
        f"{machine['nproc']} cores, Python {machine['python']}, Redis {machine['redis_server']}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    fig.subplots_adjust(left=0.15)  # room for the longest operation name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
