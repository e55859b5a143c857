"""Benchmark: how long grading takes, and what one call through the worker costs.

Prints figures measured in this run (no thresholds): wall time to grade the reference and the
template with every suite, the round-trip time of small calls into the worker, and what a
worker restart costs when workers are forks of the fork server and when they are started
directly (plus a whole grading run of a submission that crashes its worker in many tests).
Usage: python benchmarks/grading_speed.py [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import time
from pathlib import Path

import torch

from autograder.authoring import config as config_mod
from autograder.sandbox.client import WorkerClient
from autograder.grading.runner import grade

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
    restarts(cfg, args.repeats)


def restarts(cfg: config_mod.Assignment, repeats: int) -> None:
    """Worker restart after it was killed (as after a crash), forked vs started; then a grading
    run of a submission that segfaults in every multi-head attention test, both ways."""
    crashing = ROOT / "tests" / "fixtures" / "submissions" / "crash_segfault"
    for fork in (True, False):
        client = WorkerClient(cfg.reference_root, cfg.package, fork=fork)
        try:
            s = client.root_ref()
            s.attention.softmax(torch.zeros(1))
            lat = []
            for _ in range(max(repeats, 5)):
                os.killpg(client.pid, signal.SIGKILL)
                while client.pid is not None:  # gone, and its exit seen
                    time.sleep(0.001)
                t0 = time.perf_counter()
                s.attention.softmax(torch.zeros(1))
                lat.append(time.perf_counter() - t0)
            small = torch.randn(4, 4)
            trips = []
            for _ in range(200):
                t0 = time.perf_counter()
                s.attention.softmax(small)
                trips.append(time.perf_counter() - t0)
        finally:
            client.close()
        how = "forked " if fork else "started"
        print(f"worker restart ({how}) + first call: median {statistics.median(lat) * 1e3:7.1f} ms; "
              f"round trip softmax(4, 4): median {statistics.median(trips) * 1e3:.2f} ms")
    try:
        for fork in (True, False):
            os.environ["AUTOGRADER_FORKSERVER"] = "1" if fork else "0"  # the grading process reads it
            t0 = time.perf_counter()
            res = grade(cfg, crashing, time_limits={"call_s": 4.0, "import_s": 6.0})
            how = "forked " if fork else "started"
            print(f"grade crash_segfault, workers {how}: {time.perf_counter() - t0:6.2f} s "
                  f"({sum(t.status == 'failed' for t in res.tests)} failed tests)")
    finally:
        os.environ.pop("AUTOGRADER_FORKSERVER", None)


if __name__ == "__main__":
    main()
