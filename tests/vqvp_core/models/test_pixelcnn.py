"""Building blocks of the priors: masks, masked convs, causal attention, the gated PixelCNN core.

Causality is proved with gradients: G[i, j] = |d (logits at position i) / d (input at position j)|
must be exactly 0 for j >= i (raster order t, y, x) and > 0 for every j < i (no blind spot).
Per-position gradients come from one backward pass over a batch of copies of the same input, row
i selecting output position i (rows are independent: no batch-statistics layers)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vqvp_core.models.pixelcnn import (
    CausalSelfAttention,
    GatedPixelCNN,
    MaskedConv3d,
    bits_per_code,
    causal_kernel_mask,
    collapse_time_paddings,
    conv_out_size,
    conv_transpose_out_size,
    kernel_offsets,
    min_conv_layers_2d,
    min_layers_no_blind_spot,
    sample_from_logits,
)


def position_grads(f, x: torch.Tensor, positions: list[int] | None = None) -> torch.Tensor:
    """x (1, E, T, H, W); f maps (P, E, T, H, W) -> (P, K, T, H, W). Returns (P, T*H*W): row p
    is |d <r, f(x)[:, :, pos_p]> / d x[:, :, j]| summed over channels, r a random projection."""
    _, e, t, h, w = x.shape
    n = t * h * w
    positions = list(range(n)) if positions is None else positions
    p = len(positions)
    xs = x.detach().expand(p, -1, -1, -1, -1).clone().requires_grad_(True)
    out = f(xs).flatten(2)                                   # (P, K, L)
    sel = out[torch.arange(p), :, torch.tensor(positions)]   # (P, K)
    proj = torch.randn(sel.shape[1], generator=torch.Generator().manual_seed(1))
    (sel @ proj).sum().backward()
    return xs.grad.abs().sum(1).flatten(1)                   # (P, L)


def assert_causal(g: torch.Tensor, positions: list[int], complete: bool = True):
    for row, i in enumerate(positions):
        assert torch.all(g[row, i:] == 0), f"position {i} depends on itself or a later position"
        if complete and i > 0:
            blind = (g[row, :i] == 0).nonzero().flatten().tolist()
            assert not blind, f"position {i} is blind to earlier positions {blind}"


def core(n_layers: int, attn_every: int, e: int = 4, c: int = 8, kernel: int = 3,
         kernel_t: int = 2, first_kernel: int = 3, first_kernel_t: int = 2) -> GatedPixelCNN:
    torch.manual_seed(0)
    return GatedPixelCNN(in_channels=e, channels=c, cond_channels=0, n_codes=5, n_layers=n_layers,
                         kernel=kernel, kernel_t=kernel_t, first_kernel=first_kernel,
                         first_kernel_t=first_kernel_t, attn_every=attn_every, attn_heads=2,
                         attn_channels=8, out_hidden=8)


# ------------------------------------------------------------------------- shapes and masks


@pytest.mark.parametrize("kernel", [(1, 3, 3), (2, 3, 1), (2, 1, 5), (3, 5, 5)])
def test_masks_are_lexicographic_orders(kernel):
    # the four masks are exactly "offset before / not after the centre" in raster order, over
    # (dt, dy, dx) for h and over (dt, dy) for v
    dt, dy, dx = kernel_offsets(kernel)
    for idx in itertools.product(*(range(k) for k in kernel)):
        o = (int(dt[idx]), int(dy[idx]), int(dx[idx]))
        assert bool(causal_kernel_mask(kernel, "h_in")[idx]) == (o < (0, 0, 0))
        assert bool(causal_kernel_mask(kernel, "h")[idx]) == (o <= (0, 0, 0))
        assert bool(causal_kernel_mask(kernel, "v_in")[idx]) == (o[:2] < (0, 0))
        assert bool(causal_kernel_mask(kernel, "v")[idx]) == (o[:2] <= (0, 0))


def test_bad_masks_rejected():
    with pytest.raises(ValueError):
        causal_kernel_mask((1, 3, 3), "nope")
    with pytest.raises(ValueError, match="no tap"):
        MaskedConv3d(2, 2, (1, 1, 3), "v_in")     # one step, one row: nothing above
    with pytest.raises(ValueError, match="odd"):
        MaskedConv3d(2, 2, (1, 2, 3), "h")


def test_shape_helpers():
    assert conv_out_size(64, 4, 2, 1) == 32
    assert conv_transpose_out_size(4, 4, 2, 1) == 8          # top time 4 -> bottom time 8
    assert conv_transpose_out_size(8, 4, 2, 1) == 16         # top space -> bottom space
    for w in range(1, 17):
        n = w
        for p in collapse_time_paddings(w):
            n = conv_out_size(n, 4, 2, p)
        assert n == 1, w
    with pytest.raises(ValueError):
        collapse_time_paddings(17)
    assert min_layers_no_blind_spot(5) == 5
    with pytest.raises(ValueError):
        min_layers_no_blind_spot(0)
    assert min_conv_layers_2d(16, 16, 3, 5) == 13 + 13
    assert min_conv_layers_2d(1, 8, 3, 3) == 6


@pytest.mark.parametrize("kind", ["v_in", "h_in", "v", "h"])
def test_masked_conv_dependencies_are_exactly_the_mask(kind):
    torch.manual_seed(0)
    kernel = (2, 3, 3)
    conv = MaskedConv3d(3, 4, kernel, kind)
    x = torch.randn(1, 3, 3, 5, 5)
    t, y, xx = 2, 2, 2                                        # an interior output position
    pos = (t * 5 + y) * 5 + xx
    g = position_grads(conv, x, [pos])[0].reshape(3, 5, 5)
    mask = causal_kernel_mask(kernel, kind)
    expected = torch.zeros(3, 5, 5, dtype=torch.bool)
    dt, dy, dx = kernel_offsets(kernel)
    for idx in itertools.product(*(range(k) for k in kernel)):
        if mask[idx]:
            expected[t + dt[idx], y + dy[idx], xx + dx[idx]] = True
    assert torch.equal(g > 0, expected)


def test_masked_conv_single_step_path_equals_conv3d():
    torch.manual_seed(0)
    conv = MaskedConv3d(3, 4, (3, 5, 5), "h_in")
    x = torch.randn(2, 3, 1, 6, 7)
    fast = conv(x)
    ref = F.conv3d(F.pad(x, (0, 0, 0, 0, 2, 0)), conv.masked_weight(), conv.bias, padding=(0, 2, 2))
    assert fast.shape == (2, 4, 1, 6, 7)
    torch.testing.assert_close(fast, ref)


# ------------------------------------------------------------------------- attention


def test_attention_sees_every_earlier_input_and_nothing_else():
    torch.manual_seed(0)
    attn = CausalSelfAttention(channels=6, input_channels=4, heads=2, attn_channels=8)
    t, h, w = 2, 3, 4
    n = t * h * w
    x = torch.randn(1, 4, t, h, w)
    hstream = torch.randn(1, 6, t, h, w)
    # w.r.t. the raw input x: strictly earlier positions, all of them
    g = position_grads(lambda xs: attn(hstream.expand(len(xs), -1, -1, -1, -1), xs), x)
    assert_causal(g, list(range(n)))
    # w.r.t. the causal stream h: itself (the query) and earlier, never later (position 0 sees
    # only the learned start entry, so its output is a constant)
    g = position_grads(lambda hs: attn(hs, x.expand(len(hs), -1, -1, -1, -1)), hstream)
    for i in range(n):
        assert torch.all(g[i, i + 1:] == 0)
        assert i == 0 or torch.all(g[i, :i + 1] > 0)


def test_attention_first_position_is_finite():
    attn = CausalSelfAttention(channels=4, input_channels=2, heads=1, attn_channels=4)
    out = attn(torch.randn(2, 4, 1, 1, 3), torch.randn(2, 2, 1, 1, 3))
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------------- the core


@pytest.mark.parametrize("grid", [(3, 5, 5), (1, 6, 6), (2, 4, 7)])
def test_core_causal_and_no_blind_spot_at_minimal_depth(grid):
    # one attention layer (n_layers = attn_every) already covers every earlier position
    attn_every = 2
    net = core(n_layers=min_layers_no_blind_spot(attn_every), attn_every=attn_every)
    g = position_grads(net, torch.randn(1, 4, *grid))
    assert_causal(g, list(range(math.prod(grid))))


def test_core_without_attention_is_blind_below_in_earlier_steps():
    # why the configs demand attention: in a step, the planar convs carry information only
    # downwards, so a code of step t-1 far below row y never reaches (t, y, .) through convs
    t, h, w = 2, 6, 3
    net = core(n_layers=12, attn_every=0)
    target = (1 * h + 0) * w + 1                              # (t=1, y=0, x=1)
    g = position_grads(net, torch.randn(1, 4, t, h, w), [target])[0].reshape(t, h, w)
    assert torch.all(g[1].flatten()[: 1] > 0)                 # the code just before it
    assert g[0, h - 1, 1] == 0                                # (t=0, y=5, x=1): blind
    assert_causal(g.reshape(1, -1), [target], complete=False)


@pytest.mark.parametrize("hw", [(5, 6), (4, 4)])
def test_min_conv_layers_2d_is_tight(hw):
    # one step (the bottom prior): the conv stack alone covers all earlier positions exactly
    # from min_conv_layers_2d blocks on
    h, w = hw
    n = h * w
    need = min_conv_layers_2d(h, w, kernel=3, first_kernel=3)
    x = torch.randn(1, 4, 1, h, w)
    g = position_grads(core(n_layers=need, attn_every=0, kernel_t=1, first_kernel_t=1), x)
    assert_causal(g, list(range(n)))
    g = position_grads(core(n_layers=need - 1, attn_every=0, kernel_t=1, first_kernel_t=1), x)
    assert_causal(g, list(range(n)), complete=False)
    assert (g.tril(-1) == 0).any(), "one block fewer should leave a blind spot"


# ------------------------------------------------------------------------- loss, sampling


def test_bits_per_code():
    logits = torch.zeros(2, 16, 3, 3)
    targets = torch.randint(0, 16, (2, 3, 3))
    assert bits_per_code(logits, targets).item() == pytest.approx(4.0)


def test_sample_from_logits():
    torch.manual_seed(0)
    logits = torch.randn(64, 10)
    assert torch.equal(sample_from_logits(logits, temperature=0), logits.argmax(-1))
    assert torch.equal(sample_from_logits(logits, top_k=1), logits.argmax(-1))
    top3 = logits.topk(3, -1).indices
    s = sample_from_logits(logits, 1.5, top_k=3, generator=torch.Generator().manual_seed(0))
    assert (s[:, None] == top3).any(-1).all()
    a = sample_from_logits(logits, generator=torch.Generator().manual_seed(7))
    b = sample_from_logits(logits, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.dtype == torch.long and ((a >= 0) & (a < 10)).all()
    with pytest.raises(ValueError):
        sample_from_logits(logits, temperature=-1)
