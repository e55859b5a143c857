"""The benchmark scripts a GPU session runs in one go: they must still work when it comes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_flash_targets_smoke_run(tmp_path):
    out = tmp_path / "targets.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "flash_targets.py"), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert len(report["forward"]) == 4 and all(r["ref_ms"] > 0 and r["sdpa_ms"] > 0 for r in report["forward"])
    assert report["fwd_bwd"]["ref_ms"] > 0 and report["fwd_bwd"]["target_ms"] == 6.0
    for kernel in ("forward D=16", "dkdv", "dq"):  # every configuration of the sweep matched the chosen one
        rows = report["sweep"][kernel]
        assert rows and all(r.get("ms") and r["max_abs_diff"] < 5e-2 for r in rows), rows
    assert "forward+backward" in proc.stdout and "fastest first" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU it measures for real")
def test_flash_targets_without_a_gpu_asks_for_smoke():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "flash_targets.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--smoke" in proc.stderr


def test_gpu_check_script_parses():
    for script in ("gpu_check.sh", "gpu_wheels.sh"):
        proc = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- benchmarks/gradescope_fit.py

def _gradescope_fit():
    """The benchmark script as a module (benchmarks/ is not a package)."""
    import importlib.util

    name = "gradescope_fit_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "gradescope_fit.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_gradescope_fit_submissions_carry_the_intended_change(tmp_path):
    import ast

    fit = _gradescope_fit()
    roots = {name: fit.make_submission(name, tmp_path) for name in fit.SUBMISSIONS}
    ref_mha = (ROOT / "reference" / "transformer_lab" / "mha.py").read_text()
    for name, root in roots.items():
        files = sorted((root / "transformer_lab").glob("*.py"))
        assert files and not (root / "answers.ipynb").exists()
        for path in files:
            compile(path.read_text(), str(path), "exec")
    assert (roots["template"] / "transformer_lab" / "mha.py").read_text() == \
        (ROOT / "student_template" / "transformer_lab" / "mha.py").read_text()
    assert (roots["reference"] / "transformer_lab" / "mha.py").read_text() == ref_mha
    expected = {"hang_forward": (ast.Assign, ast.While), "segfault_forward": (ast.Import, ast.Expr),
                "memory_forward": (ast.Import, ast.Assign, ast.While)}
    for name, kinds in expected.items():
        source = (roots[name] / "transformer_lab" / "mha.py").read_text()
        cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "MultiHeadAttention")
        forward = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "forward")
        body = forward.body[1:] if isinstance(forward.body[0], ast.Expr) and \
            isinstance(forward.body[0].value, ast.Constant) else forward.body  # the docstring stays first
        assert tuple(type(s) for s in body[:len(kinds)]) == kinds, (name, ast.dump(body[0]))
        # nothing else changed: the reference's file plus the injected lines
        injected = {line.strip() for line in fit.INJECTIONS[name].splitlines()}
        assert [ln for ln in source.splitlines() if ln.strip() not in injected] == ref_mha.splitlines()
    loop = ast.parse(fit.INJECTIONS["hang_forward"]).body[1]
    assert isinstance(loop, ast.While) and ast.unparse(loop.test) == "i < 1" and \
        not any(isinstance(n, (ast.Assign, ast.AugAssign, ast.Break)) for n in ast.walk(loop))
    # importable, and the class's forward really starts with the change
    check = (
        "import importlib, inspect, sys\n"
        "for name, root, needle in [(a, r, n) for a, r, n in (l.split('|') for l in sys.argv[1:])]:\n"
        "    sys.path.insert(0, root)\n"
        "    mha = importlib.import_module('transformer_lab.mha')\n"
        "    src = inspect.getsource(mha.MultiHeadAttention.forward)\n"
        "    assert needle in src, (name, src[:400])\n"
        "    for m in [m for m in sys.modules if m.split('.')[0] == 'transformer_lab']: del sys.modules[m]\n"
        "    sys.path.remove(root)\n"
        "print('ok')\n")
    needles = {"reference": "def forward", "hang_forward": "while i < 1:", "segfault_forward": "ctypes.string_at(0)",
               "memory_forward": "_hog.append("}
    proc = subprocess.run([sys.executable, "-c", check, *(f"{n}|{roots[n]}|{k}" for n, k in needles.items())],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_gradescope_fit_measures_a_process_tree():
    fit = _gradescope_fit()
    # a child that burns ~1 CPU-second and a grandchild that holds ~100 MB (every page written)
    grandchild = "import time; x = b'x' * (100 * 2**20); time.sleep(1.5)"
    child = ("import subprocess, sys, time\n"
             f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
             "t = time.process_time()\n"
             "while time.process_time() - t < 1.0: pass\n"
             "p.wait()\n")
    m = fit.measure([sys.executable, "-c", child], limit_s=60)
    assert m.returncode == 0 and m.killed is None and m.strays == 0
    assert m.peak_pss_mb > 90 and m.procs_at_peak == 2, m
    assert m.cpu_s >= 0.9 and m.cpu_wait4_s >= 0.9 and 0 < m.cpu_sampled_s <= m.cpu_s + 0.2, m
    assert m.wall_s >= 1.0 and m.samples > 5


def test_gradescope_fit_kills_a_tree_past_its_limit(tmp_path):
    """As the benchmark runs it (a child subreaper, in its own process): past the limit the whole
    tree is killed, a process that left the session and was orphaned included, and reaped."""
    pids = tmp_path / "pids"
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "import gradescope_fit as fit\n"
        "assert fit.become_subreaper()\n"
        f"cmd = 'sleep 60 & echo $! > {pids}; (setsid sleep 60 & echo $! >> {pids}); wait'\n"
        "m = fit.measure(['bash', '-c', cmd], limit_s=1.0, adopt_orphans=True)\n"
        "print(json.dumps({'killed': m.killed, 'wall_s': m.wall_s, 'returncode': m.returncode}))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(proc.stdout.splitlines()[-1])
    assert m["killed"] and "limit" in m["killed"] and m["wall_s"] < 10 and m["returncode"] == -9
    sleeps = [int(p) for p in pids.read_text().split()]
    assert len(sleeps) == 2
    for pid in sleeps:  # the background sleep, and the one that left the session: gone, not orphaned to init
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} survived"


def test_gradescope_fit_checks_results(tmp_path):
    from autograder.commands.gradescope import fallback_results
    from autograder.grading.results import Results

    fit = _gradescope_fit()
    assignment = ROOT / "assignments" / "transformer"
    fallback_results("boom", assignment).write(tmp_path / "fallback.json")
    res = fit.check_results(tmp_path / "fallback.json")
    assert res["valid"] and res["complete"] and res["fallback"] and res["run_note"] and res["score"] == 0
    Results(score=0, output="The autograder failed to start").write(tmp_path / "bare.json")
    res = fit.check_results(tmp_path / "bare.json")
    assert res["valid"] and not res["complete"] and "missing" in res["problems"][0]
    (tmp_path / "bad.json").write_text("{\"score\": ")
    assert not fit.check_results(tmp_path / "bad.json")["valid"]
    assert not fit.check_results(tmp_path / "absent.json")["exists"]


def test_gradescope_fit_help():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gradescope_fit.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--limit-s" in proc.stdout and "--pin" in proc.stdout
