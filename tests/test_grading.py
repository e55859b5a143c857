"""End to end: each fixture submission graded with the real suites, in the sandboxed worker.

Correct solutions written from the contract alone must get full marks; each realistic bug must
lose points in its own part only; crashing, hanging and noisy submissions must still give a
valid results.json in which only the tests that touched the broken code fail.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def parts(results):
    return results.extra_data["parts"]


def full(results, part):
    p = parts(results)[part]
    return p["score"] == p["max_score"] and p["max_score"] > 0


def outputs(results, part=None):
    return "\n".join(t.output or "" for t in results.tests
                     if part is None or (t.extra_data or {}).get("part") == part)


def test_every_manifest_test_listed(graded, cfg):
    from autograder.manifest import read_manifest

    n = len(read_manifest(cfg.manifest_path))
    for name, res in graded.items():
        assert len(res.tests) == n, name


@pytest.mark.parametrize("name", ["reference", "alt_correct", "alt_sdpa", "noisy"])
def test_correct_solutions_get_full_marks(graded, name):
    res = graded[name]
    failed = [(t.name, t.output) for t in res.tests if t.status == "failed"]
    assert not failed, failed
    assert full(res, "attention") and full(res, "mha")
    assert res.score == sum(t.max_score for t in res.tests)


def test_template_gets_zero_with_hints(graded):
    res = graded["template"]
    assert res.score == 0
    assert all(t.status == "failed" or t.max_score == 0 for t in res.tests)
    assert "NotImplementedError" in outputs(res, "attention")


BUGS = {  # submission -> (part that must lose points, part that must keep full marks or None)
    "bug_no_scale": ("attention", None),
    "bug_topleft_causal": ("attention", "mha"),
    "bug_naive_softmax": ("attention", None),
    "bug_mask_inverted": ("attention", None),
    "bug_detached": ("attention", None),
    "bug_fp32_cast": ("attention", None),
    "bug_head_loop": ("mha", "attention"),
    "bug_head_split": ("mha", "attention"),
    "bug_no_valueerror": ("mha", "attention"),
    "bug_extra_param": ("mha", "attention"),
}


@pytest.mark.parametrize("name", sorted(BUGS))
def test_bugs_lose_points_in_their_part(graded, name):
    loses, keeps = BUGS[name]
    res = graded[name]
    assert not full(res, loses), f"{name} kept full marks in {loses}"
    if keeps:
        assert full(res, keeps), (name, [(t.name, t.output) for t in res.tests if t.status == "failed"])


def test_head_loop_fails_only_the_speed_test(graded):
    failed = [t for t in graded["bug_head_loop"].tests if t.status == "failed"]
    assert [t.name for t in failed] == [n for n in (t.name for t in failed) if "max_ratio" in n]
    assert len(failed) == 1 and "ratio" in failed[0].output


def test_naive_softmax_message_names_nan(graded):
    assert "NaN" in outputs(graded["bug_naive_softmax"], "attention")


@pytest.mark.parametrize("name,part,needle", [
    ("crash_segfault", "mha", "SIGSEGV"),
    ("crash_exit", "mha", "sys.exit"),
    ("crash_os_exit", "attention", "exited with code 3"),
    ("hang_call", "attention", "did not finish within"),
    ("hang_import", "mha", "did not finish within"),
    ("raises", "mha", "student bug"),
    ("syntax_error", "mha", "SyntaxError"),
])
def test_broken_submissions_fail_only_what_they_touch(graded, name, part, needle):
    res = graded[name]
    other = {"mha": "attention", "attention": "mha"}[part]
    assert not full(res, part)
    assert needle in outputs(res, part), outputs(res, part)[:2000]
    assert full(res, other), [(t.name, t.output) for t in res.tests if t.status == "failed"][:3]


def test_hang_is_bounded(graded):
    # Two softmax tests hang for call_s = 4 s each; the rest of the run is normal.
    assert graded["hang_call"].execution_time < 60
    assert graded["hang_import"].execution_time < 60


def test_noisy_output_is_truncated(graded):
    res = graded["noisy"]
    noisy = [t.output for t in res.tests if t.output and "output of your code" in t.output]
    assert noisy, "the student's prints should be shown"
    assert all(len(o) < 20_000 for o in noisy)
    assert any("omitted" in o for o in noisy)


def test_empty_submission(graded):
    res = graded["empty"]
    assert res.score == 0
    assert "Missing from your submission" in res.output
