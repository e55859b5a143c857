"""The ``autograder`` command: grade, self-check, regenerate the template and manifest, verify."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from autograder.authoring import config as config_mod
from autograder.grading.results import Results

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Grade Transformer-assignment submissions in a sandboxed worker, with Gradescope results.")
console = Console(stderr=True)
out = Console()

BUNDLED = Path(__file__).resolve().parents[2] / "assignments" / "transformer"
AssignmentOpt = typer.Option(None, "--assignment", "-a",
                             help="assignment directory (default: $AUTOGRADER_ASSIGNMENT or the bundled one)")


def _load(assignment: Optional[Path], near: Optional[Path] = None) -> config_mod.Assignment:
    """--assignment, else $AUTOGRADER_ASSIGNMENT, else an unzipped student kit, else the bundled one."""
    from autograder.commands.build import find_kit_assignment

    path = assignment or (Path(os.environ["AUTOGRADER_ASSIGNMENT"]) if os.environ.get("AUTOGRADER_ASSIGNMENT")
                          else None) or find_kit_assignment((near or Path.cwd()).resolve()) or BUNDLED
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


def _check_parts(cfg: config_mod.Assignment, parts: Optional[list[str]]) -> None:
    for p in parts or []:
        if p not in cfg.part_names:
            console.print(f"[red]error:[/red] unknown part {p!r} (parts: {', '.join(cfg.part_names)})")
            raise typer.Exit(2)


def _warn_points(cfg: config_mod.Assignment) -> None:
    """Grades follow the tests' @weight points: say so when assignment.toml disagrees with them."""
    from autograder.grading.manifest import point_mismatches, read_manifest

    if cfg.manifest_path.exists():
        for problem in point_mismatches(cfg.parts, read_manifest(cfg.manifest_path)):
            console.print(f"[yellow]warning:[/yellow] {problem}; grades follow the tests")


@contextmanager
def _grading(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr for a grading run; yields the ``progress`` callback for it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("tests"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _show(results: Results, cfg: config_mod.Assignment, title: str, **kwargs) -> tuple[float, float]:
    from autograder.grading.report import show

    return show(out, results, cfg, title, **kwargs)


@app.command()
def grade(
    root: Path = typer.Argument(..., help="a submission as uploaded (a folder or a .zip) or an implementation root"),
    assignment: Optional[Path] = AssignmentOpt,
    suite: str = typer.Option("all", help="all, public or hidden"),
    part: Optional[list[str]] = typer.Option(None, "--part", "-p", help="grade only these parts"),
    results_out: Optional[Path] = typer.Option(None, "--out", "-o", help="write results.json here (a file or a folder)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show pytest's progress and whole messages"),
) -> None:
    """Grade ROOT as Gradescope would and print a summary (results.json with --out).

    ROOT is taken as Gradescope takes an upload: a zip is unpacked, and the submission files are
    found by path or by name anywhere inside (a nested folder, loose files), so a submission
    downloaded from Gradescope gets the grade it got there.
    """
    import tempfile
    import zipfile

    from autograder.grading.submission import UnpackError, safe_extract
    from autograder.grading.runner import grade as run_grade
    from autograder.grading.submission import copy_submission

    cfg = _load(assignment)
    if suite not in ("all", "public", "hidden"):
        console.print("[red]error:[/red] --suite must be all, public or hidden")
        raise typer.Exit(2)
    _check_parts(cfg, part)
    if not root.exists():
        console.print(f"[red]error:[/red] {root} does not exist")
        raise typer.Exit(2)
    if root.is_file() and not zipfile.is_zipfile(root):
        console.print(f"[red]error:[/red] {root} is neither a folder nor a zip file")
        raise typer.Exit(2)
    if results_out is not None and results_out.is_dir():
        results_out = results_out / "results.json"
    _warn_points(cfg)
    with tempfile.TemporaryDirectory(prefix="ag-grade-") as tmp:
        upload = root
        if root.is_file():
            upload = Path(tmp) / "upload"
            try:
                safe_extract(root, upload)
            except (UnpackError, zipfile.BadZipFile, OSError) as e:
                console.print(f"[red]error:[/red] cannot unpack {root}: {e}")
                raise typer.Exit(2) from None
        staged = Path(tmp) / "submission"
        report = copy_submission(upload, staged, cfg)
        with _grading(f"Grading {root}") as progress:
            results = run_grade(cfg, staged, results_out, suite=suite, parts=part or None,  # type: ignore[arg-type]
                                verbose=verbose, notes=report.notes, progress=None if verbose else progress)
    _show(results, cfg, f"{cfg.title}: {root}", verbose=verbose)
    if results_out:
        console.print(f"results written to {results_out}")


@app.command()
def selfcheck(
    root: Path = typer.Argument(Path("."), help="your implementation root (contains the package)"),
    assignment: Optional[Path] = AssignmentOpt,
    part: Optional[list[str]] = typer.Option(None, "--part", "-p", help="check only these parts"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="whole messages and everything your code printed"),
    results_out: Optional[Path] = typer.Option(None, "--out", "-o", help="also write results.json here"),
    make_zip: bool = typer.Option(False, "--zip", help="also write submission.zip for Gradescope"),
    zip_path: Path = typer.Option(Path("submission.zip"), "--zip-path", help="where --zip writes"),
    call_limit: Optional[float] = typer.Option(None, "--call-limit", min=0.5,
                                               help="seconds one call into your code may take (default: the grader's)"),
    gpu_compile: bool = typer.Option(True, "--gpu-compile/--no-gpu-compile",
                                     help="also compile your Triton kernels for an H100 (sm_90) and report what they use"),
) -> None:
    """Run the public tests on what you would submit and predict your grade from them.

    Also compiles the Triton kernels for a real GPU (no GPU needed) and prints, per kernel, the shared
    memory, registers, spills and tensor-core instructions: the hidden suite grades that they compile.
    Exit status: 0 when every public test passes, 1 when some fail, 2 for a usage error.
    """
    import tempfile

    from autograder.commands.build import write_submission_zip
    from autograder.grading.runner import grade as run_grade
    from autograder.grading.submission import copy_submission

    cfg = _load(assignment, near=root)
    _check_parts(cfg, part)
    root = root.resolve()
    if not (root / cfg.package).is_dir():
        inside = root.name == cfg.package or (root.parent / cfg.package).is_dir()
        console.print(f"[red]error:[/red] there is no {cfg.package}/ folder in {root}"
                      + (f"; run selfcheck from the folder that contains {cfg.package}/ (or pass it: "
                         f"autograder selfcheck {root.parent})" if inside else
                         "; pass the folder that contains it: autograder selfcheck PATH"))
        raise typer.Exit(2)
    extra = sorted(str(f.relative_to(root)) for f in (root / cfg.package).rglob("*.py")
                   if str(f.relative_to(root)) not in {*cfg.submission_files, f"{cfg.package}/__init__.py"}
                   and "__pycache__" not in f.parts)
    with tempfile.TemporaryDirectory(prefix="ag-selfcheck-") as tmp:
        # Exactly what Gradescope will grade: the submission files, copied as the grader copies them.
        staged = Path(tmp) / "submission"
        report = copy_submission(root, staged, cfg)
        notes = list(report.notes)
        if extra:
            notes.append(f"Not submitted, so not graded (here or on Gradescope): {', '.join(extra)}. Only these "
                         f"files are: {', '.join(cfg.submission_files)}; move code you need into them.")
        label = f"the public tests of {', '.join(part)}" if part else "the public tests"
        with _grading(f"Running {label}") as progress:
            results = run_grade(cfg, staged, results_out, suite="public", parts=part or None, notes=notes,
                                progress=progress, time_limits={"call_s": call_limit} if call_limit else None)
        aot_lines: list[str] = []
        flash_parts = [p.name for p in cfg.parts if p.name.startswith("flash") and (not part or p.name in part)]
        # Only for kernels that already pass a public test here (stubs would only repeat their TODOs).
        works = any(t.status == "passed" and (t.extra_data or {}).get("part") == "flash" for t in results.tests or [])
        if gpu_compile and works and (staged / cfg.package / "flash.py").is_file():
            from autograder.sandbox import aot

            # The same requests as the hidden tests (flash_helpers.aot_check), in one process.
            requests = [{"backward": False, "per_kernel": 2, "max_compiles": 3, "module": f"{cfg.package}.flash"}]
            if "flash_backward" in flash_parts:
                requests.append({"backward": True, "per_kernel": 1, "max_compiles": 3, "module": f"{cfg.package}.flash"})
            with console.status("Compiling your Triton kernels for an H100 (sm_90)..."):
                try:
                    for rep in aot.run_checks(staged, requests, target="sm_90", timeout=600):
                        color = "green" if rep["ok"] else "red"
                        aot_lines.append(f"[{color}]{escape(aot.format_report(rep))}[/{color}]")
                except Exception as e:  # noqa: BLE001 - a report, not a verdict
                    aot_lines.append(f"[yellow]could not compile for a GPU here: {escape(str(e)[-800:])}[/yellow]")
    predicted, predicted_bonus = _show(results, cfg, "Public tests", verbose=verbose, predicted=True)
    if aot_lines:
        out.print("\n[bold]Your Triton kernels compiled for a real GPU[/bold] [dim](the hidden tests grade that they "
                  "compile and fit; registers, spills and mma/wgmma tell how they will run)[/dim]")
        for line in aot_lines:
            out.print(line)
    graded = [p for p in cfg.parts if not part or p.name in part]
    regular = sum(p.points for p in graded if not p.bonus)
    bonus = sum(p.points for p in graded if p.bonus)
    out.print(f"\n[bold]Predicted grade: {predicted:.1f} / {regular:g}[/bold]"
              + (f" + {predicted_bonus:.1f} / {bonus:g} bonus" if bonus else "")
              + f"  [dim](public pass rate x part points; the hidden tests decide. {results.execution_time:g} s)[/dim]")
    if results_out:
        console.print(f"results written to {results_out}")
    if make_zip:
        files = write_submission_zip(cfg, root, zip_path)
        missing = sorted(set(cfg.submission_files) - set(files))
        out.print(f"wrote {zip_path} with {len(files)} files" + (f"; missing: {', '.join(missing)}" if missing else ""))
    failed = [t for t in results.tests or [] if t.status == "failed"]
    stopped = sum("did not finish within" in (t.output or "") for t in failed)
    if stopped >= 2:
        out.print(f"{stopped} tests waited for code that did not finish. To fail faster while you fix it: "
                  f"--call-limit 5 (the grader allows {cfg.time_limits.call_s:g} s), or --part NAME.")
    if failed:
        raise typer.Exit(1)


@app.command()
def answers(
    submissions: list[Path] = typer.Argument(..., help="submission folders or .ipynb files"),
    assignment: Optional[Path] = AssignmentOpt,
    out_dir: Path = typer.Option(Path("answers"), "--out", help="output folder"),
) -> None:
    """Export written answers as Markdown and HTML (several submissions: grouped by question)."""
    from autograder.authoring.questions import QuestionsError, export_answers, load_questions

    cfg = _load(assignment)
    try:
        questions = load_questions(cfg.directory)
    except QuestionsError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    missing = [str(p) for p in submissions if not p.exists()]
    if missing:
        console.print(f"[red]error:[/red] not found: {', '.join(missing)}")
        raise typer.Exit(2)
    named = {(p.name if p.is_dir() else p.stem): p for p in submissions}
    if len(named) != len(submissions):
        named = {f"{i:03d}_{p.name}": p for i, p in enumerate(submissions)}
    files = export_answers(named, questions, out_dir)
    out.print(f"wrote {len(files)} files to {out_dir}")


@app.command()
def batch(
    export: Path = typer.Argument(..., help="Gradescope 'Export Submissions' zip or its unpacked folder"),
    assignment: Optional[Path] = AssignmentOpt,
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="submissions graded in parallel"),
    out_dir: Path = typer.Option(Path("batch_results"), "--out", help="output folder"),
    force: bool = typer.Option(False, "--force", help="regrade submissions that already have results"),
    part: Optional[list[str]] = typer.Option(None, "--part", "-p", help="grade only these parts"),
    slurm: bool = typer.Option(False, "--slurm", help="grade on a Slurm cluster: a job array, one submission "
                                                      "per task (run on a login node)"),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition (with --slurm)"),
    gpus_per_task: int = typer.Option(1, "--gpus-per-task", min=0, help="GPUs per task (with --slurm; 0: none)"),
    cpus_per_task: int = typer.Option(4, "--cpus-per-task", min=1, help="CPUs per task (with --slurm)"),
    time_limit: Optional[int] = typer.Option(None, "--time-limit", min=1,
                                             help="minutes per task (with --slurm; default: the assignment's "
                                                  "total_s + start_s + 5 min)"),
    max_parallel: int = typer.Option(16, "--max-parallel", min=1, help="tasks running at once (with --slurm)"),
    sbatch_arg: Optional[list[str]] = typer.Option(None, "--sbatch-arg",
                                                   help="one more sbatch option, e.g. --sbatch-arg=--mem=32G "
                                                        "(repeatable; with --slurm)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="with --slurm: only write the sbatch script"),
    poll: float = typer.Option(10.0, "--poll", min=0.1, hidden=True, help="seconds between squeue polls"),
) -> None:
    """Grade every submission of an export: per-student results.json, grades.csv, summary and plots.

    With --slurm each submission is graded by one task of a Slurm job array (one GPU each), and the
    results are merged as a local batch merges them. Running the same command again re-attaches
    to tasks still queued or running and resubmits only submissions without results.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from autograder.commands.batch import ExportError, grade_export, read_export
    from autograder.grading.submission import UnpackError, safe_extract

    cfg = _load(assignment)
    _check_parts(cfg, part)
    if not export.exists():
        console.print(f"[red]error:[/red] {export} does not exist")
        raise typer.Exit(2)
    if dry_run and not slurm:
        console.print("[red]error:[/red] --dry-run writes the Slurm script: use it with --slurm")
        raise typer.Exit(2)
    try:
        if export.is_dir():
            total = len(read_export(export))
        else:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                safe_extract(export, Path(tmp))
                total = len(read_export(Path(tmp)))
    except (ExportError, UnpackError, OSError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    if slurm:
        _batch_slurm(cfg, export, out_dir, force=force, parts=part or None, total=total, dry_run=dry_run,
                     partition=partition, gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task,
                     time_limit=time_limit, max_parallel=max_parallel, sbatch_args=sbatch_arg or [], poll=poll)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("grading", total=total)

        def tick(sub_id: str, what: str) -> None:
            bar.update(task, advance=1, description=f"{sub_id}: {what}")

        results = grade_export(cfg, export, out_dir, workers=workers, force=force, parts=part or None,
                               progress=tick)
    out.print(f"graded {len(results)} submissions; see {out_dir / 'grades.csv'} and {out_dir / 'summary.md'}")


def _batch_slurm(cfg: config_mod.Assignment, export: Path, out_dir: Path, *, force: bool,
                 parts: Optional[list[str]], total: int, dry_run: bool, partition: Optional[str],
                 gpus_per_task: int, cpus_per_task: int, time_limit: Optional[int], max_parallel: int,
                 sbatch_args: list[str], poll: float) -> None:
    """`batch --slurm`: submit (or re-attach to) the array, follow it with local batch's progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from autograder.commands.slurm import SlurmError, SlurmOptions, grade_export_slurm

    opts = SlurmOptions(partition=partition, gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task,
                        time_limit_min=time_limit, max_parallel=max_parallel, sbatch_args=sbatch_args, poll_s=poll)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=dry_run) as bar:
            task = bar.add_task("grading on Slurm", total=total)

            def tick(sub_id: str, what: str) -> None:
                bar.update(task, advance=1, description=f"{sub_id}: {what}")

            run = grade_export_slurm(cfg, export, out_dir, opts, force=force, parts=parts, dry_run=dry_run,
                                     progress=tick, status=lambda text: console.print(escape(text), soft_wrap=True))
    except (SlurmError, ValueError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("interrupted: the tasks already submitted keep running; run the same command again to "
                      "wait for them and merge")
        raise typer.Exit(130) from None
    if dry_run:
        if run.script:
            out.print(f"wrote {run.script}; submit it by hand with: sbatch {run.script}", soft_wrap=True,
                      markup=False, highlight=False)
        else:
            out.print("nothing to submit: every submission has results or a task queued or running")
        return
    out.print(f"graded {len(run.results)} submissions; see {out_dir / 'grades.csv'} and {out_dir / 'summary.md'}")
    if run.failures:
        console.print(f"[yellow]{len(run.failures)} task(s) failed[/yellow] (see summary.md); run the same command "
                      "again to resubmit only those:")
        for sub_id, why in run.failures.items():
            console.print(f"  {escape(sub_id)}: {escape(why)}", soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def build(
    assignment: Optional[Path] = AssignmentOpt,
    out_dir: Path = typer.Option(Path("dist"), "--out", help="where to write the zips"),
) -> None:
    """Build dist/autograder.zip (for Gradescope) and dist/student_kit.zip (for students)."""
    from autograder.commands.build import BuildError, gradescope_settings
    from autograder.commands.build import build as run_build

    cfg = _load(assignment)
    try:
        with console.status("Building (recording the reference's answers for the public suites) ..."):
            ag_zip, kit_zip = run_build(cfg, out_dir)
    except BuildError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    out.print(f"wrote {ag_zip} (upload to Gradescope) and {kit_zip} (give to students)")
    out.print(gradescope_settings(cfg), markup=False, highlight=False, soft_wrap=True)


@app.command()
def template(
    check: bool = typer.Option(False, "--check", help="only check the committed template is up to date"),
    assignment: Optional[Path] = AssignmentOpt,
) -> None:
    """Regenerate the student template from the reference (solution blocks become stubs)."""
    from autograder.authoring.questions import QuestionsError, stale_generated, write_generated
    from autograder.authoring.template import TemplateError, generate, stale_files

    cfg = _load(assignment)
    ref_pkg = cfg.reference_root / cfg.package
    tpl_pkg = cfg.template_root / cfg.package
    try:
        if check:
            problems = stale_files(ref_pkg, tpl_pkg) + stale_generated(cfg.directory, cfg.template_root)
            if problems:
                console.print("[red]The student template is stale[/red] (run `autograder template`):")
                for p in problems:
                    console.print(f"  {p}")
                raise typer.Exit(1)
            out.print("student template is up to date")
            return
        files = generate(ref_pkg, tpl_pkg) + write_generated(cfg.directory, cfg.template_root)
    except (TemplateError, QuestionsError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    out.print(f"wrote {len(files)} files (package template, answers notebook, handout questions)")


@app.command()
def manifest(
    check: bool = typer.Option(False, "--check", help="only check the committed manifest is up to date"),
    assignment: Optional[Path] = AssignmentOpt,
) -> None:
    """Collect the suites (no student code runs) and write tests/manifest.json."""
    import tempfile

    from autograder.grading.manifest import point_mismatches
    from autograder.grading.runner import collect_manifest

    cfg = _load(assignment)
    with tempfile.TemporaryDirectory() as tmp:
        fresh_path = Path(tmp) / "manifest.json"
        entries = collect_manifest(cfg, fresh_path)
        bad = point_mismatches(cfg.parts, entries)
        if check:
            if not cfg.manifest_path.exists() or cfg.manifest_path.read_text() != fresh_path.read_text():
                console.print("[red]The test manifest is stale[/red] (run `autograder manifest`).")
                raise typer.Exit(1)
            out.print(f"manifest is up to date ({len(entries)} tests)" + ("; its points are not:" if bad else ""))
        else:
            cfg.manifest_path.write_text(fresh_path.read_text())
            out.print(f"wrote {cfg.manifest_path} ({len(entries)} tests)")
    for problem in bad:
        console.print(f"[red]{problem}[/red]")
    if bad:
        raise typer.Exit(1)


@app.command()
def verify(
    assignment: Optional[Path] = AssignmentOpt,
    part: Optional[list[str]] = typer.Option(None, "--part", "-p", help="grade only these parts"),
) -> None:
    """Check the kit: template and manifest fresh, reference gets full marks, template gets 0."""
    from autograder.grading.manifest import point_mismatches
    from autograder.grading.runner import grade as run_grade
    from autograder.grading.runner import load_manifest
    from autograder.authoring.template import stale_files

    cfg = _load(assignment)
    problems: list[str] = []
    from autograder.authoring.questions import stale_generated

    stale = stale_files(cfg.reference_root / cfg.package, cfg.template_root / cfg.package)
    stale += stale_generated(cfg.directory, cfg.template_root)
    if stale:
        problems.append("student template is stale: " + "; ".join(stale))
    entries = load_manifest(cfg)
    problems += point_mismatches(cfg.parts, entries)
    _check_parts(cfg, part)
    with _grading("Grading the reference") as progress:
        ref = run_grade(cfg, cfg.reference_root, parts=part or None, progress=progress, host_server=True)
    _show(ref, cfg, "Reference")
    for t in ref.tests or []:
        if (t.score or 0) < (t.max_score or 0):
            problems.append(f"reference loses points on {t.name}: {(t.output or '').strip()[:200]}")
    with _grading("Grading the student template") as progress:
        tpl = run_grade(cfg, cfg.template_root, parts=part or None, progress=progress, host_server=True)
    _show(tpl, cfg, "Student template", failures=False)
    if (tpl.score or 0) > 0:
        problems.append(f"the template scores {tpl.score:g} > 0")
    if len(tpl.tests or []) != len([e for e in entries if not part or e.part in part]):
        problems.append("the template's results do not list every test")
    if problems:
        for p in problems:
            console.print(f"[red]problem:[/red] {p}")
        raise typer.Exit(1)
    out.print("[green]verify: OK[/green] (reference full marks, template 0, template and manifest in sync)")


@app.command()
def experiments(
    root: Optional[Path] = typer.Argument(None, help="implementation root (default: the reference)"),
    assignment: Optional[Path] = AssignmentOpt,
    out_dir: Path = typer.Option(Path("experiments"), "--out", help="where to write the PNGs"),
    scaling: bool = typer.Option(True, "--scaling/--no-scaling", help="also time attention over N"),
) -> None:
    """Attention heatmaps, the sinusoidal encoding, and attention time/memory vs N, as PNGs."""
    from autograder.sandbox.errors import StudentFacingError
    from autograder.commands.experiments import run_all

    cfg = _load(assignment, near=root)
    if root is not None and not (root / cfg.package).is_dir():
        console.print(f"[red]error:[/red] {escape(str(root))} has no {cfg.package}/ folder")
        raise typer.Exit(2)
    try:
        with console.status("Running experiments ...") as status:
            paths = run_all(cfg, root or cfg.reference_root, out_dir, scaling=scaling,
                            progress=lambda what: status.update(f"Running {what} ..."))
    except StudentFacingError as e:
        console.print(f"[red]The experiments need working code:[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    for p in paths:
        out.print(f"wrote {p}")


bench_app = typer.Typer(help="Benchmarks that print tables and save plots.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("flash")
def bench_flash(
    submission: Optional[Path] = typer.Option(None, "--submission", "-s", help="also time this submission"),
    assignment: Optional[Path] = AssignmentOpt,
    sizes: Optional[str] = typer.Option(None, help="comma-separated N (default: small on CPU, 512..16384 on GPU)"),
    head_dim: int = typer.Option(32, "--head-dim"),
    heads: int = typer.Option(2, "--heads"),
    batch: int = typer.Option(1, "--batch"),
    causal: bool = typer.Option(True, "--causal/--no-causal"),
    backward: bool = typer.Option(True, "--backward/--no-backward", help="also time forward+backward"),
    dtype: Optional[str] = typer.Option(None, help="float32, float16 or bfloat16 (default: float16 on a GPU, "
                                                   "float32 on a CPU)"),
    call_limit: float = typer.Option(600.0, "--call-limit", help="seconds one timed call may take"),
    png: Path = typer.Option(Path("bench/flash.png"), "--out", help="where to save the plot"),
) -> None:
    """Naive attention vs SDPA vs the reference kernel (vs a submission): time and TFLOP/s over N."""
    from autograder.commands.bench_flash import check_options, default_sizes, dtype_name, plot, run

    cfg = _load(assignment)
    try:
        try:
            chosen = default_sizes() if not sizes else [int(x) for x in sizes.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--sizes takes comma-separated whole numbers (e.g. 512,1024), not {sizes!r}") from None
        check_options(chosen, batch=batch, heads=heads, head_dim=head_dim, dtype=dtype)
    except ValueError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    if submission is not None and not (submission / cfg.package).is_dir():
        console.print(f"[red]error:[/red] {escape(str(submission))} has no {cfg.package}/ folder")
        raise typer.Exit(2)
    with console.status("Benchmarking ...") as status:
        rows, failures = run(cfg, submission, chosen, batch=batch, heads=heads, head_dim=head_dim, causal=causal,
                             backward=backward, dtype=dtype, call_s=call_limit,
                             progress=lambda what: status.update(f"Benchmarking {what} ..."))
    table = Table(title=f"Attention, B={batch} H={heads} D={head_dim} causal={causal} {dtype_name(dtype)}")
    for col in ("impl", "N", "forward ms", "fwd+bwd ms", "forward TFLOP/s"):
        table.add_column(col, justify="left" if col == "impl" else "right")
    for r in rows:
        table.add_row(r.impl, str(r.n), f"{r.fwd_ms:.3f}", "-" if r.fwd_bwd_ms is None else f"{r.fwd_bwd_ms:.3f}",
                      f"{r.fwd_tflops:.4f}")
    out.print(table)
    plot(rows, png)
    out.print(f"plot saved to {png}")
    for note in failures:
        console.print(f"[red]{escape(note)}[/red]")
    if failures:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover
    app(prog_name="autograder")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
