"""``benchmarks/gpu_check.sh`` in its tiny CPU setting: every part runs end to end and reports its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_in_its_tiny_cpu_setting(tmp_path: Path) -> None:
    env = dict(os.environ, GPU_CHECK_TINY="1", GPU_CHECK_BACKENDS="tensorflow", OUT=str(tmp_path),
               PYTHON=sys.executable)
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    speeds = [r for r in rows if r["part"] == "throughput"]
    assert {(r["model"], r["batch"], r["precision"]) for r in speeds} == {
        ("alexnet", b, p) for b in (32, 256) for p in ("float32", "mixed_bfloat16")}
    assert all(r.get("images_per_s", 0) > 0 for r in speeds), speeds
    (search,) = [r for r in rows if r["part"] == "search"]
    assert search["exit"] == 0 and search["trials"] == 1, search
    assert search["study_wall_s"] > search["trial_wall_s"] >= search["trial_train_s"] > 0
    assert search["trial_overhead_s"] >= 0
    assert "| tensorflow | alexnet | 256 | mixed_bfloat16 | cpu |" in done.stdout
    assert "trial overhead s" in done.stdout and "== done in" in done.stdout
