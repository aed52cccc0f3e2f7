"""DDP on CPU: torchrun, 2 processes, gloo. The ranks end with identical parameters, equal (to
float tolerance) to a single-process run with the same global batch."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("_train_script.py")
_spec = importlib.util.spec_from_file_location("_train_script", SCRIPT)
ts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ts)

# Global batch 8: 2 ranks x 2 accumulation micro-steps x 2 samples vs 1 process x 8 samples.
CFG = dict(steps=6, batch_size=8, lr=3e-2, warmup_steps=1, grad_clip=0.5, weight_decay=0.1,
           log_every=2, val_every=3, ckpt_every=3, seed=1,
           precision="fp32")  # exact equality: auto would pick bf16 on a CPU with native bf16


def test_ddp_two_ranks_match_single_process(tmp_path: Path) -> None:
    args = {"ckpt_dir": str(tmp_path / "ddp"), "out": str(tmp_path / "ddp.pt"), "model": "plain",
            "cfg": {**CFG, "grad_accum": 2}}
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                            "VQVP_TEST_KILL_AT_STEP")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPT), json.dumps(args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]

    ts.main({"ckpt_dir": str(tmp_path / "single"), "out": str(tmp_path / "single.pt"),
             "model": "plain", "cfg": CFG})

    r0, r1, single = (torch.load(tmp_path / name, weights_only=True)
                      for name in ("ddp.pt.rank0", "ddp.pt.rank1", "single.pt"))
    for k, v in r0["state_dict"].items():
        assert torch.equal(v, r1["state_dict"][k]), f"{k} differs between ranks"
        torch.testing.assert_close(v, single["state_dict"][k], rtol=1e-5, atol=1e-6, msg=k)
    assert r0["metrics"] == r1["metrics"]  # losses and metrics are averaged over ranks
    for key in ("train/loss", "val/loss"):
        assert abs(r0["metrics"][key] - single["metrics"][key]) < 1e-5, key
    # rank 0 alone wrote the checkpoints, without the DDP "module." prefix
    state = torch.load(tmp_path / "ddp" / "step_00000006.pt", weights_only=True)
    assert set(state["state_dict"]) == set(single["state_dict"]) and len(state["rng_ranks"]) == 2
