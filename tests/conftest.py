"""Shared fixtures for the project's own tests."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

import pytest

from autograder.authoring import config as config_mod
from autograder.grading.results import Results

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = ROOT / "assignments" / "transformer"
SUBMISSIONS = Path(__file__).resolve().parent / "fixtures" / "submissions"
# Short limits so that hanging submissions cost seconds, not minutes.
FAST_LIMITS = {"call_s": 4.0, "import_s": 6.0}


@pytest.fixture(scope="session")
def cfg() -> config_mod.Assignment:
    return config_mod.load(ASSIGNMENT)


def make_export(dest: Path, roots: dict[str, Path]) -> Path:
    """A Gradescope-style "Export Submissions" zip with one submission per root."""
    import shutil
    import zipfile

    import yaml

    base = dest / "assignment_1_export"
    meta = {}
    for i, (name, root) in enumerate(roots.items()):
        sub = base / f"submission_{name}"
        sub.mkdir(parents=True)
        if (root / "transformer_lab").is_dir():
            shutil.copytree(root / "transformer_lab", sub / "transformer_lab",
                            ignore=shutil.ignore_patterns("__pycache__"))
        if (root / "answers.ipynb").is_file():
            shutil.copy(root / "answers.ipynb", sub / "answers.ipynb")
        meta[f"submission_{name}"] = {":submitters": [{":name": f"Student {name}", ":sid": str(1000 + i),
                                                        ":email": f"{name}@example.edu"}],
                                      ":created_at": "2026-11-20 10:00:00.000000000 -08:00"}
    (base / "submission_metadata.yml").write_text(yaml.safe_dump(meta))
    zip_path = dest / "export.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in sorted(base.rglob("*")):  # folders too: an empty submission is still one
            zf.write(path, path.relative_to(dest))
    shutil.rmtree(base)
    return zip_path


@pytest.fixture(scope="session")
def batch_run(cfg, tmp_path_factory):
    """Every fixture submission (plus reference and template) graded with `autograder batch`, 2 workers."""
    from autograder.commands.batch import grade_export

    roots = {"reference": cfg.reference_root, "template": cfg.template_root}
    roots |= {p.name: p for p in sorted(SUBMISSIONS.iterdir()) if p.is_dir() and not p.name.startswith(("flash_", "."))}
    work = tmp_path_factory.mktemp("batch")
    export = make_export(work, roots)
    out = work / "out"
    results = grade_export(cfg, export, out, workers=2, time_limits=FAST_LIMITS)
    return {"export": export, "out": out, "results": results, "names": list(roots)}


@pytest.fixture(scope="session")
def graded(batch_run):
    """Results by fixture name (reference, template, alt_correct, bug_*, ...)."""
    out = batch_run["out"]
    results = {}
    for name in batch_run["names"]:
        res = batch_run["results"][f"submission_{name}"]
        assert Results.read(out / "results" / f"submission_{name}.json") == res  # what Gradescope would read
        results[name] = res
    return results


# Variants of flash_alt written at test time (a whole copy each would repeat its 290 lines), right under
# Triton's interpreter but rejected by a GPU compile: name -> (why, [(text in flash_alt's flash.py, its
# replacement)]).
FLASH_VARIANTS = {
    "flash_aot_dot8": ("8 keys per forward block: tl.dot needs every dimension >= 16",
                       [("_FWD_BLOCK_K = 16\n", "_FWD_BLOCK_K = 8\n")]),
    "flash_aot_smem": ("64 x 128 forward tiles in 4 pipeline stages: at head dim 128 the K and V buffers need "
                       "more shared memory than an H100 block may use",
                       [("_FWD_BLOCK_Q = 32\n_FWD_BLOCK_K = 16\n", "_FWD_BLOCK_Q = 64\n_FWD_BLOCK_K = 128\n"),
                        ("            num_warps=_num_warps(D),\n        )\n    return o, stat",
                         "            num_warps=_num_warps(D), num_stages=4,\n        )\n    return o, stat")]),
}


def flash_variant(name: str, dest: Path) -> Path:
    """The submission root of the FLASH_VARIANTS fixture ``name``, written under ``dest``."""
    why, edits = FLASH_VARIANTS[name]
    root = dest / name
    if not root.exists():
        shutil.copytree(SUBMISSIONS / "flash_alt", root, ignore=shutil.ignore_patterns("__pycache__"))
        path = root / "transformer_lab" / "flash.py"
        source = path.read_text()
        for old, new in edits:
            assert source.count(old) == 1, f"{name}: {old!r} is not once in flash_alt's flash.py"
            source = source.replace(old, new)
        path.write_text(f"# Test fixture {name}: flash_alt with {why}.\n" + source)
    return root


@pytest.fixture(scope="session")
def flash_graded(cfg, tmp_path_factory):
    """The Triton fixtures (flash_* and FLASH_VARIANTS), graded on the flash parts only (the interpreter is slow)."""
    from autograder.commands.batch import grade_export

    work = tmp_path_factory.mktemp("flash")
    roots = {p.name: p for p in sorted(SUBMISSIONS.iterdir()) if p.is_dir() and p.name.startswith("flash_")}
    roots |= {name: flash_variant(name, work / "variants") for name in FLASH_VARIANTS}
    results = grade_export(cfg, make_export(work, roots), work / "out", workers=2,
                           parts=["flash", "flash_backward"])
    return {name: results[f"submission_{name}"] for name in roots}


# --------------------------------------------------------------------------- environments the
# sandbox account can run (Gradescope layout, adversarial corpus)

SANDBOX_USER = "ag-student"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs the Gradescope layout as root (as CI does)")


def sandbox_account():
    """As root, the account student code runs as (created as setup.sh would); None otherwise."""
    if os.geteuid() != 0:
        return None
    from autograder.sandbox.confinement import ensure_user

    return ensure_user(SANDBOX_USER)


def _system_python(account) -> str:
    """An interpreter of our version that ``account`` can run (ours may sit in a private home)."""
    from autograder.sandbox.confinement import can_reach

    ours = sys.executable
    if account is None or can_reach(Path(ours), account.pw_uid, account.pw_gid) and \
            can_reach(Path(os.__file__), account.pw_uid, account.pw_gid):
        return ours
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if os.path.exists(candidate) and can_reach(Path(candidate), account.pw_uid, account.pw_gid):
            return candidate
    pytest.fail(f"no Python {version} that {account.pw_name} may run (ours is {ours}); "
                "install Debian's python3-venv or put the venv somewhere world-readable")


def readable_venv(base: Path) -> Path:
    """A new venv in ``base`` whose packages come, read-only, from this environment (a .pth line),
    and which the sandbox account can run: where this environment is out of its reach, the venv
    is made from the system Python and the packages are hard-linked (else copied) into ``base``.
    Returns its python; the harness itself still has to be installed into it."""
    from autograder.sandbox.confinement import can_reach

    account = sandbox_account()
    os.chmod(base, 0o755)
    venv = base / "venv"
    subprocess.run([_system_python(account), "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = Path(sysconfig.get_paths()["purelib"])
    if account is not None and not can_reach(deps / "torch", account.pw_uid, account.pw_gid):
        linked = base / "deps"

        def link(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(deps, linked, symlinks=True, copy_function=link,
                        ignore=shutil.ignore_patterns("__editable__*", "autograder*", "transformer_autograder*"))
        os.chmod(linked, 0o755)
        deps = linked
    (site / "borrowed-deps.pth").write_text(f"{deps}\n")
    return py


def world_readable_dir(prefix: str) -> Path:
    """A fresh folder under the system temp dir that every account can enter (pytest's are private)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="session")
def dist(cfg, tmp_path_factory):
    """dist/autograder.zip and dist/student_kit.zip, built once."""
    from autograder.commands.build import build

    return build(cfg, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def fresh_python(dist):
    """A new venv holding the harness from the kit's wheel only, runnable by the sandbox account."""
    base = world_readable_dir("ag-venv-")
    py = readable_venv(base)
    with zipfile.ZipFile(dist[1]) as zf:
        wheel = next(n for n in zf.namelist() if n.endswith(".whl"))
        target = base / Path(wheel).name
        target.write_bytes(zf.read(wheel))
    subprocess.run([str(py), "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", str(target)], check=True)
    origin = subprocess.run([str(py), "-c", "import autograder; print(autograder.__file__)"], cwd=base,
                            capture_output=True, text=True, check=True).stdout
    assert str(base) in origin, origin
    yield py
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def source_python():
    """Like fresh_python, with the harness copied from this checkout (no wheel to build)."""
    base = world_readable_dir("ag-venv-")
    py = readable_venv(base)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    shutil.copytree(ROOT / "autograder", site / "autograder", ignore=shutil.ignore_patterns("__pycache__"))
    yield py
    shutil.rmtree(base, ignore_errors=True)


def run_gradescope(dist, fresh_python, base: Path, files: dict[str, str | Path],
                   args: tuple[str, ...] = (), name: str | None = None) -> Results:
    """Lay out /autograder (source/, submission/, results/) in a new folder of ``base`` and run
    run_autograder as Gradescope would (as root in CI, so student code runs as the sandbox account)."""
    root = base / name if name else Path(tempfile.mkdtemp(prefix="autograder-", dir=base))
    root.mkdir(exist_ok=True)
    os.chmod(root, 0o755)
    (root / "source").mkdir(parents=True)
    zipfile.ZipFile(dist[0]).extractall(root / "source")
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    sub = root / "submission"
    sub.mkdir()
    for rel, content in files.items():
        (sub / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy(content, sub / rel)
        else:
            (sub / rel).write_text(content)
    (root / "submission_metadata.json").write_text(json.dumps({"id": 1, "users": [{"name": "S"}]}))
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": str(fresh_python)}
    subprocess.run(["bash", str(root / "run_autograder"), *args], env=env, check=True, timeout=900,
                   capture_output=True)
    return Results.read(root / "results" / "results.json")


@pytest.fixture(scope="session")
def layout_base():
    """A world-readable folder for temporary /autograder layouts (like the real, root-owned one)."""
    base = world_readable_dir("ag-layouts-")
    yield base
    shutil.rmtree(base, ignore_errors=True)
