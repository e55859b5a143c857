"""Written questions: ``questions.toml``, the answers notebook and handout built from it, and the
checking and exporting of submitted notebooks.

``questions.toml`` is the single source: ``answers.ipynb`` in the student template, the
handout section and the reference's ``answers.ipynb`` (the same notebook with each question's
model answer in its answer cell) are generated from it, so they cannot drift apart. Answer cells are found by
their metadata (``{"autograder": {"question": "q03", "role": "answer"}}``), never by position,
so students may reorder, retitle, split or add cells freely. A submitted notebook is data: it is
read with a size limit and checked against nbformat's schema, and nothing in it is ever run.
"""
from __future__ import annotations

import html
import json
import os
import re
import stat
import sys
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import nbformat
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (Gradescope's image)
    import tomli as tomllib

QUESTIONS_FILE = "questions.toml"
ANSWERS_FILE = "answers.ipynb"
HANDOUT_FILE = "handout_questions.md"
MAX_NOTEBOOK_BYTES = 5 * 1024 * 1024
META_KEY = "autograder"
CHALLENGE = "challenge"
GENERATED_NOTE = "<!-- Generated from questions.toml by `autograder template`: edit that file, not this one. -->"

PartKey = Literal[1, 2, 3, 4, 5, "challenge"]


# --------------------------------------------------------------------------- questions.toml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Section(_Strict):
    """A part of the lecture's questions (1-5, or the challenges): a heading in notebook and handout."""

    part: PartKey
    title: str = Field(min_length=1)
    intro: str = ""


class Question(_Strict):
    """One written question; ``id`` is stable because submitted notebooks refer to it."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    part: PartKey
    points: float = Field(gt=0)
    title: str = Field(min_length=1)
    question: str = Field(min_length=1)
    prompts: list[str] = Field(min_length=2, max_length=4)
    model_answer: str = Field(min_length=1, description="Markdown; only the reference's notebook shows it")

    @field_validator("prompts")
    @classmethod
    def _prompts_not_blank(cls, prompts: list[str]) -> list[str]:
        if any(not p.strip() for p in prompts):
            raise ValueError("a prompt is blank")
        return prompts

    @field_validator("model_answer")
    @classmethod
    def _model_answer_has_words(cls, text: str) -> str:
        if not _has_words(text):
            raise ValueError("the model answer has no words in it")
        return text

    @property
    def is_challenge(self) -> bool:
        return self.part == CHALLENGE


class QuestionSet(_Strict):
    """All written questions of an assignment, with the texts around them."""

    title: str = Field(min_length=1)
    intro: str = ""
    handout_intro: str = ""
    placeholder: str = Field(min_length=1, description="text of a fresh answer cell")
    sections: list[Section] = Field(min_length=1)
    questions: list[Question] = Field(min_length=1)

    @field_validator("placeholder")
    @classmethod
    def _placeholder_has_words(cls, text: str) -> str:
        if not _has_words(text) or "\n" in text.strip():
            raise ValueError("the placeholder must be one line with words in it (it is recognised by them)")
        return text

    @model_validator(mode="after")
    def _consistent(self) -> QuestionSet:
        shown = sorted(q.id for q in self.questions if not answer_text(q.model_answer, self.placeholder))
        if shown:
            raise ValueError(f"model answers that are only the placeholder: {shown}")
        ids = [q.id for q in self.questions]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate question ids: {dupes}")
        parts = [s.part for s in self.sections]
        if len(set(parts)) != len(parts):
            raise ValueError(f"duplicate sections: {parts}")
        unknown = sorted({str(q.part) for q in self.questions} - {str(p) for p in parts})
        if unknown:
            raise ValueError(f"questions refer to parts without a [[sections]] entry: {unknown}")
        empty = [s.part for s in self.sections if not any(q.part == s.part for q in self.questions)]
        if empty:
            raise ValueError(f"sections without questions: {empty}")
        return self

    # ------------------------------------------------------------------ derived
    @property
    def ordered(self) -> list[Question]:
        """Questions in notebook order: by section, then as listed in the file."""
        return [q for s in self.sections for q in self.questions if q.part == s.part]

    @property
    def total_points(self) -> float:
        return sum(q.points for q in self.questions)

    def get(self, qid: str) -> Question:
        for q in self.questions:
            if q.id == qid:
                return q
        raise KeyError(f"no written question with id {qid!r}")

    def labels(self) -> dict[str, str]:
        """Display labels by id: guided questions "Q1".."Qn", challenges "Challenge 1".."""
        out: dict[str, str] = {}
        guided = challenge = 0
        for q in self.ordered:
            if q.is_challenge:
                challenge += 1
                out[q.id] = f"Challenge {challenge}"
            else:
                guided += 1
                out[q.id] = f"Q{guided}"
        return out

    def section(self, part: PartKey) -> Section:
        return next(s for s in self.sections if s.part == part)


class QuestionsError(Exception):
    pass


def load_questions(path: str | Path) -> QuestionSet:
    """Load ``questions.toml`` (or the assignment directory holding it) with readable errors."""
    path = Path(path)
    if path.is_dir():
        path = path / QUESTIONS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QuestionsError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise QuestionsError(f"{path}: not valid TOML: {e}") from None
    try:
        return QuestionSet.model_validate(data)
    except ValidationError as e:
        raise QuestionsError(f"{path}: {len(e.errors())} problem(s):\n" + _describe_errors(e, data)) from None


def _describe_errors(error: ValidationError, data: Any) -> str:
    """One line per problem, naming the question by its id rather than a list index."""
    lines = []
    for err in error.errors():
        loc = list(err["loc"])
        where = []
        for i, key in enumerate(loc):
            if isinstance(key, int) and i > 0 and loc[i - 1] in ("questions", "sections"):
                entry = _safe_index(data.get(loc[i - 1]) if isinstance(data, dict) else None, key)
                name = entry.get("id", entry.get("part")) if isinstance(entry, dict) else None
                where[-1] = f"{loc[i - 1]}[{key}]" + (f" ({name!r})" if name is not None else "")
            else:
                where.append(str(key))
        lines.append(f"  {'.'.join(where) or '(top level)'}: {err['msg']}")
    return "\n".join(lines)


def _safe_index(seq: Any, i: int) -> Any:
    return seq[i] if isinstance(seq, list) and 0 <= i < len(seq) else None


# --------------------------------------------------------------------------- generation


def _points(p: float) -> str:
    return f"{p:g} point" + ("" if p == 1 else "s")


def _section_heading(section: Section, questions: QuestionSet) -> str:
    qs = [q for q in questions.ordered if q.part == section.part]
    pts = {q.points for q in qs}
    each = f"{_points(pts.pop())} each" if len(pts) == 1 else _points(sum(q.points for q in qs))
    prefix = "" if section.part == CHALLENGE else f"Part {section.part}: "
    return f"## {prefix}{section.title} ({each})"


def _question_markdown(q: Question, label: str, level: str = "###") -> str:
    prompts = "\n".join(f"- {p}" for p in q.prompts)
    return (f"{level} {label}. {q.title} ({_points(q.points)})\n\n{q.question.strip()}\n\n"
            f"Points to consider:\n\n{prompts}")


def build_notebook(questions: QuestionSet, model_answers: bool = False) -> nbformat.NotebookNode:
    """The student's answers notebook: an intro, then per question its text and an answer cell.

    Cell ids are fixed (not random) so that regenerating gives the same file, and the answer
    cells carry their question id in metadata: that, not their position, is how they are found.
    With ``model_answers`` it is the reference's notebook: the same cells, each answer cell
    holding the question's model answer instead of the placeholder.
    """
    v4 = nbformat.v4
    labels = questions.labels()
    total = questions.total_points
    cells = [v4.new_markdown_cell(
        f"# {questions.title}\n\n{len(questions.questions)} questions, {_points(total)} in total.\n\n"
        f"{questions.intro.strip()}",
        id="intro", metadata={META_KEY: {"role": "intro"}})]
    for section in questions.sections:
        body = _section_heading(section, questions)
        if section.intro.strip():
            body += f"\n\n{section.intro.strip()}"
        cells.append(v4.new_markdown_cell(body, id=f"part-{section.part}",
                                          metadata={META_KEY: {"role": "section"}}))
        for q in (q for q in questions.ordered if q.part == section.part):
            cells.append(v4.new_markdown_cell(
                _question_markdown(q, labels[q.id]), id=f"{q.id}-question",
                metadata={META_KEY: {"question": q.id, "role": "question"}}))
            cells.append(v4.new_markdown_cell(
                q.model_answer.strip() if model_answers else questions.placeholder, id=f"{q.id}-answer",
                metadata={META_KEY: {"question": q.id, "role": "answer"}, "deletable": False}))
    nb = v4.new_notebook(cells=cells, metadata={META_KEY: {"role": "answers", "title": questions.title}})
    nbformat.validate(nb)
    return nb


def notebook_text(questions: QuestionSet, model_answers: bool = False) -> str:
    """The notebook as it is written to disk (deterministic: same questions, same bytes)."""
    text = nbformat.writes(build_notebook(questions, model_answers), version=4)
    return text if text.endswith("\n") else text + "\n"


def render_handout(questions: QuestionSet) -> str:
    """The written-questions section of the handout, in Markdown."""
    labels = questions.labels()
    out = [GENERATED_NOTE, "",
           f"# {questions.title} ({_points(questions.total_points)})", ""]
    if questions.handout_intro.strip():
        out += [questions.handout_intro.strip(), ""]
    for section in questions.sections:
        out += [_section_heading(section, questions), ""]
        if section.intro.strip():
            out += [section.intro.strip(), ""]
        for q in (q for q in questions.ordered if q.part == section.part):
            out += [_question_markdown(q, labels[q.id]), ""]
    return "\n".join(out).rstrip() + "\n"


def _reference_root(assignment_dir: Path, reference_root: str | Path | None) -> Path | None:
    """The reference's implementation root: as given, else from assignment.toml beside questions.toml."""
    if reference_root is not None:
        return Path(reference_root)
    if not (assignment_dir / "assignment.toml").is_file():
        return None  # questions.toml on its own (no reference to write the model answers into)
    from autograder.authoring import config as config_mod

    return config_mod.load(assignment_dir).reference_root


def _generated(assignment_dir: Path, template_root: Path,
               reference_root: str | Path | None = None) -> dict[Path, str]:
    qpath = Path(assignment_dir) / QUESTIONS_FILE
    if not qpath.exists():
        return {}  # an assignment without written questions
    qs = load_questions(qpath)
    files = {Path(template_root) / ANSWERS_FILE: notebook_text(qs),
             Path(assignment_dir) / HANDOUT_FILE: render_handout(qs)}
    ref = _reference_root(Path(assignment_dir), reference_root)
    if ref is not None:
        files[ref / ANSWERS_FILE] = notebook_text(qs, model_answers=True)
    return files


def write_generated(assignment_dir: str | Path, template_root: str | Path,
                    reference_root: str | Path | None = None) -> list[Path]:
    """Write ``answers.ipynb`` into the template, ``handout_questions.md`` beside questions.toml and
    the model answers' ``answers.ipynb`` into the reference.

    The reference root defaults to the one named by ``assignment.toml`` beside questions.toml;
    without that file (and without ``reference_root``) no reference notebook is written.
    Returns the files written (none when the assignment has no questions.toml).
    Raises QuestionsError when questions.toml is invalid (config.ConfigError for assignment.toml).
    """
    written = []
    for path, text in _generated(Path(assignment_dir), Path(template_root), reference_root).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_generated(assignment_dir: str | Path, template_root: str | Path,
                    reference_root: str | Path | None = None) -> list[str]:
    """Generated files that are missing or differ from a fresh generation (empty = in sync)."""
    problems = []
    for path, text in _generated(Path(assignment_dir), Path(template_root), reference_root).items():
        if not path.exists():
            problems.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"out of date: {path}")
    return problems


# --------------------------------------------------------------------------- checking


class NotebookError(Exception):
    """The submitted notebook cannot be read as a notebook; the message is for the student."""


class Status(str, Enum):
    ANSWERED = "answered"
    DUPLICATED = "duplicated"   # several cells carry this answer's metadata; at least one has text
    PLACEHOLDER = "placeholder"
    EMPTY = "empty"
    MISSING = "missing"
    UNREADABLE = "unreadable"   # the notebook itself could not be read


@dataclass(frozen=True)
class AnswerCell:
    index: int                  # 1-based position in the notebook, for messages only
    cell_type: str
    text: str                   # the source with placeholder lines removed
    attachments: int = 0


@dataclass(frozen=True)
class QuestionReport:
    question: Question
    label: str
    status: Status
    cells: tuple[AnswerCell, ...] = ()
    detail: str = ""            # the notebook error, or a hint about stray text

    @property
    def answered(self) -> bool:
        return self.status in (Status.ANSWERED, Status.DUPLICATED)

    @property
    def text(self) -> str:
        """The answer: the texts of all its cells, in notebook order."""
        return "\n\n".join(c.text for c in self.cells if c.text)

    @property
    def message(self) -> str:
        """What the student reads when the answer does not count (and a summary when it does)."""
        q = self.question
        name = f"{self.label} ({q.id}: {q.title})"
        where = ", ".join(str(c.index) for c in self.cells)
        cell = f"answer cell (cell {where} of the notebook)" if len(self.cells) == 1 else \
            f"answer cells (cells {where} of the notebook, all marked as this answer)"
        hint = f" {self.detail}" if self.detail else ""
        if self.status is Status.ANSWERED:
            return f"{name}: answered in cell {where}."
        if self.status is Status.DUPLICATED:
            return (f"{name}: answered; cells {where} all carry this answer's metadata (a copied or "
                    "split cell), so their texts are read together.")
        if self.status is Status.PLACEHOLDER:
            return (f"{name}: the {cell} still holds only the placeholder line; replace it with "
                    f"your answer.{hint}")
        if self.status is Status.EMPTY:
            return f"{name}: the {cell} has no words in it; write your answer there.{hint}"
        if self.status is Status.MISSING:
            return (f"{name}: no answer cell for this question was found in {ANSWERS_FILE}. It was "
                    "deleted, or its metadata "
                    f"({json.dumps({META_KEY: {'question': q.id, 'role': 'answer'}})}) was removed. "
                    f"Copy the answer cell of {self.label} from the template's {ANSWERS_FILE} back into "
                    "your notebook and write your answer in it.")
        return f"{name}: {self.detail}"


@dataclass
class NotebookReport:
    path: Path
    error: str | None = None                       # notebook-level: nothing could be checked
    questions: dict[str, QuestionReport] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def answered(self) -> list[str]:
        return [qid for qid, r in self.questions.items() if r.answered]

    def points(self) -> float:
        return sum(r.question.points for r in self.questions.values() if r.answered)

    def summary(self) -> str:
        """Human-readable, one line per question not answered (for the CLI)."""
        if self.error:
            return f"{self.path}: {self.error}"
        total = sum(r.question.points for r in self.questions.values())
        lines = [(f"{self.path}: {len(self.answered())} of {len(self.questions)} questions answered "
                  f"({self.points():g} of {total:g} points)")]
        lines += [f"  {r.message}" for r in self.questions.values() if not r.answered]
        lines += [f"  note: {w}" for w in self.warnings]
        return "\n".join(lines)


def read_notebook(path: Path, max_bytes: int = MAX_NOTEBOOK_BYTES) -> nbformat.NotebookNode:
    """Parse and validate a notebook without trusting it; raises NotebookError with a clear message.

    Symlinks and special files are refused (the grader must not be led to read other files, or
    to block on a FIFO), the size is bounded before parsing, and the result is upgraded to nbformat 4.
    """
    name = path.name
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise NotebookError(f"{name} was not found in the submission (it must be at its top level).") from None
    except OSError as e:
        raise NotebookError(f"{name} could not be opened: {e.strerror}.") from None
    if stat.S_ISLNK(st.st_mode):
        raise NotebookError(f"{name} is a symbolic link; submit the notebook file itself.")
    if not stat.S_ISREG(st.st_mode):
        raise NotebookError(f"{name} is not a regular file.")
    too_big = (f"{name} is larger than the {max_bytes / 1e6:g} MB allowed for the answers notebook; "
               "clear cell outputs and remove large pasted images, then save it again.")
    if st.st_size > max_bytes:
        raise NotebookError(too_big)
    # Opened without following links and without blocking, then checked again on the open file:
    # the path cannot be swapped for a link or a FIFO between the check above and the read.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise NotebookError(f"{name} could not be opened: {e.strerror}.") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise NotebookError(f"{name} is not a regular file.")
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise NotebookError(too_big)
    if not raw.strip():
        raise NotebookError(f"{name} is empty (0 bytes of content); it may not have been saved.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise NotebookError(f"{name} is not UTF-8 text (byte {e.start}); it is not a notebook file.") from None
    damaged = (f"{name} is not valid JSON, so it is not a readable notebook: the file is damaged or was "
               "cut off. Open it in Jupyter to check; if Jupyter cannot open it either, copy your "
               "answers into a fresh copy of the template's notebook.")
    try:
        data = json.loads(text)
    except ValueError as e:  # JSONDecodeError, or an absurdly long number
        pos = f" (line {e.lineno}, column {e.colno}: {e.msg})" if isinstance(e, json.JSONDecodeError) else ""
        raise NotebookError(damaged.replace("JSON,", f"JSON{pos},", 1)) from None
    except RecursionError:
        raise NotebookError(f"{name} is nested too deeply to be a notebook.") from None
    if not isinstance(data, dict) or ("cells" not in data and "worksheets" not in data):
        raise NotebookError(f"{name} is JSON but not a Jupyter notebook (it has no cells).")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing / duplicate cell ids: nbformat repairs them
        try:
            nb = nbformat.convert(nbformat.from_dict(data), 4)
        except Exception as e:  # noqa: BLE001 - any failure here means "not a notebook we can read"
            raise NotebookError(f"{name} is not a Jupyter notebook nbformat can read: "
                                f"{type(e).__name__}: {str(e)[:300]}") from None
        try:
            nbformat.validate(nb)
        except nbformat.ValidationError as e:
            where = "/".join(str(p) for p in getattr(e, "absolute_path", []) or [])
            msg = str(getattr(e, "message", "") or str(e).splitlines()[0])[:300]
            raise NotebookError(f"{name} is not a valid Jupyter notebook ({where or 'top level'}: {msg}). "
                                "Open it in Jupyter and save it again, or copy your answers into a "
                                "fresh copy of the template's notebook.") from None
        except Exception as e:  # noqa: BLE001 - e.g. a v4 notebook whose cells are not a list
            raise NotebookError(f"{name} is not a valid Jupyter notebook: {type(e).__name__}: "
                                f"{str(e)[:300]}") from None
    return nb


def _has_words(text: str) -> bool:
    return re.search(r"[^\W_]", text) is not None


def _core(text: str) -> str:
    """Text without Markdown decoration, to recognise a placeholder line however it was emphasised."""
    return " ".join(re.sub(r"[*_`>#~\-]+", " ", text).split()).lower()


def answer_text(source: str, placeholder: str) -> str:
    """A cell's source without the placeholder (exact, or as a line with other emphasis)."""
    core = _core(placeholder)
    lines = [ln for ln in source.splitlines() if not (ln.strip() and _core(ln) == core)]
    return "\n".join(lines).replace(placeholder, "").strip()


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _role(cell: Any) -> tuple[str | None, Any]:
    meta = cell.get("metadata")
    info = meta.get(META_KEY) if isinstance(meta, dict) else None
    if not isinstance(info, dict):
        return None, None
    return info.get("role"), info.get("question")


def _analyse(nb: nbformat.NotebookNode, questions: QuestionSet, report: NotebookReport) -> None:
    labels = questions.labels()
    known = {q.id for q in questions.questions}
    found: dict[str, list[AnswerCell]] = {q.id: [] for q in questions.questions}
    has_source: dict[str, bool] = {}
    cells = list(nb.cells)
    for i, cell in enumerate(cells, start=1):
        role, qid = _role(cell)
        if role != "answer":
            continue
        if not isinstance(qid, str) or qid not in known:
            report.warnings.append(f"cell {i} is marked as the answer to {qid!r}, which is not one of "
                                   "this assignment's questions; it was ignored.")
            continue
        source = _source(cell)
        has_source[qid] = has_source.get(qid, False) or bool(source.strip())
        attachments = cell.get("attachments")
        found[qid].append(AnswerCell(index=i, cell_type=str(cell.get("cell_type", "markdown")),
                                     text=answer_text(source, questions.placeholder),
                                     attachments=len(attachments) if isinstance(attachments, dict) else 0))
    for q in questions.ordered:
        got = found[q.id]
        words = [c for c in got if _has_words(c.text)]
        if not got:
            status = Status.MISSING
        elif words:
            status = Status.DUPLICATED if len(got) > 1 else Status.ANSWERED
        elif has_source[q.id] and not any(c.text for c in got):
            status = Status.PLACEHOLDER
        else:
            status = Status.EMPTY
        detail = _stray_text_hint(cells, got) if got and not words else ""
        report.questions[q.id] = QuestionReport(q, labels[q.id], status, tuple(got), detail)


def _stray_text_hint(cells: list[Any], got: list[AnswerCell]) -> str:
    """Text written into an unmarked cell just after the answer cell: say so (it is not counted)."""
    for answer in got:
        for j in range(answer.index, len(cells)):  # cells[answer.index] is the next cell
            if _role(cells[j])[0] is not None:
                break
            if _has_words(_source(cells[j])):
                return (f"Cell {j + 1}, after it, has text but is not an answer cell: move that text "
                        "into the answer cell (only answer cells are read).")
    return ""


def check_notebook(path: str | Path, questions: QuestionSet,
                   max_bytes: int = MAX_NOTEBOOK_BYTES) -> NotebookReport:
    """Report, per question, whether the submitted notebook answers it. Never raises on bad input."""
    path = Path(path)
    report = NotebookReport(path=path)
    try:
        nb = read_notebook(path, max_bytes)
        _analyse(nb, questions, report)
    except NotebookError as e:
        report.error = str(e)
    except Exception as e:  # noqa: BLE001 - a bug or an odd notebook must not crash the grading
        report.error = f"{path.name} could not be checked: {type(e).__name__}: {str(e)[:300]}"
    if report.error:
        labels = questions.labels()
        report.questions = {q.id: QuestionReport(q, labels[q.id], Status.UNREADABLE, detail=report.error)
                            for q in questions.ordered}
    return report


def check_submission(submission_dir: str | Path, questions: QuestionSet,
                     max_bytes: int = MAX_NOTEBOOK_BYTES) -> NotebookReport:
    """check_notebook on ``<submission>/answers.ipynb``, pointing at a misplaced notebook if any."""
    root = Path(submission_dir)
    report = check_notebook(root / ANSWERS_FILE, questions, max_bytes)
    if report.error and not (root / ANSWERS_FILE).exists() and not (root / ANSWERS_FILE).is_symlink():
        try:
            elsewhere = sorted({str(p.relative_to(root)) for pattern in ("*.ipynb", f"*/{ANSWERS_FILE}")
                                for p in root.glob(pattern)})[:5]
        except OSError:
            elsewhere = []
        if elsewhere:
            extra = (f" Notebooks found instead: {', '.join(elsewhere)}; the answers must be in "
                     f"{ANSWERS_FILE} at the top level of the submission.")
            report.error += extra
            for qid, r in report.questions.items():
                report.questions[qid] = QuestionReport(r.question, r.label, r.status, r.cells, report.error)
    return report


# --------------------------------------------------------------------------- export


_STATUS_TEXT = {
    Status.ANSWERED: "answered",
    Status.DUPLICATED: "answered (in several cells)",
    Status.PLACEHOLDER: "not answered (placeholder left)",
    Status.EMPTY: "not answered (empty)",
    Status.MISSING: "not answered (answer cell missing)",
    Status.UNREADABLE: "notebook unreadable",
}


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "submission"


def _fence(text: str, lang: str = "") -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    f = "`" * (longest + 1)
    return f"{f}{lang}\n{text}\n{f}"


def _answer_md(r: QuestionReport) -> str:
    if not r.answered:
        return r.detail if r.status is Status.UNREADABLE else ""
    parts = []
    for c in r.cells:
        if not c.text:
            continue
        parts.append(_fence(c.text, "python") if c.cell_type == "code" else c.text)
        if c.attachments:
            parts.append(f"*({c.attachments} attached image(s) not shown; see the notebook)*")
    return "\n\n".join(parts)


def _question_md(q: Question, label: str) -> str:
    prompts = "\n".join(f"> - {p}" for p in q.prompts)
    return f"## {label}. {q.title} ({_points(q.points)}, `{q.id}`)\n\n> {q.question.strip()}\n>\n{prompts}"


def _answer_html(r: QuestionReport) -> str:
    status = f'<p class="status {r.status.value}">{html.escape(_STATUS_TEXT[r.status])}</p>'
    if not r.answered:
        return status + (f"<p>{html.escape(r.detail)}</p>" if r.status is Status.UNREADABLE else "")
    body = [f"<pre class=\"answer\">{html.escape(r.text)}</pre>"]
    shots = sum(c.attachments for c in r.cells)
    if shots:
        body.append(f"<p><em>({shots} attached image(s) not shown; see the notebook)</em></p>")
    return status + "".join(body)


def _question_html(q: Question, label: str) -> str:
    prompts = "".join(f"<li>{html.escape(p)}</li>" for p in q.prompts)
    return (f'<h2 id="{q.id}">{html.escape(f"{label}. {q.title}")} '
            f"<small>({html.escape(_points(q.points))}, {q.id})</small></h2>"
            f"<blockquote><p>{html.escape(q.question.strip())}</p><ul>{prompts}</ul></blockquote>")


_CSS = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.4}"
        "pre.answer{white-space:pre-wrap;background:#f6f6f6;padding:.8em;border-left:3px solid #888}"
        "blockquote{color:#444;border-left:3px solid #ccc;margin-left:0;padding-left:1em}"
        ".status{font-weight:bold}.status.answered,.status.duplicated{color:#176117}"
        ".status:not(.answered):not(.duplicated){color:#a11}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .5em}")


def _html_page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def _notebook_path(p: Path) -> Path:
    p = Path(p)
    return p / ANSWERS_FILE if p.is_dir() else p


def export_answers(notebooks: dict[str, Path], questions: QuestionSet, out_dir: str | Path) -> list[Path]:
    """Write the answers of one or several submissions as Markdown and HTML for the graders.

    ``notebooks`` maps a submission name to its notebook (or to the submission directory).
    One submission: ``<name>.md`` and ``<name>.html`` with all its answers. Several: one pair per
    question (``q03.md``, ``q03.html``) holding every submission's answer to it, so a grader reads
    one question across the class at a time, plus ``index.md`` / ``index.html`` with who answered what.
    Nothing in a notebook is run; answers are shown as text (HTML-escaped).
    """
    if not notebooks:
        raise ValueError("export_answers: no notebooks given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = questions.labels()
    reports = {name: check_notebook(_notebook_path(p), questions) for name, p in sorted(notebooks.items())}
    written: list[Path] = []

    def write(name: str, text: str) -> None:
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)

    if len(reports) == 1:
        (name, rep), = reports.items()
        head = f"{questions.title}: {name}"
        md = [f"# {head}", "", _report_line(rep), ""]
        body = [f"<p>{html.escape(_report_line(rep))}</p>"]
        for q in questions.ordered:
            r = rep.questions[q.id]
            md += [_question_md(q, labels[q.id]), "", f"**Status:** {_STATUS_TEXT[r.status]}", ""]
            md += [_answer_md(r), ""] if r.answered else []
            body.append(_question_html(q, labels[q.id]) + _answer_html(r))
        stem = _safe_name(name)
        write(f"{stem}.md", "\n".join(md).rstrip() + "\n")
        write(f"{stem}.html", _html_page(head, "\n".join(body)))
        return written

    for q in questions.ordered:
        label = labels[q.id]
        n_ok = sum(rep.questions[q.id].answered for rep in reports.values())
        head = f"{label}. {q.title}"
        summary = f"{n_ok} of {len(reports)} submissions answered this question."
        md = [f"# {head}", "", summary, "", _question_md(q, label), ""]
        body = [f"<p>{html.escape(summary)}</p>", _question_html(q, label)]
        for name, rep in reports.items():
            r = rep.questions[q.id]
            md += [f"### {name} ({_STATUS_TEXT[r.status]})", ""]
            md += [_answer_md(r), ""] if r.answered or r.status is Status.UNREADABLE else []
            md += ["---", ""]
            body.append(f"<h3>{html.escape(name)}</h3>{_answer_html(r)}<hr>")
        write(f"{q.id}.md", "\n".join(md).rstrip() + "\n")
        write(f"{q.id}.html", _html_page(head, "\n".join(body)))

    ids = [q.id for q in questions.ordered]
    mark = {True: "yes", False: "-"}
    md = [f"# {questions.title}: {len(reports)} submissions", "",
          "One file per question holds every submission's answer: "
          + ", ".join(f"[{labels[i]}]({i}.md)" for i in ids) + ".", "",
          "| submission | answered | " + " | ".join(labels[i] for i in ids) + " |",
          "|---|---|" + "---|" * len(ids)]
    rows = []
    for name, rep in reports.items():
        cells = [mark[rep.questions[i].answered] for i in ids]
        md.append(f"| {name} | {len(rep.answered())}/{len(ids)} | " + " | ".join(cells) + " |")
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{len(rep.answered())}/{len(ids)}</td>"
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    problems = [f"{name}: {rep.error or '; '.join(rep.warnings)}"
                for name, rep in reports.items() if rep.error or rep.warnings]
    if problems:
        md += ["", "## Notebook problems", ""] + [f"- {p}" for p in problems]
    links = " ".join(f'<a href="{i}.html">{html.escape(labels[i])}</a>' for i in ids)
    table = ("<table><tr><th>submission</th><th>answered</th>"
             + "".join(f"<th>{html.escape(labels[i])}</th>" for i in ids) + "</tr>" + "".join(rows) + "</table>")
    plist = ("<h2>Notebook problems</h2><ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in problems)
             + "</ul>") if problems else ""
    write("index.md", "\n".join(md).rstrip() + "\n")
    write("index.html", _html_page(f"{questions.title}: {len(reports)} submissions",
                                   f"<p>{links}</p>{table}{plist}"))
    return written


def _report_line(rep: NotebookReport) -> str:
    if rep.error:
        return f"The notebook could not be read: {rep.error}"
    return f"{len(rep.answered())} of {len(rep.questions)} questions answered."
