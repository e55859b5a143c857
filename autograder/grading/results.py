"""Gradescope's results.json, as pydantic models: every documented field and no others.

Spec: https://gradescope-autograders.readthedocs.io/en/latest/specs/ (output format).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Visibility = Literal["hidden", "after_due_date", "after_published", "visible"]
OutputFormat = Literal["text", "html", "simple_format", "md", "ansi"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TestCase(_Spec):
    score: float | None = None
    max_score: float | None = None
    status: Literal["passed", "failed"] | None = None
    name: str | None = None
    name_format: OutputFormat | None = None
    number: str | None = None
    output: str | None = None
    output_format: OutputFormat | None = None
    tags: list[str] | None = None
    visibility: Visibility | None = None
    extra_data: dict[str, Any] | None = None


class LeaderboardEntry(_Spec):
    name: str
    value: float | int | str
    order: Literal["asc", "desc"] | None = None


class Results(_Spec):
    score: float | None = None
    execution_time: float | None = Field(None, description="seconds")
    output: str | None = None
    output_format: OutputFormat | None = None
    test_output_format: OutputFormat | None = None
    test_name_format: OutputFormat | None = None
    visibility: Visibility | None = None
    stdout_visibility: Visibility | None = None
    extra_data: dict[str, Any] | None = None
    tests: list[TestCase] | None = None
    leaderboard: list[LeaderboardEntry] | None = None

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True, indent=2)

    def write(self, path: str | Path) -> None:
        """Write atomically, so a reader never sees half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)  # no half-written file left behind
            raise

    @classmethod
    def read(cls, path: str | Path) -> Results:
        return cls.model_validate(json.loads(Path(path).read_text()))
