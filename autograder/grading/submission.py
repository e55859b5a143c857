"""Copy a submission by allowlist: only the files the assignment expects, as regular files.

Students upload in many shapes (the package folder, loose files, a zip with a top folder). We
look each expected file up by its path, then by its name anywhere in the upload, and copy only
regular files below a size limit: no symlinks, nothing outside the upload, no conftest.py or
other extras ever reach the grading directory.
"""
from __future__ import annotations

import os
import shutil
import zipfile
import stat
from dataclasses import dataclass, field
from pathlib import Path

from autograder.authoring.config import Assignment

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_UNPACKED_BYTES = 4 * 1024 ** 3  # an upload or an export zip unpacks to at most this
MAX_SCAN = 5_000


class UnpackError(Exception):
    """A zip that must not be unpacked (too large once unpacked)."""


def safe_extract(zip_path: Path, dest: Path) -> None:
    """Unzip without following symlinks or writing outside ``dest``."""
    dest = dest.resolve()
    total = 0
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                continue
            target = (dest / info.filename).resolve()
            if dest not in target.parents and target != dest:
                continue
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise UnpackError(f"{zip_path} unpacks to more than {MAX_UNPACKED_BYTES} bytes")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)


@dataclass
class CopyReport:
    copied: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _candidates(upload: Path) -> dict[str, list[Path]]:
    """Regular files of the upload by name (symlinks and special files are never followed)."""
    found: dict[str, list[Path]] = {}
    count = 0
    for dirpath, dirnames, filenames in os.walk(upload, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__MACOSX", "__pycache__"))]
        for name in filenames:
            count += 1
            if count > MAX_SCAN:
                return found
            found.setdefault(name, []).append(Path(dirpath) / name)
    return found


def copy_submission(upload: Path, dest: Path, cfg: Assignment) -> CopyReport:
    """Copy the expected files from ``upload`` into ``dest`` (an empty implementation root)."""
    report = CopyReport()
    upload = upload.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    by_name = _candidates(upload) if upload.is_dir() else {}
    expected = list(cfg.submission_files)
    init = f"{cfg.package}/__init__.py"
    for rel in expected + ([init] if init not in expected else []):
        src = upload / rel
        if not (src.is_file() and not src.is_symlink()):
            matches = [p for p in by_name.get(Path(rel).name, []) if not p.is_symlink()]
            # Prefer a file whose parent folder is named like the package (transformer_lab/x.py).
            matches.sort(key=lambda p: (p.parent.name != Path(rel).parent.name, len(p.parts)))
            src = matches[0] if matches else None
            if src is not None and len(matches) > 1:
                report.notes.append(f"Several files named {Path(rel).name} were uploaded; graded "
                                    f"{src.relative_to(upload)}.")
        if src is None:
            if rel != init:
                report.missing.append(rel)
            continue
        if src.is_symlink() or not src.is_file():
            report.notes.append(f"Skipped {rel}: not a regular file.")
            continue
        try:
            src.resolve().relative_to(upload)
        except ValueError:
            report.notes.append(f"Skipped {rel}: it points outside the submission.")
            continue
        size = src.stat().st_size
        if size > MAX_FILE_BYTES:
            report.notes.append(f"Skipped {rel}: {size} bytes is over the {MAX_FILE_BYTES} byte limit.")
            report.missing.append(rel)
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target, follow_symlinks=False)
        report.copied.append(rel)
    pkg = dest / cfg.package
    if pkg.is_dir() and not (pkg / "__init__.py").exists():
        (pkg / "__init__.py").write_text("")
    return report
