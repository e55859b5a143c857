"""The container's self-check: limits read from faked cgroup v1/v2 trees, the advice to the
instructor, the time budget, `autograder build`'s settings, and run_autograder with a low limit."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autograder.commands import container
from autograder.commands import gradescope
from autograder.authoring.config import Platform
from autograder.commands.container import MIB, ContainerLimits, advice, read_limits
from autograder.grading.results import Results

MEMINFO = "MemTotal:       16777216 kB\nMemFree:         1000000 kB\n"  # 16 GB
V1_NO_LIMIT = "9223372036854771712"


def tree(base: Path, cgroup: str, files: dict[str, str], meminfo: str | None = MEMINFO) -> Path:
    """A fake filesystem root: /proc/self/cgroup, /proc/meminfo and files under /sys/fs/cgroup."""
    (base / "proc" / "self").mkdir(parents=True)
    (base / "proc" / "self" / "cgroup").write_text(cgroup)
    if meminfo is not None:
        (base / "proc" / "meminfo").write_text(meminfo)
    for rel, text in files.items():
        path = base / "sys" / "fs" / "cgroup" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return base


def v2(base: Path, files: dict[str, str], own: str = "/grader", **kw) -> Path:
    return tree(base, f"0::{own}\n", {"cgroup.controllers": "cpu memory pids\n", **files}, **kw)


def v1(base: Path, files: dict[str, str], own: str = "/docker/abc", cpu_dir: str = "cpu,cpuacct") -> Path:
    cgroup = f"12:pids:{own}\n4:memory:{own}\n3:cpu,cpuacct:{own}\n1:name=systemd:{own}\n"
    return tree(base, cgroup, {k.replace("CPU", cpu_dir): v for k, v in files.items()})


@pytest.fixture(autouse=True)
def four_cpus(monkeypatch):
    """The process may run on 4 CPUs, whatever this machine has."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)


# --------------------------------------------------------------------------- reading the limits

def test_v2_limited_own_cgroup(tmp_path):
    lim = read_limits(v2(tmp_path, {"grader/memory.max": f"{512 * MIB}\n", "grader/cpu.max": "50000 100000\n"}))
    assert (lim.memory_bytes, lim.cpus) == (512 * MIB, 0.5)
    assert (lim.memory_cgroup, lim.cpu_cgroup, lim.usable_cpus) == ("v2", "v2", 4)
    assert lim.machine_memory_bytes == 16 * 1024 * MIB
    assert lim.describe() == "memory 512 MB (cgroup v2 limit; machine 16 GB), CPUs 0.5 (cgroup v2 quota; 4 usable)"


def test_v2_the_tightest_ancestor_wins_and_a_path_outside_the_view_falls_back_to_the_root(tmp_path):
    files = {"memory.max": f"{300 * MIB}\n", "cpu.max": "max 100000\n",
             "a/memory.max": f"{700 * MIB}\n", "a/cpu.max": "150000 100000\n",
             "a/b/memory.max": "max\n", "a/b/cpu.max": "200000 100000\n"}
    lim = read_limits(v2(tmp_path / "nested", files, own="/a/b"))
    assert (lim.memory_bytes, lim.cpus) == (300 * MIB, 1.5)
    lim = read_limits(v2(tmp_path / "namespaced", {"memory.max": f"{256 * MIB}\n", "cpu.max": "25000 100000"},
                         own="/../../somewhere/else"))
    assert (lim.memory_bytes, lim.cpus) == (256 * MIB, 0.25)


def test_v2_unlimited_is_the_machine_and_the_affinity(tmp_path):
    lim = read_limits(v2(tmp_path, {"grader/memory.max": "max\n", "grader/cpu.max": "max 100000\n"}))
    assert (lim.memory_bytes, lim.cpus) == (16 * 1024 * MIB, 4.0)
    assert (lim.cgroup_memory_bytes, lim.cgroup_cpus, lim.memory_cgroup) == (None, None, "v2")
    assert "no cgroup limit" in lim.describe() and "no cgroup quota" in lim.describe()


def test_limits_above_the_machine_or_the_affinity_do_not_count(tmp_path):
    lim = read_limits(v2(tmp_path, {"grader/memory.max": f"{64 * 1024 * MIB}", "grader/cpu.max": "800000 100000"}))
    assert (lim.memory_bytes, lim.cpus) == (16 * 1024 * MIB, 4.0)


@pytest.mark.parametrize("memory, cpu", [("lots\n", "half\n"), ("", ""), ("-5", "0 100000"),
                                         ("12 34", "50000 0"), ("\x00\xff", "50000 abc")])
def test_v2_malformed_stays_unknown(tmp_path, memory, cpu):
    lim = read_limits(v2(tmp_path, {"grader/memory.max": memory, "grader/cpu.max": cpu}))
    assert (lim.memory_cgroup, lim.cpu_cgroup) == (None, None)
    assert (lim.memory_bytes, lim.cpus) == (16 * 1024 * MIB, 4.0)  # only what could be read
    assert "cgroup limit unknown" in lim.describe()


def test_v1_limited_from_the_own_cgroup_or_the_mount(tmp_path):
    files = {"memory/docker/abc/memory.limit_in_bytes": f"{768 * MIB}\n",
             "CPU/docker/abc/cpu.cfs_quota_us": "25000\n", "CPU/docker/abc/cpu.cfs_period_us": "100000\n"}
    lim = read_limits(v1(tmp_path / "host", files))
    assert (lim.memory_bytes, lim.cpus, lim.memory_cgroup, lim.cpu_cgroup) == (768 * MIB, 0.25, "v1", "v1")
    # inside the container the mount shows its own cgroup at the root; /proc/self/cgroup names the host path
    files = {"memory/memory.limit_in_bytes": f"{768 * MIB}\n",
             "CPU/cpu.cfs_quota_us": "50000\n", "CPU/cpu.cfs_period_us": "100000\n"}
    lim = read_limits(v1(tmp_path / "container", files, cpu_dir="cpu"))
    assert (lim.memory_bytes, lim.cpus) == (768 * MIB, 0.5)


def test_v1_unlimited(tmp_path):
    files = {"memory/memory.limit_in_bytes": V1_NO_LIMIT, "CPU/cpu.cfs_quota_us": "-1", "CPU/cpu.cfs_period_us": "100000"}
    lim = read_limits(v1(tmp_path, files))
    assert (lim.memory_bytes, lim.cpus, lim.cgroup_memory_bytes, lim.cgroup_cpus) == (16 * 1024 * MIB, 4.0, None, None)
    assert (lim.memory_cgroup, lim.cpu_cgroup) == ("v1", "v1")


def test_v1_malformed_stays_unknown(tmp_path):
    files = {"memory/memory.limit_in_bytes": "unlimited", "CPU/cpu.cfs_quota_us": "50000", "CPU/cpu.cfs_period_us": "x"}
    lim = read_limits(v1(tmp_path, files))
    assert (lim.memory_cgroup, lim.cpu_cgroup, lim.cgroup_memory_bytes, lim.cgroup_cpus) == (None, None, None, None)


def test_nothing_readable_is_unknown_and_never_raises(tmp_path):
    assert read_limits(tmp_path / "absent") == ContainerLimits(usable_cpus=4, cpus=4.0)
    bad = tree(tmp_path / "bad", "garbage without colons\n::\n", {}, meminfo="MemTotal: many kB\n")
    (bad / "sys" / "fs" / "cgroup" / "memory" / "memory.limit_in_bytes").mkdir(parents=True)  # a folder, not a file
    lim = read_limits(bad)
    assert lim.memory_bytes is None and lim.describe().startswith("memory unknown, CPUs 4")
    assert advice(lim, Platform(memory_mb=100_000, cpus=2)) == ""  # unknown is never a shortfall


def test_the_environment_variable_names_the_root(tmp_path, monkeypatch):
    v2(tmp_path, {"grader/memory.max": f"{100 * MIB}"})
    monkeypatch.setenv(container.ROOT_ENV, str(tmp_path))
    assert read_limits().memory_bytes == 100 * MIB


def test_to_dict_is_json_for_extra_data(tmp_path):
    data = read_limits(v2(tmp_path, {"grader/memory.max": f"{512 * MIB}", "grader/cpu.max": "50000 100000"})).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["memory_mb"] == 512 and data["cpus"] == 0.5 and data["machine_memory_mb"] == 16384
    assert data["description"].startswith("memory 512 MB")


# --------------------------------------------------------------------------- advice and budget

def test_advice_names_the_setting_and_the_size():
    text = advice(ContainerLimits(memory_bytes=512 * MIB, cpus=0.25), Platform(memory_mb=768, cpus=0.5))
    assert text.startswith("**For the course staff:**")
    assert ("This container has 512 MB of memory; this assignment needs 768 MB: raise the memory limit in "
            "the assignment's Autograder Settings on Gradescope to at least 768 MB.") in text
    assert ("This container has 0.25 CPUs; this assignment needs 0.5: raise the CPU allocation in "
            "the assignment's Autograder Settings on Gradescope to at least 0.5.") in text
    only_cpu = advice(ContainerLimits(memory_bytes=2048 * MIB, cpus=1.0), Platform(memory_mb=1536, cpus=2))
    assert "at least 2." in only_cpu and "memory" not in only_cpu.split("\n", 1)[1]
    assert "at least 1.5 GB" in advice(ContainerLimits(memory_bytes=768 * MIB), Platform(memory_mb=1536))


@pytest.mark.parametrize("memory", [768 * MIB, 768 * 10**6, 4096 * MIB])
def test_no_advice_when_the_container_is_big_enough(memory):
    # Gradescope's "768MB" may be MiB or millions of bytes: either reading is enough
    assert advice(ContainerLimits(memory_bytes=memory, cpus=0.5), Platform(memory_mb=768, cpus=0.5)) == ""


def test_grading_budget_stays_inside_the_platform_timeout(cfg):
    platform = cfg.gradescope
    assert gradescope.grading_budget(cfg, 0.0) == min(cfg.time_limits.total_s, platform.timeout_s - platform.reserve_s)
    assert gradescope.grading_budget(cfg, 100.0) == min(cfg.time_limits.total_s,
                                                        platform.timeout_s - platform.reserve_s - 100.0)
    assert gradescope.grading_budget(cfg, 10_000.0) == gradescope.MIN_TOTAL_S
    short = cfg.model_copy(update={"time_limits": cfg.time_limits.model_copy(update={"total_s": 60.0})})
    assert gradescope.grading_budget(short, 0.0) == 60.0


def test_add_container_puts_the_advice_on_top_and_the_limits_in_extra_data():
    lim = ContainerLimits(memory_bytes=512 * MIB, cpus=0.5)
    note = advice(lim, Platform())
    res = gradescope.add_container(Results(score=1.0, output="| part |", extra_data={"parts": {}}), lim, note,
                                   {"memory_mb": 768, "cpus": 0.5})
    assert res.output.startswith(note) and res.output.endswith("| part |")
    assert res.extra_data["parts"] == {} and res.extra_data["container"]["memory_mb"] == 512
    assert res.extra_data["container"]["needs"] == {"memory_mb": 768, "cpus": 0.5}
    quiet = gradescope.add_container(Results(score=1.0, output="ok"), lim, "", None)
    assert quiet.output == "ok" and "advice" not in quiet.extra_data["container"]


# --------------------------------------------------------------------------- autograder build

def test_build_prints_the_settings_to_choose(cfg, tmp_path, monkeypatch):
    from autograder.commands import build
    from autograder.commands.cli import app

    text = build.gradescope_settings(cfg)
    g = cfg.gradescope
    assert "Autograder Settings" in text and "docs/benchmarks.md" in text
    assert f"timeout: {int(g.timeout_s // 60)} min" in text and f"at least {g.memory_mb} MB" in text
    assert f"CPUs:    at least {g.cpus:g}" in text
    assert g.measured and f"(measured in such a container: {g.measured})" in text
    long = cfg.model_copy(update={"gradescope": Platform(timeout_s=3000, memory_mb=2048, cpus=2)})
    assert "timeout: 50 min" in build.gradescope_settings(long) and "at most 40 min" in build.gradescope_settings(long)
    assert "at least 2 GB" in build.gradescope_settings(long)

    monkeypatch.setattr(build, "build", lambda c, out: (out / "autograder.zip", out / "student_kit.zip"))
    res = CliRunner().invoke(app, ["build", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "upload to Gradescope" in res.output and text in res.output  # printed as is (no rich markup)


# --------------------------------------------------------------------------- run_autograder's self-check

def layout(base: Path, cfg, files: list[str]) -> Path:
    root = base / "autograder"
    for name in ("source", "results"):
        (root / name).mkdir(parents=True)
    for rel in files:
        dest = root / "submission" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cfg.reference_root / rel, dest)
    return root


@pytest.fixture
def low_container(tmp_path, monkeypatch):
    """A faked 512 MB, 0.25-CPU container; lock_down is skipped: as root it would also kill every
    process of the sandbox account on this (shared) machine at the end (test_build runs it)."""
    fake = v2(tmp_path / "fs", {"memory.max": f"{512 * MIB}\n", "cpu.max": "25000 100000\n"}, own="/")
    monkeypatch.setenv(container.ROOT_ENV, str(fake))
    monkeypatch.setattr(gradescope, "lock_down", lambda root, user: None)
    return fake


@pytest.mark.slow
def test_run_autograder_grades_and_tells_the_instructor(cfg, tmp_path, low_container, monkeypatch, capsys):
    import autograder.grading.runner
    from autograder.grading.manifest import read_manifest

    calls = []
    real_grade = autograder.grading.runner.grade

    def grade(*args, **kwargs):
        calls.append(kwargs)
        # "auto": where this checkout's Python is out of the sandbox account's reach (a private
        # home), student code runs as us instead of failing the run; test_build runs "require".
        return real_grade(*args, **{**kwargs, "privilege": "auto"})

    monkeypatch.setattr(autograder.grading.runner, "grade", grade)
    root = layout(tmp_path, cfg, [f"{cfg.package}/analysis.py", f"{cfg.package}/__init__.py"])
    assert gradescope.main(["--root", str(root), "--assignment", str(cfg.directory), "--part", "analysis"]) == 0
    res = Results.read(root / "results" / "results.json")
    entries = [e for e in read_manifest(cfg.manifest_path) if e.part == "analysis"]
    assert {t.name for t in res.tests} == {e.name for e in entries}  # complete: every test of the part
    assert res.score == pytest.approx(sum(e.max_score for e in entries)), res.output  # the reference, fully graded
    assert res.output.startswith("**For the course staff:**")
    assert "512 MB of memory; this assignment needs 768 MB" in res.output
    assert "0.25 CPUs; this assignment needs 0.5" in res.output
    assert "| part |" in res.output  # the student's summary follows
    box = res.extra_data["container"]
    assert (box["memory_mb"], box["cpus"], box["needs"]) == (512, 0.25, {"memory_mb": 768, "cpus": 0.5})
    log = capsys.readouterr().out
    assert log.startswith("container: memory 512 MB (cgroup v2 limit; machine 16 GB), CPUs 0.25")
    budget = cfg.gradescope.timeout_s - cfg.gradescope.reserve_s
    assert budget - 5 < calls[0]["time_limits"]["total_s"] <= min(budget, cfg.time_limits.total_s)


def test_the_fallback_results_carry_the_advice_too(cfg, tmp_path, low_container, monkeypatch):
    import autograder.grading.runner

    def broken(*args, **kwargs):
        raise RuntimeError("grading broke")

    monkeypatch.setattr(autograder.grading.runner, "grade", broken)
    root = layout(tmp_path, cfg, [f"{cfg.package}/analysis.py"])
    assert gradescope.main(["--root", str(root), "--assignment", str(cfg.directory)]) == 0
    res = Results.read(root / "results" / "results.json")
    assert res.score == 0 and len(res.tests) == len(json.loads(cfg.manifest_path.read_text()))
    assert res.output.startswith("**For the course staff:**") and "RuntimeError: grading broke" in res.output
    assert res.extra_data["container"]["memory_mb"] == 512
