"""The command line: grade, selfcheck, verify."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autograder.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_grade_writes_results(tmp_path, cfg):
    out = tmp_path / "results.json"
    res = runner.invoke(app, ["grade", str(cfg.reference_root), "--part", "attention", "--suite", "public",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["score"] == 12 and all(t["tags"][0] == "attention" for t in data["tests"])
    assert "Total: 12 / 12" in res.output


def test_grade_rejects_unknown_part(cfg):
    res = runner.invoke(app, ["grade", str(cfg.reference_root), "--part", "nope"])
    assert res.exit_code == 2 and "unknown part" in res.output


def test_selfcheck_predicts_from_public_tests(cfg):
    res = runner.invoke(app, ["selfcheck", str(cfg.template_root)])
    assert res.exit_code == 0, res.output
    assert "Predicted total: 0.0 / 40" in res.output
    res = runner.invoke(app, ["selfcheck", str(cfg.reference_root)])
    assert "Predicted total: 40.0 / 40" in res.output


def test_verify(cfg):
    res = runner.invoke(app, ["verify"])
    assert res.exit_code == 0, res.output
    assert "verify: OK" in res.output
