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
samplers, so for the same weights and seed the codes are the same.

Exactness. The logits agree with the naive forward's up to float rounding (the sums run in a
different order: about 1e-7 absolute in float32 on the small models). The draws are identical
(``torch.multinomial`` with one sample consumes a fixed number of random numbers per call), so a
code can differ only where that rounding moves a draw across a decision boundary: of the order of
1e-6 per code in float32, never seen in the tests; in float64 practically never. On CUDA, cuDNN
convolutions run in TF32 by default (``torch.backends.cudnn.allow_tf32``), which makes the naive
logits themselves ~1e-3 off float32: compare the two samplers with TF32 off (``exact_float32()``)
— with it on, both samplers are valid samplers of the model but their codes diverge after the
first boundary crossing.

Dropout is never applied: the sampler runs the model in eval mode (it switches it temporarily if
needed; the naive samplers use whatever mode the model is in). On CPU the per-position work is
many tiny ops, for which intra-op threads only add synchronisation (badly so on a loaded
machine): by default the samplers run with one intra-op thread (``cpu_threads``), restoring the
setting afterwards.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from vqvp_core.models.bottom_prior import BottomPrior
from vqvp_core.models.pixelcnn import GatedPixelCNN, MaskedConv3d, gate, sample_from_logits
from vqvp_core.models.top_prior import TopPrior

Chooser = Callable[[torch.Tensor, int, int, int], torch.Tensor]  # (logits (B,K), t, y, x) -> (B,)


@contextmanager
def exact_float32() -> Iterator[None]:
    """Turn TF32 off for cuDNN convolutions and CUDA matmuls (restored afterwards), so float32 on
    GPU is float32 and the cached and naive samplers can be compared code for code."""
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


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


@contextmanager
def _sampling_context(model: nn.Module, device: torch.device, cpu_threads: int | None):
    """no_grad (not inference_mode: the codes may later enter an autograd graph), eval mode, and
    on CPU ``cpu_threads`` intra-op threads (None: leave the setting alone)."""
    threads = torch.get_num_threads()
    set_threads = device.type == "cpu" and cpu_threads is not None and cpu_threads != threads
    if set_threads:
        torch.set_num_threads(cpu_threads)
    try:
        with torch.no_grad(), eval_mode(model):
            yield
    finally:
        if set_threads:
            torch.set_num_threads(threads)


def _mat(conv: nn.Module) -> torch.Tensor:
    """A 1x1(x1) conv's weight as a (Cout, Cin) matrix for F.linear."""
    return conv.weight.reshape(conv.weight.shape[0], conv.weight.shape[1])


def _row_taps(mask: torch.Tensor, r: int) -> torch.Tensor:
    """``mask`` (kt, ky, kx) without the taps of the current row (last step, centre row)."""
    mask = mask.clone()
    mask[-1, r] = False
    return mask


class _RowConv:
    """A masked conv evaluated on one row of its output: the non-zero taps of ``mask`` (kt, ky, kx)
    gathered from a channels-last window (B, kt, ky, W + kx - 1, Cin) into one matmul
    -> (B, W, Cout). The window's first step / row / column sit at the kernel's first tap."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor):
        cout = weight.shape[0]
        self.kx = weight.shape[-1]
        dt, dy, dx = mask.to(torch.bool).nonzero().to(weight.device).unbind(1)
        self.taps = (dt, dy, dx)
        self.w = weight[:, :, dt, dy, dx].permute(2, 1, 0).reshape(-1, cout).contiguous()
        self.bias = bias

    def __call__(self, win: torch.Tensor) -> torch.Tensor:
        b, w_out = win.shape[0], win.shape[3] - self.kx + 1
        dt, dy, dx = self.taps
        cols = win.unfold(3, self.kx, 1)[:, dt, dy, :, :, dx]                # (n, B, W, Cin)
        cols = cols.permute(1, 2, 0, 3).reshape(b * w_out, -1)
        out = cols @ self.w if self.bias is None else torch.addmm(self.bias, cols, self.w)
        return out.view(b, w_out, -1)


def _mask(conv: MaskedConv3d) -> torch.Tensor:
    return conv.mask[0, 0].to(torch.bool)


class _Block:
    """Per-layer constants of one GatedBlock (and the attention after it, if any)."""

    def __init__(self, block, attn):
        kt, k = block.v_yt.kernel_size[0], block.v_yt.kernel_size[1]
        r = k // 2
        self.update_v = block.update_v
        # v_yt (kt, k, 1) + v_xt (kt, 1, k) as one cross-shaped (kt, k, k) conv: one matmul per row
        w_yt, w_xt = block.v_yt.masked_weight(), block.v_xt.masked_weight()
        w_v = w_yt.new_zeros(*w_yt.shape[:3], k, k)
        w_v[..., r] += w_yt[..., 0]
        w_v[..., r, :] += w_xt[..., 0, :]
        m_v = torch.zeros(kt, k, k, dtype=torch.bool, device=w_v.device)
        m_v[..., r] |= _mask(block.v_yt)[..., 0]
        m_v[..., r, :] |= _mask(block.v_xt)[..., 0, :]
        self.v_conv = _RowConv(w_v, block.v_yt.bias + block.v_xt.bias, m_v)
        w_hxt = block.h_xt.masked_weight()                                    # (2C, C, kt, 1, k)
        # taps of earlier steps (row y of steps t-kt+1..t-1): once per row
        self.h_past = (_RowConv(w_hxt[:, :, :-1], block.h_xt.bias, _mask(block.h_xt)[:-1])
                       if kt > 1 else None)
        self.b_hxt = block.h_xt.bias
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
    caches, asks ``choose(logits, t, y, x)`` for the codes (B,) and writes their embeddings into
    the caches. Returns the codes (B, T, H, W). ``embed`` maps codes (B,) to (B, E); ``cond`` is
    the conditioning map (B, Cc, T, H, W) the blocks add, or None."""

    def __init__(self, net: GatedPixelCNN, embed: nn.Embedding, cond: torch.Tensor | None,
                 batch: int, grid: tuple[int, int, int]):
        self.embed, self.b = embed, batch
        self.grid = t_, h_, w_ = grid
        attn = dict(zip(net.attn_after, net.attn))
        self.blocks = [_Block(blk, attn.get(i)) for i, blk in enumerate(net.blocks)]
        self.kt0, _, k0 = net.v_in.kernel_size
        self.kt, k, _ = net.blocks[0].v_yt.kernel_size                    # (kt, k, 1)
        self.r0, self.r = k0 // 2, k // 2
        ref = net.v_in.weight
        self.device, self.dtype = ref.device, ref.dtype
        c, e = net.v_in.out_channels, net.v_in.in_channels
        # buffers, channels last and zero-padded: time at the front, y and x on both sides
        self.pt = max(self.kt0, self.kt) - 1
        self.py = self.px = max(self.r0, self.r)
        shp = (batch, t_ + self.pt, h_ + 2 * self.py, w_ + 2 * self.px)
        z = dict(device=self.device, dtype=self.dtype)
        self.xbuf = torch.zeros(*shp, e, **z)                                   # code embeddings
        self.vbuf = [torch.zeros(*shp, c, **z) for _ in self.blocks]            # v input of block l
        self.hbuf = [torch.zeros(*shp, c, **z) for _ in self.blocks]            # h input of block l
        # conditioning, once per row for all blocks: one matmul (B, W, Cc) -> (B, W, sum of outs)
        self.cond = cond.permute(0, 2, 3, 4, 1) if cond is not None else None  # (B, T, H, W, Cc)
        ws = [w for blk in self.blocks for w in (blk.w_hc, blk.w_vc) if w is not None]
        self.w_cond = torch.cat(ws, 0) if (ws and cond is not None) else None
        # first layer: v_in and the rows-above part of h_in share their taps (earlier steps, rows
        # above), so one matmul per row gives both; h_in's taps in the current row, strictly left,
        # are applied per position
        w_vin, w_hin = net.v_in.masked_weight(), net.h_in.masked_weight()     # (C, E, kt0, k0, k0)
        m_rows = _mask(net.v_in)
        self.in_conv = _RowConv(torch.cat([w_vin, w_hin], 0),
                                torch.cat([net.v_in.bias, net.h_in.bias]), m_rows)
        if not torch.equal(_row_taps(_mask(net.h_in), self.r0), m_rows):
            raise ValueError("h_in and v_in masks must agree outside the current row")
        self.w_hin_now = w_hin[:, :, -1, self.r0, :self.r0].permute(2, 1, 0).reshape(-1, c).contiguous()
        # attention caches (B, heads, T*H*W, dh): slot 0 is the learned start entry, slot i the
        # key / value of position i-1
        n_pos = t_ * h_ * w_
        self.kcache, self.vcache, self.prev_h = {}, {}, {}
        for l, blk in enumerate(self.blocks):
            if blk.attn is None:
                continue
            a = blk.attn
            d, heads = a.attn_channels, a.heads
            kc = torch.zeros(batch, heads, n_pos, d // heads, **z)
            vc = torch.zeros_like(kc)
            ks, vs = a.start.reshape(2 * d).to(self.dtype).chunk(2)
            kc[:, :, 0] = ks.reshape(heads, d // heads)
            vc[:, :, 0] = vs.reshape(heads, d // heads)
            self.kcache[l], self.vcache[l] = kc, vc
        # output stack ELU -> 1x1 -> ELU -> 1x1
        self.w_o1, self.b_o1 = _mat(net.out[1]), net.out[1].bias
        self.w_o2, self.b_o2 = _mat(net.out[3]), net.out[3].bias
        self.last_x: torch.Tensor | None = None                                # embedding of code i-1

    # -- one row ----------------------------------------------------------------------------------

    def _start_row(self, t: int, y: int) -> None:
        """Vertical stack of row (t, y) for every layer, and every part of h that does not depend
        on the current row: the taps of earlier steps, v -> h, the conditioning, the biases."""
        w_ = self.grid[2]
        tp, yp, px, r0, r = t + self.pt, y + self.py, self.px, self.r0, self.r
        cols = slice(px, px + w_)
        c = self.hbuf[0].shape[-1]
        vh = self.in_conv(self.xbuf[:, tp - self.kt0 + 1:tp + 1, yp - r0:yp + r0 + 1,
                                    px - r0:px + w_ + r0])                   # (B, W, 2C)
        v, self.h0_row = vh[..., :c], vh[..., c:].contiguous()
        self.vbuf[0][:, tp, yp, cols] = v
        self.x_row = self.xbuf[:, tp, yp]                                     # views (B, Wp, C)
        self.h_rows = [hb[:, tp, yp] for hb in self.hbuf]
        conds = []
        if self.w_cond is not None:
            conds = list(F.linear(self.cond[:, t, y], self.w_cond).split(2 * c, -1))
        self.hrow = []
        for l, blk in enumerate(self.blocks):
            vw = self.vbuf[l][:, tp - self.kt + 1:tp + 1, yp - r:yp + r + 1, px - r:px + w_ + r]
            v_pre = blk.v_conv(vw)                                                     # (B, W, 2C)
            hr = F.linear(v_pre, blk.w_v2h, blk.b_v2h)
            if blk.h_past is not None:
                hr = hr + blk.h_past(self.hbuf[l][:, tp - self.kt + 1:tp, yp:yp + 1, px - r:px + w_ + r])
            else:
                hr = hr + blk.b_hxt
            if blk.w_hc is not None and conds:
                hr = hr + conds.pop(0)
            self.hrow.append(hr.contiguous())
            if blk.update_v:
                if blk.w_vc is not None and conds:
                    v_pre = v_pre + conds.pop(0)
                v = v + F.linear(gate(v_pre, dim=-1), blk.w_vo, blk.b_vo)
                self.vbuf[l + 1][:, tp, yp, cols] = v

    # -- one position -----------------------------------------------------------------------------

    def _logits(self, x: int, i: int) -> torch.Tensor:
        """Logits (B, n_codes) at column x of the current row; i is the raster index."""
        xp, b, r = x + self.px, self.b, self.r
        xw = self.x_row[:, xp - self.r0:xp].reshape(b, -1)
        h = torch.addmm(self.h0_row[:, x], xw, self.w_hin_now)                        # (B, C)
        for l, blk in enumerate(self.blocks):
            hb = self.h_rows[l]                                                        # (B, Wp, C)
            hb[:, xp] = h
            h_pre = torch.addmm(self.hrow[l][:, x], hb[:, xp - r:xp + 1].reshape(b, -1), blk.w_hxt_now)
            h = h + F.linear(gate(h_pre, dim=-1), blk.w_ho, blk.b_ho)
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

    def _commit(self, x: int, codes: torch.Tensor) -> None:
        e = self.embed(codes).to(self.dtype)                                          # (B, E)
        self.x_row[:, x + self.px] = e
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
                    c = choose(self._logits(x, i), t, y, x)
                    codes[:, t, y, x] = c
                    self._commit(x, c)
                    i += 1
        return codes


def _sampler(temperature: float, top_k: int | None, generator: torch.Generator | None) -> Chooser:
    def choose(logits, t, y, x):
        return sample_from_logits(logits, temperature, top_k, generator)
    return choose


# ----------------------------------------------------------------------------- top prior


def sample_top_cached(model: TopPrior, cond_top: torch.Tensor, cond_bottom: torch.Tensor,
                      temperature: float = 1.0, top_k: int | None = None,
                      generator: torch.Generator | None = None, *,
                      cpu_threads: int | None = 1) -> torch.Tensor:
    """Cached sampling of the top prior: same inputs, draws and result as ``TopPrior.sample``
    (cond_top (B, 1, Ht, Wt), cond_bottom (B, 2, 2Ht, 2Wt) -> codes (B, Tp, Ht, Wt)), with a
    constant amount of work per code and layer (plus attention over the earlier codes)."""
    with _sampling_context(model, cond_top.device, cpu_threads):
        b, _, ht, wt = cond_top.shape
        cond = model.condition(cond_top, cond_bottom)
        eng = CachedPixelCNN(model.pixelcnn, model.embed, cond, b, (model.config.pred_steps, ht, wt))
        return eng.run(_sampler(temperature, top_k, generator))


def top_logits_cached(model: TopPrior, codes: torch.Tensor, cond_top: torch.Tensor,
                      cond_bottom: torch.Tensor, *, cpu_threads: int | None = 1) -> torch.Tensor:
    """Teacher-forced cached pass: logits (B, n_codes, Tp, Ht, Wt) of ``codes`` computed position by
    position through the caches; equals ``model(codes, cond_top, cond_bottom)`` up to rounding."""
    with _sampling_context(model, codes.device, cpu_threads):
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


def _bottom_slice(model: BottomPrior, cond: torch.Tensor, choose: Chooser,
                  prev: torch.Tensor | None = None) -> torch.Tensor:
    b, _, _, hb, wb = cond.shape
    eng = CachedPixelCNN(model.pixelcnn, model.embed, cond, b, (1, hb, wb))
    copied = model.copy_logits(cond, prev)   # (B, n_codes, Hb, Wb): known for the whole slice
    if copied is None:
        return eng.run(choose)[:, 0]
    return eng.run(lambda logits, t, y, x: choose(logits + copied[:, :, y, x], t, y, x))[:, 0]


def sample_bottom_cached(model: BottomPrior, top: torch.Tensor, cond_bottom: torch.Tensor,
                         temperature: float = 1.0, top_k: int | None = None,
                         generator: torch.Generator | None = None, *,
                         cpu_threads: int | None = 1) -> torch.Tensor:
    """Cached sampling of the bottom prior: same inputs, draws and result as ``BottomPrior.sample``
    (top (B, Tt, Ht, Wt), cond_bottom (B, n_given, Hb, Wb) -> bottom (B, Tb, Hb, Wb)). Slices are
    generated one by one, each with its own caches; its conditioning stack runs once."""
    cfg = model.config
    b, ng, hb, wb = cond_bottom.shape
    if ng != cfg.n_given:
        raise ValueError(f"cond_bottom must be (B, {cfg.n_given}, Hb, Wb), got {tuple(cond_bottom.shape)}")
    choose = _sampler(temperature, top_k, generator)
    with _sampling_context(model, top.device, cpu_threads):
        top_feats = model.top_features(top)
        bottom = torch.zeros(b, top_feats.shape[2], hb, wb, dtype=torch.long, device=top.device)
        bottom[:, :ng] = cond_bottom
        for n in range(ng, bottom.shape[1]):
            bottom[:, n] = _slice_given_past(model, bottom, n, top_feats, choose)
        return bottom


def _slice_given_past(model: BottomPrior, bottom: torch.Tensor, n: int, top_feats: torch.Tensor,
                      choose: Chooser) -> torch.Tensor:
    nn_ = torch.full((bottom.shape[0],), n, dtype=torch.long, device=bottom.device)
    past = model.past_window(bottom, n)
    return _bottom_slice(model, model.condition(past, nn_, top_feats=top_feats), choose, past[:, -1])


def sample_bottom_slice_cached(model: BottomPrior, top: torch.Tensor, bottom: torch.Tensor, n: int,
                               temperature: float = 1.0, top_k: int | None = None,
                               generator: torch.Generator | None = None, *,
                               cpu_threads: int | None = 1) -> torch.Tensor:
    """One slice n drawn given slices < n of ``bottom`` (B, Tb, Hb, Wb) and the top grid -> (B, Hb,
    Wb): the draw ``sample_bottom_cached`` makes at slice n when its past is ``bottom``'s (e.g. the
    true codes, to see what a single step loses; scripts/diagnose_priors.py)."""
    return sample_slices_given_past(model, top, bottom, [n], temperature, top_k, generator,
                                    cpu_threads=cpu_threads)[:, 0]


def sample_slices_given_past(model: BottomPrior, top: torch.Tensor, bottom: torch.Tensor, slices,
                             temperature: float = 1.0, top_k: int | None = None,
                             generator: torch.Generator | None = None, *,
                             cpu_threads: int | None = 1) -> torch.Tensor:
    """Several slices, each drawn given the slices before it in ``bottom`` (B, Tb, Hb, Wb) -- none
    given another's draw -- in one cached pass over B * S rows (row b * S + i: clip b, slice
    ``slices[i]``) -> (B, S, Hb, Wb). With one slice, the draw ``sample_bottom_cached`` makes there
    when its past is ``bottom``'s."""
    slices = [int(n) for n in slices]
    b, tb, hb, wb = bottom.shape
    bad = [n for n in slices if not model.config.n_given <= n < tb]
    if bad or not slices:
        raise ValueError(f"slices {bad or slices} are not generated: expected n_given = {model.config.n_given} "
                         f"<= n < {tb}")
    with _sampling_context(model, top.device, cpu_threads):
        rows = torch.arange(b, device=bottom.device).repeat_interleave(len(slices))
        n = torch.tensor(slices, device=bottom.device).repeat(b)
        past = model.past_window(bottom[rows], n)                          # (B*S, W, Hb, Wb)
        cond = model.condition(past, n, top_feats=model.top_features(top)[rows])
        drawn = _bottom_slice(model, cond, _sampler(temperature, top_k, generator), past[:, -1])
        return drawn.view(b, len(slices), hb, wb)


def bottom_logits_cached(model: BottomPrior, codes_slice: torch.Tensor, cond: torch.Tensor,
                         prev: torch.Tensor | None = None, *, cpu_threads: int | None = 1) -> torch.Tensor:
    """Teacher-forced cached pass over one slice: codes_slice (B, Hb, Wb) and its conditioning map
    (B, Cc, 1, Hb, Wb) (and slice n-1, prev, for a copy path) -> logits (B, n_codes, Hb, Wb), equal
    to ``model.logits_from_cond`` up to rounding."""
    with _sampling_context(model, codes_slice.device, cpu_threads):
        b, hb, wb = codes_slice.shape
        out = torch.zeros(b, model.config.n_codes, hb, wb, device=cond.device, dtype=cond.dtype)

        def force(logits, t, y, x):
            out[:, :, y, x] = logits
            return codes_slice[:, y, x]
        _bottom_slice(model, cond, force, prev)
        return out
