"""A part's tests fail only for problems in that part's own files (issue: a broken package face or an
ungraded helper module must not take other parts down, in any worker, the Triton interpreter's too)."""
from __future__ import annotations

import shutil
from pathlib import Path

from autograder.grading.runner import grade
from autograder.grading.submission import copy_submission
from autograder.sandbox.worker import ungraded_module_hint

PARTS = ["analysis", "flash"]


def _upload(cfg, dest: Path) -> Path:
    """The reference, except: analysis.py imports a helper module of the student's own (uploaded, but not
    a graded file), and __init__.py imports every module but flash, as a package face often does."""
    pkg = dest / "upload" / cfg.package
    shutil.copytree(cfg.reference_root / cfg.package, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    analysis = (pkg / "analysis.py").read_text()
    (pkg / "analysis.py").write_text(analysis.replace("from __future__ import annotations\n",
                                                      "from __future__ import annotations\n\nfrom . import _helpers\n", 1))
    (pkg / "_helpers.py").write_text("TWO = 2\n")
    (pkg / "__init__.py").write_text("from . import attention, mha, posenc, block, model, kv_cache, analysis\n")
    return dest / "upload"


def test_an_ungraded_helper_costs_only_its_part(cfg, tmp_path):
    root = tmp_path / "graded"
    report = copy_submission(_upload(cfg, tmp_path), root, cfg)
    assert f"{cfg.package}/_helpers.py" not in report.copied and not (root / cfg.package / "_helpers.py").exists()
    res = grade(cfg, root, parts=PARTS)
    parts = res.extra_data["parts"]
    for name in ("flash",):
        assert parts[name]["score"] == parts[name]["max_score"] > 0, name
    assert parts["analysis"]["score"] == 0
    messages = [t.output or "" for t in res.tests if t.extra_data["part"] == "analysis"]
    assert all(f"{cfg.package}/_helpers.py is not graded: only the files listed for the assignment" in m
               for m in messages), messages[0]
    assert not any("circular import" in (t.output or "") for t in res.tests)


def test_hint_only_for_modules_of_the_package_that_are_absent(tmp_path):
    pkg = tmp_path / "transformer_lab"
    pkg.mkdir()
    (pkg / "attention.py").write_text("")
    absent = ImportError("cannot import name '_helpers' from partially initialized module 'transformer_lab' "
                         "(most likely due to a circular import)", name="transformer_lab")
    assert "transformer_lab/_helpers.py is not graded" in ungraded_module_hint(absent, str(tmp_path), "transformer_lab")
    assert "attention.py" in ungraded_module_hint(absent, str(tmp_path), "transformer_lab")
    missing_sub = ModuleNotFoundError("No module named 'transformer_lab.utils'", name="transformer_lab.utils")
    assert "transformer_lab/utils.py is not graded" in ungraded_module_hint(missing_sub, str(tmp_path),
                                                                              "transformer_lab")
    present = ImportError("cannot import name 'attention' from 'transformer_lab'", name="transformer_lab")
    assert ungraded_module_hint(present, str(tmp_path), "transformer_lab") == ""  # there: another problem
    other = ImportError("cannot import name 'thing' from 'numpy'", name="numpy")
    assert ungraded_module_hint(other, str(tmp_path), "transformer_lab") == ""
    assert ungraded_module_hint(ModuleNotFoundError("No module named 'einops'", name="einops"), str(tmp_path),
                                "transformer_lab") == ""
