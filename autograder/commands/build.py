"""`autograder build`: the Gradescope autograder zip and the student kit zip.

autograder.zip (upload to Gradescope): setup.sh, run_autograder, the harness as a wheel, the
assignment (config, public + hidden suites, manifest) and the reference solution.

student_kit.zip (give to students): the template, the answers notebook, the public suites with
the reference's answers recorded (no reference code), the harness as a wheel and a README, so
that unzip + one install + `autograder selfcheck` works without this repository.
"""
from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from autograder.authoring.config import Assignment
from autograder.grading.manifest import read_manifest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
SKIP_SUFFIXES = {".pyc", ".pyo"}

SETUP_SH = """#!/usr/bin/env bash
# Gradescope image setup: runs once, as root, on Ubuntu 22.04 (system Python 3.10).
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-pip python3-venv
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --upgrade pip
# The CPU build of PyTorch (Gradescope machines have no GPU); the default index would fetch CUDA.
/autograder/venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
/autograder/venv/bin/pip install triton
/autograder/venv/bin/pip install /autograder/source/wheels/*.whl
# The unprivileged account that runs student code.
id -u {user} >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin {user}
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission. It always leaves results/results.json behind.
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PY="${{AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}}"
cd "$ROOT" || exit 0
"$PY" -m autograder.commands.gradescope --root "$ROOT" --assignment "$ROOT/source/assignments/{name}" "$@"
if [ ! -s "$ROOT/results/results.json" ]; then
  mkdir -p "$ROOT/results"
  printf '%s\\n' '{{"score": 0, "output": "The autograder failed to start; please tell your instructor."}}' \\
    > "$ROOT/results/results.json"
fi
exit 0
"""

KIT_README = """# {title}: student kit

## Set up (once)

```bash
python3 -m venv .venv && .venv/bin/pip install torch kit/wheels/*.whl
```

(On a machine without a GPU, `pip install torch --index-url https://download.pytorch.org/whl/cpu`
gives the much smaller CPU build.)

## What to do

Fill in the stubs in `{package}/` (each `raise NotImplementedError(...)` says where to start)
and answer the questions in `answers.ipynb`.

{parts}

{docs}

## Check your work

```bash
.venv/bin/autograder selfcheck               # the public tests on what you would submit, and a predicted grade
.venv/bin/autograder selfcheck --part {first_part}  # one part while you work on it (--part again for more)
.venv/bin/autograder selfcheck -v            # whole messages and everything your code printed
.venv/bin/autograder selfcheck --call-limit 5  # a call that runs longer than 5 s fails at once (default {call_s:g} s)
.venv/bin/autograder selfcheck --zip         # also writes submission.zip for Gradescope
```

`selfcheck` grades exactly the files you would submit. A stub you have not written yet is one
`TODO` line with its file and line; a failed test says what was wrong (shape, dtype, largest error
and where, or what your code raised, in your file and line); a call that never finishes is stopped
and the message says where in your code it was. The exit status is 0 only when every public test
passes.

The predicted grade is each part's public pass rate times its points. Grading also runs hidden
tests, with other sizes and inputs{hidden}: passing every public test is a good sign, not a
guarantee.
{gpu}
## Submit

Upload `submission.zip` (it holds exactly: {files}).
"""

_GPU_NOTE = {
    "exclude": "tests that need a GPU (compiled kernels, speed against the reference, memory) are not "
               "run on a grader without a GPU and then count for nothing",
    "zero": "tests that need a GPU (compiled kernels, speed against the reference, memory) score 0 on a "
            "grader without a GPU",
}


def kit_readme(cfg: Assignment, doc_names: list[str], gpu_tests: int) -> str:
    """The student kit's README: set-up, the parts with their files and points, the documents in the
    kit, how to check and submit (written from ``cfg`` so it never disagrees with the grader);
    ``gpu_tests`` (GPU-only tests in the manifest) adds the note on running without a GPU."""
    rows = ["| part | what | file | points |", "|---|---|---|---:|"]
    for p in cfg.parts:
        files = ", ".join(f"`{f}`" for f in p.files) or "(shares another part's file)"
        rows.append(f"| `{p.name}` | {p.title} | {files} | {p.points:g}{' bonus' if p.bonus else ''} |")
    regular = sum(p.points for p in cfg.parts if not p.bonus)
    bonus = sum(p.points for p in cfg.parts if p.bonus)
    parts = "\n".join(rows) + f"\n\nTotal: {regular:g} points" + (f", plus {bonus:g} bonus points." if bonus else ".")
    docs = ""
    if doc_names:
        docs = "Read first:\n\n" + "\n".join(
            f"- `kit/assignment/{name}`" + (": the contract your code must follow (names, arguments, shapes, "
                                            "dtypes); the grader tests nothing beyond it" if name == "API.md" else
                                            ": the written questions, also in `answers.ipynb`"
                                            if name.startswith("handout") else "")
            for name in doc_names)
        docs += "\n- `kit/assignment/tests/public/`: the public tests, to see what is checked"
    gpu = ""
    if gpu_tests:
        gpu = ("\nOn a machine without a GPU, `selfcheck` runs Triton kernels under Triton's interpreter "
               "(it sets `TRITON_INTERPRET=1` for your code): the same kernels, slowly, at small sizes, in float32 "
               f"and float16. At grading time, {_GPU_NOTE.get(cfg.gpu_policy, _GPU_NOTE['exclude'])}.\n")
    hidden = {"after_due_date": " (you see their results after the due date)",
              "after_published": " (you see their results once grades are published)",
              "visible": " (you see their results as soon as you submit)"}.get(cfg.hidden_visibility, "")
    first = next((p.name for p in cfg.parts if p.files), cfg.parts[0].name if cfg.parts else "NAME")
    return KIT_README.format(title=cfg.title, package=cfg.package, parts=parts, docs=docs, first_part=first,
                             call_s=cfg.time_limits.call_s, hidden=hidden, gpu=gpu,
                             files=", ".join(f"`{f}`" for f in cfg.submission_files))


class BuildError(Exception):
    pass


def _files_under(base: Path) -> list[Path]:
    return sorted(p for p in base.rglob("*") if p.is_file() and not p.is_symlink()
                  and not any(part in SKIP_PARTS for part in p.relative_to(base).parts)
                  and p.suffix not in SKIP_SUFFIXES)


def build_wheel(out_dir: Path) -> Path:
    """The harness as a wheel, built from this source checkout."""
    if not (PROJECT_ROOT / "pyproject.toml").exists():
        raise BuildError("`autograder build` needs the kit's source checkout (no pyproject.toml found)")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir), str(PROJECT_ROOT)]
    for extra in (["--no-build-isolation"], []):  # offline first; fall back to an isolated build
        proc = subprocess.run(base + extra, capture_output=True, text=True)
        wheels = sorted(out_dir.glob("*.whl"))
        if proc.returncode == 0 and wheels:
            return wheels[-1]
    raise BuildError(f"building the harness wheel failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def record_golden(cfg: Assignment, path: Path) -> None:
    """Run the public suites on the reference, recording what they get from it (must pass)."""
    from autograder.grading.runner import _INI, _env, _pytest_command

    with tempfile.TemporaryDirectory(prefix="ag-golden-") as tmp:
        ini = Path(tmp) / "pytest.ini"
        ini.write_text(_INI)
        cmd = _pytest_command(cfg, ini, ["--ag-root", str(cfg.reference_root), "--ag-golden-record", str(path),
                                         "-q", "-p", "no:randomly", str(cfg.tests_dir / "public")])
        proc = subprocess.run(cmd, cwd=tmp, env=_env(), capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0 or not path.exists():
        raise BuildError("the public suites do not pass on the reference while recording:\n"
                         + proc.stdout[-3000:] + proc.stderr[-2000:])


def _write_zip(zip_path: Path, entries: dict[str, Path | bytes], executable: set[str] = frozenset()) -> None:
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname in sorted(entries):
            data = entries[arcname]
            info = zipfile.ZipInfo(arcname, date_time=(2026, 1, 1, 0, 0, 0))
            mode = 0o755 if arcname in executable else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data if isinstance(data, bytes) else data.read_bytes())
    os.replace(tmp, zip_path)


ORACLE_SUFFIX = "_oracles.py"


def _assignment_entries(cfg: Assignment, prefix: str, public_only: bool) -> dict[str, Path | bytes]:
    """assignment.toml, data files next to it, suite helpers and the suites.

    Oracle modules (``tests/*_oracles.py``: working implementations of graded functions) are for
    the grader only: the student kit (``public_only``) never holds them; its public tests replay
    their recorded values (:func:`autograder.grading.golden.oracle`)."""
    entries: dict[str, Path | bytes] = {}
    for path in sorted(cfg.directory.iterdir()):
        if path.is_file() and path.suffix in (".toml", ".md", ".json"):
            entries[f"{prefix}/{path.name}"] = path
    tests = cfg.tests_dir
    for path in sorted(tests.iterdir()):
        if path.is_file() and path.suffix == ".py" and not (public_only and path.name.endswith(ORACLE_SUFFIX)):
            entries[f"{prefix}/tests/{path.name}"] = path
    for suite in ("public",) if public_only else ("public", "hidden"):
        for path in _files_under(tests / suite):
            entries[f"{prefix}/tests/{suite}/{path.relative_to(tests / suite)}"] = path
    if cfg.manifest_path.exists():
        manifest = read_manifest(cfg.manifest_path)
        if public_only:
            manifest = [m for m in manifest if m.suite == "public"]
        entries[f"{prefix}/tests/manifest.json"] = (
            json.dumps([m.model_dump() for m in manifest], indent=1) + "\n").encode()
    return entries


def build(cfg: Assignment, out_dir: Path) -> tuple[Path, Path]:
    """Write dist/autograder.zip and dist/student_kit.zip; returns their paths."""
    from autograder.grading.runner import collect_manifest

    out_dir = Path(out_dir)
    ref_pkg = cfg.reference_root / cfg.package
    tpl_root = cfg.template_root
    if not ref_pkg.is_dir():
        raise BuildError(f"no reference package at {ref_pkg}")
    if not (tpl_root / cfg.package).is_dir():
        raise BuildError(f"no student template at {tpl_root / cfg.package} (run `autograder template`)")
    with tempfile.TemporaryDirectory(prefix="ag-build-") as tmp:
        tmpdir = Path(tmp)
        collect_manifest(cfg, tmpdir / "fresh.json")
        if not cfg.manifest_path.exists() or cfg.manifest_path.read_text() != (tmpdir / "fresh.json").read_text():
            raise BuildError("the test manifest is stale: run `autograder manifest` first")
        wheel = build_wheel(tmpdir / "wheels")
        golden = tmpdir / "golden.agf"
        record_golden(cfg, golden)

        name = cfg.name
        ag: dict[str, Path | bytes] = {
            "setup.sh": SETUP_SH.format(user="ag-student").encode(),
            "run_autograder": RUN_AUTOGRADER.format(name=name).encode(),
            f"wheels/{wheel.name}": wheel,
        }
        ag |= _assignment_entries(cfg, f"assignments/{name}", public_only=False)
        for path in _files_under(ref_pkg):
            ag[f"reference/{cfg.package}/{path.relative_to(ref_pkg)}"] = path
        ag_zip = out_dir / "autograder.zip"
        _write_zip(ag_zip, ag, executable={"setup.sh", "run_autograder"})

        kit: dict[str, Path | bytes] = {f"kit/wheels/{wheel.name}": wheel}
        kit |= _assignment_entries(cfg, "kit/assignment", public_only=True)
        kit["kit/assignment/tests/golden.agf"] = golden
        for path in _files_under(tpl_root):
            rel = path.relative_to(tpl_root)
            if rel.parts[0] == cfg.package or path.suffix == ".ipynb":
                kit[str(rel)] = path
        docs = sorted(n.rsplit("/", 1)[-1] for n in kit if n.startswith("kit/assignment/") and n.count("/") == 2
                      and n.endswith(".md"))
        kit["README.md"] = kit_readme(cfg, docs, sum(e.gpu for e in read_manifest(cfg.manifest_path))).encode()
        kit_zip = out_dir / "student_kit.zip"
        _write_zip(kit_zip, kit)
    return ag_zip, kit_zip


GRADESCOPE_MAX_TIMEOUT_S = 40 * 60  # the most Gradescope's Autograder Settings allow


def gradescope_settings(cfg: Assignment) -> str:
    """What to choose in the assignment's Autograder Settings on Gradescope, from ``[gradescope]``:
    a run the platform kills for memory or time gives the student 0 and no feedback."""
    from autograder.commands.container import format_mb

    g = cfg.gradescope
    minutes = math.ceil(g.timeout_s / 60 - 1e-9)
    lines = [
        "Gradescope, the assignment's Autograder Settings (from [gradescope] in assignment.toml):",
        f"  timeout: {minutes} min ({g.timeout_s:g} s; grading plans for {g.timeout_s - g.reserve_s:g} s "
        f"of it, {g.reserve_s:g} s kept back)",
        f"  memory:  at least {format_mb(g.memory_mb)}",
        f"  CPUs:    at least {g.cpus:g}",
    ]
    if g.measured:
        lines.append(f"  (measured in such a container: {g.measured})")
    if g.timeout_s > GRADESCOPE_MAX_TIMEOUT_S:
        lines.append(f"  (Gradescope allows a timeout of at most {GRADESCOPE_MAX_TIMEOUT_S // 60} min: "
                     "lower timeout_s, or grading will be planned for time it does not get)")
    lines += ["The measured figures behind them: docs/benchmarks.md. run_autograder checks its container",
              "and says at the top of the results which setting to raise when it has less."]
    return "\n".join(lines)


def write_submission_zip(cfg: Assignment, root: Path, zip_path: Path) -> list[str]:
    """The zip to upload: exactly the assignment's submission files that exist under ``root``."""
    entries: dict[str, Path | bytes] = {}
    wanted = list(cfg.submission_files) + [f"{cfg.package}/__init__.py"]
    for rel in wanted:
        path = root / rel
        if path.is_file() and not path.is_symlink():
            entries[rel] = path
    _write_zip(zip_path, entries)
    return sorted(entries)


def find_kit_assignment(start: Path) -> Path | None:
    """In an unzipped student kit, the assignment lives in kit/assignment next to the package."""
    for base in (start, *start.parents):
        candidate = base / "kit" / "assignment" / "assignment.toml"
        if candidate.exists():
            return candidate.parent
    return None

