"""The console report of a grading run: a table of parts, then what failed, grouped by part.

A student reads this after every self-check, so it is built to be read top to bottom: parts in the
assignment's order, one line per stub that is not written yet (instead of one failure per test
that touched it), one line for the unanswered written questions, and for every other failure the
message with the student's own traceback frames (paths relative to the submission). ``verbose``
shows each message whole, with everything the student's code printed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from autograder.authoring.config import Assignment
from autograder.grading.results import Results, TestCase

MESSAGE_LINES = 8  # lines of a failure message shown without --verbose
OUTPUT_LINES = 4  # lines of the student's printed output shown without --verbose

# A template stub raises NotImplementedError("<where>: <hint>"); the message quotes it one way or another.
_STUB = re.compile(r"NotImplementedError(?:\(['\"]|[^:\n]*\): |: )(?P<where>[A-Za-z_][\w.]*): (?P<hint>[^\n'\"]*)")
_PLACEHOLDER = re.compile(r"^(?P<label>Q\d+|Challenge \d+) \(.*still holds only the placeholder", re.S)
_STUB_AT = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+), in \w+\n\s*raise NotImplementedError')
_OUTPUT_MARK = "--- output of your code ---"
_FRAME = re.compile(r'^(\s*File ")(?P<path>[^"]+)(".*)$')


@dataclass
class PartFailures:
    """The failed tests of one part, sorted into what a student should read first."""

    stubs: dict[str, tuple[str, int]] = field(default_factory=dict)  # where -> (file and line, tests)
    unanswered: list[str] = field(default_factory=list)  # written questions still holding the placeholder
    others: list[TestCase] = field(default_factory=list)


def sort_failures(tests: list[TestCase], package: str) -> dict[str, PartFailures]:
    """Failed tests by part (keyed by the part's name)."""
    groups: dict[str, PartFailures] = {}
    for t in tests:
        if t.status != "failed":
            continue
        group = groups.setdefault((t.extra_data or {}).get("part", ""), PartFailures())
        text = relative_paths(t.output or "", package).split(_OUTPUT_MARK, 1)[0]
        if (stub := _STUB.search(text)) is not None:
            at = _STUB_AT.search(text)
            where = f"{at['path']}, line {at['line']}" if at is not None and at["path"].startswith(package) else ""
            known, count = group.stubs.get(stub["where"], (where, 0))
            group.stubs[stub["where"]] = (known or where, count + 1)
        elif (placeholder := _PLACEHOLDER.match(text)) is not None:
            group.unanswered.append(placeholder["label"])
        else:
            group.others.append(t)
    return groups


def relative_paths(text: str, package: str) -> str:
    """Traceback paths from the grader's copy of the submission, as the student knows them."""
    marker = f"/{package}/"

    def one(line: str) -> str:
        m = _FRAME.match(line)
        if m is None or marker not in m["path"]:
            return line
        return m.group(1) + package + "/" + m["path"].rsplit(marker, 1)[1] + m.group(3)

    return "\n".join(one(line) for line in text.splitlines())


def failure_text(test: TestCase, package: str, verbose: bool) -> str:
    """The message of a failed test, shortened unless ``verbose``."""
    message, _, printed = relative_paths(test.output or "", package).partition(_OUTPUT_MARK)
    lines = message.strip().splitlines()
    if not verbose and len(lines) > MESSAGE_LINES:
        lines = lines[:MESSAGE_LINES] + [f"... ({len(lines) - MESSAGE_LINES} more lines: --verbose shows them)"]
    printed_lines = printed.strip("\n").splitlines()
    if printed_lines:
        lines.append("your code printed:")
        shown = printed_lines if verbose else printed_lines[:OUTPUT_LINES]
        lines += ["  " + p for p in shown]
        if len(shown) < len(printed_lines):
            lines.append(f"  ... ({len(printed_lines) - len(shown)} more lines: --verbose shows them)")
    return "\n".join(lines)


def part_table(results: Results, cfg: Assignment, title: str,
               predicted: bool = False) -> tuple[Table, float, float]:
    """The per-part table, with the predicted grade (public pass rate x the part's points) of the
    regular and of the bonus parts."""
    table = Table(title=title)
    table.add_column("part")
    table.add_column("tests passed", justify="right")
    table.add_column("points" if not predicted else "public points", justify="right")
    if predicted:
        table.add_column("predicted grade", justify="right")
    parts = (results.extra_data or {}).get("parts", {})
    regular = bonus = 0.0
    for p in cfg.parts:
        info = parts.get(p.name)
        if not info or not info["tests"]:
            continue
        name = p.name + (" (bonus)" if p.bonus else "")
        row = [name, f"{info['passed']} / {info['tests']}", f"{info['score']:g} / {info['max_score']:g}"]
        if predicted:
            share = info["score"] / info["max_score"] if info["max_score"] else 0.0
            if p.bonus:
                bonus += share * p.points
            else:
                regular += share * p.points
            row.append(f"{share * p.points:.1f} / {p.points:g}")
        table.add_row(*row)
    return table, regular, bonus


def show(out: Console, results: Results, cfg: Assignment, title: str, *, verbose: bool = False,
         predicted: bool = False, failures: bool = True) -> tuple[float, float]:
    """Print the report; returns the predicted grade of the regular and the bonus parts (0 unless
    ``predicted``)."""
    table, regular, bonus = part_table(results, cfg, title, predicted)
    out.print(table)
    notes = (results.extra_data or {}).get("notes") or []
    for note in notes:
        out.print(f"[yellow]note:[/yellow] {escape(note)}")
    groups = sort_failures(results.tests or [], cfg.package) if failures else {}
    for p in [*cfg.parts, None]:
        name = p.name if p is not None else ""
        group = groups.get(name)
        if group is None:
            continue
        out.print(f"\n[bold]{escape(p.title if p is not None else 'other')}[/bold]"
                  + (f" [dim]({escape(name)})[/dim]" if name else ""))
        if group.stubs:
            out.print("  not written yet (each stub fails every test that reaches it):")
            for where, (at, count) in group.stubs.items():
                out.print(f"    [red]TODO[/red] {escape(where)}" + (f" ({escape(at)})" if at else "")
                          + f" [dim]{count} test{'s' * (count != 1)}[/dim]")
        if group.unanswered:
            out.print(f"  [red]TODO[/red] {len(group.unanswered)} answers still hold the placeholder: "
                      + escape(", ".join(group.unanswered)))
        for t in group.others:
            out.print(f"  [red]FAIL[/red] {escape(t.name or '')}")
            for line in failure_text(t, cfg.package, verbose).splitlines():
                out.print(f"       {escape(line)}", soft_wrap=True)
    if results.score is not None and not predicted:
        parts = (results.extra_data or {}).get("parts", {})
        extra = sum(parts.get(p.name, {}).get("max_score", 0) for p in cfg.parts if p.bonus)
        maximum = sum(t.max_score or 0 for t in results.tests or [])
        out.print(f"\n[bold]Total: {results.score:g} / {maximum:g}[/bold]"
                  + (f" (+ up to {extra:g} bonus points, counted in the score)" if extra else "")
                  + f"  ({results.execution_time:g} s)")
    return regular, bonus
