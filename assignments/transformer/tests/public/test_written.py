"""Public tests: the written answers (answers.ipynb), one test per question of questions.toml.

The notebook is read as data in the grading process (size-limited, schema-checked, never run);
answer cells are found by their metadata, wherever the student moved them. A question earns its
points when its answer cell holds an answer of the student's own (not empty, not the placeholder).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from gradescope_utils.autograder_utils.decorators import weight

from autograder.authoring.questions import NotebookReport, check_submission, load_questions

pytestmark = pytest.mark.part("written")

QUESTIONS = load_questions(Path(__file__).resolve().parents[2])
GUIDED_POINTS = 0.5
CHALLENGE_POINTS = 1.0
GUIDED = [q for q in QUESTIONS.ordered if not q.is_challenge]
CHALLENGES = [q for q in QUESTIONS.ordered if q.is_challenge]

# gradescope-utils' weight is per function: one function per point value, and questions.toml
# must agree with it (a mismatch is the instructor's to fix, so it stops collection loudly).
_wrong = [f"{q.id} has {q.points:g}" for q, want in
          [(q, GUIDED_POINTS) for q in GUIDED] + [(q, CHALLENGE_POINTS) for q in CHALLENGES]
          if q.points != want]
if _wrong:
    raise RuntimeError(f"questions.toml points do not match test_written.py's weights "
                       f"({GUIDED_POINTS:g} per guided question, {CHALLENGE_POINTS:g} per challenge): {_wrong}")


@pytest.fixture(scope="module")
def written(submission_dir: Path) -> NotebookReport:
    """The submission's notebook, checked once; a broken notebook becomes an error in the report."""
    return check_submission(submission_dir, QUESTIONS)


def _require_answer(report: NotebookReport, qid: str) -> None:
    result = report.questions[qid]
    if not result.answered:
        raise AssertionError(result.message)


@weight(GUIDED_POINTS)
@pytest.mark.parametrize("qid", [pytest.param(q.id, id=q.id) for q in GUIDED])
def test_guided_question_answered(written, qid):
    """the guided question has an answer in answers.ipynb"""
    _require_answer(written, qid)


@weight(CHALLENGE_POINTS)
@pytest.mark.parametrize("qid", [pytest.param(q.id, id=q.id) for q in CHALLENGES])
def test_challenge_answered(written, qid):
    """the challenge has an answer in answers.ipynb"""
    _require_answer(written, qid)
