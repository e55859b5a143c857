"""Shared fixtures for the project's own tests."""
from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from autograder import config as config_mod
from autograder.results import Results
from autograder.runner import grade

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = ROOT / "assignments" / "transformer"
SUBMISSIONS = Path(__file__).resolve().parent / "fixtures" / "submissions"
# Short limits so that hanging submissions cost seconds, not minutes.
FAST_LIMITS = {"call_s": 4.0, "import_s": 6.0}


@pytest.fixture(scope="session")
def cfg() -> config_mod.Assignment:
    return config_mod.load(ASSIGNMENT)


@pytest.fixture(scope="session")
def graded(cfg, tmp_path_factory):
    """Grade every fixture submission (plus reference and template) once, two at a time."""
    roots = {"reference": cfg.reference_root, "template": cfg.template_root}
    roots |= {p.name: p for p in sorted(SUBMISSIONS.iterdir()) if p.is_dir()}
    out_dir = tmp_path_factory.mktemp("graded")

    def run(name: str) -> tuple[str, Results]:
        return name, grade(cfg, roots[name], out_dir / f"{name}.json", time_limits=FAST_LIMITS)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(run, roots))
    for name in roots:  # what was written to disk is what Gradescope would read
        assert Results.read(out_dir / f"{name}.json") == results[name]
    return results
