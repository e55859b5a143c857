"""The adversarial corpus: one hostile submission per attack class, graded for real.

Every case in ``fixtures/hostile/`` attacks in ``mha`` and carries an honest ``attention`` (the
reference's, copied in), and is graded on those two parts by ``autograder batch`` in a venv the
sandbox account can run (as root, as in CI, student code runs as that account). For each case:
results.json is valid and lists every test, the honest part keeps full marks, the attacked part
earns no more than the honest work in it (0, or what a plain control earns), and grading time
is bounded. Cases that need the Gradescope layout as root are at the end.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from autograder.grading.manifest import read_manifest
from autograder.grading.results import Results
from conftest import SUBMISSIONS, make_export, needs_root, run_gradescope, world_readable_dir

pytestmark = pytest.mark.slow

HOSTILE = Path(__file__).resolve().parent / "fixtures" / "hostile"
PARTS = ["attention", "mha"]
LIMITS = {"call_s": 3.0, "import_s": 6.0}
SANDBOX = {"memory_mb": 320}  # as assignment.toml: beyond what the worker holds at start
BATCH_CASES = sorted(p.name for p in HOSTILE.iterdir() if p.is_dir()
                     and p.name not in ("planted_files", "gradescope_intruder"))
# Copied in from elsewhere (never kept twice in the tree).
EXTRA = {"faked_clock": {"transformer_lab/mha.py": SUBMISSIONS / "bug_head_loop" / "transformer_lab" / "mha.py"}}

DRIVER = """
import json, sys
from pathlib import Path
from autograder.commands.batch import grade_export
from autograder.authoring.config import load
a = json.loads(sys.argv[1])
grade_export(load(a["assignment"]), Path(a["export"]), Path(a["out"]), workers=2, parts=a["parts"],
             time_limits=a["limits"], sandbox=a["sandbox"])
"""


def materialize(case: str, dest: Path, cfg, fill: dict[str, str]) -> Path:
    """The case's files with placeholders filled in, plus the honest attention and copied extras."""
    root = dest / case
    shutil.copytree(HOSTILE / case, root, symlinks=True)
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            text = path.read_text()
            for key, value in fill.items():
                text = text.replace(f"@@{key}@@", value)
            path.write_text(text)
    if (root / cfg.package).is_dir():
        for rel, src in {f"{cfg.package}/attention.py": cfg.reference_root / cfg.package / "attention.py",
                         **EXTRA.get(case, {})}.items():
            if not (root / rel).exists() or rel in EXTRA.get(case, {}):
                shutil.copy(src, root / rel)
    return root


class Listener:
    """A TCP server on 127.0.0.1 that records whatever connects to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received.append(conn.recv(1024))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def markers():
    """A folder every account may write: the cases leave their traces (pids, heartbeats) here."""
    path = world_readable_dir("ag-markers-")
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus(cfg, source_python, markers, tmp_path_factory):
    """Every batch case graded once (plus the reference as a neighbour that must not suffer)."""
    work = tmp_path_factory.mktemp("hostile")
    out = work / "out"
    listener = Listener()
    fill = {"MARKERS": str(markers), "PORT": str(listener.port)}
    roots = {"reference": cfg.reference_root}
    for case in BATCH_CASES:
        roots[case] = materialize(case, work / "cases", cfg,
                                  {**fill, "RESULTS": str(out / "results" / f"submission_{case}.json")})
    export = make_export(work, roots)
    args = {"assignment": str(cfg.directory), "export": str(export), "out": str(out), "parts": PARTS,
            "limits": LIMITS, "sandbox": SANDBOX}
    t0 = time.monotonic()
    proc = subprocess.run([str(source_python), "-c", DRIVER, json.dumps(args)], capture_output=True, text=True,
                          timeout=900)
    wall = time.monotonic() - t0
    time.sleep(1.0)  # anything still alive would show in the markers by now
    listener.close()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {name: Results.read(out / "results" / f"submission_{name}.json") for name in roots}
    return {"results": results, "out": out, "wall": wall, "received": listener.received}


def part(res: Results, name: str) -> dict:
    return res.extra_data["parts"][name]


def outputs(res: Results, name: str = "mha") -> str:
    return "\n".join(t.output or "" for t in res.tests if (t.extra_data or {}).get("part") == name)


def test_corpus_is_graded_within_bounds(corpus):
    # 22 submissions, 2 at a time, call limits of 3-4 s: minutes, not the hours a hang would take.
    assert corpus["wall"] < 600, corpus["wall"]


@pytest.mark.parametrize("case", ["reference", *BATCH_CASES])
def test_valid_results_and_the_honest_part_keeps_its_marks(corpus, cfg, case):
    res = corpus["results"][case]
    expected = [m for m in read_manifest(cfg.manifest_path) if m.part in PARTS]
    assert len(res.tests) == len(expected)  # every test listed, none dropped by the attack
    # Nothing the attack did adds up to more than the tests' points.
    assert res.score == sum(t.score for t in res.tests) <= sum(m.max_score for m in expected if not m.gpu)
    if case != "missing_package":
        a = part(res, "attention")
        assert a["score"] == a["max_score"] > 0, outputs(res, "attention")[:2000]
    assert res.execution_time < 180, res.execution_time


NEEDLES = {  # what the student is told, in the attacked part's output
    "exit_zero_import": "sys.exit(0)",
    "os_exit_call": "exited with code 0",
    "segfault": "SIGSEGV",
    "hang_import": "did not finish within 6 s",
    "hang_call": "did not finish within 3 s",
    "memory_bomb": "memory",
    "malicious_pickle": "invalid reply",
    "syntax_error": "SyntaxError",
    "skip_exceptions": "Skipped",
}
ZERO = sorted(set(BATCH_CASES) - {"zeros_control", "faked_clock", "patched_comparisons", "tensor_subclass"})


@pytest.mark.parametrize("case", ZERO)
def test_attacks_earn_nothing_in_their_part(corpus, case):
    res = corpus["results"][case]
    assert part(res, "mha")["score"] == 0, [(t.name, t.score) for t in res.tests if t.score]
    if case in NEEDLES:
        assert NEEDLES[case].lower() in outputs(res).lower(), outputs(res)[:3000]


@pytest.mark.parametrize("case", ["patched_comparisons", "tensor_subclass", "always_equal"])
def test_value_attacks_earn_no_more_than_plain_zeros(corpus, case):
    # The comparisons happen in the grader, on plain tensors: patching torch or returning a lying
    # subclass in the worker changes nothing the grader looks at.
    control = part(corpus["results"]["zeros_control"], "mha")
    attacked = part(corpus["results"][case], "mha")
    assert control["score"] < control["max_score"]
    assert attacked["score"] <= control["score"]
    assert attacked["passed"] <= control["passed"]


def test_skips_count_as_failures_not_as_excluded_tests(corpus):
    res = corpus["results"]["skip_exceptions"]
    mha = [t for t in res.tests if t.extra_data["part"] == "mha"]
    assert mha and all(t.status == "failed" and t.score == 0 for t in mha)
    assert part(res, "mha")["max_score"] == part(corpus["results"]["reference"], "mha")["max_score"]


def test_frozen_clocks_do_not_make_a_slow_mha_fast(corpus):
    res = corpus["results"]["faked_clock"]
    failed = [t for t in res.tests if t.extra_data["part"] == "mha" and t.status == "failed"]
    # the hidden timing on the grader's clock, and the public count of operations per head (no clock at all)
    assert sorted("max_ratio" in t.name for t in failed) == [False, True], [(t.name, t.output) for t in failed]
    assert all("max_ratio" in t.name or "grows with the number of heads" in (t.output or "") for t in failed)


def test_forged_results_are_replaced_by_the_graders(corpus, cfg):
    names = [m.name for m in read_manifest(cfg.manifest_path) if m.part in PARTS]
    for case in ("forged_results", "daemon_overwrites_results"):
        res = Results.read(corpus["out"] / "results" / f"submission_{case}.json")
        assert [t.name for t in res.tests] == names, case  # the grader's tests, not the forged ones
        assert res.score == part(res, "attention")["score"] == sum(t.score for t in res.tests), case


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except OSError:
        return False


def test_no_process_outlives_grading(corpus, markers):
    pids = [int(x) for x in (markers / "fork_bomb.pids").read_text().split()]
    assert len(pids) == 64  # the bomb did go off
    assert not [p for p in pids if _alive(p)]
    # 300 sleepers forked from inside a call, each holding the worker's pipes (up to the process limit)
    storm = [int(x) for x in (markers / "fork_storm.pids").read_text().split()]
    assert len(storm) >= 20, len(storm)
    assert not [p for p in storm if _alive(p)]
    beat = markers / "daemon.beat"
    assert beat.exists()  # the daemon did start
    before = beat.stat().st_mtime
    time.sleep(1.0)
    assert beat.stat().st_mtime == before, "the daemon is still running"


def test_output_flood_is_cut_short(corpus):
    path = corpus["out"] / "results" / "submission_output_flood.json"
    assert path.stat().st_size < 200_000
    assert "omitted" in outputs(corpus["results"]["output_flood"])


def test_no_network(corpus):
    res = corpus["results"]["network"]
    if res.extra_data["sandbox"]["network"] == "isolated":
        assert corpus["received"] == []
        assert "NETWORK: blocked" in outputs(res)
    else:  # the kernel refused a network namespace: the results say so
        assert "Network isolation is not available" in res.output


def test_a_malicious_pickle_is_never_unpickled(corpus, markers):
    assert not (markers / "pickle_ran").exists()


def test_sandbox_is_reported(corpus):
    box = corpus["results"]["reference"].extra_data["sandbox"]
    assert box["limits"]["memory_mb"] == SANDBOX["memory_mb"]
    if os.geteuid() == 0:
        assert box["user"] != "root", box  # the venv is one the sandbox account can run


def test_a_killed_parent_costs_only_its_part(corpus, markers):
    # As root the sandbox account cannot signal the grader ("refused"); elsewhere the grader dies and
    # the other parts are graded in a new pytest (test_a_killed_grader_costs_only_its_part).
    outcomes = (markers / "kill_parent.txt").read_text().splitlines()
    assert outcomes, "the attack did not run"
    res = corpus["results"]["kill_parent"]
    assert part(res, "mha")["score"] == 0
    assert part(res, "attention")["score"] == part(res, "attention")["max_score"] > 0


def test_a_killed_grader_costs_only_its_part(cfg, markers, tmp_path):
    """Student code running with the grader's own rights (no sandbox account: a student's laptop, or
    privilege "off") kills the grading pytest: that part fails with the reason, the rest is graded."""
    from autograder.grading.runner import grade

    root = materialize("kill_parent", tmp_path, cfg, {"MARKERS": str(markers)})
    shutil.copy(cfg.reference_root / cfg.package / "posenc.py", root / cfg.package / "posenc.py")
    res = grade(cfg, root, parts=["attention", "mha", "posenc"], privilege="off", time_limits=LIMITS,
                sandbox=SANDBOX)
    assert [line.split()[-1] for line in (markers / "kill_parent.txt").read_text().splitlines()][-1] == "killed"
    for name in ("attention", "posenc"):  # one part before the killed one in the run, one after
        assert part(res, name)["score"] == part(res, name)["max_score"] > 0, outputs(res, name)[:2000]
    assert part(res, "mha")["score"] == 0
    assert "The grading process was killed by signal 9 while this test ran your code" in outputs(res)
    assert "Not run: the grading process was killed by signal 9 during the test" in outputs(res)
    assert "that part's remaining tests were not run" in res.output
    expected = [m for m in read_manifest(cfg.manifest_path) if m.part in ("attention", "mha", "posenc")]
    assert len(res.tests) == len(expected)


# --------------------------------------------------------------------------- planted files, links


def test_planted_files_and_links_are_never_used(cfg, source_python, markers, tmp_path):
    """`autograder grade DIR` on a raw folder: its conftest.py, pytest.ini, plugin and
    sitecustomize never load, and a link to the reference's mha.py is not followed."""
    root = materialize("planted_files", tmp_path, cfg, {"MARKERS": str(markers)})
    os.symlink(cfg.reference_root / cfg.package / "mha.py", root / cfg.package / "mha.py")
    out = tmp_path / "results.json"
    cmd = [str(source_python), "-m", "autograder", "grade", str(root), "--assignment", str(cfg.directory),
           "--part", "attention", "--part", "mha", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = Results.read(out)
    assert part(res, "attention")["score"] == part(res, "attention")["max_score"]
    assert part(res, "mha")["score"] == 0
    assert sorted(p.name for p in markers.iterdir() if "ran" in p.name or "loaded" in p.name) == []


# --------------------------------------------------------------------------- Gradescope layout, root


@needs_root
def test_gradescope_intruder(cfg, dist, fresh_python, layout_base, markers):
    """As root in the Gradescope layout: no hidden test or reference can be read, results.json
    is the grader's alone, no privilege comes back, and nothing of the student's survives."""
    layout = Path(os.path.join(layout_base, "intruder"))
    src = HOSTILE / "gradescope_intruder" / cfg.package / "mha.py"
    mha = src.read_text().replace("@@LAYOUT@@", str(layout)).replace("@@MARKERS@@", str(markers))
    files = {f"{cfg.package}/attention.py": cfg.reference_root / cfg.package / "attention.py",
             f"{cfg.package}/mha.py": mha}
    res = run_gradescope(dist, fresh_python, layout_base, files, ("--part", "attention", "--part", "mha"),
                         name="intruder")
    report = json.loads((markers / "intruder.json").read_text())
    for attempt in ("read_hidden", "read_reference", "forge_results", "plant_file", "setuid_root", "kill_grader"):
        assert report[attempt].startswith("refused"), report
    assert report["fork_bomb"].startswith("refused"), report  # the process limit held
    calls = [json.loads(line) for line in (markers / "intruder_calls.jsonl").read_text().splitlines()]
    assert calls and all(c["kill_parent"].startswith("refused") for c in calls), calls  # inside calls too
    assert max(c["forks"] for c in calls) > 0, calls
    assert res.extra_data["sandbox"]["user"] == "ag-student"
    assert part(res, "attention")["score"] == part(res, "attention")["max_score"]
    assert part(res, "mha")["score"] == 0
    assert res.score == part(res, "attention")["score"]
    assert sorted(p.name for p in (layout / "results").iterdir()) == ["results.json"]
    hidden = (cfg.tests_dir / "hidden" / "test_mha.py").read_text().splitlines()
    secret = next(line for line in hidden if "def test_" in line)
    assert secret not in (layout / "results" / "results.json").read_text()
    beat = markers / "intruder.beat"
    before = beat.stat().st_mtime
    time.sleep(1.0)
    assert beat.stat().st_mtime == before, "the daemon outlived grading"
    uid = __import__("pwd").getpwnam("ag-student").pw_uid
    from autograder.sandbox.confinement import _processes

    assert [p for p, (_, u) in _processes().items() if u == uid] == []
