"""The command line: grade, selfcheck, verify."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from autograder.commands.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_grade_writes_results(tmp_path, cfg):
    out = tmp_path / "results.json"
    res = runner.invoke(app, ["grade", str(cfg.reference_root), "--part", "attention", "--suite", "public",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["score"] == 12 and all(t["tags"][0] == "attention" for t in data["tests"])
    assert "Total: 12 / 12" in res.output


def test_grade_takes_an_upload_as_gradescope_does(tmp_path, cfg):
    import zipfile

    upload = tmp_path / "upload.zip"  # a zip of a nested folder, as students upload them
    with zipfile.ZipFile(upload, "w") as zf:
        for f in (cfg.reference_root / cfg.package).glob("*.py"):
            zf.write(f, f"my_homework/{cfg.package}/{f.name}")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    res = runner.invoke(app, ["grade", str(upload), "-p", "attention", "--suite", "public", "--out", str(out_dir)])
    assert res.exit_code == 0, res.output
    assert json.loads((out_dir / "results.json").read_text())["score"] == 12  # --out a folder: results.json in it
    assert list(out_dir.iterdir()) == [out_dir / "results.json"]


@pytest.mark.parametrize("kind", ["missing", "not_a_zip", "bad_zip"])
def test_grade_rejects_what_is_not_a_submission(tmp_path, kind):
    path = tmp_path / ("nothing" if kind == "missing" else "upload.zip")
    if kind == "not_a_zip":
        path.write_text("print('hi')\n")
    elif kind == "bad_zip":
        path.write_bytes(b"PK\x03\x04" + b"garbage" * 10)
    res = runner.invoke(app, ["grade", str(path)])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "Traceback" not in res.output


def test_grade_rejects_unknown_part(cfg):
    res = runner.invoke(app, ["grade", str(cfg.reference_root), "--part", "nope"])
    assert res.exit_code == 2 and "unknown part" in res.output


def test_selfcheck_on_the_template(cfg):
    # (selfcheck of a full solution runs in test_build, from the unzipped student kit)
    res = runner.invoke(app, ["selfcheck", str(cfg.template_root)])
    assert res.exit_code == 1, res.output  # public tests fail
    regular = sum(p.points for p in cfg.parts if not p.bonus)
    bonus = sum(p.points for p in cfg.parts if p.bonus)
    assert f"Predicted grade: 0.0 / {regular:g} + 0.0 / {bonus:g} bonus" in res.output
    # One line per stub, not one failure per test that reaches it; the written answers in one line.
    assert "TODO softmax (transformer_lab/attention.py, line" in res.output
    assert "answers still hold the placeholder: Q1, Q2" in res.output
    assert "NotImplementedError" not in res.output
    assert len(res.output.splitlines()) < 120


def test_selfcheck_grades_what_would_be_submitted(cfg, tmp_path):
    import shutil

    root = tmp_path / "mine"
    shutil.copytree(cfg.reference_root / cfg.package, root / cfg.package)
    (root / cfg.package / "helpers.py").write_text("SCALE = 1.0\n")
    attention = root / cfg.package / "attention.py"
    attention.write_text(attention.read_text() + "\nfrom .helpers import SCALE  # noqa: E402 - not a submitted file\n")
    res = runner.invoke(app, ["selfcheck", str(root), "--part", "attention"])
    assert res.exit_code == 1, res.output
    assert "Not submitted, so not graded" in res.output and "transformer_lab/helpers.py" in res.output
    assert "No module named 'transformer_lab.helpers'" in res.output
    assert "Predicted grade: 0.0 / 20" in res.output


def test_selfcheck_passes_and_explains_a_wrong_folder(cfg):
    res = runner.invoke(app, ["selfcheck", str(cfg.reference_root), "-p", "attention"])
    assert res.exit_code == 0, res.output
    assert "Predicted grade: 20.0 / 20" in res.output
    res = runner.invoke(app, ["selfcheck", str(cfg.reference_root / cfg.package)])
    assert res.exit_code == 2
    assert f"run selfcheck from the folder that contains {cfg.package}/" in " ".join(res.output.split())


def test_verify(cfg):
    # The whole reference is graded in test_grading (through batch); two parts keep this quick.
    res = runner.invoke(app, ["verify", "--part", "attention", "--part", "mha"])
    assert res.exit_code == 0, res.output
    assert "verify: OK" in res.output


def test_answers_export(cfg, tmp_path):
    res = runner.invoke(app, ["answers", str(cfg.reference_root), str(cfg.template_root), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "reference" in (tmp_path / "q01.md").read_text()


def test_bench_flash_on_cpu(tmp_path):
    png = tmp_path / "flash.png"
    res = runner.invoke(app, ["bench", "flash", "--sizes", "16", "--no-backward", "--out", str(png)])
    assert res.exit_code == 0, res.output
    assert "reference" in res.output and "sdpa" in res.output and "naive" in res.output
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bench_flash_keeps_going_past_a_broken_submission(cfg, tmp_path):
    png = tmp_path / "flash.png"
    res = runner.invoke(app, ["bench", "flash", "--sizes", "16,32", "--no-backward", "--out", str(png),
                              "--submission", str(cfg.template_root)])
    assert res.exit_code == 1, res.output
    assert "submission stopped at N=16" in res.output and "NotImplementedError" in res.output
    assert res.output.count("reference") >= 2  # the reference's rows at both sizes are still shown
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,needle", [
    (["--head-dim", "48"], "head dim must be one of"),
    (["--sizes", "16,x"], "comma-separated whole numbers"),
    (["--sizes", "0"], "positive sequence lengths"),
    pytest.param(["--dtype", "bfloat16"], "bfloat16 needs a GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs bfloat16")),
    (["--dtype", "int8"], "dtype must be one of"),
    (["--submission", "/nonexistent"], "has no transformer_lab/ folder"),
])
def test_bench_flash_refuses_bad_options(args, needle, tmp_path):
    res = runner.invoke(app, ["bench", "flash", "--out", str(tmp_path / "x.png"), *args])
    assert res.exit_code == 2 and needle in res.output, res.output


def test_experiments_make_their_plots(cfg, tmp_path):
    res = runner.invoke(app, ["experiments", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for name in ("attention_heads.png", "sinusoidal.png", "attention_scaling.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name
    res = runner.invoke(app, ["experiments", str(cfg.template_root), "--out", str(tmp_path / "t"),
                              "--no-scaling"])
    assert res.exit_code == 1 and "NotImplementedError" in res.output


def test_grade_warns_when_toml_points_disagree_with_the_tests(cfg, capsys):
    from autograder.commands import cli

    parts = [p.model_copy(update={"points": p.points + 1}) if p.name == "mha" else p for p in cfg.parts]
    cli._warn_points(cfg.model_copy(update={"parts": parts}))
    assert "part mha: tests add up to 20, assignment.toml says 21; grades follow the tests" in \
        " ".join(capsys.readouterr().err.split())
    cli._warn_points(cfg)
    assert "warning" not in capsys.readouterr().err


def test_selfcheck_call_limit_fails_hanging_code_fast(cfg, tmp_path):
    import shutil

    root = tmp_path / "mine"
    shutil.copytree(cfg.reference_root / cfg.package, root / cfg.package)
    attention = root / cfg.package / "attention.py"
    attention.write_text(attention.read_text().replace("def softmax(x", "def softmax(x, dim=-1, _spin=True):\n"
                                                       "    while _spin:\n        pass\n\n\ndef _unused(x", 1))
    res = runner.invoke(app, ["selfcheck", str(root), "-p", "attention", "--call-limit", "0.5"])
    assert res.exit_code == 1, res.output
    assert "did not finish within 0.5 s" in res.output
    assert "waited for code that did not finish" in " ".join(res.output.split())


@pytest.mark.parametrize("args,message", [
    (["bench", "flash", "--sizes", "abc"], "--sizes takes comma-separated whole numbers"),
    (["experiments", "/nonexistent/root"], "has no transformer_lab/ folder"),
])
def test_bad_arguments_get_one_clear_line(args, message):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()) and "Traceback" not in res.output


def test_kit_readme_follows_the_config_and_the_cli(cfg):
    """The student kit's README is written from assignment.toml, and every selfcheck option it shows exists."""
    import re

    from autograder.commands.build import kit_readme

    text = kit_readme(cfg, ["API.md", "handout_questions.md"], gpu_tests=3)
    assert "Triton's interpreter" in text and "Triton's interpreter" not in kit_readme(cfg, [], gpu_tests=0)
    for p in cfg.parts:
        assert re.search(rf"\| `{p.name}` \| {re.escape(p.title)} \|.*\| {p.points:g}( bonus)? \|", text), p.name
    regular = sum(p.points for p in cfg.parts if not p.bonus)
    assert f"Total: {regular:g} points" in text and "kit/assignment/API.md" in text
    assert all(f"`{f}`" in text.split("## Submit")[1] for f in cfg.submission_files)
    assert f"default {cfg.time_limits.call_s:g} s" in text
    shown = set(re.findall(r"selfcheck (--?[a-z-]+)", text))
    assert {"--part", "-v", "--call-limit", "--zip"} <= shown
    usage = runner.invoke(app, ["selfcheck", "--help"], terminal_width=200).output
    assert all(option in usage for option in shown), (shown, usage)
