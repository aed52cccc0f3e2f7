"""What the Trainer trains: a model's own objective.

Every vqvp model has ``loss(batch) -> (loss, metrics)`` (the VQ-VAE: reconstruction +
commitment; the priors: bits per code, teacher-forced). ``Objective(model)`` makes that its
``forward``, so under DDP the whole training pass goes through DDP's forward and the gradients
are synchronised; ``step_fn`` is the Trainer's step for it.
"""
from __future__ import annotations

from torch import nn


class Objective(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def step_fn(objective: nn.Module, batch):
    return objective(batch)
