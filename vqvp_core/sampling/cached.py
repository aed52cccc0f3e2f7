"""Cached (fast) sampling for both priors, after Ramachandran et al. 2017, "Fast Generation for
Convolutional Autoregressive Models".

Naive sampling (``TopPrior.sample``, ``BottomPrior.sample``) runs the whole network once per code,
so a grid of N codes costs N full passes. The cached sampler here keeps, per layer, what later
positions need and computes only what each new code changes:

* code embeddings ``x`` and, per gated block, its ``v`` and ``h`` inputs live in zero-padded
  buffers (B, T, H, W, C), filled as they become known; every masked conv then reads a small
  window of a buffer (the "conv input queue" of the paper, here addressed directly);
* the vertical stack of row y of step t depends on codes of rows < y (and earlier steps) only, so
  at the start of each row it is computed for the whole row and every layer at once, together with
  everything of the horizontal stack that does not depend on the current row: the taps of earlier
  steps, the ``v -> h`` link, the conditioning and the biases ("row bias");
* inside the row, each new position costs, per layer, one small matmul over the ``h`` taps of the
  current row (left of and at the position), the gate and the 1x1 output; the first layer reads the
  codes to the left in the row;
* attention keeps a key/value cache per layer: slot i (position i-1) is appended once code i-1 is
  known, the query of position i attends over slots 0..i.

The network is the model's own (its weights, masks, LayerNorms, Linear layers); the conditioning
maps come from the models' own ``condition`` methods, and codes are drawn with the same
``sample_from_logits`` calls (same logits shape, same generator, same order) as the naive
samplers, so for the same weights and seed the codes are the same. The logits agree with the naive
forward's up to float rounding (different summation order); a sample differs only if that rounding
moves a draw across a decision boundary (see ``README`` notes in the docstrings of
``sample_top_cached``), which on CPU in float32 is of the order of 1e-6 per code, and on GPU
requires TF32 to be off for the comparison to be meaningful.

Dropout is never applied: the sampler runs the model in eval mode (it switches it temporarily if
needed).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from vqvp_core.models.bottom_prior import BottomPrior
from vqvp_core.models.pixelcnn import GatedPixelCNN, MaskedConv3d, sample_from_logits
from vqvp_core.models.top_prior import TopPrior

Chooser = Callable[[torch.Tensor, int, int, int], torch.Tensor]  # (logits (B,K), t, y, x) -> (B,)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode (no dropout), restoring its training flags afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, was in flags:
            m.training = was


def _mat(conv: nn.Module) -> torch.Tensor:
    """A 1x1(x1) conv's weight as a (Cout, Cin) matrix for F.linear."""
    return conv.weight.reshape(conv.weight.shape[0], conv.weight.shape[1])


def _gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.tanh(a) * torch.sigmoid(b)


class _Block:
    """Per-layer constants of one GatedBlock, prepared once per sampler."""

    def __init__(self, block, attn, kernel: int, kernel_t: int):
        r = kernel // 2
        self.kt, self.r = kernel_t, r
        self.update_v = block.update_v
        self.w_vyt, self.b_vyt = block.v_yt.masked_weight(), block.v_yt.bias
        self.w_vxt, self.b_vxt = block.v_xt.masked_weight(), block.v_xt.bias
        w_hxt = block.h_xt.masked_weight()                               # (2C, C, kt, 1, k)
        self.b_hxt = block.h_xt.bias
        # taps of earlier steps (row y of steps t-kt+1..t-1), applied once per row
        self.w_hxt_past = w_hxt[:, :, :-1] if kernel_t > 1 else None
        # taps of the current row, left of and at the position: ((r+1) * C, 2C), rows (dx, c)
        self.w_hxt_now = w_hxt[:, :, -1, 0, :r + 1].permute(2, 1, 0).reshape(-1, w_hxt.shape[0]).contiguous()
        self.w_v2h, self.b_v2h = _mat(block.v_to_h), block.v_to_h.bias
        self.w_vc = _mat(block.v_cond) if block.v_cond is not None else None
        self.w_hc = _mat(block.h_cond) if block.h_cond is not None else None
        self.w_vo = _mat(block.v_out) if block.v_out is not None else None
        self.b_vo = block.v_out.bias if block.v_out is not None else None
        self.w_ho, self.b_ho = _mat(block.h_out), block.h_out.bias
        self.attn = attn


class CachedPixelCNN:
    """Incremental evaluation of a ``GatedPixelCNN`` over a (T, H, W) grid in raster order.

    ``run(choose)`` walks the positions; at each it computes the logits (B, n_codes) from the
    caches, asks ``choose(logits, t, y, x)`` for the codes (B,) and writes them into the caches.
    Returns the codes (B, T, H, W)."""

    def __init__(self, net: GatedPixelCNN, embed: nn.Embedding, cond: torch.Tensor | None,
                 batch: int, grid: tuple[int, int, int]):
        self.net, self.embed = net, embed
        self.b = batch
        self.grid = t_, h_, w_ = grid
        blocks = net.blocks
        b0 = blocks[0]
        self.kt0, k0y, k0x = net.v_in.kernel_size
        self.r0 = k0x // 2
        self.kt = b0.v_yt.kernel_size[0]
        kernel = b0.v_yt.kernel_size[1]
        attn = dict(zip(net.attn_after, net.attn))
        self.blocks = [_Block(blk, attn.get(i), kernel, self.kt) for i, blk in enumerate(blocks)]
        self.r = kernel // 2
        ref = net.v_in.weight
        self.device, self.dtype = ref.device, ref.dtype
        self.c = net.v_in.out_channels
        self.e = net.v_in.in_channels
        # padding of the buffers: time at the front, y and x on both sides
        self.pt = max(self.kt0, self.kt) - 1
        self.py = self.px = max(self.r0, self.r)
        shp = (batch, t_ + self.pt, h_ + 2 * self.py, w_ + 2 * self.px)
        z = dict(device=self.device, dtype=self.dtype)
        self.xbuf = torch.zeros(*shp, self.e, **z)
        n = len(self.blocks)
        self.vbuf = [torch.zeros(*shp, self.c, **z) for _ in range(n)]   # v input of block l
        self.hbuf = [torch.zeros(*shp, self.c, **z) for _ in range(n)]   # h input of block l
        # cond (B, Cc, T, H, W) -> channels last (B, T, H, W, Cc)
        self.cond = cond.permute(0, 2, 3, 4, 1) if cond is not None else None
        # first layer
        self.w_vin, self.b_vin = net.v_in.masked_weight(), net.v_in.bias
        w_hin = net.h_in.masked_weight()                                   # (C, E, kt0, k, k)
        r0 = self.r0
        # h_in without the taps of the current row (those use codes sampled within the row)
        self.w_hin_rows = w_hin.clone()
        self.w_hin_rows[:, :, -1, r0] = 0
        # taps of the current row, strictly left: (r0 * E, C), rows (dx, e)
        self.w_hin_now = w_hin[:, :, -1, r0, :r0].permute(2, 1, 0).reshape(-1, self.c).contiguous()
        self.b_hin = net.h_in.bias
        # attention caches: (B, heads, 1 + T*H*W, dh); slot 0 is the learned start entry
        self.n_pos = t_ * h_ * w_
        self.kcache, self.vcache, self.prev_h = {}, {}, {}
        for i, blk in enumerate(self.blocks):
            if blk.attn is None:
                continue
            a = blk.attn
            d, heads = a.attn_channels, a.heads
            kc = torch.zeros(batch, heads, self.n_pos, d // heads, **z)
            vc = torch.zeros_like(kc)
            ks, vs = a.start.reshape(2 * d).to(self.dtype).chunk(2)
            kc[:, :, 0] = ks.reshape(heads, d // heads)
            vc[:, :, 0] = vs.reshape(heads, d // heads)
            self.kcache[i], self.vcache[i] = kc, vc
        # output stack ELU -> 1x1 -> ELU -> 1x1
        self.w_o1, self.b_o1 = _mat(net.out[1]), net.out[1].bias
        self.w_o2, self.b_o2 = _mat(net.out[3]), net.out[3].bias
        self.last_x: torch.Tensor | None = None                           # embedding of code i-1

    # -- helpers ----------------------------------------------------------------------------------

    def _win(self, buf, tp, kt, yp, ky, xlo, xhi) -> torch.Tensor:
        """Channels-first window: steps tp-kt+1..tp, rows yp-ky//2..yp+ky//2, padded cols
        [xlo, xhi) of a padded channels-last buffer -> (B, C, kt, ky, xhi-xlo)."""
        return buf[:, tp - kt + 1:tp + 1, yp - ky // 2:yp + ky // 2 + 1, xlo:xhi].permute(0, 4, 1, 2, 3)

    @staticmethod
    def _row(out: torch.Tensor) -> torch.Tensor:
        """conv output (B, C, 1, 1, W) -> (B, W, C)."""
        return out[:, :, 0, 0].transpose(1, 2)

    # -- one row ----------------------------------------------------------------------------------

    def _start_row(self, t: int, y: int) -> None:
        """Vertical stack of row (t, y) for every layer, and every row-level part of h."""
        w_ = self.grid[2]
        tp, yp, px = t + self.pt, y + self.py, self.px
        r0, r = self.r0, self.r
        cols = slice(px, px + w_)
        xw = self._win(self.xbuf, tp, self.kt0, yp, 2 * r0 + 1, px - r0, px + w_ + r0)
        v = self._row(F.conv3d(xw, self.w_vin, self.b_vin))                          # (B, W, C)
        self.vbuf[0][:, tp, yp, cols] = v
        self.h0_row = self._row(F.conv3d(xw, self.w_hin_rows, self.b_hin)).contiguous()
        cond = self.cond[:, t, y] if self.cond is not None else None                # (B, W, Cc)
        self.hrow = []
        for l, blk in enumerate(self.blocks):
            vb = self.vbuf[l]
            vyt = self._win(vb, tp, self.kt, yp, 2 * r + 1, px, px + w_)
            vxt = self._win(vb, tp, self.kt, yp, 1, px - r, px + w_ + r)
            v_pre = self._row(F.conv3d(vyt, blk.w_vyt, blk.b_vyt)) + \
                self._row(F.conv3d(vxt, blk.w_vxt, blk.b_vxt))                       # (B, W, 2C)
            hr = F.linear(v_pre, blk.w_v2h, blk.b_v2h)
            if blk.w_hxt_past is not None:
                hw = self.hbuf[l][:, tp - self.kt + 1:tp, yp:yp + 1, px - r:px + w_ + r]
                hr = hr + self._row(F.conv3d(hw.permute(0, 4, 1, 2, 3), blk.w_hxt_past, blk.b_hxt))
            else:
                hr = hr + blk.b_hxt
            if cond is not None and blk.w_hc is not None:
                hr = hr + F.linear(cond, blk.w_hc)
            self.hrow.append(hr.contiguous())
            if blk.update_v:
                if cond is not None and blk.w_vc is not None:
                    v_pre = v_pre + F.linear(cond, blk.w_vc)
                v = v + F.linear(_gate(v_pre), blk.w_vo, blk.b_vo)
                self.vbuf[l + 1][:, tp, yp, cols] = v

    # -- one position -----------------------------------------------------------------------------

    def _logits(self, t: int, y: int, x: int, i: int) -> torch.Tensor:
        tp, yp, xp = t + self.pt, y + self.py, x + self.px
        b, r0, r = self.b, self.r0, self.r
        xw = self.xbuf[:, tp, yp, xp - r0:xp].reshape(b, -1)
        h = torch.addmm(self.h0_row[:, x], xw, self.w_hin_now)                        # (B, C)
        for l, blk in enumerate(self.blocks):
            hb = self.hbuf[l]
            hb[:, tp, yp, xp] = h
            hw = hb[:, tp, yp, xp - r:xp + 1].reshape(b, -1)
            h_pre = torch.addmm(self.hrow[l][:, x], hw, blk.w_hxt_now)
            h = h + F.linear(_gate(h_pre), blk.w_ho, blk.b_ho)
            if blk.attn is not None:
                h = h + self._attend(l, blk.attn, h, i)
        h = F.linear(F.elu(h), self.w_o1, self.b_o1)
        return F.linear(F.elu(h), self.w_o2, self.b_o2)

    def _attend(self, l: int, a, h: torch.Tensor, i: int) -> torch.Tensor:
        b, d, heads = self.b, a.attn_channels, a.heads
        kc, vc = self.kcache[l], self.vcache[l]
        if i > 0:   # slot i <- position i-1: its h at this layer and its code
            kv = a.kv(a.norm_kv(torch.cat([self.prev_h[l], self.last_x], 1)))
            k, v = kv.chunk(2, dim=-1)
            kc[:, :, i] = k.reshape(b, heads, d // heads)
            vc[:, :, i] = v.reshape(b, heads, d // heads)
        self.prev_h[l] = h
        q = a.q(a.norm_q(h)).reshape(b, heads, 1, d // heads)
        o = F.scaled_dot_product_attention(q, kc[:, :, :i + 1], vc[:, :, :i + 1])
        return a.out(o.reshape(b, d))

    def _commit(self, t: int, y: int, x: int, codes: torch.Tensor) -> None:
        e = self.embed(codes).to(self.dtype)                                          # (B, E)
        self.xbuf[:, t + self.pt, y + self.py, x + self.px] = e
        self.last_x = e

    # -- the walk ---------------------------------------------------------------------------------

    def run(self, choose: Chooser) -> torch.Tensor:
        t_, h_, w_ = self.grid
        codes = torch.zeros(self.b, t_, h_, w_, dtype=torch.long, device=self.device)
        i = 0
        for t in range(t_):
            for y in range(h_):
                self._start_row(t, y)
                for x in range(w_):
                    logits = self._logits(t, y, x, i)
                    c = choose(logits, t, y, x)
                    codes[:, t, y, x] = c
                    self._commit(t, y, x, c)
                    i += 1
        return codes


def _sampler(temperature: float, top_k: int | None, generator: torch.Generator | None) -> Chooser:
    def choose(logits, t, y, x):
        return sample_from_logits(logits, temperature, top_k, generator)
    return choose


# ----------------------------------------------------------------------------- top prior


def sample_top_cached(model: TopPrior, cond_top: torch.Tensor, cond_bottom: torch.Tensor,
                      temperature: float = 1.0, top_k: int | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Cached sampling of the top prior: same inputs, draws and result as ``TopPrior.sample``
    (cond_top (B, 1, Ht, Wt), cond_bottom (B, 2, 2Ht, 2Wt) -> codes (B, Tp, Ht, Wt)), with a
    constant amount of work per code and layer (plus attention over the earlier codes)."""
    with torch.inference_mode(), eval_mode(model):
        b, _, ht, wt = cond_top.shape
        cond = model.condition(cond_top, cond_bottom)
        eng = CachedPixelCNN(model.pixelcnn, model.embed, cond, b, (model.config.pred_steps, ht, wt))
        return eng.run(_sampler(temperature, top_k, generator))


def top_logits_cached(model: TopPrior, codes: torch.Tensor, cond_top: torch.Tensor,
                      cond_bottom: torch.Tensor) -> torch.Tensor:
    """Teacher-forced cached pass: logits (B, n_codes, Tp, Ht, Wt) of ``codes`` computed position by
    position through the caches; equals ``model(codes, cond_top, cond_bottom)`` up to rounding."""
    with torch.inference_mode(), eval_mode(model):
        b, tp, ht, wt = codes.shape
        cond = model.condition(cond_top, cond_bottom)
        eng = CachedPixelCNN(model.pixelcnn, model.embed, cond, b, (tp, ht, wt))
        out = torch.zeros(b, model.config.n_codes, tp, ht, wt, device=cond.device, dtype=cond.dtype)

        def force(logits, t, y, x):
            out[:, :, t, y, x] = logits
            return codes[:, t, y, x]
        eng.run(force)
        return out


# ----------------------------------------------------------------------------- bottom prior


def _bottom_slice(model: BottomPrior, cond: torch.Tensor, choose: Chooser) -> torch.Tensor:
    b, _, _, hb, wb = cond.shape
    eng = CachedPixelCNN(model.pixelcnn, model.embed, cond, b, (1, hb, wb))
    return eng.run(choose)[:, 0]


def sample_bottom_cached(model: BottomPrior, top: torch.Tensor, cond_bottom: torch.Tensor,
                         temperature: float = 1.0, top_k: int | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Cached sampling of the bottom prior: same inputs, draws and result as ``BottomPrior.sample``
    (top (B, Tt, Ht, Wt), cond_bottom (B, n_given, Hb, Wb) -> bottom (B, Tb, Hb, Wb)). Slices are
    generated one by one, each with its own caches; its conditioning stack runs once."""
    cfg = model.config
    b, ng, hb, wb = cond_bottom.shape
    if ng != cfg.n_given:
        raise ValueError(f"cond_bottom must be (B, {cfg.n_given}, Hb, Wb), got {tuple(cond_bottom.shape)}")
    choose = _sampler(temperature, top_k, generator)
    with torch.inference_mode(), eval_mode(model):
        top_feats = model.top_features(top)
        bottom = torch.zeros(b, top_feats.shape[2], hb, wb, dtype=torch.long, device=top.device)
        bottom[:, :ng] = cond_bottom
        for n in range(ng, bottom.shape[1]):
            nn_ = torch.full((b,), n, dtype=torch.long, device=top.device)
            cond = model.condition(model.past_window(bottom, n), nn_, top_feats=top_feats)
            bottom[:, n] = _bottom_slice(model, cond, choose)
        return bottom


def bottom_logits_cached(model: BottomPrior, codes_slice: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Teacher-forced cached pass over one slice: codes_slice (B, Hb, Wb) and its conditioning map
    (B, Cc, 1, Hb, Wb) -> logits (B, n_codes, Hb, Wb), equal to ``model.logits_from_cond`` up to
    rounding."""
    with torch.inference_mode(), eval_mode(model):
        b, hb, wb = codes_slice.shape
        out = torch.zeros(b, model.config.n_codes, hb, wb, device=cond.device, dtype=cond.dtype)

        def force(logits, t, y, x):
            out[:, :, y, x] = logits
            return codes_slice[:, y, x]
        _bottom_slice(model, cond, force)
        return out
