"""`autograder batch` on a synthetic Gradescope export (built in conftest from the fixtures)."""
from __future__ import annotations

import csv
import time

import pytest

from autograder.commands.batch import ExportError, grade_export, read_export

pytestmark = pytest.mark.slow


def test_outputs(batch_run, cfg):
    out = batch_run["out"]
    rows = list(csv.DictReader(open(out / "grades.csv")))
    assert len(rows) == len(batch_run["names"]) >= 20
    by_id = {r["submission_id"]: r for r in rows}
    ref = by_id["submission_reference"]
    assert ref["names"] == "Student reference" and ref["emails"] == "reference@example.edu"
    assert float(ref["attention"]) == 19.5 and float(ref["total"]) > 0
    assert float(by_id["submission_template"]["total"]) == 0
    assert all(r["status"] in ("graded", "error") for r in rows)
    for png in ("totals.png", "pass_rates.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    q03 = (out / "answers" / "q03.md").read_text()  # written answers grouped by question
    assert "submission_reference" in q03 and "submission_template" in q03
    summary = (out / "summary.md").read_text()
    assert "| attention |" in summary and f"submissions: {len(rows)}" in summary
    assert "## Tests failed most often" in summary and "ModuleNotFoundError" not in summary.split("most often")[1]


def test_hostile_submissions_do_not_stop_the_batch(batch_run):
    res = batch_run["results"]
    for name in ("crash_segfault", "crash_os_exit", "hang_import", "syntax_error", "empty"):
        assert f"submission_{name}" in res


def test_resume_skips_graded_and_regrades_missing(batch_run, cfg, tmp_path):
    import shutil

    out = tmp_path / "out"  # a copy: other tests read the shared batch output
    shutil.copytree(batch_run["out"], out)
    seen = []
    t0 = time.monotonic()
    grade_export(cfg, batch_run["export"], out, workers=2, progress=lambda i, what: seen.append(what))
    assert time.monotonic() - t0 < 30
    assert len(seen) == len(batch_run["names"]) and all(w.startswith("skipped") for w in seen)
    # A missing result is regraded on the next run.
    (out / "results" / "submission_empty.json").unlink()  # a quick one to regrade
    seen.clear()
    grade_export(cfg, batch_run["export"], out, workers=2, progress=lambda i, what: seen.append((i, what)))
    regraded = [i for i, what in seen if not what.startswith("skipped")]
    assert regraded == ["submission_empty"]


def test_not_an_export(tmp_path, cfg):
    with pytest.raises(ExportError, match="submission_metadata.yml"):
        read_export(tmp_path)


def test_force_regrades(tmp_path, cfg):
    from conftest import SUBMISSIONS, make_export

    export = make_export(tmp_path, {"empty": SUBMISSIONS / "empty"})
    first = grade_export(cfg, export, tmp_path / "out")
    seen = []
    again = grade_export(cfg, export, tmp_path / "out", force=True, progress=lambda i, w: seen.append(w))
    assert seen == ["0"] and first["submission_empty"].score == again["submission_empty"].score == 0


def test_summary_names_the_tests_failed_most_often(tmp_path, cfg):
    """What the class got wrong most, with the usual message (numbers as #), stubs counted apart."""
    from autograder.commands.batch import Submission, hardest_tests, write_reports
    from autograder.grading.results import Results
    from autograder.grading.results import TestCase as Case

    def res(*cases):
        return Results(score=0, tests=[Case(name=n, status=s, score=0, max_score=1, output=o, extra_data={"part": "mha"})
                                       for n, s, o in cases])

    stub = "Your code raised NotImplementedError in transformer_lab.mha.MultiHeadAttention(...): write it"
    results = {
        "a": res(("speed [2]", "failed", "ratio 4.96 | allowed 1.5\nmore"), ("speed [4]", "failed", "ratio 3.9 | allowed 1.5"),
                 ("shape", "failed", stub), ("ok", "passed", "")),
        "b": res(("speed [2]", "failed", "ratio 5.1 | allowed 1.5"), ("shape", "failed", "float32 (2, 7)"),
                 ("ok", "passed", "")),
        "c": res(("speed [2]", "failed", "took 9 s"), ("shape", "passed", ""), ("ok", "passed", ""),
                 ("gpu", None, "")),  # a GPU test left out: not counted
        "d": res(("speed [2]", "failed", "Your code raised ModuleNotFoundError in import of pkg.mha: No module named"),
                 ("shape", "failed", "No module named 'pkg.mha'")),
    }
    hardest = hardest_tests(results)
    # variants count once per submission; stubs and missing modules apart
    assert [(h.name, h.failed, h.not_written, h.graded) for h in hardest] == [("speed", 3, 1, 4), ("shape", 1, 2, 4)]
    assert hardest[0].message == "ratio # | allowed #" and hardest[1].message == "float32 (#, #)"
    subs = [Submission(id=i, path=tmp_path) for i in results]
    write_reports(cfg, subs, results, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "## Tests failed most often" in summary
    assert "| speed | 3 / 4 | 1 | ratio # \\| allowed # |" in summary
