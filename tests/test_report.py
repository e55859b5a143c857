"""The console report: failures grouped so that a student reads what to do first (no grading runs here)."""
from __future__ import annotations

from rich.console import Console

from autograder.grading.report import MESSAGE_LINES, failure_text, relative_paths, show, sort_failures
from autograder.grading.results import Results
from autograder.grading.results import TestCase as Case

STUB = ("Your code raised NotImplementedError in transformer_lab.attention.softmax(...): softmax: Subtract the max.\n"
        '  File "/tmp/ag-code-x1/transformer_lab/attention.py", line 16, in softmax\n'
        "    raise NotImplementedError('softmax: Subtract the max.')")
KERNEL_STUB = "Your code raised InterpreterError in flash_attention: NotImplementedError('_attn_fwd: Load q.')"


def case(part: str, output: str, status: str = "failed", name: str = "a test") -> Case:
    return Case(name=name, status=status, score=0, max_score=1, output=output, extra_data={"part": part})


def test_stubs_are_one_line_each_with_where_they_are():
    groups = sort_failures([case("attention", STUB), case("attention", STUB), case("flash", KERNEL_STUB),
                            case("attention", STUB, status="passed")], "transformer_lab")
    assert groups["attention"].stubs == {"softmax": ("transformer_lab/attention.py, line 16", 2)}
    assert groups["flash"].stubs == {"_attn_fwd": ("", 1)}
    assert not groups["attention"].others


def test_placeholder_answers_are_collected_and_real_failures_kept():
    placeholder = "Q3 (q03: Why scale?): the answer cell (cell 9) still holds only the placeholder line; replace it."
    challenge = "Challenge 2 (c2: Memory): the answer cell (cell 59) still holds only the placeholder line."
    groups = sort_failures([case("written", placeholder), case("written", challenge),
                            case("written", "Q4 (q04): the answer is empty.")], "transformer_lab")
    assert groups["written"].unanswered == ["Q3", "Challenge 2"]
    assert [t.output for t in groups["written"].others] == ["Q4 (q04): the answer is empty."]


def test_paths_are_relative_to_the_submission_and_long_messages_are_cut():
    assert relative_paths(STUB, "transformer_lab").splitlines()[1] == \
        '  File "transformer_lab/attention.py", line 16, in softmax'
    elsewhere = '  File "/usr/lib/python3.11/site-packages/torch/functional.py", line 3, in f'
    assert relative_paths(elsewhere, "transformer_lab") == elsewhere
    long = "\n".join(f"line {i}" for i in range(30)) + "\n--- output of your code ---\n" + \
        "\n".join(f"printed {i}" for i in range(10))
    short = failure_text(case("mha", long), "transformer_lab", verbose=False).splitlines()
    assert short[MESSAGE_LINES - 1] == f"line {MESSAGE_LINES - 1}" and "more lines" in short[MESSAGE_LINES]
    assert "your code printed:" in short and "  printed 0" in short and "  printed 9" not in short
    whole = failure_text(case("mha", long), "transformer_lab", verbose=True).splitlines()
    assert "line 29" in whole and "  printed 9" in whole


def test_report_orders_parts_and_labels_the_bonus(cfg):
    tests = [case("mha", "wrong shape", name="mha: shapes"), case("attention", STUB, name="attention: softmax")]
    parts = {p.name: {"score": 0, "max_score": 1, "passed": 0, "tests": 1, "bonus": p.bonus} for p in cfg.parts}
    results = Results(score=0, execution_time=1.0, tests=tests, extra_data={"parts": parts, "notes": ["a note"]})
    console = Console(record=True, width=200)
    show(console, results, cfg, "Public tests", predicted=True)
    text = console.export_text()
    assert text.index("(attention)") < text.index("(mha)")  # the assignment's order, not alphabetical
    assert "flash_backward (bonus)" in text and "note: a note" in text and "FAIL mha: shapes" in text


def test_progress_follows_the_records_file(tmp_path):
    import time

    from autograder.grading.runner import _Progress

    seen: list[tuple[int, int]] = []
    path = tmp_path / "records.jsonl"
    with _Progress(path, 3, lambda done, total: seen.append((done, total)), every_s=0.01):
        for _ in range(2):
            with open(path, "a") as f:
                f.write("{}\n")
            time.sleep(0.1)
    assert seen[0] == (0, 3) and seen[-1] == (2, 3)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # never goes back


def test_missing_files_are_named_for_the_parts_graded_now(cfg, tmp_path):
    from autograder.grading.runner import _precheck

    (tmp_path / cfg.package).mkdir()
    (tmp_path / cfg.package / "attention.py").write_text("")
    everything = _precheck(cfg, tmp_path)
    assert len(everything) == 1 and f"`{cfg.package}/mha.py`" in everything[0] and "answers.ipynb" in everything[0]
    others = len(cfg.submission_files) - 2
    [mha] = _precheck(cfg, tmp_path, ["mha"])
    assert mha == (f"Missing from your submission: `{cfg.package}/mha.py`. The tests that need it fail. "
                   f"{others} more submission files are missing, for parts not graded in this run.")
    [attention] = _precheck(cfg, tmp_path, ["attention"])
    assert attention == f"{others + 1} more submission files are missing, for parts not graded in this run."
    assert _precheck(cfg, tmp_path / "nope") == [f"The submission directory {tmp_path / 'nope'} does not exist."]
