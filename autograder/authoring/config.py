"""assignment.toml, validated: what an assignment is made of and how it is graded."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (Gradescope's image)
    import tomli as tomllib


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Part(_Strict):
    """One graded part of the assignment (a module of the package, or the written answers)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    points: float = Field(ge=0)
    files: list[str] = Field(default_factory=list, description="submission files this part grades")
    bonus: bool = False


class TimeLimits(_Strict):
    test_s: float = Field(120.0, gt=0, description="pytest-timeout for one test")
    call_s: float = Field(30.0, gt=0, description="one call into student code")
    import_s: float = Field(30.0, gt=0, description="importing one student module")
    start_s: float = Field(120.0, gt=0, description="starting the worker (imports torch)")
    total_s: float = Field(1800.0, gt=0, description="the whole grading run")


class SandboxLimits(_Strict):
    """How the student worker is confined (see autograder.sandbox.confinement and docs/threat-model.md)."""

    user: str = Field("ag-student", description="unprivileged account for student code when grading as root")
    cpu_s: int = Field(3600, gt=0, description="CPU seconds of one worker process (all its tests)")
    file_mb: int = Field(512, gt=0, description="largest file student code may write (its output log too)")
    processes: int = Field(256, gt=0, description="processes and threads of the sandbox account")
    memory_mb: int = Field(8192, gt=0, description="address space the worker may add to what it holds when it "
                           "starts (torch, Triton): beyond it, allocations fail with an out-of-memory error "
                           "instead of the container killing the grading; not applied with a GPU")
    isolate_network: bool = Field(True, description="a new network namespace without any interface up")


class Platform(_Strict):
    """The container grading runs in on Gradescope (its Autograder Settings), so that a grade is
    complete before the platform kills the run: a run killed there gives the student 0 and no feedback."""

    timeout_s: float = Field(600.0, gt=0, description="the autograder timeout set on Gradescope (default 10 min)")
    reserve_s: float = Field(45.0, ge=0, description="kept back from timeout_s for starting up, writing "
                             "results.json and stopping every process")
    memory_mb: int = Field(768, gt=0, description="memory the whole grading needs (measured peak plus margin); "
                           "run_autograder tells the instructor when the container has less")
    cpus: float = Field(0.5, gt=0, description="CPUs grading needs to finish well within timeout_s")
    measured: str = Field("", description="what grading the reference measured in such a container (CPU-seconds, "
                          "wall time, peak memory), printed with the settings by `autograder build`")

    @model_validator(mode="after")
    def _reserve_fits(self) -> Platform:
        if self.reserve_s >= self.timeout_s:
            raise ValueError("reserve_s must be smaller than timeout_s")
        return self


class Tolerance(_Strict):
    atol: float = Field(ge=0)
    rtol: float = Field(ge=0)


class Performance(_Strict):
    """A timing check: student time / reference time, pass/fail (max_ratio) or partial credit."""

    max_ratio: float | None = Field(None, gt=0, description="pass when the ratio is at most this")
    full_ratio: float | None = Field(None, gt=0, description="partial credit: full points at or below")
    zero_ratio: float | None = Field(None, gt=0, description="partial credit: no points above")
    repeats: int = Field(7, ge=3)
    attempts: int = Field(3, ge=1, le=10, description="measure again up to this many times while "
                          "short of full credit (the best measurement counts): noise on a shared machine "
                          "must not cost a correct solution its points")

    @model_validator(mode="after")
    def _one_rule(self) -> Performance:
        partial = self.full_ratio is not None or self.zero_ratio is not None
        if partial == (self.max_ratio is not None):
            raise ValueError("give either max_ratio, or full_ratio and zero_ratio")
        if partial and (self.full_ratio is None or self.zero_ratio is None or self.zero_ratio <= self.full_ratio):
            raise ValueError("partial credit needs full_ratio < zero_ratio")
        return self

    def credit(self, ratio: float) -> float:
        """Fraction of the points earned at this ratio (0..1)."""
        if self.max_ratio is not None:
            return 1.0 if ratio <= self.max_ratio else 0.0
        assert self.full_ratio is not None and self.zero_ratio is not None
        if ratio <= self.full_ratio:
            return 1.0
        if ratio >= self.zero_ratio:
            return 0.0
        return (self.zero_ratio - ratio) / (self.zero_ratio - self.full_ratio)


class Assignment(_Strict):
    name: str
    title: str
    package: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    reference: str = Field(description="implementation root of the reference, relative to this file")
    template: str = Field(description="where `autograder template` writes the student template")
    gpu_policy: Literal["exclude", "zero"] = Field(
        "exclude",
        description="GPU-only tests on a machine without a GPU: left out of the total, or 0 with the reason",
    )
    worker_threads: int = Field(1, ge=0)
    hidden_visibility: Literal["visible", "hidden", "after_due_date", "after_published"] = Field(
        "after_due_date",
        description="Gradescope visibility of the hidden suite's tests (those without their own @visibility); "
                    "the summary students see then counts only the tests they can see",
    )
    parts: list[Part]
    time_limits: TimeLimits = Field(default_factory=TimeLimits)
    sandbox: SandboxLimits = Field(default_factory=SandboxLimits)
    gradescope: Platform = Field(default_factory=Platform)
    tolerances: dict[str, Tolerance] = Field(default_factory=dict)
    performance: dict[str, Performance] = Field(default_factory=dict)

    # Filled in by load(): where the file lives.
    directory: Path = Field(default=Path("."), exclude=True)

    @field_validator("parts")
    @classmethod
    def _unique_parts(cls, parts: list[Part]) -> list[Part]:
        names = [p.name for p in parts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate part names: {dupes}")
        return parts

    @model_validator(mode="after")
    def _files_unique(self) -> Assignment:
        seen: dict[str, str] = {}
        for p in self.parts:
            for f in p.files:
                if Path(f).is_absolute() or ".." in Path(f).parts:
                    raise ValueError(f"part {p.name}: file {f!r} must be a relative path inside the submission")
                if f in seen:
                    raise ValueError(f"file {f!r} belongs to both {seen[f]} and {p.name}")
                seen[f] = p.name
        return self

    # ------------------------------------------------------------------ derived
    def part(self, name: str) -> Part:
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(f"no part named {name!r} in {self.name} (parts: {[p.name for p in self.parts]})")

    @property
    def part_names(self) -> list[str]:
        return [p.name for p in self.parts]

    @property
    def reference_root(self) -> Path:
        return (self.directory / self.reference).resolve()

    @property
    def template_root(self) -> Path:
        return (self.directory / self.template).resolve()

    @property
    def tests_dir(self) -> Path:
        return self.directory / "tests"

    @property
    def manifest_path(self) -> Path:
        return self.tests_dir / "manifest.json"

    @property
    def golden_path(self) -> Path:
        """Recorded reference values for the public suites (made by `autograder build`)."""
        return self.tests_dir / "golden.agf"

    @property
    def submission_files(self) -> list[str]:
        return [f for p in self.parts for f in p.files]

    def tolerance(self, key: str) -> Tolerance:
        if key not in self.tolerances:
            raise KeyError(f"assignment.toml has no [tolerances.{key}]")
        return self.tolerances[key]


class ConfigError(Exception):
    pass


def load(path: str | Path) -> Assignment:
    """Load ``assignment.toml`` (or the directory holding it) with a readable error on mistakes."""
    path = Path(path)
    if path.is_dir():
        path = path / "assignment.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        cfg = Assignment.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg.model_copy(update={"directory": path.parent.resolve()})
