"""The manifest: every grading test with its points, collected without any student code.

Scoring lists every manifest test in results.json, so a test module that fails to import,
or a run cut short, still shows each of its tests (with 0 and the reason).
"""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, TypeAdapter

from autograder.authoring.config import Assignment


class ManifestEntry(BaseModel):
    nodeid: str
    name: str
    number: str
    part: str
    max_score: float
    tags: list[str]
    visibility: str = "visible"
    hide_errors: str | None = None
    leaderboard: dict | None = None
    gpu: bool = False
    suite: str = "hidden"
    file: str = ""


_LIST = TypeAdapter(list[ManifestEntry])


def _relative(entries: list[dict], cfg: Assignment) -> list[dict]:
    out = []
    for e in entries:
        e = dict(e)
        try:
            e["file"] = str(Path(e["file"]).resolve().relative_to(cfg.tests_dir.resolve()))
        except ValueError:
            pass
        out.append(e)
    return out


def write_manifest(path: Path, entries: list[dict], cfg: Assignment) -> None:
    data = _LIST.validate_python(_relative(entries, cfg))
    path.write_text(json.dumps([e.model_dump() for e in data], indent=1) + "\n")


def read_manifest(path: Path) -> list[ManifestEntry]:
    return _LIST.validate_json(path.read_bytes())


def part_totals(entries: list[ManifestEntry], suite: str | None = None) -> dict[str, float]:
    totals: dict[str, float] = {}
    for e in entries:
        if suite is None or e.suite == suite:
            totals[e.part] = totals.get(e.part, 0.0) + e.max_score
    return totals


def point_mismatches(parts: list, entries: list[ManifestEntry]) -> list[str]:
    """Parts whose tests' points (the @weight decorators, which grade) differ from the points
    assignment.toml gives them (which selfcheck and the instructor read)."""
    totals = part_totals(entries)
    return [f"part {p.name}: tests add up to {totals[p.name]:g}, assignment.toml says {p.points:g}"
            for p in parts if p.name in totals and abs(totals[p.name] - p.points) > 1e-9]
