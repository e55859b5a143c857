"""`autograder batch --slurm`: grade an export as a Slurm job array, one submission (and GPU) per task.

The submitting process writes an sbatch script and the list of submission ids it grades (array
index i grades ``ids[i]``) under ``OUT/slurm/``, submits it, follows the tasks with squeue (and
sacct where the cluster keeps accounting), and when none is left merges with the same code as
local batch (:func:`autograder.commands.batch.merge`). Each task runs ``python -m autograder.commands.slurm task
LIST INDEX``, which grades one submission into ``OUT/results/<id>.json`` with
:func:`autograder.commands.batch.grade_submission`, on the GPU that Slurm gave it (CUDA_VISIBLE_DEVICES is
left as Slurm set it); the speed tests time the reference kernel in that same grading run, on that
card, so no timing is ever compared with one from another card.

``OUT/slurm/state.json`` records every array submitted (job id, name, ids), so running the same
command again re-attaches to tasks still queued or running, resubmits only submissions that have
no results (tasks that failed: time limit, out of memory, node failure), and never submits a
graded one again. The output folder, the export, the assignment and the Python environment must
be on storage every node of the cluster can read (the tasks write into the output folder).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from autograder.commands.batch import Submission, grade_submission, merge, read_export, read_graded, safe_extract
from autograder.authoring.config import Assignment
from autograder.grading.results import Results

# Task states in which a task may still write its results (the others are final).
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
          "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
# What a final state means for a task that left no results, and what to do about it.
EXPLAIN = {
    "TIMEOUT": "killed by Slurm at its time limit{limit}; rerunning resubmits it (raise the limit with --time-limit)",
    "OUT_OF_MEMORY": "killed by Slurm for using more memory than it was given; rerunning resubmits it "
                     "(ask for more with --sbatch-arg=--mem=...)",
    "NODE_FAIL": "its node failed; rerunning resubmits it",
    "BOOT_FAIL": "its node failed to boot; rerunning resubmits it",
    "PREEMPTED": "preempted by Slurm; rerunning resubmits it",
    "CANCELLED": "cancelled; rerunning resubmits it",
    "DEADLINE": "reached its deadline; rerunning resubmits it",
    "FAILED": "the task exited with an error{exit}; see its log; rerunning resubmits it",
    "COMPLETED": "the task ended without writing results; see its log; rerunning resubmits it",
}
STATE_FILE = "state.json"


class SlurmError(Exception):
    """A Slurm command is missing or failed (the message says which and why)."""


@dataclass
class SlurmOptions:
    """How the array is submitted (the options of `autograder batch --slurm`)."""

    partition: str | None = None
    gpus_per_task: int = 1
    cpus_per_task: int = 4
    time_limit_min: int | None = None  # None: derived from the assignment's budget (task_minutes)
    max_parallel: int = 16
    sbatch_args: list[str] = field(default_factory=list)
    poll_s: float = 10.0


@dataclass
class SlurmRun:
    """What `batch --slurm` did: results by submission id, failed tasks' reasons, and the scripts."""

    results: dict[str, Results] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)  # job ids submitted by this run
    attached: list[str] = field(default_factory=list)  # job ids of earlier runs waited for
    script: Path | None = None  # the script written by this run (with dry_run, not submitted)


def task_minutes(cfg: Assignment) -> int:
    """Time limit of one task: the grading budget (``total_s``) plus the grader's start-up
    (``start_s``) plus 5 minutes for the interpreter, unpacking and writing results."""
    return math.ceil((cfg.time_limits.total_s + cfg.time_limits.start_s) / 60) + 5


def run_command(cmd: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a Slurm command; SlurmError with a clear message when it is missing, hangs or fails."""
    if shutil.which(cmd[0]) is None:
        raise SlurmError(f"`{cmd[0]}` was not found: run this on a login node of the cluster, where Slurm's "
                         "commands are installed (on some clusters after `module load slurm`)")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{shlex.join(cmd)}` did not answer within {timeout:g} s") from None
    if proc.returncode != 0:
        raise SlurmError(f"`{shlex.join(cmd)}` failed (exit {proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-1000:]}")
    return proc


# --------------------------------------------------------------------------- the script


def render_script(*, name: str, count: int, list_path: Path, out_dir: Path, log_dir: Path,
                  opts: SlurmOptions, minutes: int, python: str, title: str) -> str:
    """The sbatch script of one array: readable, and submittable by hand (`sbatch FILE`)."""
    if count < 1:
        raise ValueError("an array needs at least one task")
    for arg in opts.sbatch_args:
        if "\n" in arg or not arg.startswith("-"):
            raise ValueError(f"--sbatch-arg takes one sbatch option such as --mem=32G, not {arg!r}")
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# Grades {count} submission(s) of {title}, one per array task (written by `autograder batch --slurm`).",
        f"# Task i grades the i-th submission id listed in {list_path}",
        f"# into {out_dir}/results/<id>.json.",
        "# Submit by hand with `sbatch THIS_FILE`; running the same `autograder batch --slurm` command again",
        "# then finds this array by its name, waits for it and merges grades.csv and summary.md.",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --array=0-{count - 1}%{max(1, opts.max_parallel)}",
        f"#SBATCH --time={minutes}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={opts.cpus_per_task}",
    ]
    if opts.gpus_per_task > 0:
        lines.append(f"#SBATCH --gres=gpu:{opts.gpus_per_task}")
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    lines.append(f"#SBATCH --output={log_dir}/%A_%a.log")
    lines += [f"#SBATCH {arg}" for arg in opts.sbatch_args]
    lines += [
        "",
        "set -euo pipefail",
        "# The grader uses the GPU(s) Slurm assigned (CUDA_VISIBLE_DEVICES as Slurm set it).",
        f"exec {q(python)} -m autograder.commands.slurm task {q(str(list_path))} \"$SLURM_ARRAY_TASK_ID\"",
        "",
    ]
    return "\n".join(lines)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _read_state(slurm_dir: Path) -> dict:
    path = slurm_dir / STATE_FILE
    if path.exists():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("arrays"), list):
                return data
        except json.JSONDecodeError:
            pass
    return {"arrays": []}


def _export_folder(export: Path, slurm_dir: Path) -> Path:
    """The export as a folder the tasks can read: the folder itself, or the zip unpacked once
    into the output folder (unpacked again only when the zip changed)."""
    if export.is_dir():
        return export.resolve()
    folder = slurm_dir / "export"
    st = export.stat()
    stamp = f"{export.resolve()} {st.st_size} {st.st_mtime_ns}"
    marker = slurm_dir / "export.unpacked"
    if not (marker.exists() and marker.read_text() == stamp and folder.is_dir()):
        shutil.rmtree(folder, ignore_errors=True)
        safe_extract(export, folder)
        marker.write_text(stamp)
    return folder


# --------------------------------------------------------------------------- Slurm queries


def _task_states(job_id: str, count: int) -> dict[int, tuple[str, str]]:
    """(state, node) of each of the ``count`` array tasks of ``job_id`` that Slurm knows of: squeue
    for queued, running and recently finished tasks, then sacct (where the cluster keeps accounting)
    for older ones. States are Slurm's: PENDING, RUNNING, COMPLETED, TIMEOUT, OUT_OF_MEMORY, ..."""
    states: dict[int, tuple[str, str]] = {}
    try:
        proc = run_command(["squeue", "-h", "-r", "-t", "all", "-j", job_id, "-o", "%F|%K|%T|%N"])
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4 and parts[0] == job_id and parts[1].isdigit():
                states[int(parts[1])] = (parts[2], parts[3])
    except SlurmError as e:
        if "Invalid job id" not in str(e):  # else: gone from the controller, ask sacct
            raise
    if len(states) < count and shutil.which("sacct"):
        try:
            proc = run_command(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,NodeList"])
        except SlurmError:
            return states  # no accounting database on this cluster
        for line in proc.stdout.splitlines():
            parts = line.split("|")
            m = re.fullmatch(rf"{re.escape(job_id)}_(\d+)", parts[0].strip()) if len(parts) >= 3 else None
            if m and int(m.group(1)) not in states:  # "CANCELLED by 0" -> CANCELLED
                states[int(m.group(1))] = ((parts[1].split() or ["UNKNOWN"])[0], parts[2])
    return states


def _find_job(name: str) -> str | None:
    """The job id of an array submitted under ``name`` that is still known to squeue (by hand, or by
    a run interrupted before it could record the id)."""
    proc = run_command(["squeue", "-h", "-t", "all", "--name", name, "-o", "%F"])
    ids = sorted({line.strip() for line in proc.stdout.splitlines() if line.strip()}, key=int)
    return ids[-1] if ids else None


def _submit(script: Path) -> str:
    proc = run_command(["sbatch", "--parsable", str(script)], timeout=120)
    job_id = proc.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered {proc.stdout.strip()!r}, not a job id")
    return job_id


def _log_reason(log: Path) -> str | None:
    """The state a task's log shows when Slurm's own records are gone (slurmstepd writes these)."""
    try:
        text = log.read_text(errors="replace")[-20000:]
    except OSError:
        return None
    if "DUE TO TIME LIMIT" in text:
        return "TIMEOUT"
    if "DUE TO NODE FAILURE" in text:
        return "NODE_FAIL"
    if re.search(r"oom[-_ ]kill|Out Of Memory", text, re.IGNORECASE):
        return "OUT_OF_MEMORY"
    if "DUE TO PREEMPTION" in text:
        return "PREEMPTED"
    if "CANCELLED AT" in text:
        return "CANCELLED"
    return None


def _failure(state: str | None, job_id: str, index: int, node: str, log: Path, minutes: int | None) -> str:
    """Why a task left no results, starting with Slurm's state (e.g. "TIMEOUT: killed by ...")."""
    state = state or _log_reason(log)
    where = f"task {job_id}_{index}" + (f" on {node}" if node and node not in ("(null)", "None") else "")
    if state is None:
        return f"UNKNOWN: {where} left the queue without writing results; see {log}; rerunning resubmits it"
    text = EXPLAIN.get(state, "the task ended in this state without results; see its log; rerunning resubmits it")
    text = text.format(limit=f" of {minutes} min" if minutes else "", exit="")
    return f"{state}: {where} {text} (log: {log})"


# --------------------------------------------------------------------------- the run


@dataclass
class _Array:
    job_id: str
    ids: list[str]
    minutes: int | None
    log_dir: Path


def grade_export_slurm(cfg: Assignment, export: Path, out_dir: Path, opts: SlurmOptions | None = None, *,
                       force: bool = False, time_limits: dict[str, float] | None = None,
                       parts: list[str] | None = None, sandbox: dict | None = None, dry_run: bool = False,
                       progress: Callable[[str, str], None] | None = None,
                       status: Callable[[str], None] | None = None) -> SlurmRun:
    """Grade ``export`` as a Slurm job array into ``out_dir`` and merge as local batch does.

    Submissions with results are not graded again (unless ``force``); array tasks of an earlier,
    interrupted run that are still queued or running are waited for, not submitted twice; the rest
    go into one new array. ``dry_run`` writes the script (and its list) and submits nothing.
    ``progress(id, what)`` is called once per submission as in local batch; ``status(text)`` says
    what the run is doing (submitted, re-attached).
    """
    opts = opts or SlurmOptions()
    say = status or (lambda text: None)
    out_dir = out_dir.resolve()
    slurm_dir = out_dir / "slurm"
    log_dir = slurm_dir / "logs"
    for d in (out_dir / "results", log_dir):
        d.mkdir(parents=True, exist_ok=True)
    folder = _export_folder(export, slurm_dir)
    subs = read_export(folder)
    by_id = {s.id: s for s in subs}
    state = _read_state(slurm_dir)
    tag = hashlib.sha1(str(out_dir).encode()).hexdigest()[:8]
    run = SlurmRun()

    # Arrays of earlier runs: find those recorded without a job id (a run interrupted right at
    # submission, or a dry-run script submitted by hand) by name, then note their live tasks.
    waiting: dict[str, tuple[_Array, int]] = {}
    for rec in state["arrays"]:
        try:
            if not rec.get("job_id"):
                found = _find_job(rec["name"])
                if found:
                    rec["job_id"] = found
                    _write_json(slurm_dir / STATE_FILE, state)
            if not rec.get("job_id"):
                continue
            states = _task_states(rec["job_id"], len(rec["ids"]))
        except SlurmError:
            if not dry_run:  # a dry run may be written where Slurm's commands are not
                raise
            continue
        arr = _Array(rec["job_id"], rec["ids"], rec.get("minutes"), log_dir)
        live = [i for i, (st, _) in states.items() if st in ACTIVE and i < len(arr.ids)]
        for i in live:
            if arr.ids[i] in by_id:
                waiting[arr.ids[i]] = (arr, i)
        if live:
            run.attached.append(arr.job_id)

    graded: dict[str, Results] = {}
    for sub in subs:
        if sub.id in waiting:
            continue
        res = None if force else read_graded(out_dir, sub.id)
        if res is not None:
            graded[sub.id] = res
            if progress:
                progress(sub.id, "skipped (already graded)")
    if run.attached:
        say(f"re-attached to job {', '.join(run.attached)} ({len(waiting)} task(s) still queued or running)")
    todo = [s for s in subs if s.id not in graded and s.id not in waiting]
    if todo:
        n = len(state["arrays"]) + 1
        name = f"autograder-{tag}-{n}"
        minutes = opts.time_limit_min or task_minutes(cfg)
        list_path = slurm_dir / f"array-{n}.json"
        script = slurm_dir / f"array-{n}.sbatch"
        _write_json(list_path, {
            "ids": [s.id for s in todo], "export": str(folder), "out": str(out_dir),
            "assignment": str(cfg.directory.resolve()), "parts": parts, "time_limits": time_limits,
            "sandbox": sandbox, "name": name,
        })
        script.write_text(render_script(name=name, count=len(todo), list_path=list_path, out_dir=out_dir,
                                        log_dir=log_dir, opts=opts, minutes=minutes, python=sys.executable,
                                        title=cfg.title))
        run.script = script
        if force and not dry_run:
            for s in todo:
                (out_dir / "results" / f"{s.id}.json").unlink(missing_ok=True)
        rec = {"name": name, "job_id": None, "ids": [s.id for s in todo], "minutes": minutes,
               "script": str(script), "dry_run": dry_run,
               "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        state["arrays"].append(rec)
        _write_json(slurm_dir / STATE_FILE, state)
        if dry_run:
            return run
        try:
            rec["job_id"] = _submit(script)
        except SlurmError:
            state["arrays"].remove(rec)  # nothing was submitted: nothing to find again
            _write_json(slurm_dir / STATE_FILE, state)
            raise
        _write_json(slurm_dir / STATE_FILE, state)
        run.submitted.append(rec["job_id"])
        say(f"submitted job {rec['job_id']}: {len(todo)} task(s), at most {opts.max_parallel} at once, "
            f"{minutes} min each; logs in {log_dir}")
        arr = _Array(rec["job_id"], rec["ids"], minutes, log_dir)
        for i, sub_id in enumerate(arr.ids):
            waiting[sub_id] = (arr, i)
    elif dry_run:
        return run

    _wait(out_dir, waiting, graded, run.failures, opts.poll_s, progress)
    run.results = {s.id: graded[s.id] for s in subs if s.id in graded}
    merge(cfg, subs, run.results, out_dir, run.failures)
    return run


def _wait(out_dir: Path, waiting: dict[str, tuple[_Array, int]], graded: dict[str, Results],
          failures: dict[str, str], poll_s: float, progress: Callable[[str, str], None] | None) -> None:
    """Follow the tasks until each has results or has ended without (then ``failures`` says why).

    A task that Slurm says has ended is given a few polls for its results to show (a shared file
    system may show a file late)."""
    ended_at: dict[str, float] = {}
    grace = min(60.0, 3 * poll_s)
    errors = 0
    while waiting:
        by_job: dict[str, dict[int, tuple[str, str]]] = {}
        try:
            for arr in {a.job_id: a for a, _ in waiting.values()}.values():
                by_job[arr.job_id] = _task_states(arr.job_id, len(arr.ids))
            errors = 0
        except SlurmError:
            errors += 1  # the controller may be busy: ask again, give up after about 30 polls
            if errors > 30:
                raise
            time.sleep(poll_s)
            continue
        for sub_id, (arr, index) in list(waiting.items()):
            res = read_graded(out_dir, sub_id)
            st, node = by_job.get(arr.job_id, {}).get(index, (None, ""))
            if res is not None and st not in ("PENDING", "REQUEUED"):
                graded[sub_id] = res
                del waiting[sub_id]
                if progress:
                    progress(sub_id, f"{res.score:g}")
                continue
            if st in ACTIVE:
                continue
            now = time.monotonic()
            if now - ended_at.setdefault(sub_id, now) < grace:
                continue
            log = arr.log_dir / f"{arr.job_id}_{index}.log"
            failures[sub_id] = _failure(st, arr.job_id, index, node, log, arr.minutes)
            del waiting[sub_id]
            if progress:
                progress(sub_id, f"failed: {failures[sub_id].split(':')[0]}")
        if waiting:
            time.sleep(poll_s)


# --------------------------------------------------------------------------- inside a task


def run_task(list_path: Path, index: int) -> Results:
    """Grade submission ``index`` of an array's list (what one Slurm array task does)."""
    from autograder.authoring import config as config_mod

    spec = json.loads(Path(list_path).read_text())
    sub_id = spec["ids"][index]
    cfg = config_mod.load(Path(spec["assignment"]))
    subs: dict[str, Submission] = {s.id: s for s in read_export(Path(spec["export"]))}
    if sub_id not in subs:
        raise SystemExit(f"{sub_id} is not in the export {spec['export']}")
    node = os.environ.get("SLURMD_NODENAME", "?")
    print(f"grading {sub_id} (task {os.environ.get('SLURM_ARRAY_JOB_ID', '?')}_{index} on {node}, "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})", flush=True)
    res = grade_submission(cfg, subs[sub_id], Path(spec["out"]), env=None, time_limits=spec.get("time_limits"),
                           parts=spec.get("parts"), sandbox=spec.get("sandbox"), host_server=False)
    print(f"{sub_id}: {res.score:g} points; GPU: {(res.extra_data or {}).get('machine', {}).get('gpu')}", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    """``python -m autograder.commands.slurm task LIST INDEX`` (the command each array task runs)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] != "task" or not argv[2].isdigit():
        print("usage: python -m autograder.commands.slurm task LIST_JSON INDEX", file=sys.stderr)
        return 2
    run_task(Path(argv[1]), int(argv[2]))
    return 0


if __name__ == "__main__":  # pragma: no cover - run inside Slurm tasks
    sys.exit(main())
