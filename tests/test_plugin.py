"""The pytest plugin and scoring on a small synthetic assignment: every decorator and outcome."""
from __future__ import annotations

import json

import pytest

from autograder.authoring import config as config_mod
from autograder.grading.results import Results
from autograder.grading.runner import collect_manifest, grade

TOML = """
name = "toy"
title = "Toy"
package = "pkg"
reference = "ref"
template = "tpl"
gpu_policy = "{policy}"
[time_limits]
test_s = 3
call_s = 2
[[parts]]
name = "alpha"
title = "Alpha"
points = 10
files = ["pkg/mod.py"]
[[parts]]
name = "beta"
title = "Beta"
points = 2
"""

PUBLIC = '''
import time
import pytest
from gradescope_utils.autograder_utils.decorators import (
    hide_errors, leaderboard, number, partial_credit, tags, visibility, weight)

pytestmark = pytest.mark.part("alpha")

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown broke")

@weight(2)
def test_pass(student):
    """f adds one"""
    assert student.mod.f(1) == 2

@weight(1)
def test_fail(student):
    assert student.mod.f(1) == 3, "custom message about f"

@partial_credit(4)
def test_partial(set_score=None):
    set_score(1.5)

@weight(1)
@hide_errors("Something is off.")
def test_hidden_error():
    raise AssertionError("secret hidden input 4242")

@weight(1)
@visibility("after_due_date")
@tags("extra")
@number("9.9")
def test_meta():
    pass

@weight(1)
def test_skip():
    pytest.skip("not today")

@weight(1)
@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

@weight(1)
@pytest.mark.xfail(reason="known")
def test_xpass():
    pass

@weight(1)
def test_setup_error(broken):
    pass

@weight(1)
def test_teardown_error(bad_teardown):
    pass

@weight(1)
@leaderboard("speed", "asc")
def test_board(set_leaderboard_value=None):
    set_leaderboard_value(3.5)

@weight(1)
@pytest.mark.gpu
def test_gpu_only():
    pass

@weight(1)
def test_too_slow():
    time.sleep(30)

@weight(1)
def test_student_hangs(student):
    student.mod.spin()
'''

HIDDEN = '''
import pytest
from gradescope_utils.autograder_utils.decorators import weight

pytestmark = pytest.mark.part("beta")

@weight(1)
def test_one():
    pass

@weight(1)
def test_two():
    pass
'''


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    a = root / "assign"
    (a / "tests" / "public").mkdir(parents=True)
    (a / "tests" / "hidden").mkdir(parents=True)
    (a / "assignment.toml").write_text(TOML.format(policy="exclude"))
    (a / "tests" / "public" / "test_a.py").write_text(PUBLIC)
    (a / "tests" / "hidden" / "test_b.py").write_text(HIDDEN)
    (a / "ref" / "pkg").mkdir(parents=True)
    (a / "ref" / "pkg" / "__init__.py").write_text("")
    (a / "ref" / "pkg" / "mod.py").write_text("def f(x):\n    return x + 1\n\ndef spin():\n    while True:\n        pass\n")
    cfg = config_mod.load(a)
    collect_manifest(cfg, cfg.manifest_path)
    # After the manifest was made, the hidden module stops importing on the grader.
    (a / "tests" / "hidden" / "test_b.py").write_text("import no_such_module_xyz\n" + HIDDEN)
    res = grade(cfg, a / "ref", root / "results.json")
    return cfg, res, json.loads((root / "results.json").read_text())


def by_name(res: Results) -> dict:
    return {t.name.split(": ", 1)[1].split(" [")[0]: t for t in res.tests}


def test_results_json_follows_the_spec(toy):
    _, res, raw = toy
    Results.model_validate(raw)  # extra="forbid": only documented fields
    assert set(raw) <= set(Results.model_fields)
    for t in raw["tests"]:
        assert set(t) <= {"score", "max_score", "status", "name", "name_format", "number", "output",
                          "output_format", "tags", "visibility", "extra_data"}
    assert raw["execution_time"] > 0
    assert "| Alpha |" in raw["output"]


def test_points_only_when_every_phase_passed(toy):
    _, res, _ = toy
    t = by_name(res)
    assert (t["f adds one"].score, t["f adds one"].status) == (2, "passed")
    for name in ("fail", "skip", "xfail", "xpass", "setup error", "teardown error", "too slow",
                 "student hangs", "hidden error"):
        assert t[name].score == 0 and t[name].status == "failed", name
    assert "custom message about f" in t["fail"].output
    assert "assert" not in t["fail"].output.split("custom message")[0]
    assert "not today" in t["skip"].output
    assert "fixture broke" in t["setup error"].output
    assert "time limit" in t["too slow"].output
    assert "did not finish within 2 s" in t["student hangs"].output


def test_decorators(toy):
    _, res, _ = toy
    t = by_name(res)
    assert t["partial"].score == 1.5 and t["partial"].max_score == 4
    assert t["hidden error"].output == "Something is off."  # the hidden input never shows
    assert t["meta"].visibility == "after_due_date" and t["meta"].number == "9.9"
    assert t["meta"].tags == ["alpha", "extra"]
    assert all(x.tags[0] in ("alpha", "beta") for x in res.tests)
    assert [e.model_dump(exclude_none=True) for e in res.leaderboard] == [
        {"name": "speed", "value": 3.5, "order": "asc"}]


def test_gpu_policy_exclude(toy):
    _, res, _ = toy
    gpu = by_name(res)["gpu only"]
    assert gpu.max_score == 0 and "needs a CUDA GPU" in gpu.output


def test_module_that_fails_to_import_still_lists_its_tests(toy):
    _, res, _ = toy
    t = by_name(res)
    for name in ("one", "two"):
        assert t[name].score == 0 and t[name].max_score == 1
        assert "failed to load" in t[name].output and "no_such_module_xyz" in t[name].output
    assert res.extra_data["parts"]["beta"]["max_score"] == 2


def test_total_is_sum_of_tests(toy):
    _, res, _ = toy
    assert res.score == pytest.approx(sum(t.score for t in res.tests))
    assert res.score == pytest.approx(2 + 1.5 + 1 + 1)  # pass, partial, meta, leaderboard


def test_gpu_policy_zero(toy, tmp_path):
    cfg, _, _ = toy
    (cfg.directory / "assignment.toml").write_text(TOML.format(policy="zero"))
    try:
        res = grade(config_mod.load(cfg.directory), cfg.directory / "ref", parts=["alpha"])
    finally:
        (cfg.directory / "assignment.toml").write_text(TOML.format(policy="exclude"))
    gpu = by_name(res)["gpu only"]
    assert gpu.max_score == 1 and gpu.score == 0 and "0 points" in gpu.output


def test_grader_killed_midway_still_writes_results(toy, tmp_path, monkeypatch):
    """A grading process that dies keeps what it recorded; the rest is listed with the reason."""
    cfg, _, _ = toy
    res = grade(cfg.model_copy(update={"time_limits": cfg.time_limits.model_copy(update={"total_s": 2.5})}),
                cfg.directory / "ref", tmp_path / "r.json")
    Results.read(tmp_path / "r.json")
    assert len(res.tests) == 16
    assert "did not complete" in res.output
    # Killed at the end of the budget ("did not run"), or, on a machine slow enough that no test could
    # start before the deadline, listed as not run by the plugin: either way with the reason.
    assert any("did not run" in (t.output or "") or (t.output or "").startswith("Not run: the grading's time budget")
               for t in res.tests)


def test_bad_config_is_a_clear_error(tmp_path):
    (tmp_path / "assignment.toml").write_text('name = "x"\ntitle = "x"\npackage = "p"\nreference = "r"\n'
                                              'template = "t"\nparts = []\nbogus = 1\n')
    with pytest.raises(config_mod.ConfigError, match="bogus"):
        config_mod.load(tmp_path)


def test_hidden_suite_is_shown_after_the_due_date(toy):
    _, res, raw = toy
    t = by_name(res)
    assert t["one"].visibility == t["two"].visibility == "after_due_date"  # hidden suite, default setting
    assert t["f adds one"].visibility == "visible"  # public suite: shown at once
    # The summary students see now counts only what they can see, and says what is graded later.
    assert "| Beta |" not in raw["output"] and "| Alpha |" in raw["output"]
    later = [x for x in res.tests if x.visibility != "visible" and x.max_score]  # hidden suite + "meta"
    assert len(later) >= 3
    assert f"{len(later)} more test(s) worth {sum(x.max_score for x in later):g} points are graded too" in raw["output"]
    assert res.extra_data["parts"]["beta"]["tests"] == 2  # the instructor's figures are whole
