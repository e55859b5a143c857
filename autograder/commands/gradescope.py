"""Gradescope's run_autograder: grade <root>/submission and always write <root>/results/results.json.

``python -m autograder.commands.gradescope [--root /autograder] [--assignment DIR]``. The root defaults to
$AUTOGRADER_ROOT, else /autograder, so the project's tests can run the whole Gradescope layout
(source/, submission/, results/) in a temporary directory exactly as Gradescope would.

A run Gradescope kills (memory, timeout) gives the student 0 and no feedback, so grading first
reads the container's limits (``$AUTOGRADER_CGROUP_ROOT`` fakes them in tests), tells the instructor
at the top of the results what to raise when they are short of ``[gradescope]``, and plans the
whole run within the platform's timeout less its reserve.
"""
from __future__ import annotations

import argparse
import os
import pwd
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from autograder.commands.container import ContainerLimits, advice, read_limits
from autograder.grading.results import Results, TestCase
from autograder.sandbox.confinement import ensure_user, kill_user


def fallback_results(message: str, assignment: Path | None) -> Results:
    """A valid results.json when grading itself failed: every known test listed with 0."""
    tests: list[TestCase] = []
    try:
        from autograder.authoring.config import load
        from autograder.grading.manifest import read_manifest

        if assignment is not None:
            cfg = load(assignment)
            if cfg.manifest_path.exists():
                tests = [TestCase(name=e.name, number=e.number, score=0.0, max_score=e.max_score,
                                  status="failed", tags=e.tags, output="Not graded: " + message)
                         for e in read_manifest(cfg.manifest_path)]
    except Exception:  # noqa: BLE001 - the fallback must not fail
        pass
    return Results(score=0.0, output=f"**The autograder could not grade this submission.** {message}",
                   output_format="md", tests=tests or None)


# Grading is given at least this long, however late it starts (the deadline is the runner's total_s).
MIN_TOTAL_S = 5.0


def grading_budget(cfg, elapsed_s: float) -> float:
    """``total_s`` for the runner: what is left of Gradescope's timeout after its reserve and the
    ``elapsed_s`` already spent, never more than ``[time_limits] total_s``."""
    platform = cfg.gradescope
    left = platform.timeout_s - platform.reserve_s - elapsed_s
    return max(MIN_TOTAL_S, min(cfg.time_limits.total_s, left))


def add_container(results: Results, limits: ContainerLimits, note: str, needs: dict | None) -> Results:
    """The container's limits into extra_data["container"]; ``note`` (the advice) on top of the output."""
    extra = dict(results.extra_data or {})
    extra["container"] = {**limits.to_dict(), **({"needs": needs} if needs else {}),
                          **({"advice": note} if note else {})}
    results.extra_data = extra
    if note:
        results.output = note + ("\n\n" + results.output if results.output else "")
        results.output_format = results.output_format or "md"
    return results


def lock_down(root: Path, user: str) -> pwd.struct_passwd | None:
    """As root: the sandbox account exists, and it can neither read the autograder's source
    (hidden tests, reference) nor write the results. Returns the account (None when not root)."""
    if os.geteuid() != 0:
        return None
    account = ensure_user(user)
    source = root / "source"
    if source.is_dir():
        os.chown(source, 0, 0)
        os.chmod(source, 0o700)
    results = root / "results"
    if results.is_symlink() or (results.exists() and not results.is_dir()):
        results.unlink()
    results.mkdir(parents=True, exist_ok=True)
    os.chown(results, 0, 0)
    os.chmod(results, 0o755)
    for entry in results.iterdir():  # nothing planted before grading survives it
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return account if account is not None and account.pw_uid != 0 else None


def default_assignment(root: Path) -> Path | None:
    base = root / "source" / "assignments"
    dirs = sorted(p for p in base.iterdir() if (p / "assignment.toml").exists()) if base.is_dir() else []
    return dirs[0] if len(dirs) == 1 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("AUTOGRADER_ROOT", "/autograder")))
    parser.add_argument("--assignment", type=Path, default=None)
    parser.add_argument("--part", action="append", help="grade only this part (repeatable; for testing)")
    args = parser.parse_args(argv)
    root: Path = args.root
    results_path = root / "results" / "results.json"
    assignment = args.assignment or default_assignment(root)
    start = time.monotonic()
    limits = read_limits()
    print(f"container: {limits.describe()}", flush=True)
    note, needs = "", None
    try:
        from autograder.authoring.config import load
        from autograder.grading.runner import grade
        from autograder.grading.submission import copy_submission

        if assignment is None:
            raise RuntimeError(f"no assignment found under {root / 'source' / 'assignments'}")
        cfg = load(assignment)
        needs = {"memory_mb": cfg.gradescope.memory_mb, "cpus": cfg.gradescope.cpus}
        note = advice(limits, cfg.gradescope)
        if note:
            print(note, flush=True)
        account = lock_down(root, cfg.sandbox.user)
        try:
            with tempfile.TemporaryDirectory(prefix="ag-submission-") as work:
                report = copy_submission(root / "submission", Path(work), cfg)
                print(f"copied {report.copied}; missing {report.missing}", flush=True)
                total_s = grading_budget(cfg, time.monotonic() - start)
                print(f"grading within {total_s:.0f} s (Gradescope timeout {cfg.gradescope.timeout_s:g} s, "
                      f"{cfg.gradescope.reserve_s:g} s kept back)", flush=True)
                results = grade(cfg, Path(work), None, suite="all", parts=args.part or None,
                                time_limits={"total_s": total_s}, notes=report.notes, privilege="require")
        finally:
            if account is not None:  # nothing of the student's outlives grading
                kill_user(account.pw_uid)
    except BaseException as e:  # noqa: BLE001 - whatever happens, Gradescope gets a results.json
        traceback.print_exc()
        results = fallback_results(f"{type(e).__name__}: {e}", assignment)
        results.execution_time = round(time.monotonic() - start, 2)
    try:
        results = add_container(results, limits, note, needs)
    except Exception:  # noqa: BLE001 - the grade matters more than the note
        traceback.print_exc()
    results.write(results_path)
    print(f"wrote {results_path}: score {results.score}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
