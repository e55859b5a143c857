"""`autograder batch`: grade every submission of a Gradescope export, resumably and in parallel.

Input: Gradescope's "Export Submissions" download (the zip, or the folder it unpacks to) with
``submission_metadata.yml`` and one ``submission_<id>/`` folder per submission. Output folder:
``results/<id>.json`` per submission, ``grades.csv`` (one row per student), ``summary.md``
with ``totals.png`` (histogram of totals) and ``pass_rates.png`` (per-part pass rates).
Already graded submissions are skipped unless ``force``; a broken or hostile submission only
ever produces its own failed results. :mod:`autograder.commands.slurm` grades on a Slurm cluster instead,
one submission per array task, with the same :func:`grade_submission` and the same :func:`merge`.
"""
from __future__ import annotations

import concurrent.futures
import csv
import functools
import os
import queue
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from autograder.authoring.config import Assignment
from autograder.grading.results import Results
from autograder.grading.runner import grade
from autograder.grading.submission import UnpackError, copy_submission, safe_extract  # noqa: F401 - safe_extract: batch's name before



@dataclass
class Submission:
    id: str
    path: Path
    submitters: list[dict[str, str]] = field(default_factory=list)

    @property
    def names(self) -> str:
        return "; ".join(s.get("name", "") for s in self.submitters)

    @property
    def emails(self) -> str:
        return "; ".join(s.get("email", "") for s in self.submitters)

    @property
    def sids(self) -> str:
        return "; ".join(s.get("sid", "") for s in self.submitters)


class ExportError(UnpackError):
    """The export cannot be read (what is wrong with it is in the message)."""


def _strip(key: Any) -> str:
    return str(key).lstrip(":")


def read_export(folder: Path) -> list[Submission]:
    """Submissions of an unpacked export, with submitters from submission_metadata.yml."""
    metas = sorted(folder.rglob("submission_metadata.yml"))
    if not metas:
        raise ExportError(f"no submission_metadata.yml under {folder}: is this a Gradescope export?")
    base = metas[0].parent
    try:
        data = yaml.safe_load(metas[0].read_text()) or {}
    except yaml.YAMLError as e:
        raise ExportError(f"{metas[0]} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{metas[0]}: expected a mapping of submissions")
    subs = []
    for key, meta in sorted(data.items(), key=lambda kv: str(kv[0])):
        sub_id = _strip(key)
        path = base / sub_id
        if not path.is_dir():
            continue
        people = []
        meta = {_strip(k): v for k, v in (meta or {}).items()} if isinstance(meta, dict) else {}
        for person in meta.get("submitters") or []:
            if isinstance(person, dict):
                people.append({_strip(k): str(v) for k, v in person.items()})
        subs.append(Submission(sub_id, path, people))
    return subs


def _status(res: Results) -> str:
    out = res.output or ""
    if "could not grade" in out or "did not complete" in out:
        return "error"
    return "graded"


def unpacked(export: Path, tmp: Path) -> Path:
    """The export's folder: ``export`` itself, or the zip unpacked into ``tmp``."""
    if export.is_file():
        folder = tmp / "export"
        safe_extract(export, folder)
        return folder
    return export


def read_graded(out_dir: Path, sub_id: str) -> Results | None:
    """The results already written for ``sub_id`` (None when there are none or they are unreadable)."""
    path = out_dir / "results" / f"{sub_id}.json"
    if not path.exists():
        return None
    try:
        return Results.read(path)
    except Exception:  # noqa: BLE001 - unreadable: grade again
        return None


@functools.cache
def _gpu_name(visible: str | None) -> str | None:
    """Name of the first GPU visible with CUDA_VISIBLE_DEVICES=``visible`` (None: none), asked of a
    fresh interpreter so that this process never initialises CUDA (its forks could not use it)."""
    if visible is not None and visible.strip() in ("", "-1"):
        return None
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return None
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    try:
        proc = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.get_device_name(0) "
                               "if torch.cuda.is_available() else '')"], env=env, capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def machine_info(env: dict[str, str] | None = None) -> dict[str, str]:
    """Where a submission was graded: host, GPU (name and CUDA_VISIBLE_DEVICES) and, in a Slurm
    task, the job and array task; kept in the results' metadata so that a timing can be traced to
    the card it ran on (the speed tests time the reference in the same run, on the same card)."""
    merged = {**os.environ, **(env or {})}
    info = {"host": socket.gethostname()}
    visible = merged.get("CUDA_VISIBLE_DEVICES")
    gpu = _gpu_name(visible)
    info["gpu"] = gpu or "none"
    if visible is not None:
        info["cuda_visible_devices"] = visible
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURMD_NODENAME",
                "SLURM_JOB_PARTITION"):
        if merged.get(key):
            info[key.lower()] = merged[key]
    return info


def grade_submission(cfg: Assignment, sub: Submission, out_dir: Path, *, env: dict[str, str] | None = None,
                     time_limits: dict[str, float] | None = None, parts: list[str] | None = None,
                     sandbox: dict | None = None, host_server: bool = False) -> Results:
    """Grade one submission of an export into ``out_dir/results/<id>.json`` (whatever it does: a
    failure of the grading itself gives fallback results). Local batch and each Slurm task call this."""
    path = out_dir / "results" / f"{sub.id}.json"
    try:
        with tempfile.TemporaryDirectory(prefix="ag-sub-") as work_dir:
            report = copy_submission(sub.path, Path(work_dir), cfg)
            res = grade(cfg, Path(work_dir), None, time_limits=time_limits, notes=report.notes, env=env,
                        parts=parts, sandbox=sandbox, host_server=host_server)
    except Exception as e:  # noqa: BLE001 - one submission never stops the batch
        from autograder.commands.gradescope import fallback_results

        res = fallback_results(f"{type(e).__name__}: {e}", cfg.directory)
    res.extra_data = {**(res.extra_data or {}), "machine": machine_info(env)}
    res.write(path)
    return res


def _gpu_env(slot: int, n_gpus: int) -> dict[str, str] | None:
    """CUDA_VISIBLE_DEVICES for worker ``slot``: one GPU each, among those this process may use."""
    if not n_gpus:
        return None
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    devices = visible if len(visible) == n_gpus else [str(i) for i in range(n_gpus)]
    return {"CUDA_VISIBLE_DEVICES": devices[slot % n_gpus]}


def grade_export(cfg: Assignment, export: Path, out_dir: Path, workers: int = 1, force: bool = False,
                 time_limits: dict[str, float] | None = None, parts: list[str] | None = None,
                 progress: Callable[[str, str], None] | None = None,
                 sandbox: dict | None = None) -> dict[str, Results]:
    """Grade every submission of ``export`` into ``out_dir``; returns results by submission id.

    ``parts`` restricts grading to some parts (e.g. to regrade one part after fixing a test);
    ``time_limits`` and ``sandbox`` override entries of the assignment's tables.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ag-export-") as tmp:
        subs = read_export(unpacked(export, Path(tmp)))
        slots: queue.Queue[int] = queue.Queue()
        n_gpus = _gpu_count()
        for i in range(max(1, workers)):
            slots.put(i)
        lock = threading.Lock()
        done: dict[str, Results] = {}

        def work(sub: Submission) -> None:
            res = None if force else read_graded(out_dir, sub.id)
            if res is not None:
                with lock:
                    done[sub.id] = res
                if progress:
                    progress(sub.id, "skipped (already graded)")
                return
            slot = slots.get()
            try:
                res = grade_submission(cfg, sub, out_dir, env=_gpu_env(slot, n_gpus), time_limits=time_limits,
                                       parts=parts, sandbox=sandbox, host_server=True)
            finally:
                slots.put(slot)
            with lock:
                done[sub.id] = res
            if progress:
                progress(sub.id, f"{res.score:g}")

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(work, subs))
        results = {s.id: done[s.id] for s in subs if s.id in done}
        merge(cfg, subs, results, out_dir)
    return results


def merge(cfg: Assignment, subs: list[Submission], results: dict[str, Results], out_dir: Path,
          failures: dict[str, str] | None = None) -> None:
    """The batch's reports from the graded results: grades.csv, summary.md with the plots, and the
    answers by question. Local batch and Slurm batch both end here (``failures``: why a submission
    has no results, e.g. the Slurm task's state, reported in grades.csv and summary.md)."""
    write_reports(cfg, subs, results, out_dir, failures)
    _export_answers(cfg, subs, out_dir)


def _export_answers(cfg: Assignment, subs: list[Submission], out_dir: Path) -> None:
    """Written answers of the class, grouped by question, for manual grading (when there are any)."""
    from autograder.authoring.questions import export_answers, load_questions

    if not (cfg.directory / "questions.toml").exists():
        return
    notebooks = {}
    for sub in subs:
        found = sorted(p for p in sub.path.rglob("answers.ipynb") if not p.is_symlink())
        if found:
            notebooks[sub.id] = found[0]
    if notebooks:
        export_answers(notebooks, load_questions(cfg.directory), out_dir / "answers")


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def write_reports(cfg: Assignment, subs: list[Submission], results: dict[str, Results], out_dir: Path,
                  failures: dict[str, str] | None = None) -> None:
    """grades.csv, summary.md, totals.png and pass_rates.png (``failures``: why a submission has no
    results, e.g. "TIMEOUT" for a Slurm task killed by its time limit; its status says so).

    grades.csv has one row per student, for a gradebook import: each member of a group submission
    gets the submission's row with their own name, email and SID from the export's metadata."""
    parts = cfg.part_names
    failures = {k: v for k, v in (failures or {}).items() if k not in results}
    with open(out_dir / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["submission_id", "names", "emails", "sids", *parts, "total", "max", "status"])
        for sub in subs:
            res = results.get(sub.id)
            if res is None:
                status = f"failed: {failures[sub.id]}" if sub.id in failures else "missing"
                scores = [*([""] * len(parts)), "", "", status]
            else:
                per = (res.extra_data or {}).get("parts", {})
                max_total = sum(t.max_score or 0 for t in res.tests or [])
                scores = [*[per.get(p, {}).get("score", 0) for p in parts], res.score, max_total, _status(res)]
            for person in sub.submitters or [{}]:
                writer.writerow([sub.id, person.get("name", ""), person.get("email", ""), person.get("sid", ""),
                                 *scores])
    totals = [r.score or 0.0 for r in results.values()]
    rates = {}
    for p in parts:
        passed = sum((r.extra_data or {}).get("parts", {}).get(p, {}).get("passed", 0) for r in results.values())
        count = sum((r.extra_data or {}).get("parts", {}).get(p, {}).get("tests", 0) for r in results.values())
        if count:
            rates[p] = passed / count
    _plots(totals, rates, out_dir)
    lines = [f"# {cfg.title}: batch summary", "",
             f"- submissions: {len(subs)} (graded: {len(results)})"]
    if totals:
        lines += [f"- mean total: {statistics.mean(totals):.2f}, median: {statistics.median(totals):.2f}, "
                  f"max: {max(totals):g}"]
    errors = [s for s, r in results.items() if _status(r) == "error"]
    if errors:
        lines.append(f"- runs that did not complete: {', '.join(errors)}")
    machines = Counter(_machine(r) for r in results.values())
    if machines:
        lines.append("- graded on: " + "; ".join(f"{m} ({n})" for m, n in sorted(machines.items())))
    if failures:
        lines += ["", "## Submissions not graded (cluster tasks that failed)", "",
                  "Their tasks ended without results; grades.csv has them with status `failed: ...`. Running the "
                  "same `autograder batch --slurm` command again resubmits only these (and any still missing).", "",
                  "| submission | why |", "|---|---|"]
        lines += [f"| {_cell(s)} | {_cell(why)} |" for s, why in failures.items()]
    lines += ["", "| part | test pass rate |", "|---|---:|"] + [f"| {p} | {r:.0%} |" for p, r in rates.items()]
    hardest = hardest_tests(results)
    if hardest:
        lines += ["", "## Tests failed most often", "",
                  "In how many submissions written code failed each test (its variants together; a stub or a "
                  "missing file counts apart), with the most common message, numbers replaced by #: what to go "
                  "over again in class.", "",
                  "| test | failed | not written | most common message |", "|---|---:|---:|---|"]
        for h in hardest:
            lines.append(f"| {_cell(h.name)} | {h.failed} / {h.graded} | {h.not_written} | {_cell(h.message)} |")
    lines += ["", "![totals](totals.png)", "", "![pass rates](pass_rates.png)", ""]
    (out_dir / "summary.md").write_text("\n".join(lines))


def _machine(res: Results) -> str:
    """"host, GPU" where ``res`` was graded (from its metadata; "unknown" for results without it)."""
    m = (res.extra_data or {}).get("machine") or {}
    if not isinstance(m, dict) or not m.get("host"):
        return "unknown"
    return f"{m['host']}, {'no GPU' if m.get('gpu') in (None, 'none') else m['gpu']}"


@dataclass
class Hardest:
    name: str  # the test's name, its parameters ("[rope]") dropped: its variants count together
    failed: int  # submissions in which written code failed it (any variant)
    not_written: int  # submissions in which it failed only on a stub or a missing file or module
    graded: int  # submissions in which it counted
    message: str  # the most common first line of the failures of written code, numbers as #


_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)
_PARAMS = re.compile(r" \[[^\[\]]*\]$")
# First lines that say the code is not there yet, rather than wrong.
_NOT_WRITTEN = re.compile(r"NotImplementedError|ModuleNotFoundError|No module named|not found in the submission|"
                          r"Missing from your submission")


def hardest_tests(results: dict[str, Results], limit: int = 15) -> list[Hardest]:
    """The tests that written code failed in the most submissions (ties: the order of the results)."""
    order: dict[str, int] = {}
    graded: dict[str, set[str]] = {}
    failed: dict[str, set[str]] = {}
    missing: dict[str, set[str]] = {}
    messages: dict[str, Counter] = {}
    for sub, res in results.items():
        for t in res.tests or []:
            if t.status is None and not t.max_score:  # left out of the total (a GPU test without a GPU)
                continue
            name = _PARAMS.sub("", t.name or "")
            order.setdefault(name, len(order))
            graded.setdefault(name, set()).add(sub)
            if t.status != "failed":
                continue
            output = (t.output or "").strip()
            first = output.splitlines()[0] if output else "(no message)"
            if _NOT_WRITTEN.search(first):
                missing.setdefault(name, set()).add(sub)
                continue
            failed.setdefault(name, set()).add(sub)
            messages.setdefault(name, Counter())[_NUMBER.sub("#", first)[:200]] += 1
    ranked = sorted(failed, key=lambda n: (-len(failed[n]), order[n]))[:limit]
    return [Hardest(n, len(failed[n]), len(missing.get(n, set()) - failed[n]), len(graded[n]),
                    messages[n].most_common(1)[0][0]) for n in ranked]


def _cell(text: str) -> str:
    """Text for one cell of a Markdown table."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _plots(totals: list[float], rates: dict[str, float], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(totals or [0.0], bins=min(20, max(5, len(set(totals)))), color="#4477aa", edgecolor="white")
    ax.set_xlabel("total score")
    ax.set_ylabel("submissions")
    ax.set_title("Distribution of totals")
    fig.tight_layout()
    fig.savefig(out_dir / "totals.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(list(rates), [100 * r for r in rates.values()], color="#66aa55")
    ax.set_ylim(0, 100)
    ax.set_ylabel("tests passed (%)")
    ax.set_title("Pass rate per part")
    fig.tight_layout()
    fig.savefig(out_dir / "pass_rates.png", dpi=110)
    plt.close(fig)
