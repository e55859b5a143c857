"""End to end: each fixture submission graded with the real suites, in the sandboxed worker.

Correct solutions written from the contract alone must get full marks; each realistic bug must
lose points in its own part only; crashing, hanging and noisy submissions must still give a
valid results.json in which only the tests that touched the broken code fail.
"""
from __future__ import annotations

import pytest

from autograder.grading.manifest import read_manifest

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
    n = len(read_manifest(cfg.manifest_path))
    for name, res in graded.items():
        assert len(res.tests) == n, name


CODE_PARTS = ["attention", "mha", "posenc", "block", "model", "kv_cache", "analysis"]


@pytest.mark.parametrize("name,parts", [
    ("reference", CODE_PARTS + ["written"]),
    ("alt_correct", CODE_PARTS),  # written independently from the contract
    ("alt_sdpa", CODE_PARTS),
    ("noisy", ["attention", "mha"]),  # prints megabytes on every call
])
def test_correct_solutions_get_full_marks(graded, name, parts):
    res = graded[name]
    failed = [(t.name, t.output) for t in res.tests
              if t.status == "failed" and (t.extra_data or {}).get("part") in parts]
    assert not failed, failed
    assert all(full(res, p) for p in parts)


def test_reference_earns_every_point_it_can(graded, cfg):
    res = graded["reference"]
    manifest = read_manifest(cfg.manifest_path)  # results list the tests in manifest order
    assert [t.name for t in res.tests] == [e.name for e in manifest]
    for t, entry in zip(res.tests, manifest):
        excluded = entry.gpu and t.max_score == 0 and t.status is None  # no GPU here
        assert excluded or t.score == entry.max_score, (t.name, t.output)
    assert res.score == sum(e.max_score for e in manifest if not e.gpu)


def test_template_gets_zero_with_hints(graded):
    res = graded["template"]
    assert res.score == 0
    assert all(t.status == "failed" or t.max_score == 0 for t in res.tests)
    assert "NotImplementedError" in outputs(res, "attention")


ALL = set(CODE_PARTS)
BUGS = {  # submission -> (parts that must lose points, parts that must keep full marks)
    "bug_no_scale": ({"attention"}, set()),
    "bug_topleft_causal": ({"attention"}, {"mha"}),
    "bug_naive_softmax": ({"attention"}, set()),
    "bug_mask_inverted": ({"attention"}, set()),
    "bug_detached": ({"attention"}, set()),
    "bug_fp32_cast": ({"attention"}, set()),
    "bug_head_loop": ({"mha"}, {"attention"}),
    "bug_head_split": ({"mha"}, {"attention"}),
    "bug_no_valueerror": ({"mha"}, {"attention"}),
    "bug_extra_param": ({"mha"}, {"attention"}),
    # Full submissions with one bug in a later part (copies of alt_correct).
    "bug_sincos_swapped": ({"posenc"}, ALL - {"posenc", "model"}),
    "bug_pe_exponent": ({"posenc"}, ALL - {"posenc", "model"}),
    "bug_rope_half_split": ({"posenc"}, ALL - {"posenc", "model"}),
    "bug_alibi_slopes": ({"posenc"}, ALL - {"posenc", "model"}),
    "bug_alibi_offset": ({"posenc"}, ALL - {"posenc"}),
    "bug_post_ln_swapped": ({"block"}, ALL - {"block", "model"}),
    "bug_dff_2x": ({"block"}, ALL - {"block", "model", "kv_cache"}),
    "bug_cache_overwrite": ({"kv_cache"}, ALL - {"kv_cache"}),
    "bug_rope_decode_positions": ({"kv_cache"}, ALL - {"kv_cache"}),
    "bug_flops_macs": ({"analysis"}, ALL - {"analysis"}),
    "bug_params_no_bias": ({"analysis"}, ALL - {"analysis"}),
    "bug_weight_tying": ({"model"}, ALL - {"model"}),
}


@pytest.mark.parametrize("name", sorted(BUGS))
def test_bugs_lose_points_in_their_part(graded, name):
    loses, keeps = BUGS[name]
    res = graded[name]
    for part in loses:
        assert not full(res, part), f"{name} kept full marks in {part}"
    for part in keeps:
        assert full(res, part), (name, part, [(t.name, t.output) for t in res.tests
                                              if t.status == "failed" and t.extra_data["part"] == part])


def test_head_loop_fails_only_the_speed_checks(graded):
    """The hidden timing against the reference, and the public count of torch operations with 2 vs 16 heads."""
    failed = {t.extra_data["suite"]: t for t in graded["bug_head_loop"].tests
              if t.status == "failed" and t.extra_data["part"] == "mha"}
    assert set(failed) == {"public", "hidden"}, failed
    assert "max_ratio" in failed["hidden"].name and "ratio" in failed["hidden"].output
    assert "grows with the number of heads" in failed["public"].output, failed["public"].output


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


@pytest.mark.parametrize("name", sorted(BUGS))
def test_public_tests_see_each_bug(graded, name):
    """selfcheck predicts the grade from the public tests alone: a bug that passes every public test of its part
    is predicted full marks there and loses its points only to the hidden suite."""
    loses, _ = BUGS[name]
    res = graded[name]
    for part in loses:
        public = [t for t in res.tests if t.extra_data["part"] == part and t.extra_data["suite"] == "public"]
        assert public and any(t.status == "failed" for t in public), (
            name, part, [(t.name, (t.output or "")[:300]) for t in res.tests
                         if t.status == "failed" and t.extra_data["part"] == part])
