"""Shared fixtures for the project's own tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from autograder import config as config_mod
from autograder.results import Results

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = ROOT / "assignments" / "transformer"
SUBMISSIONS = Path(__file__).resolve().parent / "fixtures" / "submissions"
# Short limits so that hanging submissions cost seconds, not minutes.
FAST_LIMITS = {"call_s": 4.0, "import_s": 6.0}


@pytest.fixture(scope="session")
def cfg() -> config_mod.Assignment:
    return config_mod.load(ASSIGNMENT)


def make_export(dest: Path, roots: dict[str, Path]) -> Path:
    """A Gradescope-style "Export Submissions" zip with one submission per root."""
    import shutil
    import zipfile

    import yaml

    base = dest / "assignment_1_export"
    meta = {}
    for i, (name, root) in enumerate(roots.items()):
        sub = base / f"submission_{name}"
        sub.mkdir(parents=True)
        if (root / "transformer_lab").is_dir():
            shutil.copytree(root / "transformer_lab", sub / "transformer_lab",
                            ignore=shutil.ignore_patterns("__pycache__"))
        if (root / "answers.ipynb").is_file():
            shutil.copy(root / "answers.ipynb", sub / "answers.ipynb")
        meta[f"submission_{name}"] = {":submitters": [{":name": f"Student {name}", ":sid": str(1000 + i),
                                                        ":email": f"{name}@example.edu"}],
                                      ":created_at": "2026-11-20 10:00:00.000000000 -08:00"}
    (base / "submission_metadata.yml").write_text(yaml.safe_dump(meta))
    zip_path = dest / "export.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in sorted(base.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(dest))
    shutil.rmtree(base)
    return zip_path


@pytest.fixture(scope="session")
def batch_run(cfg, tmp_path_factory):
    """Every fixture submission (plus reference and template) graded with `autograder batch`, 2 workers."""
    from autograder.batch import grade_export

    roots = {"reference": cfg.reference_root, "template": cfg.template_root}
    roots |= {p.name: p for p in sorted(SUBMISSIONS.iterdir()) if p.is_dir() and not p.name.startswith(("flash_", "."))}
    work = tmp_path_factory.mktemp("batch")
    export = make_export(work, roots)
    out = work / "out"
    results = grade_export(cfg, export, out, workers=2, time_limits=FAST_LIMITS)
    return {"export": export, "out": out, "results": results, "names": list(roots)}


@pytest.fixture(scope="session")
def graded(batch_run):
    """Results by fixture name (reference, template, alt_correct, bug_*, ...)."""
    out = batch_run["out"]
    results = {}
    for name in batch_run["names"]:
        res = batch_run["results"][f"submission_{name}"]
        assert Results.read(out / "results" / f"submission_{name}.json") == res  # what Gradescope would read
        results[name] = res
    return results


@pytest.fixture(scope="session")
def flash_graded(cfg, tmp_path_factory):
    """The Triton fixtures (flash_*), graded on the flash parts only (the interpreter is slow)."""
    from autograder.batch import grade_export

    roots = {p.name: p for p in sorted(SUBMISSIONS.iterdir()) if p.is_dir() and p.name.startswith("flash_")}
    work = tmp_path_factory.mktemp("flash")
    results = grade_export(cfg, make_export(work, roots), work / "out", workers=2,
                           parts=["flash", "flash_backward"])
    return {name: results[f"submission_{name}"] for name in roots}
