"""Building blocks shared by the two priors: masked (causal) convolutions over (t, y, x), the gated
residual block with vertical and horizontal stacks, causal multi-head self-attention, the gated
PixelCNN core both priors wrap, and shape / sampling / loss helpers.

Positions are ordered in raster order: t, then y, then x. The logits at position p = (t, y, x)
may depend on the codes at positions q < p only. Three kinds of tensor keep that invariant:

* input ``x``: the embedding of the codes themselves, position p holds code p;
* vertical stack ``v``: at p depends on codes at {t' < t} ∪ {t' = t, y' < y}  ("rows above");
* horizontal stack ``h``: at p depends on codes at {q < p}                      ("causal").

The first layer is the only full 3D convolution: two masked convs read ``x`` and start ``v``
(strictly rows above) and ``h`` (strictly before p). After it every conv may read its own stream
at the current position, so the masks below include the centre tap. ``v`` may read the whole row
it is in at the current step (columns left *and* right), which is what lets the vertical stack of
Gated PixelCNN spread sideways; here it is factorised into a conv in the y-t plane (kernel
(kt, ky, 1)) plus one in the x-t plane (kernel (kt, 1, kx)), as the paper prescribes 2D convs.

Why attention is required (not optional): information only flows *down* the rows of a step in
``v``, so a code of step t-1 lying more than a kernel radius below row y cannot reach (t, y, *)
through the 2D convs at any depth. Causal self-attention sees every earlier position,
so the first attention layer removes every blind spot, for any grid size (see
``min_layers_no_blind_spot``). In a single step (T = 1, the bottom prior) the conv stack alone
covers everything earlier given ``min_conv_layers_2d`` blocks.

Everything here is per position (no BatchNorm): the conv kernel extents are known and attention
uses an explicit causal structure, so an incremental sampler can cache conv input buffers and
attention keys/values and must reproduce these outputs exactly. For such a sampler: ``v`` at row
y of a step reads ``v`` of the same row to the right (x-t conv), which depends on rows < y only,
so ``v`` is computed a whole row at a time, as soon as the row above is complete; ``h`` and the
logits are computed one position at a time; attention slot i (keys/values of position i-1) is
appended once code i-1 is known.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- shapes


def conv_out_size(n: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a Conv along one axis."""
    return (n + 2 * padding - kernel) // stride + 1


def conv_transpose_out_size(n: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a ConvTranspose along one axis (no output_padding, no dilation)."""
    return (n - 1) * stride - 2 * padding + kernel


def collapse_time_paddings(length: int, n_convs: int = 4, kernel: int = 4, stride: int = 2) -> list[int]:
    """Time paddings for ``n_convs`` convs (kernel ``kernel``, stride ``stride``) that bring
    ``length`` steps down to exactly 1: padding 1 on even lengths halves them, padding 2 on odd
    ones gives ceil(n/2) (and keeps 1 at 1). Raises when ``length`` needs more convs."""
    if (kernel, stride) != (4, 2):
        raise ValueError("collapse_time_paddings is derived for kernel 4, stride 2")
    pads, n = [], length
    for _ in range(n_convs):
        p = 1 if n % 2 == 0 else 2
        pads.append(p)
        n = conv_out_size(n, kernel, stride, p)
    if n != 1:
        raise ValueError(f"a window of {length} steps does not collapse to 1 with {n_convs} convs "
                         f"of kernel {kernel}, stride {stride} (at most {stride ** n_convs} steps)")
    return pads


def min_conv_layers_2d(height: int, width: int, kernel: int, first_kernel: int) -> int:
    """Gated blocks after the first layer the *conv path alone* needs so that, on a single step
    of ``height`` x ``width`` (T = 1), every position sees every earlier position.

    The first layer reaches first_kernel//2 rows up (and columns either side); each block then
    moves ``v`` kernel//2 rows up *or* kernel//2 columns sideways (the two planar convs are
    summed), so the far corner (height-1 rows up, width-1 columns across) needs the sum of both.
    """
    r, r0 = kernel // 2, first_kernel // 2
    up = math.ceil(max(0, height - 1 - r0) / r)
    across = math.ceil(max(0, width - 1 - r0) / r)
    return up + across if height > 1 else across


def min_layers_no_blind_spot(attn_every: int) -> int:
    """Gated blocks needed so that every position sees every earlier one, for *any* grid: the
    first attention layer (after block ``attn_every``) sees all earlier codes directly."""
    if attn_every < 1:
        raise ValueError("without attention the 3D conv stack has blind spots at any depth")
    return attn_every


def coordinate_channels(shape: Sequence[int], device=None, dtype=None) -> torch.Tensor:
    """Fixed position channels ("background" in PixelSNAIL): one ramp in [-1, 1] per axis of
    ``shape`` = (T, H, W) -> (1, 3, T, H, W). Grid-size agnostic, no parameters."""
    ramps = [torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype) if n > 1
             else torch.zeros(1, device=device, dtype=dtype) for n in shape]
    grids = torch.meshgrid(*ramps, indexing="ij")
    return torch.stack(grids, 0).unsqueeze(0)


# ----------------------------------------------------------------------------- masked convs


def kernel_offsets(kernel: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Offsets (dt, dy, dx) of every tap of a (kt, ky, kx) kernel as used by MaskedConv3d:
    time taps look back (dt in [-(kt-1), 0]), space taps are centred."""
    kt, ky, kx = kernel
    dt = torch.arange(kt) - (kt - 1)
    dy = torch.arange(ky) - ky // 2
    dx = torch.arange(kx) - kx // 2
    return torch.meshgrid(dt, dy, dx, indexing="ij")


MASK_KINDS = ("v_in", "h_in", "v", "h")


def causal_kernel_mask(kernel: Sequence[int], kind: str) -> torch.Tensor:
    """Which taps of a (kt, ky, kx) kernel a layer may use, as a bool tensor of shape ``kernel``.

    v_in: codes -> v  : earlier steps, or this step and a row above    (dt<0 | dt=0 & dy<0)
    h_in: codes -> h  : strictly before the position in raster order
    v   : v -> v      : earlier steps, or this step, this row or above (dt<0 | dt=0 & dy<=0)
    h   : h -> h      : earlier steps, rows above, or this row left of or at the position
    """
    dt, dy, dx = kernel_offsets(kernel)
    past, now = dt < 0, dt == 0
    if kind == "v_in":
        mask = past | (now & (dy < 0))
    elif kind == "h_in":
        mask = past | (now & ((dy < 0) | ((dy == 0) & (dx < 0))))
    elif kind == "v":
        mask = past | (now & (dy <= 0))
    elif kind == "h":
        mask = past | (now & ((dy < 0) | ((dy == 0) & (dx <= 0))))
    else:
        raise ValueError(f"mask kind {kind!r} not in {MASK_KINDS}")
    return mask


class MaskedConv3d(nn.Conv3d):
    """A conv over (T, H, W) that is causal in time (padding only at the front) and masked in
    space by ``kind`` (see causal_kernel_mask). Output has the input's (T, H, W). The kernel is
    ``weight * mask`` every call, so masked taps are exact zeros (no leak, even in gradients)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int], kind: str,
                 bias: bool = True):
        kt, ky, kx = (int(k) for k in kernel)
        if ky % 2 == 0 or kx % 2 == 0:
            raise ValueError(f"spatial kernel sizes must be odd, got {kernel}")
        super().__init__(in_channels, out_channels, (kt, ky, kx), padding=(0, ky // 2, kx // 2),
                         bias=bias)
        self.kind = kind
        mask = causal_kernel_mask((kt, ky, kx), kind)
        if not mask.any():
            raise ValueError(f"kernel {kernel} with mask {kind!r} has no tap left")
        self.register_buffer("mask", mask.to(self.weight.dtype)[None, None], persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask.to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, T, H, W) -> (B, Cout, T, H, W)
        w = self.masked_weight()
        if x.shape[2] == 1:
            # one step: only the dt=0 taps ever touch the grid; a 2D conv is exact and cheaper
            return F.conv2d(x[:, :, 0], w[:, :, -1], self.bias, padding=self.padding[1:]).unsqueeze(2)
        kt = self.kernel_size[0]
        if kt > 1:
            x = F.pad(x, (0, 0, 0, 0, kt - 1, 0))  # front of the time axis only: causal in t
        return F.conv3d(x, w, self.bias, padding=self.padding)


def pointwise(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, 1, bias=bias)


def gate(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """tanh(a) * sigmoid(b) over the two channel halves along ``dim``: (B, 2C, ...) -> (B, C, ...)
    (the cached samplers keep channels last: dim=-1)."""
    a, b = x.chunk(2, dim=dim)
    return torch.tanh(a) * torch.sigmoid(b)


# ----------------------------------------------------------------------------- blocks


class GatedBlock(nn.Module):
    """One gated layer with vertical and horizontal stacks (van den Oord et al. 2016, extended in
    time). v: y-t conv (kt, k, 1) + x-t conv (kt, 1, k), both masked "v"; h: x-t conv (kt, 1, k)
    masked "h"; v's pre-activation feeds h through a 1x1 conv; the conditioning map is added
    (through 1x1 convs) to both gates. Both stacks are residual. The last block has no v update
    (``update_v=False``): nothing would read it, and unused parameters upset DDP."""

    def __init__(self, channels: int, cond_channels: int, kernel: int, kernel_t: int,
                 dropout: float = 0.0, update_v: bool = True):
        super().__init__()
        c2 = 2 * channels
        self.update_v = update_v
        self.v_yt = MaskedConv3d(channels, c2, (kernel_t, kernel, 1), "v")
        self.v_xt = MaskedConv3d(channels, c2, (kernel_t, 1, kernel), "v")
        self.h_xt = MaskedConv3d(channels, c2, (kernel_t, 1, kernel), "h")
        self.v_to_h = pointwise(c2, c2)
        with_v_cond = bool(cond_channels) and update_v
        self.v_cond = pointwise(cond_channels, c2, bias=False) if with_v_cond else None
        self.h_cond = pointwise(cond_channels, c2, bias=False) if cond_channels else None
        self.v_out = pointwise(channels, channels) if update_v else None
        self.h_out = pointwise(channels, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None):
        # v, h: (B, C, T, H, W); cond: (B, Cc, T, H, W) or None
        v_pre = self.v_yt(v) + self.v_xt(v)               # (B, 2C, T, H, W), rows above
        h_pre = self.h_xt(h) + self.v_to_h(v_pre)         # (B, 2C, T, H, W), causal
        if cond is not None and self.h_cond is not None:
            h_pre = h_pre + self.h_cond(cond)
        h = h + self.h_out(self.dropout(gate(h_pre)))
        if self.update_v:
            if cond is not None and self.v_cond is not None:
                v_pre = v_pre + self.v_cond(cond)
            v = v + self.v_out(self.dropout(gate(v_pre)))
        return v, h


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention over the flattened (t, y, x) raster, causal w.r.t. the current
    position, as in PixelSNAIL / VQ-VAE-2: the query at i comes from the causal stream h_i; keys
    and values come from [h_j, x_j], the stream *and the raw code embedding* at j. Keys/values are
    shifted one raster position (slot i holds position i-1, slot 0 a learned start entry), so the
    ordinary causal mask "slot <= i" means: position i attends to positions j <= i-1 — every
    earlier code including the one just before it, never itself or a later one. Position 0 sees
    only the start entry (no empty softmax row). Returns the update for h: (B, C, T, H, W)."""

    def __init__(self, channels: int, input_channels: int, heads: int, attn_channels: int,
                 dropout: float = 0.0):
        super().__init__()
        if attn_channels % heads:
            raise ValueError(f"attn_channels {attn_channels} not divisible by heads {heads}")
        self.heads, self.attn_channels, self.dropout = heads, attn_channels, dropout
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels + input_channels)
        self.q = nn.Linear(channels, attn_channels)
        self.kv = nn.Linear(channels + input_channels, 2 * attn_channels)
        self.start = nn.Parameter(torch.zeros(1, 1, 2 * attn_channels))
        self.out = nn.Linear(attn_channels, channels)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, c, t, hh, ww = h.shape
        n, d = t * hh * ww, self.attn_channels
        hq = h.flatten(2).transpose(1, 2)                             # (B, L, C) raster t,y,x
        src = torch.cat([h, x], 1).flatten(2).transpose(1, 2)          # (B, L, C+E)
        q = self.q(self.norm_q(hq))                                   # (B, L, D)
        kv = self.kv(self.norm_kv(src))                               # (B, L, 2D)
        kv = torch.cat([self.start.to(kv.dtype).expand(b, 1, 2 * d), kv[:, :-1]], 1)  # slot i <- pos i-1
        k, v = kv.chunk(2, dim=-1)
        q, k, v = (z.reshape(b, n, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        o = self.out(o.transpose(1, 2).reshape(b, n, d))              # (B, L, C)
        return o.transpose(1, 2).reshape(b, c, t, hh, ww)


class GatedPixelCNN(nn.Module):
    """The autoregressive core of both priors, over a (T, H, W) grid (T = 1 for a 2D PixelCNN).

    forward(x (B, E, T, H, W) code embeddings, cond (B, Cc, T, H, W) | None) -> logits
    (B, n_codes, T, H, W). Layers: first layer (two masked 3D convs: x -> v, x -> h), ``n_layers``
    GatedBlocks, a CausalSelfAttention on h after every ``attn_every``-th block, then an output
    stack ELU -> 1x1 -> ELU -> 1x1."""

    def __init__(self, *, in_channels: int, channels: int, cond_channels: int, n_codes: int,
                 n_layers: int, kernel: int, kernel_t: int, first_kernel: int, first_kernel_t: int,
                 attn_every: int, attn_heads: int, attn_channels: int, out_hidden: int,
                 dropout: float = 0.0):
        super().__init__()
        k0 = (first_kernel_t, first_kernel, first_kernel)
        self.v_in = MaskedConv3d(in_channels, channels, k0, "v_in")
        self.h_in = MaskedConv3d(in_channels, channels, k0, "h_in")
        self.blocks = nn.ModuleList(
            GatedBlock(channels, cond_channels, kernel, kernel_t, dropout, update_v=i < n_layers - 1)
            for i in range(n_layers))
        self.attn_after = tuple(i for i in range(n_layers) if attn_every and (i + 1) % attn_every == 0)
        self.attn = nn.ModuleList(CausalSelfAttention(channels, in_channels, attn_heads, attn_channels)
                                  for _ in self.attn_after)
        self.out = nn.Sequential(nn.ELU(), pointwise(channels, out_hidden), nn.ELU(),
                                 pointwise(out_hidden, n_codes))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        v, h = self.v_in(x), self.h_in(x)                  # (B, C, T, H, W) each
        attn = dict(zip(self.attn_after, self.attn))
        for i, block in enumerate(self.blocks):
            v, h = block(v, h, cond)
            if i in attn:
                h = h + attn[i](h, x)
        return self.out(h)                                 # (B, n_codes, T, H, W)


# ----------------------------------------------------------------------------- loss, sampling


def bits_per_code(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in bits: cross-entropy (nats) / ln 2.
    logits (B, K, ...), targets (B, ...) long."""
    return F.cross_entropy(logits.float(), targets) / LN2


def code_weights(counts: torch.Tensor, power: float, max_weight: float = 100.0) -> torch.Tensor:
    """Per-code loss weights from training counts (K,): ``(count / total) ** -power``, capped at
    ``max_weight`` times the most frequent code's and scaled so that their mean over the training
    codes is 1 (the loss keeps its scale). power 0 gives ones; unseen codes get the cap."""
    counts = counts.double()
    if power <= 0:
        return torch.ones_like(counts, dtype=torch.float32)
    freq = counts / counts.sum().clamp_min(1)
    w = freq.clamp_min(1e-12) ** -power
    w = torch.minimum(w, w[freq.argmax()] * max_weight)
    return (w / (w * freq).sum()).float()


def weighted_bits_per_code(logits: torch.Tensor, targets: torch.Tensor,
                           weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One cross-entropy, two means: (each target weighted by ``weights[target]`` (K,) and
    normalised by the weights' sum, the plain bits_per_code); equal weights give the plain mean."""
    nll = F.cross_entropy(logits.float(), targets, reduction="none") / LN2
    w = weights.to(nll.device)[targets]
    return (w * nll).sum() / w.sum().clamp_min(1e-12), nll.mean()


def sample_from_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """One code per row of ``logits`` (B, K) -> (B,) long. temperature 0 is greedy (argmax);
    top_k keeps the k most likely codes."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    logits = logits.float()
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
