"""Benchmark: how long grading takes, and what one call through the worker costs.

Prints figures measured in this run (no thresholds): wall time to grade the reference and the
template with every suite, and the round-trip time of small calls into the worker.
Usage: python benchmarks/grading_speed.py [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from autograder import config as config_mod
from autograder.client import WorkerClient
from autograder.runner import grade

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = config_mod.load(ROOT / "assignments" / "transformer")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, cuda={torch.cuda.is_available()}")
    for name, root in (("reference", cfg.reference_root), ("template", cfg.template_root)):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = grade(cfg, root)
            times.append(time.perf_counter() - t0)
        print(f"grade {name:9s}: median {statistics.median(times):6.2f} s over {args.repeats} runs "
              f"({len(res.tests)} tests, score {res.score:g})")
    client = WorkerClient(cfg.reference_root, cfg.package)
    try:
        s = client.root_ref()
        t0 = time.perf_counter()
        s.attention.softmax(torch.zeros(1))
        print(f"worker start + first call: {time.perf_counter() - t0:.2f} s")
        for shape in ((4, 4), (64, 512, 64)):
            x = torch.randn(*shape)
            lat = []
            for _ in range(50):
                t0 = time.perf_counter()
                s.attention.softmax(x)
                lat.append(time.perf_counter() - t0)
            print(f"round trip softmax{shape}: median {statistics.median(lat) * 1e3:.2f} ms")
    finally:
        client.close()


if __name__ == "__main__":
    main()
