"""Every model's training objective lives in the model (loss(batch)); Objective trains it."""
from __future__ import annotations

import pytest
import torch

from tests.vqvp_core.models.test_registry import CONFIGS
from vqvp_core.models.registry import build_model
from vqvp_core.train.objective import Objective, step_fn


def batch_for(kind: str, model):
    g = torch.Generator().manual_seed(0)
    if kind == "vqvae":
        c = model.config
        return torch.randint(0, 256, (2, c.frames, c.size, c.size, 3), dtype=torch.uint8, generator=g)
    c = model.config
    k = c.n_codes
    if kind == "top_prior":
        kb = c.n_codes_bottom
        return {"top": torch.randint(k, (2, 1 + c.pred_steps, 2, 2), generator=g),
                "cond_top": torch.randint(k, (2, 1, 2, 2), generator=g),
                "cond_bottom": torch.randint(kb, (2, 2, 4, 4), generator=g)}
    kt = c.n_codes_top
    return {"top": torch.randint(kt, (2, c.n_steps // 2, 2, 2), generator=g), "cond_top": torch.randint(kt, (2, 1, 2, 2), generator=g),
            "bottom": torch.randint(k, (2, c.n_steps, 4, 4), generator=g),
            "cond_bottom": torch.randint(k, (2, c.n_given, 4, 4), generator=g)}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_the_objective_is_the_models_own_loss_and_trains_it(kind):
    torch.manual_seed(0)
    model = build_model(kind, CONFIGS[kind]())
    batch = batch_for(kind, model)
    objective = Objective(model)
    assert list(objective.parameters()) == list(model.parameters())
    model.eval()  # no EMA step / scheduled sampling: the two calls see the same model
    with torch.no_grad():
        direct, metrics = model.loss(batch)
        wrapped, _ = step_fn(objective, batch)
    assert torch.equal(direct, wrapped) and direct.dim() == 0 and torch.isfinite(direct)
    assert all(torch.is_tensor(v) or isinstance(v, float) for v in metrics.values())
    model.train()
    loss, _ = step_fn(objective, batch)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
