"""One JSON line per finished test, written by the plugin as the run goes."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

MAX_RECORD_BYTES = 64 * 1024


# The record of a test that could not start before the grading's deadline (plugin and runner).
NOT_RUN = ("Not run: the grading's time budget was used up before this test began (earlier tests took it: "
           "look for those stopped for running too long). It earns no points.")


class TestRecord(BaseModel):
    nodeid: str
    status: str  # "passed" | "failed"
    score: float
    max_score: float
    message: str = ""
    student_output: str = ""
    skipped: bool = False
    gpu_missing: bool = False
    leaderboard: dict[str, Any] | None = None
    duration: float = 0.0


def append_record(path: Path, record: TestRecord) -> None:
    line = record.model_dump_json() + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_records(path: Path) -> dict[str, TestRecord]:
    """Records by node id; unreadable lines (a run killed mid-write) are skipped."""
    records: dict[str, TestRecord] = {}
    if not path.exists():
        return records
    with open(path) as f:
        for line in f:
            if len(line) > MAX_RECORD_BYTES * 4:
                continue
            try:
                rec = TestRecord.model_validate(json.loads(line))
            except (json.JSONDecodeError, ValidationError):
                continue
            records[rec.nodeid] = rec
    return records
