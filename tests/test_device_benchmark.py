"""The one-GPU device benchmark's code path, run on CPU at its smoke size (slow: kept out of CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_device_benchmark_smoke_on_cpu(tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "benchmarks.device", "--out", str(tmp_path), "--size", "smoke"],
                   check=True, cwd=ROOT, env=env, timeout=600)
    r = json.loads((tmp_path / "device_smoke_z2.json").read_text())
    t = r["trainer"]
    assert r["device"] == "cpu" and r["matmul_tflops"] > 0
    assert t["parameters"] > 100_000 and t["zero_stage"] == 2
    for objective in ("sft", "policy"):
        # a real DeepSpeed step did real work: positive rates, and below the machine's own matmul ceiling
        assert t[objective]["tokens_per_s"] > 0 and 0 < t[objective]["mfu_vs_measured_matmul"] < 1.5
    assert t["reference_logprobs_tokens_per_s"] > t["policy"]["tokens_per_s"]  # forward only beats a train step
    assert r["generate"]["tokens_per_s"] > 0
