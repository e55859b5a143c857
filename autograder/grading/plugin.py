"""pytest plugin: fixtures that reach student code through the worker, and one record per test.

Loaded explicitly (``-p autograder.grading.plugin``) by the grading runner. Each finished test is
appended at once to a JSON-lines record file, so that a grader process killed half-way still
leaves the results of every test it finished; :mod:`autograder.grading.scoring` turns records plus the
manifest into results.json. Test metadata comes from gradescope-utils decorators
(``weight``, ``number``, ``visibility``, ``tags``, ``partial_credit``, ``leaderboard``,
``hide_errors``) and the ``part`` marker.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from autograder.authoring import config as config_mod
from autograder.sandbox import forkserver
from autograder.sandbox.client import Limits, WorkerClient
from autograder.sandbox.errors import StudentFacingError
from autograder.grading.records import NOT_RUN, TestRecord, append_record
from autograder.sandbox.confinement import Sandbox, become_subreaper, has_cuda, kill_strays

RECORD_KEY = pytest.StashKey[dict]()
GPU_REASON = "needs a CUDA GPU, and this grading machine has none"
REFERENCE_LABEL = "the reference solution"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autograder")
    group.addoption("--ag-assignment", help="assignment directory (holding assignment.toml)")
    group.addoption("--ag-root", help="implementation root to grade (contains the package)")
    group.addoption("--ag-worker-root", help="copy of the root that the worker imports (default: --ag-root)")
    group.addoption("--ag-sandbox", help="JSON of autograder.sandbox.confinement.Sandbox for the student worker")
    group.addoption("--ag-records", help="append one JSON line per finished test here")
    group.addoption("--ag-manifest-out", help="with --collect-only: write the test manifest here")
    group.addoption("--ag-suite-root", help="directory holding public/ and hidden/ (for suite names)")
    group.addoption("--ag-time-limits", help="JSON object overriding [time_limits] of assignment.toml")
    group.addoption("--ag-golden-record", help="record what tests get from `reference` into this file")
    group.addoption("--ag-golden", help="replay `reference` from this recording (no reference code needed)")
    group.addoption("--ag-deadline", type=float, default=None,
                    help="time.time() after which no test starts and no call into student code waits")


def pytest_configure(config: pytest.Config) -> None:
    suite_root = config.getoption("--ag-suite-root")
    if suite_root and suite_root not in sys.path:
        sys.path.insert(0, suite_root)  # the suites' shared helpers (trusted, next to the suites)
    config.addinivalue_line("markers", "part(name): the assignment part a test grades (required)")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (handled by the assignment's gpu_policy)")
    if config.getoption("--ag-root"):
        become_subreaper()  # whatever student code forks stays below us, to be killed after each test


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.getoption("--ag-root"):
        kill_strays()


def _assignment(config: pytest.Config) -> config_mod.Assignment:
    cached = getattr(config, "_ag_assignment", None)
    if cached is None:
        path = config.getoption("--ag-assignment")
        if not path:
            raise pytest.UsageError("--ag-assignment is required by the autograder plugin")
        cached = config_mod.load(path)
        override = config.getoption("--ag-time-limits")
        if override:
            limits = cached.time_limits.model_copy(update=json.loads(override))
            cached = cached.model_copy(update={"time_limits": limits})
        config._ag_assignment = cached  # type: ignore[attr-defined]
    return cached


# --------------------------------------------------------------------------- metadata


def _unwrap_chain(fn: Any):
    seen = 0
    while fn is not None and seen < 20:
        yield fn
        fn = getattr(fn, "__wrapped__", None)
        seen += 1


def _attr(fn: Any, name: str, default: Any = None) -> Any:
    for f in _unwrap_chain(fn):
        if name in getattr(f, "__dict__", {}):
            return f.__dict__[name]
    return default


def test_metadata(item: pytest.Item, cfg: config_mod.Assignment, suite_root: Path | None) -> dict:
    """Name, part, points, tags, ... of one collected test (no student code involved)."""
    fn = getattr(item, "obj", None)
    marker = item.get_closest_marker("part")
    if marker is None or not marker.args:
        raise pytest.UsageError(f"{item.nodeid}: every grading test needs @pytest.mark.part(<name>)")
    part = str(marker.args[0])
    if part not in cfg.part_names:
        raise pytest.UsageError(f"{item.nodeid}: part {part!r} is not in assignment.toml ({cfg.part_names})")
    doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
    title = doc[0].strip().rstrip(".") if doc else item.originalname.removeprefix("test_").replace("_", " ")
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        title += f" [{callspec.id}]"
    tags = [part] + [str(t) for t in (_attr(fn, "__tags__", ()) or ()) if str(t) != part]
    suite = "hidden"
    if suite_root is not None:
        try:
            rel = Path(str(item.path)).resolve().relative_to(suite_root.resolve())
            suite = rel.parts[0] if rel.parts else "hidden"
        except ValueError:
            pass
    gpu = item.get_closest_marker("gpu") is not None
    lb_col = _attr(fn, "__leaderboard_column__")
    return {
        "nodeid": item.nodeid,
        "name": f"{part}: {title}",
        "number": _attr(fn, "__number__"),
        "part": part,
        "max_score": float(_attr(fn, "__weight__", 0.0) or 0.0),
        "tags": tags,
        "visibility": _attr(fn, "__visibility__", "visible"),
        "hide_errors": _attr(fn, "__hide_errors__"),
        "leaderboard": None if lb_col is None else {
            "name": lb_col, "order": _attr(fn, "__leaderboard_sort_order__", "desc")},
        "gpu": gpu,
        "suite": suite,
        "file": str(Path(str(item.path)).resolve()),
    }


def _number_tests(entries: list[dict], cfg: config_mod.Assignment) -> None:
    counters: dict[str, int] = {}
    for e in entries:
        if e["number"] is None:
            counters[e["part"]] = counters.get(e["part"], 0) + 1
            e["number"] = f"{cfg.part_names.index(e['part']) + 1}.{counters[e['part']]}"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    cfg = _assignment(config)
    suite_root = config.getoption("--ag-suite-root")
    suite_root = Path(suite_root) if suite_root else None
    entries = []
    for item in items:
        meta = test_metadata(item, cfg, suite_root)
        item.stash[RECORD_KEY] = {"meta": meta, "phases": {}, "start": None}
        entries.append(meta)
    _number_tests(entries, cfg)
    out = config.getoption("--ag-manifest-out")
    if out:
        from autograder.grading.manifest import write_manifest

        write_manifest(Path(out), entries, cfg)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _COLLECT_ERRORS[report.nodeid] = str(report.longrepr)[-3000:]


_COLLECT_ERRORS: dict[str, str] = {}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def assignment(pytestconfig: pytest.Config) -> config_mod.Assignment:
    return _assignment(pytestconfig)


def _deadline(config: pytest.Config) -> float | None:
    return config.getoption("--ag-deadline")


def _register(request: pytest.FixtureRequest, client: WorkerClient) -> None:
    """Known to the per-test hooks (strays, test names, the deadline)."""
    config = request.config
    config._ag_clients = getattr(config, "_ag_clients", []) + [client]  # type: ignore[attr-defined]
    client.deadline = _deadline(config)
    client.test_name = getattr(config, "_ag_current_test", "")


def _limits(cfg: config_mod.Assignment) -> Limits:
    t = cfg.time_limits
    return Limits(call_s=t.call_s, import_s=t.import_s, start_s=t.start_s)


@pytest.fixture(scope="session")
def student_client(request: pytest.FixtureRequest, pytestconfig: pytest.Config, assignment: config_mod.Assignment):
    root = pytestconfig.getoption("--ag-root")
    if not root:
        raise pytest.UsageError("--ag-root is required to grade")
    spec = pytestconfig.getoption("--ag-sandbox")
    client = WorkerClient(Path(pytestconfig.getoption("--ag-worker-root") or root), assignment.package,
                          _limits(assignment), threads=assignment.worker_threads, label="your code",
                          sandbox=Sandbox.from_json(spec) if spec else None)
    _register(request, client)
    yield client
    client.close()


@pytest.fixture(scope="session")
def submission_dir(pytestconfig: pytest.Config) -> Path:
    """The submission's directory, for tests that read data files (never code) from it."""
    root = pytestconfig.getoption("--ag-root")
    if not root:
        raise pytest.UsageError("--ag-root is required to grade")
    return Path(root).resolve()


@pytest.fixture
def student(request: pytest.FixtureRequest, student_client: WorkerClient):
    """The student's package, reached through the worker: ``student.attention.softmax(x)``."""
    mark = student_client.output_mark()
    try:
        yield student_client.root_ref()
    finally:
        output = student_client.output_since(mark)
        if output.strip():
            request.node.stash[RECORD_KEY]["student_output"] = output
        student_client.release_all()
        student_client.truncate_log()


class _LazyPackage:
    """A package whose submodules import on first attribute access (``reference.mha``)."""

    def __init__(self, module) -> None:
        self._module = module

    def __getattr__(self, name: str):
        try:
            return getattr(self._module, name)
        except AttributeError:
            return importlib.import_module(f"{self._module.__name__}.{name}")


def _import_reference(cfg: config_mod.Assignment):
    root = str(cfg.reference_root)
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module(cfg.package)
    module_file = Path(module.__file__ or "").resolve()
    if cfg.reference_root not in module_file.parents:
        raise RuntimeError(f"{cfg.package} resolved to {module_file}, not the reference")
    return module


@pytest.fixture(scope="session")
def _golden(pytestconfig: pytest.Config):
    """(mode, recorder or replayer) for the run: live reference, recording, or replay."""
    from autograder.grading.golden import Recorder, Replayer

    replay = pytestconfig.getoption("--ag-golden")
    record = pytestconfig.getoption("--ag-golden-record")
    if replay:
        yield "replay", Replayer(Path(replay))
    elif record:
        recorder = Recorder()
        yield "record", recorder
        recorder.save(Path(record))
    else:
        yield "live", None


@pytest.fixture
def reference(request: pytest.FixtureRequest, assignment: config_mod.Assignment, _golden):
    """The reference package, in the (trusted) grading process; recorded or replayed in the kit."""
    mode, store = _golden
    if mode == "replay":
        return store.proxy(request.node.nodeid, assignment.package)
    module = _import_reference(assignment)
    if mode == "record":
        return store.proxy(module, request.node.nodeid)
    return _LazyPackage(module)


@pytest.fixture(scope="session")
def reference_client(request: pytest.FixtureRequest, pytestconfig: pytest.Config,
                     assignment: config_mod.Assignment):
    """A worker running the reference, for timing it under the same conditions as the student."""
    client = WorkerClient(assignment.reference_root, assignment.package, _limits(assignment),
                          threads=assignment.worker_threads, label=REFERENCE_LABEL, locate_hangs=False)
    _register(request, client)
    yield client
    client.close()


@pytest.fixture
def reference_remote(reference_client: WorkerClient):
    yield reference_client.root_ref()
    reference_client.release_all()


@pytest.fixture
def gpu_device():
    import torch

    if not torch.cuda.is_available():
        pytest.skip(GPU_REASON)
    return torch.device("cuda")


# --------------------------------------------------------------------------- per-test records


def pytest_runtest_setup(item: pytest.Item) -> None:
    state = item.stash.get(RECORD_KEY, None)
    if state is not None:
        state["start"] = time.monotonic()
        fn = getattr(item, "obj", None)
        for f in _unwrap_chain(fn):
            for attr in ("__score__", "__leaderboard_value__"):
                if attr in getattr(f, "__dict__", {}):
                    delattr(f, attr)
    if item.get_closest_marker("gpu") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip(GPU_REASON)


def _student_message(excinfo: pytest.ExceptionInfo) -> str:
    e = excinfo.value
    if isinstance(e, StudentFacingError):
        return str(e)
    if isinstance(e, AssertionError):
        text = str(e)
        cut = text.find("\nassert ")
        if text.startswith("assert "):
            return "A check failed (no message was given)."
        return text[:cut] if cut >= 0 else text
    name = type(e).__name__
    if name == "Failed" and "Timeout" in str(e):
        return f"The test ran past its time limit ({str(e).strip()})."
    if isinstance(e, pytest.skip.Exception):
        return f"Skipped: {e.msg}"
    return f"{name}: {e}"[:4000]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    state = item.stash.get(RECORD_KEY, None)
    if state is None:
        return report
    phase = {"outcome": report.outcome, "wasxfail": hasattr(report, "wasxfail")}
    if call.excinfo is not None and report.outcome != "passed":
        phase["message"] = _student_message(call.excinfo)
        if report.skipped and isinstance(report.longrepr, tuple):
            phase["message"] = f"Skipped: {report.longrepr[2].removeprefix('Skipped: ')}"
    state["phases"][call.when] = phase
    return report


@pytest.hookimpl(tryfirst=True, specname="pytest_runtest_protocol")
def pytest_runtest_protocol_deadline(item: pytest.Item, nextitem) -> bool | None:
    """Past the deadline, a test is not run at all: it is recorded as not run, with the reason."""
    deadline = _deadline(item.config)
    state = item.stash.get(RECORD_KEY, None)
    if deadline is not None and state is not None and state["meta"]["gpu"]:
        import torch

        if not torch.cuda.is_available():
            deadline = None  # skipped at once, and left out of the total: never "not run"
    if deadline is None or state is None or time.time() < deadline:
        name = state["meta"]["name"] if state is not None else ""
        item.config._ag_current_test = name  # type: ignore[attr-defined]
        path = item.config.getoption("--ag-records")
        if path and state is not None:  # should this process die in the test, the runner knows where
            Path(path).with_suffix(".current").write_text(state["meta"]["nodeid"])
        for client in getattr(item.config, "_ag_clients", []):
            client.test_name = name
        return None
    state["not_run"] = NOT_RUN
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def _finish_record(item: pytest.Item) -> TestRecord | None:
    state = item.stash.get(RECORD_KEY, None)
    if state is None:
        return None
    meta = state["meta"]
    if state.get("not_run"):
        return TestRecord(nodeid=meta["nodeid"], status="failed", score=0.0, max_score=meta["max_score"],
                          message=state["not_run"], duration=0.0)
    phases = state["phases"]
    fn = getattr(item, "obj", None)
    outcomes = [phases.get(w, {}).get("outcome") for w in ("setup", "call", "teardown")]
    passed = outcomes == ["passed", "passed", "passed"] and not any(
        p.get("wasxfail") for p in phases.values())
    messages = [p["message"] for p in phases.values() if p.get("message")]
    status = "passed" if passed else "failed"
    skipped = any(p.get("outcome") == "skipped" for p in phases.values())
    gpu_missing = skipped and meta["gpu"] and any(GPU_REASON in m for m in messages)
    score = meta["max_score"] if passed else 0.0
    partial = _attr(fn, "__score__")
    if passed and partial is not None:
        try:
            score = max(0.0, min(float(partial), meta["max_score"]))
        except (TypeError, ValueError):
            score = 0.0
            messages.append(f"partial score was not a number: {partial!r}")
    if any(p.get("wasxfail") for p in phases.values()):
        messages.append("Marked as an expected failure: earns no points.")
    if not passed and not messages:
        messages.append("Did not pass." if not skipped else "Skipped.")
    if not passed and meta.get("hide_errors"):
        messages = [str(meta["hide_errors"])]
    lb = None
    if meta.get("leaderboard") and passed:
        value = _attr(fn, "__leaderboard_value__")
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            lb = {**meta["leaderboard"], "value": value}
    duration = time.monotonic() - state["start"] if state.get("start") else 0.0
    return TestRecord(
        nodeid=meta["nodeid"], status=status, score=score, max_score=meta["max_score"],
        message="\n".join(messages), student_output=state.get("student_output", ""),
        gpu_missing=gpu_missing, skipped=skipped, leaderboard=lb, duration=duration,
    )


def _kill_leftovers(config: pytest.Config) -> None:
    """Every process student code started during the test, except the live workers (and the fork
    servers they come from), is killed."""
    if config.getoption("--ag-root"):
        clients = getattr(config, "_ag_clients", [])
        if not has_cuda():  # (with a GPU, a new worker would set CUDA up again: kept)
            for client in clients:
                if client.label == REFERENCE_LABEL:  # only timing tests use it: its memory back until the next
                    client.stop()
        kill_strays(keep={c.pid for c in clients if c.pid is not None} | forkserver.server_pids())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    result = yield
    _kill_leftovers(item.config)
    record = _finish_record(item)
    path = item.config.getoption("--ag-records")
    if record is not None and path:
        append_record(Path(path), record)
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.getoption("--ag-records")
    reports = [c.sandbox_report for c in getattr(session.config, "_ag_clients", []) if c.sandbox_report]
    if path and reports:
        Path(path).with_suffix(".sandbox.json").write_text(json.dumps(reports[0]))
    if path and _COLLECT_ERRORS:
        errors_path = Path(path).with_suffix(".collect.json")
        errors_path.write_text(json.dumps(_COLLECT_ERRORS))
