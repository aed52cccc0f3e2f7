"""A tiny training run for the kill/resume and DDP tests, run as a subprocess (or under torchrun).

    python _train_script.py '{"ckpt_dir": ..., "out": ..., "log": ..., "model": "noisy"|"plain", ...}'

Env VQVP_TEST_KILL_AT_STEP=N: SIGKILL this process from on_log at step N (a crash, no cleanup).
Writes {"state_dict", "optimizer", "metrics"} to out (per rank: out + ".rank{r}") at the end.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root, for vqvp_core

from vqvp_core.train.config import TrainConfig  # noqa: E402
from vqvp_core.train.loop import Trainer  # noqa: E402


class NoisyMLP(nn.Module):
    """Dropout and an explicit random op: a resume that loses the RNG state diverges."""

    def __init__(self, d_in: int = 6, hidden: int = 16, dropout: float = 0.2, noisy: bool = True):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, 1)
        self.drop = nn.Dropout(dropout if noisy else 0.0)
        self.noisy = noisy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        if self.noisy and self.training:
            h = h + 0.05 * torch.randn_like(h)
        return self.fc2(self.drop(h))


def make_data(n: int = 40, d_in: int = 6, seed: int = 123) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def step_fn(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
    x, y = batch
    loss = ((model(x) - y) ** 2).mean()
    return loss, {"mse": loss.detach()}


def build(model_kind: str) -> tuple[nn.Module, dict]:
    config = {"d_in": 6, "hidden": 16, "dropout": 0.2, "noisy": model_kind == "noisy"}
    torch.manual_seed(0)
    return NoisyMLP(**config), config


def main(args: dict) -> None:
    torch.set_num_threads(1)
    model, config = build(args.get("model", "noisy"))
    cfg = TrainConfig(**args["cfg"])
    kill_at = int(os.environ.get("VQVP_TEST_KILL_AT_STEP", "0"))
    log_path = args.get("log")

    def on_log(step: int, metrics: dict) -> None:
        if log_path:
            with open(log_path, "a") as fh:
                fh.write(json.dumps({"step": step, "loss": metrics["loss"], "lr": metrics["lr"]}) + "\n")
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    data = make_data()
    trainer = Trainer(model, data, make_data(12, seed=7), cfg, args["ckpt_dir"], step_fn,
                      model_config=config, on_log=on_log)
    rank = trainer.dist.rank
    metrics = trainer.fit()
    out = args["out"] + (f".rank{rank}" if trainer.dist.distributed else "")
    torch.save({"state_dict": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                "metrics": metrics}, out)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
