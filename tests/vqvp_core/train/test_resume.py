"""Kill-and-resume: a run SIGKILLed after a mid-run checkpoint and restarted ends bitwise equal
to an uninterrupted run (weights, optimizer state, and the losses logged after the restart)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from vqvp_core.train.checkpoint import list_checkpoints

SCRIPT = Path(__file__).with_name("_train_script.py")
# 40 samples / batch 8 = 5 steps per epoch; checkpoints at 3, 6, 9, 12; killed at step 8 (after the
# checkpoint of step 6, mid-epoch 1), so the resume redoes steps 7-8 and crosses an epoch boundary.
CFG = dict(steps=12, batch_size=8, grad_accum=2, lr=3e-2, warmup_steps=2, schedule="cosine",
           ckpt_every=3, log_every=1, val_every=4, keep_last=2, seed=5)
KILL_AT = 8


def _popen(tmp: Path, name: str, kill_at: int | None = None) -> subprocess.Popen:
    args = {"ckpt_dir": str(tmp / f"ckpt_{name}"), "out": str(tmp / f"{name}.pt"),
            "log": str(tmp / f"{name}.jsonl"), "model": "noisy", "cfg": CFG}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("VQVP_TEST_KILL_AT_STEP", None)
    if kill_at is not None:
        env["VQVP_TEST_KILL_AT_STEP"] = str(kill_at)
    return subprocess.Popen([sys.executable, str(SCRIPT), json.dumps(args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(p: subprocess.Popen) -> int:
    out, err = p.communicate(timeout=120)
    p._err = err  # type: ignore[attr-defined]
    return p.returncode


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sigkill_and_resume_is_bitwise_exact(tmp_path: Path) -> None:
    full, killed = _popen(tmp_path, "full"), _popen(tmp_path, "crash", kill_at=KILL_AT)
    assert _wait(full) == 0, full._err
    assert _wait(killed) == -9, f"expected SIGKILL, got {killed.returncode}: {killed._err}"
    assert not (tmp_path / "crash.pt").exists()
    assert [s for s, _ in list_checkpoints(tmp_path / "ckpt_crash")] == [3, 6]

    resumed = _popen(tmp_path, "crash")
    assert _wait(resumed) == 0, resumed._err

    a = torch.load(tmp_path / "full.pt", weights_only=True)
    b = torch.load(tmp_path / "crash.pt", weights_only=True)
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for pid, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"]["state"][pid][k])), (pid, k)
    assert a["metrics"]["train/loss"] == b["metrics"]["train/loss"]
    assert a["metrics"]["val/loss"] == b["metrics"]["val/loss"]

    full_log = {r["step"]: r for r in _log(tmp_path / "full.jsonl")}
    crash_log = _log(tmp_path / "crash.jsonl")
    assert [r["step"] for r in crash_log] == list(range(1, KILL_AT + 1)) + list(range(7, 13))
    for r in crash_log:  # the redone steps 7-8 and the later ones match the uninterrupted run
        assert r == full_log[r["step"]]
    assert [s for s, _ in list_checkpoints(tmp_path / "ckpt_crash")] == [9, 12]
