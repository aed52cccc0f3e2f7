"""Top prior: shapes, causality over (t, y, x) proved with gradients at every position of the
tiny grid (and a subset of the paper grid), conditioning, loss, naive sampling.

Gradients w.r.t. codes are taken at the output of the code embedding (a forward hook), i.e. on the
real forward path. Test models use tiny channel widths and the minimal depth that leaves no blind
spot: n_layers = attn_every (one attention layer)."""
from __future__ import annotations

import pytest
import torch

from vqvp_core.models.pixelcnn import bits_per_code, min_layers_no_blind_spot
from vqvp_core.models.top_prior import TopPrior, TopPriorConfig

TINY, PAPER = (3, 8, 8), (3, 32, 32)          # (Tp, Ht, Wt) of the presets


def small_config(**kw) -> TopPriorConfig:
    base = dict(n_codes=32, n_codes_bottom=24, embed_dim=8, channels=8, n_layers=2, kernel=3,
                kernel_t=2, first_kernel=3, first_kernel_t=2, attn_every=2, attn_heads=2,
                attn_channels=8, out_hidden=16, dropout=0.0, cond_embed_dim=8, cond_mid_channels=8,
                cond_channels=8, cond_res_blocks=1, cond_res_hidden=8)
    base.update(kw)
    return TopPriorConfig(**base)


def make_inputs(cfg: TopPriorConfig, grid, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    tp, ht, wt = grid
    codes = torch.randint(0, cfg.n_codes, (batch, tp, ht, wt), generator=g)
    cond_top = torch.randint(0, cfg.n_codes, (batch, 1, ht, wt), generator=g)
    cond_bottom = torch.randint(0, cfg.n_codes_bottom, (batch, 2, 2 * ht, 2 * wt), generator=g)
    return codes, cond_top, cond_bottom


def model_for(cfg: TopPriorConfig, seed=0) -> TopPrior:
    torch.manual_seed(seed)
    return TopPrior(cfg).eval()


class Capture:
    """Keeps the outputs of an embedding (with .grad after backward)."""

    def __init__(self, module):
        self.outs = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, out):
        out.retain_grad()
        self.outs.append(out)

    def close(self):
        self.handle.remove()


def per_position_grads(model: TopPrior, inputs, positions):
    """(P, Tp*Ht*Wt): |d <r, logits at position p> / d embedding of the code at j|."""
    codes, ct, cb = inputs
    p = len(positions)
    cap = Capture(model.embed)
    try:
        logits = model(codes.expand(p, -1, -1, -1), ct.expand(p, -1, -1, -1),
                       cb.expand(p, -1, -1, -1)).flatten(2)            # (P, K, L)
    finally:
        cap.close()
    sel = logits[torch.arange(p), :, torch.tensor(positions)]           # (P, K)
    proj = torch.randn(sel.shape[1], generator=torch.Generator().manual_seed(1))
    (sel @ proj).sum().backward()
    (emb,) = cap.outs                                                   # (P, Tp, Ht, Wt, E)
    return emb.grad.abs().sum(-1).flatten(1)


def assert_causal_complete(g, positions):
    for row, i in enumerate(positions):
        assert torch.all(g[row, i:] == 0), f"position {i} depends on itself or a later code"
        blind = (g[row, :i] == 0).nonzero().flatten().tolist()
        assert not blind, f"position {i} is blind to earlier positions {blind}"


# ----------------------------------------------------------------------------- config


def test_presets_valid_and_round_trip():
    for cfg in (TopPriorConfig.tiny(), TopPriorConfig.paper()):
        assert TopPriorConfig.from_dict(cfg.to_dict()) == cfg
        assert cfg.n_layers >= min_layers_no_blind_spot(cfg.attn_every)
    assert TopPriorConfig.paper().cond_mid_channels == 256
    assert TopPriorConfig.paper().cond_channels == 512
    assert TopPriorConfig.paper().cond_res_blocks == 4
    assert TopPriorConfig.paper().attn_every == 5


@pytest.mark.parametrize("bad", [dict(kernel=4), dict(attn_every=0), dict(n_layers=3, attn_every=5),
                                 dict(attn_channels=10, attn_heads=4), dict(dropout=1.0),
                                 dict(channels=0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="TopPriorConfig"):
        small_config(**bad)
    with pytest.raises(ValueError, match="unknown"):
        TopPriorConfig.from_dict({**small_config().to_dict(), "nope": 1})


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("grid", [TINY, PAPER])
def test_output_shape(grid):
    cfg = small_config()
    model = model_for(cfg)
    codes, ct, cb = make_inputs(cfg, grid, batch=2)
    logits = model(codes, ct, cb)
    assert logits.shape == (2, cfg.n_codes, *grid)
    assert torch.isfinite(logits).all()


def test_tiny_preset_forward():
    cfg = TopPriorConfig.tiny()
    model = model_for(cfg)
    logits = model(*make_inputs(cfg, TINY, batch=1))
    assert logits.shape == (1, 512, *TINY)


def test_shape_errors():
    cfg = small_config()
    model = model_for(cfg)
    codes, ct, cb = make_inputs(cfg, TINY)
    with pytest.raises(ValueError, match="cond_bottom"):
        model(codes, ct, cb[:, :, :8])
    with pytest.raises(ValueError, match="codes"):
        model(codes[:, :2], ct, cb)


# ----------------------------------------------------------------------------- causality


def test_causal_and_no_blind_spot_every_position_tiny_grid():
    cfg = small_config()
    model = model_for(cfg)
    n = TINY[0] * TINY[1] * TINY[2]
    positions = list(range(n))
    g = per_position_grads(model, make_inputs(cfg, TINY), positions)
    assert_causal_complete(g, positions)


def test_causal_every_position_deeper_model_with_dropout_in_train_mode():
    # two attention layers, wider kernels, dropout active (masks are per element, so training
    # mode must stay causal too); completeness is not checked because dropout can zero a path
    cfg = small_config(n_layers=4, kernel=5, first_kernel=5, kernel_t=3, first_kernel_t=3,
                       dropout=0.2)
    model = model_for(cfg).train()
    n = TINY[0] * TINY[1] * TINY[2]
    g = per_position_grads(model, make_inputs(cfg, TINY), list(range(n)))
    for i in range(n):
        assert torch.all(g[i, i:] == 0)


def test_causal_and_no_blind_spot_paper_grid_subset():
    cfg = small_config()
    model = model_for(cfg)
    tp, ht, wt = PAPER
    n = tp * ht * wt
    fixed = [0, 1, wt - 1, wt, ht * wt - 1, ht * wt, ht * wt + 1, n - wt, n - 1]
    rnd = torch.randperm(n, generator=torch.Generator().manual_seed(3))[:5].tolist()
    positions = fixed + rnd
    g = per_position_grads(model, make_inputs(cfg, PAPER), positions)
    assert_causal_complete(g, positions)


# ----------------------------------------------------------------------------- conditioning


@pytest.mark.parametrize("grid", [TINY, PAPER])
def test_conditioning_reaches_every_output_and_every_cond_code(grid):
    cfg = small_config()
    model = model_for(cfg)
    codes, ct, cb = make_inputs(cfg, grid)
    cap_t, cap_b = Capture(model.cond_top_embed), Capture(model.cond_bottom_embed)
    logits = model(codes, ct, cb)
    cap_t.close(), cap_b.close()
    proj = torch.randn(cfg.n_codes)
    (logits.permute(0, 2, 3, 4, 1) @ proj).sum().backward()
    assert torch.all(cap_t.outs[0].grad.abs().sum(-1) > 0)      # every top cond code matters
    assert torch.all(cap_b.outs[0].grad.abs().sum(-1) > 0)      # every bottom cond code matters
    # and the very first position (no earlier codes) is still conditioned
    with torch.no_grad():
        ct2 = (ct + 1) % cfg.n_codes
        cb2 = (cb + 1) % cfg.n_codes_bottom
        first = model(codes, ct, cb)[:, :, 0, 0, 0]
        assert not torch.allclose(first, model(codes, ct2, cb)[:, :, 0, 0, 0])
        assert not torch.allclose(first, model(codes, ct, cb2)[:, :, 0, 0, 0])


# ----------------------------------------------------------------------------- training


def test_loss_decreases_on_a_fixed_batch():
    cfg = small_config(channels=16, n_layers=2, embed_dim=16)
    model = model_for(cfg).train()
    codes, ct, cb = make_inputs(cfg, TINY, batch=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = bits_per_code(model(codes, ct, cb), codes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        unused = [k for k, prm in model.named_parameters() if prm.grad is None]
        assert not unused, f"parameters without gradient (DDP would fail): {unused}"
    assert losses[0] == pytest.approx(5.0, abs=0.5)              # ~log2(32) at init
    assert losses[-1] < losses[0] - 0.3


# ----------------------------------------------------------------------------- sampling


def test_naive_sampling():
    cfg = small_config()
    model = model_for(cfg)
    grid = (3, 4, 4)
    _, ct, cb = make_inputs(cfg, grid, batch=2)
    a = model.sample(ct, cb, temperature=1.2, top_k=8, generator=torch.Generator().manual_seed(5))
    b = model.sample(ct, cb, temperature=1.2, top_k=8, generator=torch.Generator().manual_seed(5))
    assert a.shape == (2, *grid) and a.dtype == torch.long
    assert ((a >= 0) & (a < cfg.n_codes)).all()
    assert torch.equal(a, b)
    # greedy sampling is a fixed point of the causal model: one pass over its own samples gives
    # back the same argmax everywhere
    greedy = model.sample(ct, cb, temperature=0)
    with torch.no_grad():
        assert torch.equal(model(greedy, ct, cb).argmax(1), greedy)

