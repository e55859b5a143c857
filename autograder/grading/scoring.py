"""Manifest + per-test records -> Gradescope results, with a per-part summary.

Points only for records whose setup, call and teardown all passed (the plugin decides
``status``); a manifest test without a record earns 0 with the reason it did not run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from autograder.authoring.config import Assignment
from autograder.grading.manifest import ManifestEntry
from autograder.grading.records import TestRecord
from autograder.grading.results import LeaderboardEntry, Results, TestCase

MAX_TEST_OUTPUT = 8_000
_INCOMPLETE = "The grading run did not complete:"


@dataclass
class PartSummary:
    name: str
    title: str
    score: float = 0.0
    max_score: float = 0.0
    passed: int = 0
    total: int = 0
    bonus: bool = False


@dataclass
class RunInfo:
    """What happened to the run as a whole (told to the student in the top-level output)."""

    execution_time: float = 0.0
    notes: list[str] = field(default_factory=list)
    collect_errors: dict[str, str] = field(default_factory=dict)
    run_error: str | None = None
    gpu_available: bool = False
    sandbox: dict = field(default_factory=dict)  # the worker's report: account, network, limits


def _clip(text: str, limit: int = MAX_TEST_OUTPUT) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 200] + f"\n... [{len(text) - limit + 200} characters omitted]"


def _why_missing(entry: ManifestEntry, info: RunInfo) -> str:
    for path, err in info.collect_errors.items():
        if path and (entry.nodeid.startswith(path + "::") or entry.nodeid == path):
            return ("This test could not run: its test module failed to load on the grader "
                    "(not a problem with your code; tell your instructor).\n" + err[-1500:])
    if info.run_error:
        return f"This test did not run: {info.run_error}"
    return "This test did not run (the grading run ended before reaching it)."


def assemble(cfg: Assignment, manifest: list[ManifestEntry], records: dict[str, TestRecord],
             info: RunInfo) -> Results:
    parts = {p.name: PartSummary(p.name, p.title, bonus=p.bonus) for p in cfg.parts}
    shown = {p.name: PartSummary(p.name, p.title, bonus=p.bonus) for p in cfg.parts}  # what students see now
    unseen = [0, 0.0]  # tests and points students see later (or never)
    tests: list[TestCase] = []
    leaderboard: list[LeaderboardEntry] = []
    gpu_excluded = 0
    bonus_parts = {p.name for p in cfg.parts if p.bonus}
    seen: set[str] = set()
    for entry in manifest:
        seen.add(entry.nodeid)
        rec = records.get(entry.nodeid)
        max_score = entry.max_score
        if rec is None:
            score, status, output = 0.0, "failed", _why_missing(entry, info)
        else:
            score, status = rec.score, rec.status
            output = rec.message if status == "failed" else ""
            if rec.gpu_missing:
                if cfg.gpu_policy == "exclude":
                    max_score = 0.0
                    gpu_excluded += 1
                    output = "Not graded here: this test needs a CUDA GPU and this machine has none. " \
                             "It is left out of the total."
                else:
                    output = "This test needs a CUDA GPU and this grading machine has none: 0 points."
            if rec.student_output:
                output += ("\n\n" if output else "") + "--- output of your code ---\n" + rec.student_output
            if rec.leaderboard:
                leaderboard.append(LeaderboardEntry.model_validate(rec.leaderboard))
        excluded = rec is not None and rec.gpu_missing and cfg.gpu_policy == "exclude"
        visibility = entry.visibility
        if entry.suite == "hidden" and visibility == "visible":
            visibility = cfg.hidden_visibility
        for table in (parts, shown) if visibility == "visible" else (parts,):
            summary = table.get(entry.part)
            if summary is not None and not excluded:
                summary.score += score
                summary.max_score += max_score
                summary.total += 1
                summary.passed += status == "passed"
        if visibility != "visible" and not excluded:
            unseen[0] += 1
            unseen[1] += max_score
        if entry.part in bonus_parts:
            max_score = 0.0  # bonus: points add to the score but not to the maximum
        tests.append(TestCase(
            name=entry.name, number=entry.number, score=round(score, 4), max_score=max_score,
            status=None if excluded else status, output=_clip(output) or None, tags=entry.tags,
            visibility=visibility, extra_data={"part": entry.part, "suite": entry.suite},
        ))
    stray = [r for n, r in records.items() if n not in seen]
    for rec in stray:  # collected but missing from a stale manifest: still shown, never dropped
        tests.append(TestCase(name=rec.nodeid, score=rec.score, max_score=rec.max_score,
                              status=rec.status, output=_clip(rec.message) or None))
    if stray:
        info.notes.append(f"{len(stray)} test(s) were not in the manifest (run `autograder manifest`).")
    total = round(sum(t.score or 0.0 for t in tests), 4)
    return Results(
        score=total,
        execution_time=round(info.execution_time, 2),
        output=summary_text(list(shown.values()), info, gpu_excluded, unseen=(unseen[0], unseen[1]),
                            when=cfg.hidden_visibility),
        output_format="md",
        test_output_format="text",
        visibility="visible",
        stdout_visibility="hidden",
        tests=tests,
        leaderboard=leaderboard or None,
        extra_data={"parts": {p.name: {"score": round(p.score, 4), "max_score": p.max_score,
                                       "passed": p.passed, "tests": p.total, "bonus": p.bonus}
                              for p in parts.values()},
                    "notes": run_notes(info, gpu_excluded),
                    **({"sandbox": info.sandbox} if info.sandbox else {})},
    )


_WHEN = {"after_due_date": "after the due date", "after_published": "once grades are published",
         "hidden": "to the course staff only", "visible": "now"}


def summary_text(parts: list[PartSummary], info: RunInfo, gpu_excluded: int,
                 unseen: tuple[int, float] = (0, 0.0), when: str = "after_due_date") -> str:
    """The top-level output students see: per part, the tests they can see now (``unseen``: the
    number and points of the others, shown ``when``)."""
    lines = ["| part | score | tests passed |", "|---|---:|---:|"]
    for p in parts:
        if p.total == 0:
            continue
        bonus = " (bonus)" if p.bonus else ""
        lines.append(f"| {p.title}{bonus} | {p.score:g} / {p.max_score:g} | {p.passed} / {p.total} |")
    out = "\n".join(lines)
    notes = run_notes(info, gpu_excluded)
    if unseen[0]:
        notes.append(f"{unseen[0]} more test(s) worth {unseen[1]:g} points are graded too; their results are "
                     f"shown {_WHEN.get(when, when)} (this table counts only the tests shown now).")
    if info.run_error:  # in bold on Gradescope
        notes[0] = notes[0].replace(_INCOMPLETE, f"**{_INCOMPLETE}**", 1)
    if notes:
        out += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return out


def run_notes(info: RunInfo, gpu_excluded: int) -> list[str]:
    """What the student must know about the run as a whole, most important first."""
    notes = list(info.notes)
    if info.run_error:
        notes.insert(0, f"{_INCOMPLETE} {info.run_error}")
    if info.collect_errors:
        notes.append(f"{len(info.collect_errors)} test module(s) failed to load on the grader; "
                     "their tests are listed with 0 points.")
    if gpu_excluded:
        notes.append(f"{gpu_excluded} GPU-only test(s) were not run on this machine and are left out of the total.")
    return notes
