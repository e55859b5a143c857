"""Run the grading suites on an implementation root and always produce a valid results.json.

pytest runs in a child process with its root, ini file and plugins pinned (no conftest, ini or
plugin can come from the submission, which is never on pytest's path). Whatever happens to that
process (crash, kill, timeout), this process assembles results.json from the manifest and the
records the plugin streamed. That process is a fork of a host server (torch, pytest and the plugin
imported once per grading process, see :mod:`autograder.grading.hostserver`) where one can be had, which
saves an interpreter start and ``import torch`` per submission in ``autograder batch``.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Literal

from autograder.grading import hostserver
from autograder.sandbox import forkserver
from autograder.authoring.config import Assignment
from autograder.grading.manifest import ManifestEntry, read_manifest
from autograder.grading.records import NOT_RUN, TestRecord, append_record, read_records
from autograder.grading.results import Results
from autograder.sandbox.confinement import Privilege, SandboxError, can_reach, has_cuda, kill_tree, plan, stage_code
from autograder.grading.scoring import RunInfo, assemble

Suite = Literal["public", "hidden", "all"]

_INI = """[pytest]
addopts = -p no:cacheprovider
python_files = test_*.py
python_functions = test_*
"""


def _pytest_command(cfg: Assignment, ini: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-I", "-m", "pytest",
        "-c", str(ini), "--rootdir", str(cfg.tests_dir),
        "-p", "autograder.grading.plugin", "-p", "pytest_timeout",
        "--import-mode=importlib",
        "--ag-assignment", str(cfg.directory),
        "--ag-suite-root", str(cfg.tests_dir),
        *extra,
    ]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # (PYTHON* variables are dropped: `-I` ignores them anyway)
    if not has_cuda():
        env.setdefault("TRITON_INTERPRET", "1")
    return env


def stop_margin(total_s: float) -> float:
    """How long before the end of the budget no test may start any more: time to stop the last
    call, kill every process and write results.json (a tenth of the budget, at least 5 s but never
    more than a quarter of it, at most 30 s)."""
    return min(30.0, max(total_s / 10, min(5.0, total_s / 4)))


def use_golden(cfg: Assignment) -> bool:
    """Replay recorded reference values when the reference's code is not there (student kit)."""
    return not (cfg.reference_root / cfg.package).is_dir() and cfg.golden_path.exists()


def suite_paths(cfg: Assignment, suite: Suite) -> list[Path]:
    names = ["public", "hidden"] if suite == "all" else [suite]
    return [cfg.tests_dir / n for n in names if (cfg.tests_dir / n).is_dir()]


def collect_manifest(cfg: Assignment, out: Path) -> list[ManifestEntry]:
    """Collect every suite (no student code runs) and write the manifest to ``out``."""
    with tempfile.TemporaryDirectory(prefix="ag-collect-") as tmp:
        ini = Path(tmp) / "pytest.ini"
        ini.write_text(_INI)
        cmd = _pytest_command(cfg, ini, ["--collect-only", "-q", "--ag-manifest-out", str(out),
                                         *map(str, suite_paths(cfg, "all"))])
        proc = subprocess.run(cmd, cwd=tmp, env=_env(), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"collecting the suites failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return read_manifest(out)


def load_manifest(cfg: Assignment) -> list[ManifestEntry]:
    if cfg.manifest_path.exists():
        return read_manifest(cfg.manifest_path)
    with tempfile.TemporaryDirectory(prefix="ag-manifest-") as tmp:
        return collect_manifest(cfg, Path(tmp) / "manifest.json")


def _precheck(cfg: Assignment, root: Path, parts: list[str] | None = None) -> list[str]:
    """Notes for the student about files the grader could not find (with ``parts``, those of the
    parts graded now by name, the others as a count: they fail no test of this run by themselves)."""
    if not root.is_dir():
        return [f"The submission directory {root} does not exist."]
    missing = [f for f in cfg.submission_files if not (root / f).exists()]
    if not missing:
        return []
    if parts:
        own = {f for p in cfg.parts if p.name in parts for f in p.files}
        named, others = [m for m in missing if m in own], len([m for m in missing if m not in own])
    else:
        named, others = missing, 0
    text = ""
    if named:
        text = ("Missing from your submission: " + ", ".join(f"`{m}`" for m in named)
                + f". The tests that need {'them' if len(named) > 1 else 'it'} fail.")
    if others:
        text += (" " if text else "") + (f"{others} more submission file{'s are' if others > 1 else ' is'} missing, "
                                         "for parts not graded in this run.")
    notes = [text]
    if not (root / cfg.package).is_dir():
        notes.append(f"There is no `{cfg.package}/` folder at all: upload the package folder or its files.")
    return notes


def run_pytest(cmd: list[str], cwd: str, env: dict[str, str], timeout: float, verbose: bool = False,
               start_s: float = 120.0, host_server: bool = True) -> tuple[int | None, str]:
    """Run ``cmd`` (``python -I -m pytest ...``) in ``cwd`` with ``env``: (exit code, output), the
    code None when it ran past ``timeout`` and was stopped with everything it started.

    With ``host_server``, quiet runs are forks of the host server for ``env`` where there is one
    (worth it when one process grades many submissions; for one grading it only adds a process
    that holds torch); verbose runs, and every run where no server can be had, start pytest as a
    new process.
    """
    server = None if verbose or not host_server or cmd[1:4] != ["-I", "-m", "pytest"] \
        else hostserver.host_server_for(env, start_s)
    if server is not None:
        read_fd, write_fd = os.pipe()
        try:
            proc = server.spawn(cmd[4:], env, cwd, write_fd)
        except forkserver.ForkServerError:
            proc = None
        finally:
            os.close(write_fd)
        if proc is not None:
            return _collect(proc, read_fd, timeout)
        os.close(read_fd)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=None if verbose else subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
        return proc.returncode, stdout or ""
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)  # the workers and whatever they started go with it
        stdout, _ = proc.communicate()
        return None, stdout or ""
    except BaseException:  # interrupted: nothing it started may outlive us
        kill_tree(proc.pid)
        raise


def _collect(proc: forkserver.ForkedProcess, read_fd: int, timeout: float) -> tuple[int | None, str]:
    """Read a forked pytest's output until it ends or ``timeout`` passes (then stop its tree)."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 and not timed_out:
                timed_out = True
                kill_tree(proc.pid)  # then read what it wrote before it was stopped
            wait = 1.0 if timed_out else min(left, 1.0)
            if not select.select([read_fd], [], [], wait)[0]:
                if timed_out:
                    break  # stopped, and a second of silence: nothing more is coming
                continue
            data = os.read(read_fd, 1 << 16)
            if not data:
                break  # every writer has closed it: pytest has ended (or was stopped)
            chunks.append(data)
    except BaseException:
        kill_tree(proc.pid)
        raise
    finally:
        os.close(read_fd)
    code = _exit_code(proc, 30.0)
    if code is None:  # it closed its output and went on: stopped like one that timed out
        kill_tree(proc.pid)
        code = _exit_code(proc, 10.0)
    text = b"".join(chunks).decode("utf-8", "replace")
    return (None if timed_out else code), text


def _exit_code(proc: forkserver.ForkedProcess, timeout: float) -> int | None:
    """Its exit code once it has ended, polling (a blocking wait would hold the server for others)."""
    end = time.monotonic() + timeout
    while (code := proc.poll()) is None and time.monotonic() < end:
        time.sleep(0.01)
    return code


def _after_grader_death(cfg: Assignment, manifest: list[ManifestEntry], rec_path: Path, code: int,
                        info: RunInfo) -> list[ManifestEntry] | None:
    """The grading pytest died in a test (student code killed it, or the kernel did for memory):
    that test and the rest of its part fail, with the reason; the tests of other parts still to run
    are returned, for a new pytest. None when it did not die in a test (nothing to blame: no retry,
    the run is reported as failed as before)."""
    records = read_records(rec_path)
    current = rec_path.with_suffix(".current")
    culprit = current.read_text().strip() if current.exists() else ""
    by_id = {m.nodeid: m for m in manifest}
    if culprit not in by_id or culprit in records:
        return None
    part = by_id[culprit].part
    how = f"killed by signal {-code}" if code < 0 else f"ended with exit code {code}"
    culprit_name = by_id[culprit].name
    message = (f"The grading process was {how} while this test ran your code (student code must not signal, "
               "kill or exhaust the processes around it). The other tests of part "
               f"'{part}' were not run and earn no points; the other parts were graded in a new grading process.")
    not_run = (f"Not run: the grading process was {how} during the test \"{culprit_name}\" of this part "
               f"('{part}'), so the rest of the part earns no points.")
    gpu_missing = not has_cuda()
    for m in manifest:
        if m.part == part and m.nodeid not in records:
            skip = m.gpu and gpu_missing  # as the plugin records it: left out of the total on CPU
            append_record(rec_path, TestRecord(nodeid=m.nodeid, status="failed", score=0.0, max_score=m.max_score,
                                               message=message if m.nodeid == culprit else not_run,
                                               skipped=skip, gpu_missing=skip))
    info.notes.append(f"The grading process was {how} during \"{culprit_name}\" (part '{part}'); that part's "
                      "remaining tests were not run, the other parts were graded in a new grading process.")
    current.unlink()
    return [m for m in manifest if m.part != part and m.nodeid not in records]


class _Progress:
    """Reports how many tests have finished while pytest runs, from the records file it appends to."""

    def __init__(self, path: Path, total: int, report: Callable[[int, int], None], every_s: float = 0.5):
        self._path, self._total, self._report, self._every = path, total, report, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ag-progress", daemon=True)

    def _count(self) -> int:
        try:
            with open(self._path, "rb") as f:
                return f.read().count(b"\n")
        except OSError:
            return 0

    def _watch(self) -> None:
        seen = -1
        while not self._stop.wait(self._every):
            done = self._count()
            if done != seen:
                seen = done
                self._report(min(done, self._total), self._total)

    def __enter__(self) -> _Progress:
        self._report(0, self._total)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def grade(cfg: Assignment, root: Path, out: Path | None = None, suite: Suite = "all",
          parts: list[str] | None = None, verbose: bool = False,
          time_limits: dict[str, float] | None = None, notes: list[str] | None = None,
          env: dict[str, str] | None = None, privilege: Privilege = "auto",
          sandbox: dict | None = None, progress: Callable[[int, int], None] | None = None,
          host_server: bool = False) -> Results:
    """Grade ``root`` with ``suite``; writes results.json to ``out`` when given.

    ``time_limits`` overrides entries of ``[time_limits]`` (e.g. ``{"call_s": 5}``) and ``sandbox``
    entries of ``[sandbox]``; ``notes`` are shown to the student in the summary; ``env`` adds
    environment variables (e.g. the GPU to use). ``privilege`` says whether student code must
    (``"require"``), may (``"auto"``) or must not (``"off"``) be moved to an unprivileged account
    when we are root (see :func:`autograder.sandbox.confinement.plan`). Without the reference's code but with
    a recording (the student kit), the reference is replayed. ``progress(done, total)`` is called
    from another thread as tests finish (about twice a second at most). ``host_server``: fork
    pytest from a host server kept for later gradings (see :func:`run_pytest`).

    ``time_limits["total_s"]`` is a budget that holds whatever the code does: no test starts later
    than :func:`stop_margin` before its end (the rest are listed as not run, with the reason), no
    call into student code waits past that point, and pytest is stopped at the end.
    """
    start = time.monotonic()
    if time_limits:
        limits = cfg.time_limits.model_validate({**cfg.time_limits.model_dump(), **time_limits})
        cfg = cfg.model_copy(update={"time_limits": limits})
    if sandbox:
        cfg = cfg.model_copy(update={"sandbox": cfg.sandbox.model_validate({**cfg.sandbox.model_dump(), **sandbox})})
    root = Path(root).resolve()
    info = RunInfo(notes=list(notes or []) + _precheck(cfg, root, parts))
    try:
        box = plan(cfg.sandbox, privilege)
        info.notes += box.notes
    except SandboxError as e:
        box = None
        info.run_error = str(e)
    try:
        manifest = load_manifest(cfg)
    except Exception as e:  # noqa: BLE001 - results.json must still be written
        manifest = []
        info.run_error = f"the grading suites could not be collected ({e})"
    wanted = {"all": None, "public": "public", "hidden": "hidden"}[suite]
    manifest = [m for m in manifest if (wanted is None or m.suite == wanted)
                and (parts is None or m.part in parts)]
    records = {}
    code: Path | None = None
    with tempfile.TemporaryDirectory(prefix="ag-run-") as tmp:
        tmpdir = Path(tmp)
        ini = tmpdir / "pytest.ini"
        ini.write_text(_INI)
        rec_path = tmpdir / "records.jsonl"
        selection = [str(cfg.tests_dir / m.nodeid) for m in manifest] if parts else \
            [str(p) for p in suite_paths(cfg, suite)]
        end = start + cfg.time_limits.total_s  # the budget's end (time.monotonic)
        if manifest and box is not None and not info.run_error:
            # The worker imports a copy of the package: regular files only (a link to the reference
            # or a hidden test is not followed), which the sandbox account can read and not change.
            code = Path(tempfile.mkdtemp(prefix="ag-code-", dir=tmpdir.parent))
            os.chmod(code, 0o755)
            stage_code(root / cfg.package, code / cfg.package)
            if box.uid is not None and not can_reach(code / cfg.package, box.uid, box.gid or 0):
                info.run_error = (f"the sandbox account {box.user!r} cannot read {code} "
                                  "(set TMPDIR to a folder every account can enter)")
            command = lambda selection: _pytest_command(cfg, ini, [  # noqa: E731
                "--ag-root", str(root), "--ag-records", str(rec_path),
                "--ag-worker-root", str(code), "--ag-sandbox", box.to_json(),
                "--ag-time-limits", cfg.time_limits.model_dump_json(),
                "--ag-deadline", repr(time.time() + (end - time.monotonic()) - stop_margin(cfg.time_limits.total_s)),
                f"--timeout={cfg.time_limits.test_s:g}", "--timeout-method=signal",
                "-q" if not verbose else "-v", "-rN", "--no-header", "-W", "ignore::DeprecationWarning",
                "--continue-on-collection-errors",
                # Messages come from the plugin; pytest's own long tracebacks cost ~0.1 s a failure.
                "--tb=line" if not verbose else "--tb=short",
                *(["--ag-golden", str(cfg.golden_path)] if use_golden(cfg) else []),
                *selection,
            ])
        if manifest and box is not None and not info.run_error:
            def run(selection: list[str]) -> tuple[int | None, str]:
                return run_pytest(command(selection), tmp, {**_env(), **(env or {})},
                                  max(1.0, end - time.monotonic()), verbose, cfg.time_limits.start_s, host_server)

            with _Progress(rec_path, len(manifest), progress) if progress else contextlib.nullcontext():
                returncode, stdout = run(selection)
                for _ in cfg.parts:  # each restart gives up one part: never more restarts than parts
                    if returncode in (0, 1, None) or end - time.monotonic() < stop_margin(cfg.time_limits.total_s):
                        break
                    left = _after_grader_death(cfg, manifest, rec_path, returncode, info)
                    if left is None:
                        break
                    if not left:  # the part it died in was all that was left
                        returncode = 1
                        break
                    returncode, stdout = run([str(cfg.tests_dir / m.nodeid) for m in left])
            if returncode is None:
                info.run_error = f"grading took longer than {cfg.time_limits.total_s:g} s and was stopped"
            elif returncode not in (0, 1):  # 1 = some tests failed
                tail = (stdout or "")[-2000:]
                info.run_error = f"the grader exited with code {returncode}" + \
                    (f"\n{tail}" if tail and returncode not in (2, 5) else "")
            records = read_records(rec_path)
            if not info.run_error and any(r.message == NOT_RUN for r in records.values()):
                info.run_error = (f"grading used up its time budget ({cfg.time_limits.total_s:g} s) before "
                                  "every test had run; those it did not reach are listed as not run")
            sandbox_path = rec_path.with_suffix(".sandbox.json")
            if sandbox_path.exists():
                try:
                    info.sandbox = json.loads(sandbox_path.read_text())
                    info.notes += [n for n in info.sandbox.get("notes", []) if n not in info.notes]
                except (json.JSONDecodeError, AttributeError):
                    pass
            errors_path = rec_path.with_suffix(".collect.json")
            if errors_path.exists():
                try:
                    info.collect_errors = json.loads(errors_path.read_text())
                except json.JSONDecodeError:
                    pass
    if code is not None:
        shutil.rmtree(code, ignore_errors=True)
    info.execution_time = time.monotonic() - start
    results = assemble(cfg, manifest, records, info)
    if out is not None:
        results.write(out)
    return results
