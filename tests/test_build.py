"""Packaging: the Gradescope zip run in a temporary /autograder layout, and the student kit
installed in a fresh virtual environment without this repository."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile

import pytest

from conftest import run_gradescope

pytestmark = pytest.mark.slow


def test_zip_contents(dist, cfg):
    ag, kit = (set(zipfile.ZipFile(z).namelist()) for z in dist)
    assert {"setup.sh", "run_autograder", f"reference/{cfg.package}/attention.py",
            "assignments/transformer/tests/hidden/test_mha.py",
            "assignments/transformer/tests/manifest.json"} <= ag
    assert any(n.startswith("wheels/") and n.endswith(".whl") for n in ag)
    assert f"{cfg.package}/attention.py" in kit and "kit/assignment/tests/golden.agf" in kit
    for names in (ag, kit):
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        assert not any(n.startswith("tests/") for n in names)  # never the project's own tests
    assert not any("hidden" in n or n.startswith("reference/") for n in kit)
    # grader-side oracles (working implementations of graded functions) stay out of the student kit
    oracles = {n.rsplit("/", 1)[-1] for n in ag if n.endswith("_oracles.py")}
    assert "posenc_oracles.py" in oracles and not any(n.endswith("_oracles.py") for n in kit)
    kit_manifest = json.loads(zipfile.ZipFile(dist[1]).read("kit/assignment/tests/manifest.json"))
    assert kit_manifest and all(e["suite"] == "public" for e in kit_manifest)
    info = zipfile.ZipFile(dist[0]).getinfo("run_autograder")
    assert (info.external_attr >> 16) & 0o111


def test_gradescope_reference_gets_full_marks(dist, fresh_python, layout_base, cfg):
    files = {f"{cfg.package}/{p.name}": p for p in (cfg.reference_root / cfg.package).glob("*.py")}
    res = run_gradescope(dist, fresh_python, layout_base, files)
    failed = [(t.name, t.output) for t in res.tests if t.status == "failed"]
    written = [f for f in failed if f[0].startswith("written")]
    assert failed == written, failed  # the notebook is not a file of the package
    parts = res.extra_data["parts"]
    assert all(p["score"] == p["max_score"] for name, p in parts.items() if name != "written")


@pytest.mark.parametrize("kind", ["template", "empty", "syntax_error"])
def test_gradescope_broken_submissions_give_valid_results(dist, fresh_python, layout_base, cfg, kind):
    if kind == "template":
        files = {f"{cfg.package}/{p.name}": p for p in (cfg.template_root / cfg.package).glob("*.py")}
    elif kind == "empty":
        files = {}
    else:
        files = {f"{cfg.package}/attention.py": "def softmax(x:\n", f"{cfg.package}/mha.py": "class (\n"}
    res = run_gradescope(dist, fresh_python, layout_base, files)
    from autograder.grading.manifest import read_manifest

    assert res.score == 0
    assert len(res.tests) == len(read_manifest(cfg.manifest_path))  # every test listed
    if kind == "empty":
        assert "Missing from your submission" in res.output
    if kind == "syntax_error":
        assert "SyntaxError" in "\n".join(t.output or "" for t in res.tests)


def test_student_kit_selfcheck_without_the_repository(dist, fresh_python, tmp_path, cfg):
    kit = tmp_path / "kit"
    zipfile.ZipFile(dist[1]).extractall(kit)
    autograder = fresh_python.parent / "autograder"
    env = {k: v for k, v in os.environ.items() if k != "AUTOGRADER_ASSIGNMENT"}

    def selfcheck(*args: str) -> str:
        proc = subprocess.run([str(autograder), "selfcheck", *args], cwd=kit, env=env, capture_output=True,
                              text=True, timeout=600)
        # exit 1: some public test fails (the written answers are never filled in here)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        return proc.stdout

    assert "Predicted grade: 0.0 / " in selfcheck()
    for p in (cfg.reference_root / cfg.package).glob("*.py"):  # a student who solved everything
        shutil.copy(p, kit / cfg.package / p.name)
    out = selfcheck("--zip")
    code_points = sum(p.points for p in cfg.parts if p.name != "written" and not p.bonus)
    assert f"Predicted grade: {code_points:.1f} / " in out
    # the kernels compiled for an H100 (no GPU here): figures per kernel, tensor-core instructions
    assert "Your Triton kernels compiled for a real GPU" in out and "compiled for sm_90" in out, out
    assert "_attn_fwd" in out and "wgmma" in out and "_attn_bwd_dq" in out and "FAILS" not in out, out
    names = set(zipfile.ZipFile(kit / "submission.zip").namelist())
    assert names == {f for f in cfg.submission_files if (kit / f).exists()} | {f"{cfg.package}/__init__.py"}
