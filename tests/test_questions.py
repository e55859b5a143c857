"""Written questions: questions.toml validation, the generated notebook and handout, checking and
exporting submitted notebooks, and the `written` grading suite end to end."""
from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.authoring.questions import (
    ANSWERS_FILE,
    QuestionsError,
    Status,
    build_notebook,
    check_notebook,
    check_submission,
    export_answers,
    load_questions,
    notebook_text,
    render_handout,
    stale_generated,
    write_generated,
)

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = ROOT / "assignments" / "transformer"
TEMPLATE = ROOT / "student_template"
REFERENCE = ROOT / "reference"


@pytest.fixture(scope="module")
def qs():
    return load_questions(ASSIGNMENT)


def answer_cells(nb, qid=None):
    return [c for c in nb.cells if c.metadata.get("autograder", {}).get("role") == "answer"
            and (qid is None or c.metadata["autograder"]["question"] == qid)]


def filled(qs, answers=None):
    """The template notebook with answers written into answer cells (all of them by default)."""
    nb = build_notebook(qs)
    for cell in answer_cells(nb):
        qid = cell.metadata["autograder"]["question"]
        if answers is None:
            cell.source = f"My answer to {qid}: attention is a weighted average of values."
        elif qid in answers:
            cell.source = answers[qid]
    return nb


def save(nb, path: Path) -> Path:
    nbformat.write(nb, str(path))
    return path


# --------------------------------------------------------------------------- questions.toml


def test_bundled_questions_cover_the_lecture(qs):
    guided = [q for q in qs.ordered if not q.is_challenge]
    challenges = [q for q in qs.ordered if q.is_challenge]
    assert [q.id for q in guided] == [f"q{i:02d}" for i in range(1, 25)]
    assert [q.id for q in challenges] == ["c1", "c2", "c3", "c4"]
    assert {q.part for q in guided} == {1, 2, 3, 4, 5}
    assert [sum(q.part == p for q in guided) for p in range(1, 6)] == [6, 6, 4, 4, 4]
    assert all(q.points == 0.5 for q in guided) and all(q.points == 1 for q in challenges)
    assert qs.total_points == 16
    assert all(2 <= len(q.prompts) <= 4 for q in qs.questions)
    assert qs.labels()["q03"] == "Q3" and qs.labels()["c2"] == "Challenge 2"


VALID = '''
title = "T"
placeholder = "*Write here.*"
[[sections]]
part = 1
title = "One"
[[questions]]
id = "q01"
part = 1
points = 0.5
title = "First"
question = "Why?"
prompts = ["a", "b"]
model_answer = "Because."
'''


def write_toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "questions.toml"
    p.write_text(text)
    return p


def test_loader_accepts_minimal_file(tmp_path):
    qs = load_questions(write_toml(tmp_path, VALID))
    assert [q.id for q in qs.questions] == ["q01"] and qs.total_points == 0.5
    assert load_questions(tmp_path) == qs  # a directory means its questions.toml


@pytest.mark.parametrize("text,match", [
    (VALID + 'colour = "red"\n', "colour: Extra inputs are not permitted"),
    (VALID.replace('prompts = ["a", "b"]', 'prompts = ["a", "b"]\nhint = "x"'),
     r"questions\[0\] \('q01'\)\.hint: Extra inputs"),
    (VALID + VALID[VALID.index("[[questions]]"):], "duplicate question ids: \\['q01'\\]"),
    (VALID.replace("part = 1\npoints", "part = 7\npoints"), r"questions\[0\] \('q01'\)\.part"),
    (VALID.replace('prompts = ["a", "b"]', 'prompts = ["a"]'), "prompts: List should have at least 2"),
    (VALID.replace('prompts = ["a", "b"]', 'prompts = ["a", "b", "c", "d", "e"]'), "at most 4"),
    (VALID.replace('prompts = ["a", "b"]', 'prompts = ["a", " "]'), "a prompt is blank"),
    (VALID.replace("points = 0.5", "points = 0"), "greater than 0"),
    (VALID.replace('id = "q01"', 'id = "Q 1"'), "should match pattern"),
    (VALID.replace('placeholder = "*Write here.*"', 'placeholder = "..."'), "must be one line with words"),
    (VALID.replace("[[sections]]\npart = 1", "[[sections]]\npart = 2"), "without a \\[\\[sections\\]\\] entry"),
    (VALID + '[[sections]]\npart = "challenge"\ntitle = "C"\n', "sections without questions"),
    (VALID.replace('title = "First"\n', ""), "title: Field required"),
    (VALID.replace('model_answer = "Because."\n', ""), "model_answer: Field required"),
    (VALID.replace('model_answer = "Because."', 'model_answer = " ... "'), "model answer has no words"),
    (VALID.replace('model_answer = "Because."', 'model_answer = "*Write here.*"'),
     "model answers that are only the placeholder: \\['q01'\\]"),
    ("title = ", "not valid TOML"),
])
def test_loader_rejects_mistakes_clearly(tmp_path, text, match):
    with pytest.raises(QuestionsError, match=match) as e:
        load_questions(write_toml(tmp_path, text))
    assert str(tmp_path) in str(e.value)


def test_loader_missing_file(tmp_path):
    with pytest.raises(QuestionsError, match="no such file"):
        load_questions(tmp_path / "nope.toml")


# --------------------------------------------------------------------------- generation


def test_generated_notebook_is_valid_and_complete(qs):
    nb = build_notebook(qs)
    nbformat.validate(nb)
    answers = answer_cells(nb)
    assert len(answers) == 28 and all(c.source == qs.placeholder for c in answers)
    assert [c.metadata["autograder"]["question"] for c in answers] == [q.id for q in qs.ordered]
    questions = [c for c in nb.cells if c.metadata.get("autograder", {}).get("role") == "question"]
    assert len(questions) == 28
    assert sum(c.source.startswith("### Q") for c in questions) == 24
    assert sum(c.source.startswith("### Challenge") for c in questions) == 4
    assert "Scaling the scores" in questions[2].source and "Points to consider" in questions[2].source
    assert nb.cells[0].metadata["autograder"]["role"] == "intro"
    # Deterministic: regenerating gives the same bytes (fixed cell ids, no random ones).
    assert notebook_text(qs) == notebook_text(qs)
    assert len({c.id for c in nb.cells}) == len(nb.cells)


def test_template_notebook_scores_nothing(qs):
    report = check_notebook(TEMPLATE / ANSWERS_FILE, qs)
    assert report.ok and report.answered() == []
    assert {r.status for r in report.questions.values()} == {Status.PLACEHOLDER}


def _model_answer_snippets(q) -> list[str]:
    """Distinctive pieces of a model answer: its first 60 characters and each long line."""
    text = q.model_answer.strip()
    return [text[:60]] + [line.strip() for line in text.splitlines() if len(line.strip()) > 40]


def test_model_answers_stay_out_of_student_files(qs):
    """Neither the student notebook nor the handout shows a model answer (in the file, or as built)."""
    texts = {"template notebook": (TEMPLATE / ANSWERS_FILE).read_text(), "built notebook": notebook_text(qs),
             "handout": (ASSIGNMENT / "handout_questions.md").read_text(), "rendered handout": render_handout(qs)}
    for name, text in texts.items():
        leaked = [q.id for q in qs.questions for snippet in _model_answer_snippets(q)
                  if snippet in text or json.dumps(snippet)[1:-1] in text]
        assert leaked == [], f"{name} contains model answers: {sorted(set(leaked))}"


def test_model_answers_are_substantial(qs):
    for q in qs.questions:
        words = len(q.model_answer.split())
        assert words >= (150 if q.is_challenge else 60), f"{q.id}: model answer of only {words} words"
        assert qs.placeholder not in q.model_answer


def test_reference_notebook_holds_every_model_answer(qs):
    """reference/answers.ipynb is the student notebook with the model answers in its answer cells."""
    ref = nbformat.read(str(REFERENCE / ANSWERS_FILE), as_version=4)
    student = nbformat.read(str(TEMPLATE / ANSWERS_FILE), as_version=4)
    nbformat.validate(ref)
    assert ref.metadata == student.metadata and len(ref.cells) == len(student.cells)
    for r, s in zip(ref.cells, student.cells):
        assert (r.id, r.cell_type, r.metadata) == (s.id, s.cell_type, s.metadata)
        if r.metadata.get("autograder", {}).get("role") == "answer":
            q = qs.get(r.metadata["autograder"]["question"])
            assert s.source == qs.placeholder and r.source == q.model_answer.strip()
        else:
            assert r.source == s.source
    assert build_notebook(qs, model_answers=True) == ref

    report = check_submission(REFERENCE, qs)
    assert report.ok and report.warnings == [] and report.points() == qs.total_points == 16
    assert {r.status for r in report.questions.values()} == {Status.ANSWERED}
    assert all(report.questions[q.id].text == q.model_answer.strip() for q in qs.questions)


def test_handout_lists_every_question(qs):
    text = render_handout(qs)
    assert text.startswith("<!-- Generated")
    assert "(16 points)" in text and "## Challenges (1 point each)" in text
    assert all(f"### Q{i}. " in text for i in range(1, 25))
    assert all(q.title in text and all(p in text for p in q.prompts) for q in qs.questions)


def test_committed_files_are_in_sync():
    assert stale_generated(ASSIGNMENT, TEMPLATE) == [], "run `autograder template`"


def test_stale_generated_detects_changes(tmp_path):
    adir, troot = tmp_path / "assignment", tmp_path / "template"
    adir.mkdir()
    (adir / "questions.toml").write_text((ASSIGNMENT / "questions.toml").read_text())
    assert len(stale_generated(adir, troot)) == 2  # both missing; no assignment.toml, so no reference
    written = write_generated(adir, troot)
    assert sorted(p.name for p in written) == [ANSWERS_FILE, "handout_questions.md"]
    assert stale_generated(adir, troot) == []
    (adir / "questions.toml").write_text((adir / "questions.toml").read_text().replace(
        "Queries, keys and values", "Queries, keys, values"))
    assert len(stale_generated(adir, troot)) == 2
    assert all(p.startswith("out of date: ") for p in stale_generated(adir, troot))


def test_reference_notebook_is_generated_beside_the_others(tmp_path):
    """The reference root comes from assignment.toml (or is given); only its notebook holds model answers."""
    adir, troot, rroot = tmp_path / "assignment", tmp_path / "template", tmp_path / "reference"
    adir.mkdir()
    (adir / "questions.toml").write_text((ASSIGNMENT / "questions.toml").read_text())
    (adir / "assignment.toml").write_text((ASSIGNMENT / "assignment.toml").read_text().replace(
        'reference = "../../reference"', 'reference = "../reference"').replace(
        'template = "../../student_template"', 'template = "../template"'))
    assert sorted(stale_generated(adir, troot)) == sorted(
        f"missing: {p}" for p in (troot / ANSWERS_FILE, adir / "handout_questions.md", rroot / ANSWERS_FILE))
    written = write_generated(adir, troot)
    assert sorted(written) == sorted([troot / ANSWERS_FILE, adir / "handout_questions.md", rroot / ANSWERS_FILE])
    assert stale_generated(adir, troot) == []
    # An explicit reference root wins over assignment.toml's.
    other = tmp_path / "other"
    assert stale_generated(adir, troot, other) == [f"missing: {other / ANSWERS_FILE}"]
    assert other / ANSWERS_FILE in write_generated(adir, troot, other)
    assert (other / ANSWERS_FILE).read_bytes() == (rroot / ANSWERS_FILE).read_bytes()
    # Editing a model answer changes the reference's notebook and nothing else.
    text = (adir / "questions.toml").read_text()
    assert text.count("model_answer = '''\nThe names come from retrieval") == 1
    (adir / "questions.toml").write_text(text.replace(
        "model_answer = '''\nThe names come from retrieval", "model_answer = '''\nThe names come from search"))
    assert stale_generated(adir, troot) == [f"out of date: {rroot / ANSWERS_FILE}"]


def test_no_questions_file_means_nothing_to_generate(tmp_path):
    assert write_generated(tmp_path, tmp_path / "t") == [] and stale_generated(tmp_path, tmp_path / "t") == []


# --------------------------------------------------------------------------- checking


def test_complete_notebook(qs, tmp_path):
    report = check_notebook(save(filled(qs), tmp_path / ANSWERS_FILE), qs)
    assert report.ok and len(report.answered()) == 28 and report.points() == 16
    assert report.questions["q03"].text == "My answer to q03: attention is a weighted average of values."


def test_partial_notebook(qs, tmp_path):
    nb = filled(qs, {"q01": "Queries come from the same sequence.", "q02": "",
                     "q03": "   \n", "q04": "...", "c1": qs.placeholder + "\n\nAbout 24 n d^2 FLOPs."})
    report = check_notebook(save(nb, tmp_path / ANSWERS_FILE), qs)
    status = {k: r.status for k, r in report.questions.items()}
    assert status["q01"] is Status.ANSWERED and status["c1"] is Status.ANSWERED
    assert report.questions["c1"].text == "About 24 n d^2 FLOPs."  # the placeholder line is dropped
    assert status["q02"] is Status.EMPTY and status["q03"] is Status.EMPTY and status["q04"] is Status.EMPTY
    assert status["q05"] is Status.PLACEHOLDER
    assert sorted(report.answered()) == ["c1", "q01"]
    msg = report.questions["q05"].message
    assert "Q5 (q05: What attention outputs)" in msg and "placeholder" in msg and "cell 12" in msg
    assert "has no words in it" in report.questions["q02"].message
    assert "3 of 28 questions answered" not in report.summary() and "2 of 28" in report.summary()


def test_placeholder_recognised_with_other_emphasis(qs, tmp_path):
    bare = qs.placeholder.strip("*_")
    nb = filled(qs, {"q01": bare, "q02": f"**{bare}**\n\n", "q03": f"- {bare}\n\nMy own words."})
    report = check_notebook(save(nb, tmp_path / ANSWERS_FILE), qs)
    assert report.questions["q01"].status is Status.PLACEHOLDER
    assert report.questions["q02"].status is Status.PLACEHOLDER
    assert report.questions["q03"].status is Status.ANSWERED and report.questions["q03"].text == "My own words."


def test_reordered_and_retitled_cells_are_still_found(qs, tmp_path):
    nb = filled(qs)
    random.Random(0).shuffle(nb.cells)
    for cell in nb.cells:
        role = cell.metadata["autograder"]["role"]
        if role == "question":
            cell.source = "## My own heading\n\nrewritten question"
        cell.id = f"x{random.Random(cell.source).randrange(10**9)}-{nb.cells.index(cell)}"
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("# My notes"))
    nb.cells.append(nbformat.v4.new_code_cell("print('hello')"))
    report = check_notebook(save(nb, tmp_path / ANSWERS_FILE), qs)
    assert report.ok and len(report.answered()) == 28


def test_deleted_answer_cell_is_missing(qs, tmp_path):
    nb = filled(qs)
    nb.cells.remove(answer_cells(nb, "q07")[0])
    answer_cells(nb, "q08")[0].metadata = {}  # metadata cleared: no longer an answer cell
    report = check_notebook(save(nb, tmp_path / ANSWERS_FILE), qs)
    assert report.ok and len(report.answered()) == 26
    for qid in ("q07", "q08"):
        r = report.questions[qid]
        assert r.status is Status.MISSING and not r.answered
        assert "no answer cell" in r.message and f'"question": "{qid}"' in r.message


def test_copied_answer_cell_is_read_together(qs, tmp_path):
    nb = filled(qs, {"q09": "First half."})
    cell = answer_cells(nb, "q09")[0]
    twin = copy.deepcopy(cell)
    twin.id, twin.source = "twin", "Second half."
    empty_twin = copy.deepcopy(cell)
    empty_twin.id, empty_twin.source = "twin2", qs.placeholder
    nb.cells.insert(nb.cells.index(cell) + 1, twin)
    nb.cells.append(empty_twin)
    report = check_notebook(save(nb, tmp_path / ANSWERS_FILE), qs)
    r = report.questions["q09"]
    assert r.status is Status.DUPLICATED and r.answered and len(r.cells) == 3
    assert r.text == "First half.\n\nSecond half."
    assert "read together" in r.message


def test_text_in_an_unmarked_cell_gets_a_hint(qs, tmp_path):
    nb = filled(qs, {})
    cell = answer_cells(nb, "q10")[0]
    nb.cells.insert(nb.cells.index(cell) + 1, nbformat.v4.new_markdown_cell("My answer, in a new cell."))
    report = check_notebook(save(nb, tmp_path / ANSWERS_FILE), qs)
    r = report.questions["q10"]
    assert r.status is Status.PLACEHOLDER and "has text but is not an answer cell" in r.message
    assert "not an answer cell" not in report.questions["q11"].message


def test_unknown_question_ids_are_ignored_with_a_note(qs, tmp_path):
    nb = filled(qs)
    nb.cells.append(nbformat.v4.new_markdown_cell(
        "stray", metadata={"autograder": {"question": "q99", "role": "answer"}}))
    report = check_notebook(save(nb, tmp_path / ANSWERS_FILE), qs)
    assert len(report.answered()) == 28 and "'q99'" in report.warnings[0]


def test_answer_cell_turned_into_code_still_counts(qs, tmp_path):
    nb = filled(qs)
    cell = answer_cells(nb, "q08")[0]
    nb.cells[nb.cells.index(cell)] = nbformat.v4.new_code_cell(
        "params = 4 * d * d  # W_Q, W_K, W_V, W_O", metadata=dict(cell.metadata), id="code")
    report = check_notebook(save(nb, tmp_path / ANSWERS_FILE), qs)
    assert report.questions["q08"].answered and report.questions["q08"].cells[0].cell_type == "code"


def test_older_notebook_formats_are_read(qs, tmp_path):
    """nbformat 4.4 (no cell ids, as older Jupyter writes it) with sources as lists of lines."""
    data = json.loads(nbformat.writes(filled(qs)))
    data["nbformat_minor"] = 4
    for cell in data["cells"]:
        del cell["id"]
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        cell["source"] = source.splitlines(keepends=True)
    assert any(len(c["source"]) > 1 for c in data["cells"])
    path = tmp_path / ANSWERS_FILE
    path.write_text(json.dumps(data))
    report = check_notebook(path, qs)
    assert report.ok and len(report.answered()) == 28


def corrupt_cases(qs) -> dict[str, tuple[bytes, str]]:
    text = nbformat.writes(filled(qs))
    bad_schema = json.loads(text)
    bad_schema["cells"][3]["source"] = 5
    no_cells = json.loads(text)
    del no_cells["cells"]
    return {
        "not_json": (b"this is not a notebook", "not valid JSON (line 1, column 1"),
        "truncated": (text[: len(text) // 2].encode(), "not valid JSON (line"),
        "empty": (b"", "is empty"),
        "binary": (b"\xff\xfe\x00garbage", "not UTF-8"),
        "json_list": (b"[1, 2, 3]", "not a Jupyter notebook"),
        "no_cells": (json.dumps(no_cells).encode(), "not a Jupyter notebook"),
        "bad_schema": (json.dumps(bad_schema).encode(), "not a valid Jupyter notebook (cells/3/source"),
        "deep": (b"[" * 100000 + b"]" * 100000, ""),
    }


@pytest.mark.parametrize("case", ["not_json", "truncated", "empty", "binary", "json_list", "no_cells",
                                  "bad_schema", "deep"])
def test_corrupt_notebook_is_a_notebook_level_error(qs, tmp_path, case):
    data, match = corrupt_cases(qs)[case]
    path = tmp_path / ANSWERS_FILE
    path.write_bytes(data)
    report = check_notebook(path, qs)
    assert not report.ok and match in report.error and ANSWERS_FILE in report.error
    assert report.answered() == [] and len(report.questions) == 28
    assert all(r.status is Status.UNREADABLE and report.error in r.message for r in report.questions.values())


def test_too_large_notebook(qs, tmp_path):
    path = save(filled(qs), tmp_path / ANSWERS_FILE)
    report = check_notebook(path, qs, max_bytes=1000)
    assert not report.ok and "larger than the 0.001 MB allowed" in report.error
    big = tmp_path / "big.ipynb"
    big.write_bytes(b" " * (6 * 1024 * 1024) + path.read_bytes())  # valid JSON, but over 5 MiB
    assert "larger than" in check_notebook(big, qs).error


def test_symlinks_and_missing_files_are_refused(qs, tmp_path):
    target = save(filled(qs), tmp_path / "elsewhere.ipynb")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / ANSWERS_FILE).symlink_to(target)
    assert "symbolic link" in check_submission(sub, qs).error
    (sub / ANSWERS_FILE).unlink()
    (sub / ANSWERS_FILE).mkdir()
    assert "not a regular file" in check_submission(sub, qs).error
    (sub / ANSWERS_FILE).rmdir()
    if hasattr(os, "mkfifo"):  # a FIFO would block a naive read forever
        os.mkfifo(sub / ANSWERS_FILE)
        assert "not a regular file" in check_submission(sub, qs).error
        (sub / ANSWERS_FILE).unlink()
    report = check_submission(sub, qs)
    assert "was not found" in report.error and "found instead" not in report.error
    save(filled(qs), sub / "Answers (1).ipynb")
    (sub / "nested").mkdir()
    save(filled(qs), sub / "nested" / ANSWERS_FILE)
    report = check_submission(sub, qs)
    assert "Notebooks found instead: Answers (1).ipynb, nested/answers.ipynb" in report.error
    assert report.error in report.questions["q01"].message


# --------------------------------------------------------------------------- export


def test_export_one_submission(qs, tmp_path):
    nb = filled(qs, {"q03": "Variance grows like d_k.\n\n<script>alert(1)</script>"})
    sub = tmp_path / "alice"
    sub.mkdir()
    save(nb, sub / ANSWERS_FILE)
    files = export_answers({"alice": sub}, qs, tmp_path / "out")
    assert [p.name for p in files] == ["alice.md", "alice.html"]
    md, page = (p.read_text() for p in files)
    assert "1 of 28 questions answered" in md
    assert "## Q3. Scaling the scores by √d_k" in md and "Variance grows like d_k." in md
    assert md.count("**Status:** not answered (placeholder left)") == 27
    assert md.count("**Status:** answered") == 1
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Variance grows like d_k." in page


def test_export_several_submissions_groups_by_question(qs, tmp_path):
    save(filled(qs, {"q03": "Alice on scaling.", "c1": "Alice on FLOPs."}), tmp_path / "a.ipynb")
    save(filled(qs, {"q03": "Bob on scaling."}), tmp_path / "b.ipynb")
    (tmp_path / "c.ipynb").write_text("{ not json")
    files = export_answers({"bob": tmp_path / "b.ipynb", "alice": tmp_path / "a.ipynb",
                            "carol": tmp_path / "c.ipynb"}, qs, tmp_path / "out")
    names = {p.name for p in files}
    assert names == {f"{q.id}.{ext}" for q in qs.questions for ext in ("md", "html")} | {"index.md", "index.html"}
    q03 = (tmp_path / "out" / "q03.md").read_text()
    assert "2 of 3 submissions answered" in q03
    assert q03.index("### alice") < q03.index("Alice on scaling.") < q03.index("### bob") < q03.index("Bob on scaling.")
    assert "### carol (notebook unreadable)" in q03 and "not valid JSON" in q03
    c1 = (tmp_path / "out" / "c1.md").read_text()
    assert "Alice on FLOPs." in c1 and "### bob (not answered (placeholder left))" in c1
    assert "Bob on scaling." not in c1
    html_q03 = (tmp_path / "out" / "q03.html").read_text()
    assert "Alice on scaling." in html_q03 and "Bob on scaling." in html_q03
    index = (tmp_path / "out" / "index.md").read_text()
    assert "| alice | 2/28 |" in index and "| bob | 1/28 |" in index and "| carol | 0/28 |" in index
    assert "carol:" in index and "[Q3](q03.md)" in index


def test_export_needs_submissions(qs, tmp_path):
    with pytest.raises(ValueError):
        export_answers({}, qs, tmp_path)


# --------------------------------------------------------------------------- the grading suite


def run_written_suite(tmp_path: Path, notebook: bytes | None) -> dict[str, dict]:
    """Run tests/public/test_written.py with the grading plugin; records by test id."""
    from autograder.authoring import config as config_mod

    cfg = config_mod.load(ASSIGNMENT)
    adir = tmp_path / "assignment"
    adir.mkdir(parents=True)
    text = (ASSIGNMENT / "assignment.toml").read_text()
    text = text.replace('reference = "../../reference"', f'reference = "{cfg.reference_root}"')
    text = text.replace('template = "../../student_template"', f'template = "{cfg.template_root}"')
    if "written" not in cfg.part_names:  # until assignment.toml has the part
        text = text.replace("\n[tolerances", '\n[[parts]]\nname = "written"\ntitle = "Written"\npoints = 16\n'
                            'files = ["answers.ipynb"]\n\n[tolerances', 1)
    (adir / "assignment.toml").write_text(text)
    sub = tmp_path / "submission"
    sub.mkdir()
    if notebook is not None:
        (sub / ANSWERS_FILE).write_bytes(notebook)
    records = tmp_path / "records.jsonl"
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(ROOT),
         "-p", "autograder.grading.plugin", "-p", "no:cacheprovider", "--ag-assignment", str(adir),
         "--ag-root", str(sub), "--ag-records", str(records), "--ag-suite-root", str(ASSIGNMENT / "tests"),
         str(ASSIGNMENT / "tests" / "public" / "test_written.py")],
        check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert "error" not in proc.stdout.splitlines()[-1], proc.stdout[-3000:] + proc.stderr[-3000:]
    out = {}
    for line in records.read_text().splitlines():
        rec = json.loads(line)
        out[rec["nodeid"].split("[")[-1].rstrip("]")] = rec
    return out


@pytest.mark.slow
def test_written_suite_end_to_end(qs, tmp_path):
    nb = filled(qs, {q.id: f"An answer to {q.id}." for q in qs.questions if q.id not in ("q05", "c2")})
    nb.cells.remove(answer_cells(nb, "c2")[0])
    records = run_written_suite(tmp_path / "partial", nbformat.writes(nb).encode())
    assert len(records) == 28
    assert sum(r["score"] for r in records.values()) == 16 - 0.5 - 1
    assert sum(r["max_score"] for r in records.values()) == 16
    assert records["q05"]["status"] == "failed" and "placeholder" in records["q05"]["message"]
    assert records["c2"]["status"] == "failed" and "no answer cell" in records["c2"]["message"]
    assert records["c1"]["max_score"] == 1 and records["c1"]["score"] == 1

    corrupt = run_written_suite(tmp_path / "corrupt", b'{"cells": [')
    assert len(corrupt) == 28 and all(r["score"] == 0 for r in corrupt.values())
    assert all("not valid JSON" in r["message"] for r in corrupt.values())

    missing = run_written_suite(tmp_path / "missing", None)
    assert all("answers.ipynb was not found" in r["message"] for r in missing.values())
