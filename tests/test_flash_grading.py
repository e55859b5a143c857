"""The Triton part end to end (interpreter on CPU): an independent kernel gets full marks,
each realistic kernel bug loses the flash points with a message that says why."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def part(res, name):
    return res.extra_data["parts"][name]


def failures(res, name):
    return "\n".join(t.output or "" for t in res.tests
                     if t.status == "failed" and (t.extra_data or {}).get("part") == name)


def test_independent_kernel_gets_full_marks(flash_graded):
    res = flash_graded["flash_alt"]
    for name in ("flash", "flash_backward"):
        p = part(res, name)
        assert p["score"] == p["max_score"] > 0, failures(res, name)


KERNEL_BUGS = ["flash_bug_no_rescale", "flash_bug_causal_off_by_one", "flash_bug_lse_log2", "flash_bug_no_tail_mask",
               "flash_bug_sdpa", "flash_bug_materialize"]


@pytest.mark.parametrize("name", KERNEL_BUGS)
def test_kernel_bugs_lose_flash_points(flash_graded, name):
    res = flash_graded[name]
    p = part(res, "flash")
    assert p["score"] < p["max_score"], name
    assert failures(res, "flash").strip()


@pytest.mark.parametrize("name", KERNEL_BUGS)
def test_public_tests_see_each_kernel_bug(flash_graded, name):
    """selfcheck (public tests only, interpreter) must not predict full flash marks for a buggy kernel."""
    public = [t for t in flash_graded[name].tests if t.extra_data["part"] == "flash" and t.extra_data["suite"] == "public"]
    assert public and any(t.status == "failed" for t in public), name


def test_forbidden_shortcuts_are_named(flash_graded):
    sdpa = failures(flash_graded["flash_bug_sdpa"], "flash").lower()
    assert "scaled_dot_product_attention" in sdpa or "forbidden" in sdpa
    assert part(flash_graded["flash_bug_sdpa"], "flash")["score"] == 0
    nxn = failures(flash_graded["flash_bug_materialize"], "flash").lower()
    assert "n x n" in nxn or "n*n" in nxn or "matmul" in nxn or "@" in nxn


AOT_BUGS = {"flash_aot_dot8": "K >= 16", "flash_aot_smem": "shared memory"}


@pytest.mark.parametrize("name", sorted(AOT_BUGS))
def test_kernels_a_gpu_rejects_lose_only_the_compile_points(flash_graded, name):
    """Right under the interpreter, rejected by a GPU compile: only the forward's AOT test fails, with
    Triton's reason or the resource named."""
    res = flash_graded[name]
    failed = [t for t in res.tests if t.status == "failed"]
    assert [t.name for t in failed] == [t.name for t in res.tests if "compiles for an H100" in t.name
                                        and t.extra_data["part"] == "flash"], [t.name for t in failed]
    p = part(res, "flash")
    assert p["max_score"] - p["score"] == pytest.approx(2.0)
    assert part(res, "flash_backward")["score"] == part(res, "flash_backward")["max_score"]
    text = failures(res, "flash")
    assert AOT_BUGS[name] in text and "sm_90" in text, text


def test_lse_units_are_named(flash_graded):
    assert "lse" in failures(flash_graded["flash_bug_lse_log2"], "flash").lower()
