"""The results of one run, as the report writers read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._harness import ComparisonResult, Measurement, MemoryRow
from ._profile import Profile
from ._scaling import ScalingResult


@dataclass
class GroupResult:
    key: str
    title: str
    status: str = "ok"
    """"ok", or why the group was not measured (e.g. the pattern is not available yet)."""
    comparisons: list[ComparisonResult] = field(default_factory=list)
    scaling: list[ScalingResult] = field(default_factory=list)
    memory: list[MemoryRow] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "status": self.status,
            "notes": self.notes,
            "operations": [_comparison_json(c) for c in self.comparisons],
            "scaling": [s.as_json() for s in self.scaling],
            "memory": [vars(m) for m in self.memory],
            "profiles": [p.as_json() for p in self.profiles],
        }


def _with_ratios(m: Measurement, ours: Measurement) -> dict[str, Any]:
    data = m.as_json()
    for mode in ("serial", "concurrent"):
        value = ours.over(m, mode)
        data[f"ours_over_this_{mode}"] = None if value is None else round(value, 3)
    return data


def _comparison_json(c: ComparisonResult) -> dict[str, Any]:
    return {
        "name": c.name,
        "round_trips": c.round_trips,
        "ours": c.ours.as_json(),
        "floor": None if c.floor is None else _with_ratios(c.floor, c.ours),
        "peers": [_with_ratios(p, c.ours) for p in c.peers],
    }


@dataclass
class RunResult:
    meta: dict[str, Any]
    groups: list[GroupResult] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "groups": [g.as_json() for g in self.groups]}
