"""bench/budget.py: the tiny preset's training fits the 30 TFLOP budget, most of it in the priors,
and the printed total is the sum of what the stages' own Trainer steps count."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_budget(tmp_path: Path) -> None:
    out = tmp_path / "budget.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench/budget.py"), "--preset", "tiny", "--json", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    total = [line for line in run.stdout.splitlines() if line.strip().startswith("total")]
    assert total and "TFLOP" in total[0]
    data = json.loads(out.read_text())
    stages = {r["stage"]: r for r in data["stages"]}
    assert set(stages) == {"train_vqvae", "train_top_prior", "train_bottom_prior"}
    assert data["total_flops"] == sum(r["flops_per_step"] * r["steps"] for r in stages.values())
    assert data["total_flops"] <= 30e12
    priors = stages["train_top_prior"]["flops"] + stages["train_bottom_prior"]["flops"]
    assert priors > 0.5 * data["total_flops"]
