"""Benchmark: submissions per minute of `autograder batch` on this machine.

Builds a synthetic Gradescope export from the fixture submissions (correct, buggy, broken) and
grades it with 1 and with N workers, printing the figures measured in this run.
Usage: python benchmarks/batch_speed.py [--count 12] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from autograder import config as config_mod  # noqa: E402
from autograder.commands.batch import grade_export  # noqa: E402
from conftest import SUBMISSIONS, make_export  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    cfg = config_mod.load(ROOT / "assignments" / "transformer")
    pool = [cfg.reference_root, cfg.template_root] + sorted(p for p in SUBMISSIONS.iterdir() if p.is_dir())
    roots = {f"s{i:03d}": pool[i % len(pool)] for i in range(args.count)}
    print(f"{os.cpu_count()} cores; {args.count} submissions drawn from {len(pool)} fixtures")
    for workers in sorted({1, args.workers}):
        with tempfile.TemporaryDirectory() as tmp:
            export = make_export(Path(tmp), roots)
            t0 = time.perf_counter()
            grade_export(cfg, export, Path(tmp) / "out", workers=workers)
            dt = time.perf_counter() - t0
        print(f"workers={workers}: {dt:6.1f} s, {args.count / dt * 60:5.1f} submissions per minute")


if __name__ == "__main__":
    main()
