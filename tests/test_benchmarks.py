"""The benchmark scripts a GPU session runs in one go: they must still work when it comes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_flash_targets_smoke_run(tmp_path):
    out = tmp_path / "targets.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "flash_targets.py"), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert len(report["forward"]) == 4 and all(r["ref_ms"] > 0 and r["sdpa_ms"] > 0 for r in report["forward"])
    assert report["fwd_bwd"]["ref_ms"] > 0 and report["fwd_bwd"]["target_ms"] == 6.0
    for kernel in ("forward D=16", "dkdv", "dq"):  # every configuration of the sweep matched the chosen one
        rows = report["sweep"][kernel]
        assert rows and all(r.get("ms") and r["max_abs_diff"] < 5e-2 for r in rows), rows
    assert "forward+backward" in proc.stdout and "fastest first" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU it measures for real")
def test_flash_targets_without_a_gpu_asks_for_smoke():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "flash_targets.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--smoke" in proc.stderr


def test_gpu_check_script_parses():
    for script in ("gpu_check.sh", "gpu_wheels.sh"):
        proc = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
