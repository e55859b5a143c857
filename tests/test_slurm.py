"""`autograder batch --slurm` against a real one-node Slurm cluster started on this machine.

The cluster (tests/slurm_cluster.py) is Debian's slurm-wlm and munge, installed with apt-get when
missing and we are root; where that cannot be done the cluster tests are skipped with the reason.
The exports are small (three submissions, one part) to keep the runs short on two cores.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SUBMISSIONS, make_export, needs_root, world_readable_dir

from autograder.commands.slurm import SlurmError, SlurmOptions, grade_export_slurm, render_script, run_command, task_minutes

PART = "attention"  # one part: each grading takes seconds


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "autograder", "batch", *args]


# --------------------------------------------------------------------------- no cluster needed


def test_dry_run_writes_a_script_an_admin_can_submit(tmp_path, cfg):
    export = make_export(tmp_path, {"reference": cfg.reference_root, "template": cfg.template_root})
    out = tmp_path / "out"
    proc = subprocess.run(_cli(str(export), "--slurm", "--dry-run", "--out", str(out), "--partition", "gpu",
                               "--max-parallel", "8", "--sbatch-arg=--mem=16G", "--sbatch-arg=--account=cs336"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    script = out / "slurm" / "array-1.sbatch"
    assert script.exists() and str(script) in proc.stdout
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n")
    minutes = task_minutes(cfg)
    for line in ("#SBATCH --array=0-1%8", f"#SBATCH --time={minutes}", "#SBATCH --gres=gpu:1",
                 "#SBATCH --partition=gpu", "#SBATCH --mem=16G", "#SBATCH --account=cs336", "#SBATCH --job-name="):
        assert line in text, line
    assert f"{sys.executable} -m autograder.commands.slurm task" in text
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    listed = json.loads((out / "slurm" / "array-1.json").read_text())
    assert listed["ids"] == ["submission_reference", "submission_template"]
    assert Path(listed["assignment"]).is_absolute() and Path(listed["export"]).is_dir()  # the zip, unpacked once
    assert not (out / "grades.csv").exists() and not list((out / "results").iterdir())


def test_script_options(tmp_path, cfg):
    common = {"name": "n", "count": 3, "list_path": tmp_path / "l.json", "out_dir": tmp_path, "log_dir": tmp_path,
              "minutes": 5, "python": "/usr/bin/python3", "title": "T"}
    text = render_script(opts=SlurmOptions(gpus_per_task=0), **common)
    assert "--gres" not in text and "#SBATCH --array=0-2%16" in text
    with pytest.raises(ValueError, match="one sbatch option"):
        render_script(opts=SlurmOptions(sbatch_args=["--mem=1G\n#SBATCH --x"]), **common)
    assert task_minutes(cfg) * 60 >= cfg.time_limits.total_s + cfg.time_limits.start_s


def test_missing_slurm_commands_are_named():
    with pytest.raises(SlurmError, match="`sbatch-not-here` was not found"):
        run_command(["sbatch-not-here"])


def test_grades_csv_has_one_row_per_student_for_a_gradebook(tmp_path, cfg):
    """A group submission gives each member a row; a failed task's row says why, without scores."""
    from autograder.commands.batch import Submission, write_reports
    from autograder.grading.results import Results

    res = Results(score=7.0, tests=[], extra_data={"parts": {"mha": {"score": 7.0}}})
    pair = [{"name": "Ada", "email": "ada@u.edu", "sid": "1"}, {"name": "Bo", "email": "bo@u.edu", "sid": "2"}]
    subs = [Submission("s1", tmp_path, pair), Submission("s2", tmp_path, [{"name": "Cy", "sid": "3"}])]
    write_reports(cfg, subs, {"s1": res}, tmp_path, failures={"s2": "TIMEOUT: task 4_1 killed"})
    rows = list(csv.DictReader((tmp_path / "grades.csv").read_text().splitlines()))
    assert [(r["submission_id"], r["names"], r["emails"], r["sids"], r["mha"], r["total"]) for r in rows] == [
        ("s1", "Ada", "ada@u.edu", "1", "7.0", "7.0"), ("s1", "Bo", "bo@u.edu", "2", "7.0", "7.0"),
        ("s2", "Cy", "", "3", "", "")]
    assert rows[2]["status"] == "failed: TIMEOUT: task 4_1 killed"


def test_local_batch_gives_each_worker_a_gpu_it_may_use(monkeypatch):
    from autograder.commands.batch import _gpu_env

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # e.g. what Slurm gave a two-GPU job
    assert [_gpu_env(s, 2) for s in range(3)] == [{"CUDA_VISIBLE_DEVICES": d} for d in ("2", "3", "2")]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert _gpu_env(1, 2) == {"CUDA_VISIBLE_DEVICES": "1"} and _gpu_env(0, 0) is None


def test_a_failed_sbatch_leaves_nothing_to_reattach_to(tmp_path, cfg, monkeypatch):
    """sbatch refusing the array (here: no Slurm at all) is an error that names the command, and the
    state file keeps no array for a rerun to wait for."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    export = make_export(tmp_path, {"template": cfg.template_root})
    with pytest.raises(SlurmError, match="`sbatch` was not found"):
        grade_export_slurm(cfg, export, tmp_path / "out", SlurmOptions(gpus_per_task=0))
    assert json.loads((tmp_path / "out" / "slurm" / "state.json").read_text())["arrays"] == []


# --------------------------------------------------------------------------- a real cluster


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A one-node Slurm cluster (2 CPUs, no GPU) for the session; SLURM_CONF points at it."""
    from slurm_cluster import Unavailable, start_cluster

    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except Unavailable as e:
        pytest.skip(f"no Slurm cluster: {e}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    cluster.stop()
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


@pytest.fixture(scope="module")
def small(cfg, tmp_path_factory):
    """Three submissions and their grades.csv from local batch (one part)."""
    from autograder.commands.batch import grade_export

    work = tmp_path_factory.mktemp("slurm-export")
    export = make_export(work, {"reference": cfg.reference_root, "template": cfg.template_root,
                                "bug_no_scale": SUBMISSIONS / "bug_no_scale"})
    grade_export(cfg, export, work / "local", parts=[PART])
    return {"export": export, "grades": (work / "local" / "grades.csv").read_text(), "local": work / "local"}


SLURM_ARGS = ("--slurm", "--part", PART, "--gpus-per-task", "0", "--cpus-per-task", "1", "--poll", "1")


def _arrays(out: Path) -> list[dict]:
    return json.loads((out / "slurm" / "state.json").read_text())["arrays"]


def _logs(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "slurm" / "logs").iterdir())


@pytest.fixture(scope="module")
def hang_run(slurm, cfg, tmp_path_factory):
    """A submission whose import hangs, graded with a 1-minute task limit, started in the background
    as soon as the cluster is up: Slurm's minute (and its 30-second time-limit check) passes while
    the other tests run (the hung task sleeps, and takes one of the node's two CPUs)."""
    import concurrent.futures

    work = tmp_path_factory.mktemp("slurm-hang")
    export = make_export(work, {"hang_import": SUBMISSIONS / "hang_import"})
    out = work / "out"
    seen: list[tuple[str, str]] = []

    def run():
        t0 = time.monotonic()
        res = grade_export_slurm(cfg, export, out, SlurmOptions(gpus_per_task=0, cpus_per_task=1, time_limit_min=1,
                                                                poll_s=1), parts=["mha"],
                                 time_limits={"import_s": 600, "test_s": 600, "total_s": 1200},
                                 progress=lambda i, what: seen.append((i, what)))
        return res, seen, out, export, time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield {"future": pool.submit(run)}


@pytest.mark.slow
def test_slurm_batch_grades_as_local_batch(hang_run, slurm, small, tmp_path, cfg):
    # (hang_run first: its task's minute overlaps this test and the next)
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = subprocess.run(_cli(str(small["export"]), "--out", str(out), *SLURM_ARGS),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 120
    assert "submitted job" in proc.stderr
    assert (out / "grades.csv").read_text() == small["grades"]
    job, ids = _arrays(out)[0]["job_id"], _arrays(out)[0]["ids"]
    extra = json.loads((out / "results" / "submission_template.json").read_text())["extra_data"]
    local = json.loads((small["local"] / "results" / "submission_template.json").read_text())["extra_data"]
    for key in ("user", "network", "limits"):  # the sandbox works inside a Slurm task as it does here
        assert extra["sandbox"][key] == local["sandbox"][key], key
    meta = extra["machine"]
    assert meta["slurm_array_job_id"] == job and meta["slurm_array_task_id"] == str(ids.index("submission_template"))
    assert meta["host"] == slurm.node and meta["gpu"] == "none" and meta["slurm_job_id"]
    summary = (out / "summary.md").read_text()
    assert "submissions: 3 (graded: 3)" in summary and f"graded on: {meta['host']}, no GPU (3)" in summary
    for png in ("totals.png", "pass_rates.png"):
        assert (out / png).exists()
    assert (out / "answers" / "q03.md").exists()  # written answers by question, as local batch

    # Graded submissions are never submitted again; a missing result alone is.
    again = subprocess.run(_cli(str(small["export"]), "--out", str(out), *SLURM_ARGS),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and len(_arrays(out)) == 1 and "submitted" not in again.stderr
    (out / "results" / "submission_template.json").unlink()
    again = subprocess.run(_cli(str(small["export"]), "--out", str(out), *SLURM_ARGS),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    arrays = _arrays(out)
    assert len(arrays) == 2 and len(arrays[0]["ids"]) == 3 and arrays[1]["ids"] == ["submission_template"]
    assert (out / "grades.csv").read_text() == small["grades"]


@pytest.mark.slow
def test_resume_after_the_submitting_process_is_killed(slurm, small, tmp_path):
    out = tmp_path / "out"
    args = _cli(str(small["export"]), "--out", str(out), *SLURM_ARGS, "--max-parallel", "1")
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (out / "results").is_dir() or not list((out / "results").glob("submission_*.json")):
            assert time.monotonic() < deadline and first.poll() is None, "no task finished in 90 s"
            time.sleep(0.2)
    finally:
        os.kill(first.pid, signal.SIGKILL)  # the submitting side dies; the array goes on
        first.wait(timeout=10)
    job = _arrays(out)[0]["job_id"]
    live = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%K|%T"], capture_output=True, text=True).stdout
    assert "PENDING" in live or "RUNNING" in live, live  # killed mid-run
    assert not (out / "grades.csv").exists()

    second = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"re-attached to job {job}" in second.stderr and "submitted job" not in second.stderr
    assert len(_arrays(out)) == 1  # nothing submitted twice
    assert _logs(out) == [f"{job}_{i}.log" for i in range(3)]  # each task ran once
    assert (out / "grades.csv").read_text() == small["grades"]


@pytest.mark.slow
def test_task_killed_at_its_time_limit_is_reported_with_slurms_reason(hang_run, cfg):
    """A submission whose import hangs, with the grader's own limits raised above the task's
    1-minute limit: Slurm kills the task, and grades.csv and summary.md say TIMEOUT."""
    run, seen, out, export, elapsed = hang_run["future"].result(timeout=300)
    assert elapsed < 150
    assert run.results == {}
    assert run.failures["submission_hang_import"].startswith("TIMEOUT: task ")
    assert seen == [("submission_hang_import", "failed: TIMEOUT")]
    rows = {r["submission_id"]: r for r in csv.DictReader((out / "grades.csv").read_text().splitlines())}
    assert rows["submission_hang_import"]["status"].startswith("failed: TIMEOUT")
    assert rows["submission_hang_import"]["total"] == ""
    summary = (out / "summary.md").read_text()
    assert "| submission_hang_import | TIMEOUT: task" in summary and "time limit of 1 min" in summary
    assert "resubmits only these" in summary

    # Running again resubmits the failed task alone (here only written: it would hang again).
    again = grade_export_slurm(cfg, export, out, SlurmOptions(gpus_per_task=0, time_limit_min=1), parts=["mha"],
                               dry_run=True)
    assert again.script is not None and json.loads(again.script.with_suffix(".json").read_text())["ids"] == \
        ["submission_hang_import"]


@pytest.mark.slow
@needs_root
def test_student_code_runs_as_the_sandbox_account_inside_a_slurm_task(slurm, source_python, cfg):
    """With a Python environment the sandbox account can run, a task run by Slurm (as the
    submitting user, root here) still moves student code to that account, without network."""
    work = world_readable_dir("ag-slurm-sandbox-")
    try:
        export = make_export(work, {"reference": cfg.reference_root})
        proc = subprocess.run([str(source_python), "-m", "autograder", "batch", str(export), "--out", str(work / "out"),
                               "-a", str(cfg.directory), *SLURM_ARGS], cwd=work, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        res = json.loads((work / "out" / "results" / "submission_reference.json").read_text())
        assert res["extra_data"]["sandbox"]["user"] == "ag-student"
        assert res["extra_data"]["sandbox"]["network"] == "isolated"
        assert res["extra_data"]["machine"]["slurm_array_task_id"] == "0" and res["score"] == 19.5
    finally:
        shutil.rmtree(work, ignore_errors=True)
