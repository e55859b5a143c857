"""Copying a submission by allowlist (what run_autograder and batch grade)."""
from __future__ import annotations

import os

from autograder.grading.submission import copy_submission


def test_package_folder(tmp_path, cfg):
    up = tmp_path / "up" / cfg.package
    up.mkdir(parents=True)
    (up / "attention.py").write_text("x = 1\n")
    (up / "conftest.py").write_text("import os\nos._exit(0)\n")
    report = copy_submission(tmp_path / "up", tmp_path / "out", cfg)
    assert report.copied == [f"{cfg.package}/attention.py"]
    assert (tmp_path / "out" / cfg.package / "__init__.py").exists()  # created when missing
    assert not list((tmp_path / "out").rglob("conftest.py"))
    assert f"{cfg.package}/mha.py" in report.missing


def test_loose_files_and_nested_upload(tmp_path, cfg):
    up = tmp_path / "up"
    (up / "my-work" / "src").mkdir(parents=True)
    (up / "mha.py").write_text("loose\n")
    (up / "my-work" / "src" / "attention.py").write_text("nested\n")
    (up / "answers.ipynb").write_text("{}")
    copy_submission(up, tmp_path / "out", cfg)
    assert (tmp_path / "out" / cfg.package / "mha.py").read_text() == "loose\n"
    assert (tmp_path / "out" / cfg.package / "attention.py").read_text() == "nested\n"
    assert (tmp_path / "out" / "answers.ipynb").exists()


def test_symlinks_and_large_files_are_refused(tmp_path, cfg):
    up = tmp_path / "up" / cfg.package
    up.mkdir(parents=True)
    secret = tmp_path / "secret.py"
    secret.write_text("hidden tests\n")
    os.symlink(secret, up / "attention.py")
    (up / "mha.py").write_bytes(b"#" * (6 * 1024 * 1024))
    report = copy_submission(tmp_path / "up", tmp_path / "out", cfg)
    assert not (tmp_path / "out" / cfg.package / "attention.py").exists()
    assert not (tmp_path / "out" / cfg.package / "mha.py").exists()
    assert any("limit" in n for n in report.notes)
