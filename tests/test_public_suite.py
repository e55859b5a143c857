"""The public suites catch common bugs on their own, also in the student kit (recorded reference answers).

`autograder selfcheck` predicts the grade from the public tests alone, so a bug they miss shows up only as
points lost to the hidden suite.
"""
from __future__ import annotations

import json
import shutil

import pytest

from autograder.commands.build import record_golden
from autograder.authoring.config import load
from autograder.grading.runner import grade

pytestmark = pytest.mark.slow

CORRECT = "x = block(x, is_causal=True, positions=positions, kv_cache=kv_cache, layer=layer)"
NO_CAUSAL_PREFILL = "x = block(x, is_causal=kv_cache is None, positions=positions, kv_cache=kv_cache, layer=layer)"


def kit_like(cfg, dest, test_file: str, part: str):
    """A copy of the assignment holding only ``public/<test_file>``, with that part's public manifest entries
    and the reference's answers recorded for them, and no reference code: grading it replays the recording."""
    toml = (cfg.directory / "assignment.toml").read_text()
    line = f'reference = "{cfg.reference}"'
    assert toml.count(line) == 1
    shutil.copytree(cfg.tests_dir, dest / "tests", ignore=shutil.ignore_patterns("__pycache__", "hidden", "golden.agf"))
    for extra in (dest / "tests" / "public").glob("*.py"):
        if extra.name != test_file:
            extra.unlink()
    entries = [e for e in json.loads(cfg.manifest_path.read_text()) if e["suite"] == "public" and e["part"] == part]
    (dest / "tests" / "manifest.json").write_text(json.dumps(entries, indent=1))
    (dest / "assignment.toml").write_text(toml.replace(line, f'reference = "{cfg.reference_root}"'))
    record_golden(load(dest), dest / "tests" / "golden.agf")  # fails unless these tests pass on the reference
    (dest / "assignment.toml").write_text(toml.replace(line, 'reference = "no-reference"'))
    kit = load(dest)
    assert kit.golden_path.exists() and not kit.reference_root.exists()
    return kit


def test_kv_cache_prefill_without_causal_mask_loses_public_points(cfg, tmp_path):
    """A prefill into an empty cache that is not causally masked keeps greedy tokens right: only the logits show it."""
    bug = tmp_path / "bug"
    shutil.copytree(cfg.reference_root / cfg.package, bug / cfg.package, ignore=shutil.ignore_patterns("__pycache__"))
    model = bug / cfg.package / "model.py"
    assert model.read_text().count(CORRECT) == 1
    model.write_text(model.read_text().replace(CORRECT, NO_CAUSAL_PREFILL))
    (tmp_path / "kit").mkdir()
    kit = kit_like(cfg, tmp_path / "kit", "test_kv_cache.py", "kv_cache")
    res = grade(kit, bug, suite="public", parts=["kv_cache"])
    failed = {t.name: t.output or "" for t in res.tests if t.status == "failed"}
    assert failed and all("prefill" in name for name in failed), failed
    assert any("generate gives the same tokens" in t.name and t.status == "passed" for t in res.tests)
    for output in failed.values():
        assert "is_causal=kv_cache is None" in output and "kv_cache.length(layer)" in output, output
    part = res.extra_data["parts"]["kv_cache"]
    assert 0 < part["score"] < part["max_score"]
