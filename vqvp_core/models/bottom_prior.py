"""Bottom prior: a gated 2D PixelCNN that generates one time slice n of the bottom grid, conditioned
on the whole top grid and on a window of past bottom slices (paper sec. 3.2 and appendix).

Shapes (tiny preset / paper): bottom grid (Tb=8, Hb, Wb) = (8, 16, 16) / (8, 64, 64), top grid
(Tt=4, Ht, Wt) with Hb = 2 Ht. Slices 0 and 1 come from the conditioning frames; the prior
generates slices 2..7, each in raster order y, x.

Conditioning of slice n:
* top: embedded (B, E, 4, Ht, Wt), upsampled by three 3D convs — kernels (4,3,3), (3,4,4), (3,3,3),
  strides (2,1,1), (1,2,2), (1,1,1) (the first two transposed) — to (B, Cu, 8, Hb, Wb); slice n.
  The top is fully given, so slice n may depend on every top code.
* past: bottom slices n-W..n-1 (a pad token where the index is < 0) embedded (B, E, W, Hb, Wb),
  through four convs of kernel (4,3,3), stride (2,1,1), time paddings chosen so time collapses
  to 1 -> (B, Cp, Hb, Wb). Slices >= n never enter.
* both, plus fixed coordinate channels (n, y, x), through a VQ-VAE-2 conditioning stack
  (3x3 conv + residual blocks) -> (B, Cc, Hb, Wb), added to every gated block.
* optional copy path (``copy_kernel`` = k > 0; vqvp's choice, not in the paper): a 1x1 conv of the
  conditioning map gives, per position, k*k weights w_o, one per offset o of a k x k window, and
  the logits gain ``w_o`` on the code that slice n-1 holds at offset o. "This cell's code is the
  code that was next to it one slice ago" -- an object kept and moved -- is then one weight away,
  where the PixelCNN alone must learn it through its embeddings (README, 'The demo's recipe').
  Zero-initialised: the model starts as the paper's.

Training: ``forward_all_slices`` computes the top upsampling once per clip and runs the PixelCNN on
all requested slices as one batch of B * len(slices).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from vqvp_core.configbase import Bool, CoreConfig, Float, NonNegativeInt, PositiveInt, odd_kernel
from vqvp_core.models.blocks3d import channels_last_convs
from vqvp_core.models.blocks3d import ResBlock
from vqvp_core.models.pixelcnn import (
    GatedPixelCNN,
    bits_per_code,
    code_weights,
    collapse_time_paddings,
    coordinate_channels,
    sample_from_logits,
    weighted_bits_per_code,
)


class BottomPriorConfig(CoreConfig):
    n_codes: PositiveInt = 512  # bottom codebook size (paper: 512 codes per level)
    n_codes_top: PositiveInt = 512  # top codebook size
    n_steps: PositiveInt = 8  # Tb: bottom slices per clip (= 2 * top steps)
    n_given: NonNegativeInt = 2  # slices given by the conditioning frames; 2..7 are generated
    window: PositiveInt = 4  # past bottom slices n-4..n-1 (paper appendix)
    embed_dim: PositiveInt = 128  # embedding of bottom codes (current slice and past window)
    channels: PositiveInt = 256  # width of the v and h stacks
    n_layers: PositiveInt = 20  # gated blocks (VQ-VAE-2's bottom prior: 20 layers)
    kernel: PositiveInt = 5  # VQ-VAE-2: filter size 5
    first_kernel: PositiveInt = 7  # Gated PixelCNN's 7x7 input conv
    attn_every: PositiveInt = 5  # attention every five layers (paper)
    attn_heads: PositiveInt = 8
    attn_channels: PositiveInt = 256
    out_hidden: PositiveInt = 512
    dropout: Annotated[Float, Field(ge=0, lt=1)] = 0.1  # VQ-VAE-2's priors use 0.1
    # Parallel scheduled sampling (Duckworth et al. 2019), a training-time choice of vqvp, not in
    # the paper: this fraction of the generated slices' input codes (the slice's own stream and the
    # past windows) is replaced by codes drawn from the model's own teacher-forced prediction, the
    # targets staying the true codes. Sampling conditions every slice on sampled ones; taught only
    # on true codes the prior compounds its errors (README, 'Prediction quality'). 0 = off.
    scheduled_sampling: Annotated[Float, Field(ge=0, le=1)] = 0.0
    # Own draws in the past windows, a training-time choice of vqvp, not in the paper: each
    # generated slice, as the past of the slices after it (window and copy path), is with this
    # probability replaced by the model's own draw of it at temperature own_past_temperature, from
    # its teacher-forced logits (one pass, no gradient); the slice's own stream and every target
    # stay true. Sampling conditions each slice on drawn ones, whose objects have lost cells at
    # their uncertain edges; taught on true pasts only, the prior loses a little more of them at
    # every slice (README, 'The demo's recipe'). 0 = off.
    own_past: Annotated[Float, Field(ge=0, le=1)] = 0.0
    own_past_temperature: Annotated[Float, Field(gt=0)] = 1.0
    # how those draws are made: 'teacher_forced' = every cell at once from the teacher-forced
    # logits (one extra pass); 'autoregressive' = each slice drawn cell by cell as sampling draws it
    # (given the true slices before it; the cached sampler, 256 sequential steps per training step)
    own_past_draws: Literal["teacher_forced", "autoregressive"] = "teacher_forced"
    top_embed_dim: PositiveInt = 64
    top_up_hidden: PositiveInt = 256  # width inside the top upsampler (not in the paper)
    top_up_channels: PositiveInt = 1024  # paper appendix: top upsampled to 64x64x8x1024
    past_channels: PositiveInt = 256  # width of the past-window convs (not in the paper)
    cond_channels: PositiveInt = 256  # conditioning stack width
    cond_res_blocks: NonNegativeInt = 20  # VQ-VAE-2 bottom prior: 20 conditioning residual blocks
    cond_res_hidden: PositiveInt = 128
    # conv kernels stored channels-last (models.blocks3d.channels_last_convs): oneDNN then stops
    # reordering them on every call (faster steps on CPUs: README, 'Benchmarks')
    channels_last: Bool = True
    # copy path (module docstring): window k x k over slice n-1, 0 = off (the paper's model)
    copy_kernel: NonNegativeInt = 0
    # Which slices the past window (and the copy path) of a generated slice n reads, a choice of
    # vqvp, not in the paper: 'previous' = n-W..n-1 (the paper: each slice given the ones drawn
    # before it); 'given' = the window ending at the last given slice, for every n (each slice
    # predicted straight from the conditioning frames' codes, n and the top telling it how far
    # ahead): no drawn slice is ever conditioned on, so no error compounds (README, 'The demo's
    # recipe').
    past_slices: Literal["previous", "given"] = "previous"
    # Frequency-weighted cross-entropy, a training-time choice of vqvp, not in the paper: each
    # target code weighs (its frequency in the training latents) ** -code_weight_power, scaled to a
    # mean of 1 (pixelcnn.code_weights). Background codes fill most cells; at a low sampling
    # temperature their mode wins over an object's codes, which share its probability, and objects
    # fade (README, 'The demo's recipe'). 0 = off (the paper's likelihood); bits_per_code, the
    # held-out figure, stays unweighted.
    code_weight_power: Annotated[Float, Field(ge=0, le=2)] = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> "BottomPriorConfig":
        odd_kernel(self.kernel, "kernel")
        odd_kernel(self.first_kernel, "first_kernel")
        if self.copy_kernel % 2 == 0 and self.copy_kernel:
            raise ValueError(f"copy_kernel = {self.copy_kernel}: expected 0 (off) or an odd size (centred on the cell)")
        if self.n_steps % 2:
            raise ValueError(f"n_steps = {self.n_steps}: expected even (2 x top steps)")
        if self.n_given >= self.n_steps:
            raise ValueError(f"n_given = {self.n_given}: expected in [0, n_steps = {self.n_steps})")
        if self.attn_every > self.n_layers:
            raise ValueError(f"attn_every = {self.attn_every} with n_layers = "
                             f"{self.n_layers}: expected 1 <= attn_every <= n_layers")
        if self.attn_channels % self.attn_heads:
            raise ValueError(f"attn_channels = {self.attn_channels}: expected a "
                             f"multiple of attn_heads = {self.attn_heads}")
        try:
            collapse_time_paddings(self.window)
        except ValueError as e:
            raise ValueError(f"window = {self.window}: {e}") from None
        return self

    @property
    def pad_code(self) -> int:
        """Embedding index for past slices before the clip (n - k < 0)."""
        return self.n_codes

    @classmethod
    def paper(cls) -> "BottomPriorConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "BottomPriorConfig":
        # CPU in minutes on 16x16 slices; 10 blocks -> 2 attention layers
        return cls(embed_dim=32, channels=64, n_layers=10, kernel=3, first_kernel=5, attn_every=5,
                   attn_heads=4, attn_channels=64, out_hidden=128, dropout=0.0, top_embed_dim=32,
                   top_up_hidden=32, top_up_channels=64, past_channels=32, cond_channels=64,
                   cond_res_blocks=2, cond_res_hidden=32)


def past_window(bottom: torch.Tensor, n: int | torch.Tensor, window: int, pad_code: int) -> torch.Tensor:
    """Slices n-window..n-1 of ``bottom`` (B, Tb, Hb, Wb) -> (B, window, Hb, Wb), ``pad_code``
    where the index is < 0. ``n`` is an int or a (B,) long tensor (one slice index per row).
    Only slices < n are read, so ``bottom`` may hold anything at slices >= n."""
    b, tb, hb, wb = bottom.shape
    padded = torch.cat([bottom.new_full((b, window, hb, wb), pad_code), bottom], 1)  # (B, W+Tb, Hb, Wb)
    if isinstance(n, int):
        if not 0 <= n <= tb:
            raise ValueError(f"slice index {n} outside [0, {tb}]")
        return padded[:, n:n + window]                      # padded index n+k = slice n-W+k
    n = n.to(bottom.device).long()
    idx = n[:, None] + torch.arange(window, device=bottom.device)            # (B, W)
    return padded.gather(1, idx[:, :, None, None].expand(b, window, hb, wb))


class BottomPrior(nn.Module):
    """forward(codes_slice (B, Hb, Wb), past (B, W, Hb, Wb), top (B, Tt, Ht, Wt), n (B,))
    -> logits (B, n_codes, Hb, Wb)."""

    def __init__(self, config: BottomPriorConfig):
        super().__init__()
        self.config = cfg = config
        # one table for the generated slice and the past window; index n_codes is the pad token
        self.embed = nn.Embedding(cfg.n_codes + 1, cfg.embed_dim)
        self.top_embed = nn.Embedding(cfg.n_codes_top, cfg.top_embed_dim)
        # top (4, Ht, Wt) -> (8, Ht, Wt) -> (8, Hb, Wb) -> (8, Hb, Wb)
        self.top_up1 = nn.ConvTranspose3d(cfg.top_embed_dim, cfg.top_up_hidden, (4, 3, 3),
                                          stride=(2, 1, 1), padding=(1, 1, 1))
        self.top_up2 = nn.ConvTranspose3d(cfg.top_up_hidden, cfg.top_up_hidden, (3, 4, 4),
                                          stride=(1, 2, 2), padding=(1, 1, 1))
        self.top_up3 = nn.Conv3d(cfg.top_up_hidden, cfg.top_up_channels, 3, padding=1)
        # past window (W, Hb, Wb) -> (1, Hb, Wb)
        pads = collapse_time_paddings(cfg.window)
        chans = [cfg.embed_dim] + [cfg.past_channels] * 4
        self.past_convs = nn.ModuleList(
            nn.Conv3d(chans[i], chans[i + 1], (4, 3, 3), stride=(2, 1, 1), padding=(pads[i], 1, 1))
            for i in range(4))
        # VQ-VAE-2 conditioning stack; +3 coordinate channels (n, y, x)
        self.cond_in = nn.Conv2d(cfg.top_up_channels + cfg.past_channels + 3, cfg.cond_channels, 3,
                                 padding=1)
        self.cond_res = nn.Sequential(*(ResBlock(cfg.cond_channels, cfg.cond_res_hidden, dims=2, activation="elu")
                                        for _ in range(cfg.cond_res_blocks)), nn.ELU())
        self.pixelcnn = GatedPixelCNN(
            in_channels=cfg.embed_dim, channels=cfg.channels, cond_channels=cfg.cond_channels,
            n_codes=cfg.n_codes, n_layers=cfg.n_layers, kernel=cfg.kernel, kernel_t=1,
            first_kernel=cfg.first_kernel, first_kernel_t=1, attn_every=cfg.attn_every,
            attn_heads=cfg.attn_heads, attn_channels=cfg.attn_channels, out_hidden=cfg.out_hidden,
            dropout=cfg.dropout)
        self.copy = None
        if cfg.copy_kernel:
            self.copy = nn.Conv2d(cfg.cond_channels, cfg.copy_kernel ** 2, 1)
            nn.init.zeros_(self.copy.weight), nn.init.zeros_(self.copy.bias)
        if cfg.channels_last:
            channels_last_convs(self)
        # per-code loss weights (code_weight_power); set from the training latents by
        # set_code_counts; not saved: they only shape training and are recomputed from the data
        self.register_buffer("code_weights", torch.ones(cfg.n_codes), persistent=False)
        # own_past_draws = 'autoregressive': the sampler that draws slices given their true past
        # (sampling.sample_slices_given_past), set by whoever builds the model for training: the
        # sampler is built on this module, so the model does not import it
        self.slice_sampler = None

    def set_code_counts(self, counts: torch.Tensor) -> None:
        """Loss weights from the training set's bottom-code counts (n_codes,)."""
        if counts.shape != (self.config.n_codes,):
            raise ValueError(f"code counts must be ({self.config.n_codes},), got {tuple(counts.shape)}")
        self.code_weights.copy_(code_weights(counts, self.config.code_weight_power))

    # -- conditioning ---------------------------------------------------------------------------

    def past_window(self, bottom: torch.Tensor, n: int | torch.Tensor) -> torch.Tensor:
        """Past window for slice n from a bottom grid (B, Tb, Hb, Wb) -> (B, W, Hb, Wb); with
        ``past_slices = 'given'`` the window of slice min(n, n_given)."""
        return past_window(bottom, self.past_end(n), self.config.window, self.config.pad_code)

    def past_end(self, n: int | torch.Tensor) -> int | torch.Tensor:
        """The slice whose window slice n reads: n, or min(n, n_given) when ``past_slices = 'given'``."""
        if self.config.past_slices == "previous":
            return n
        ng = self.config.n_given
        return min(n, ng) if isinstance(n, int) else n.clamp(max=ng)

    def top_features(self, top: torch.Tensor) -> torch.Tensor:
        """Top grid (B, Tt, Ht, Wt) -> upsampled features (B, Cu, 2Tt, 2Ht, 2Wt); compute once per
        clip and reuse for every slice."""
        t = self.top_embed(top).permute(0, 4, 1, 2, 3)        # (B, E, Tt, Ht, Wt)
        t = F.elu(self.top_up1(t))                            # (B, Cuh, 2Tt, Ht, Wt)
        t = F.elu(self.top_up2(t))                            # (B, Cuh, 2Tt, 2Ht, 2Wt)
        return self.top_up3(t)                                # (B, Cu, 2Tt, 2Ht, 2Wt)

    def _past_features(self, past_emb: torch.Tensor) -> torch.Tensor:
        # (B, E, W, Hb, Wb) -> (B, Cp, Hb, Wb)
        p = past_emb
        for conv in self.past_convs:
            p = F.elu(conv(p))
        return p[:, :, 0]

    def _cond_stack(self, top_slice: torch.Tensor, past_feat: torch.Tensor,
                    n: torch.Tensor) -> torch.Tensor:
        # top_slice (B, Cu, Hb, Wb), past_feat (B, Cp, Hb, Wb), n (B,) -> (B, Cc, 1, Hb, Wb)
        b, _, hb, wb = top_slice.shape
        coords = coordinate_channels((1, hb, wb), top_slice.device, top_slice.dtype)[:, :, 0]
        coords = coords.expand(b, -1, -1, -1).clone()         # (B, 3, Hb, Wb); channel 0 <- n
        coords[:, 0] = (2.0 * n.to(top_slice.dtype) / (self.config.n_steps - 1) - 1.0)[:, None, None]
        c = self.cond_in(torch.cat([top_slice, past_feat, coords], 1))
        return self.cond_res(c).unsqueeze(2)

    def condition(self, past: torch.Tensor, n: torch.Tensor, top: torch.Tensor | None = None,
                  top_feats: torch.Tensor | None = None) -> torch.Tensor:
        """Conditioning map (B, Cc, 1, Hb, Wb) for slice n. Give ``top`` or its precomputed
        ``top_features``."""
        if top_feats is None:
            if top is None:
                raise ValueError("condition needs top or top_feats")
            top_feats = self.top_features(top)
        b = past.shape[0]
        if past.shape[1] != self.config.window:
            raise ValueError(f"past must be (B, {self.config.window}, Hb, Wb), got {tuple(past.shape)}")
        if top_feats.shape[-2:] != past.shape[-2:]:
            raise ValueError(f"top upsampled to {tuple(top_feats.shape[-2:])} but slices are "
                             f"{tuple(past.shape[-2:])}; need Hb = 2 Ht, Wb = 2 Wt")
        n = torch.as_tensor(n, device=past.device).long().expand(b)
        top_slice = top_feats[torch.arange(b, device=past.device), :, n]    # (B, Cu, Hb, Wb)
        past_emb = self.embed(past).permute(0, 4, 1, 2, 3)                 # (B, E, W, Hb, Wb)
        return self._cond_stack(top_slice, self._past_features(past_emb), n)

    # -- logits ---------------------------------------------------------------------------------

    def _copy_terms(self, cond: torch.Tensor, prev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The copy path's (codes, weights), both (B, k*k, Hb, Wb): the code slice n-1 holds at each
        offset of the window, and its weight; outside the slice or at a pad code the weight is 0."""
        if prev is None:
            raise ValueError("this bottom prior has a copy path (copy_kernel > 0): give prev, the codes of slice n-1")
        k, pad = self.config.copy_kernel, self.config.copy_kernel // 2
        hb, wb = prev.shape[-2:]
        padded = F.pad(prev, (pad, pad, pad, pad), value=self.config.pad_code)
        codes = torch.stack([padded[:, dy:dy + hb, dx:dx + wb] for dy in range(k) for dx in range(k)], 1)
        real = codes < self.config.n_codes
        weights = self.copy(cond[:, :, 0]) * real                           # (B, k*k, Hb, Wb)
        return codes.masked_fill(~real, 0), weights

    def add_copy(self, logits: torch.Tensor, cond: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """logits (B, n_codes, Hb, Wb) plus the copy path (unchanged when it is off): one scatter,
        duplicate codes in a window adding up."""
        if self.copy is None:
            return logits
        codes, weights = self._copy_terms(cond, prev)
        return logits.scatter_add(1, codes, weights.to(logits.dtype))

    def copy_logits(self, cond: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor | None:
        """The copy path's logits (B, n_codes, Hb, Wb) alone, from cond (B, Cc, 1, Hb, Wb) and slice
        n-1's codes prev (B, Hb, Wb); None when off."""
        if self.copy is None:
            return None
        codes, weights = self._copy_terms(cond, prev)
        return cond.new_zeros(*codes.shape[:1], self.config.n_codes, *codes.shape[2:]).scatter_add(1, codes, weights)

    def logits_from_cond(self, codes_slice: torch.Tensor, cond: torch.Tensor,
                         prev: torch.Tensor | None = None) -> torch.Tensor:
        """codes_slice (B, Hb, Wb), cond (B, Cc, 1, Hb, Wb), with a copy path slice n-1's codes prev
        (B, Hb, Wb) -> logits (B, n_codes, Hb, Wb)."""
        x = self.embed(codes_slice).permute(0, 3, 1, 2).unsqueeze(2)       # (B, E, 1, Hb, Wb)
        return self.add_copy(self.pixelcnn(x, cond)[:, :, 0], cond, prev)

    def forward(self, codes_slice: torch.Tensor, past: torch.Tensor, top: torch.Tensor,
                n: torch.Tensor) -> torch.Tensor:
        return self.logits_from_cond(codes_slice, self.condition(past, n, top=top), past[:, -1])

    def forward_all_slices(self, bottom: torch.Tensor, top: torch.Tensor,
                           slices: Iterable[int] | None = None, past: torch.Tensor | None = None) -> torch.Tensor:
        """Training entry point: logits for several slices of full clips in one pass.

        bottom (B, Tb, Hb, Wb), top (B, Tt, Ht, Wt), slices default n_given..Tb-1
        -> logits (B, n_codes, S, Hb, Wb), to compare with ``bottom[:, slices]``. The top
        upsampling runs once per clip; the PixelCNN sees a batch of B * S slices. Bottom codes are
        embedded once (pad token in front), so every slice's window and stream share that table.
        ``past`` (B, Tb, Hb, Wb), optional: the grid the past windows (and the copy path) read
        instead of ``bottom``, each slice's own stream staying ``bottom``'s (``own_past``)."""
        cfg = self.config
        slices = list(range(cfg.n_given, bottom.shape[1]) if slices is None else slices)
        b, tb, hb, wb = bottom.shape
        if not slices or min(slices) < 0 or max(slices) >= tb:
            raise ValueError(f"slices {slices} must be non-empty and within [0, {tb})")
        w, s = cfg.window, len(slices)
        idx = torch.tensor(slices, device=bottom.device)
        top_slices = self.top_features(top)[:, :, idx]                      # (B, Cu, S, Hb, Wb)
        pad = bottom.new_full((b, w, hb, wb), cfg.pad_code)
        padded = torch.cat([pad, bottom], 1)
        emb = self.embed(padded).permute(0, 4, 1, 2, 3)                     # (B, E, W+Tb, Hb, Wb)
        cur = emb[:, :, w + idx]                                            # (B, E, S, Hb, Wb)
        if past is not None:
            if past.shape != bottom.shape:
                raise ValueError(f"past must be shaped like bottom {tuple(bottom.shape)}, got {tuple(past.shape)}")
            padded = torch.cat([pad, past], 1)
            emb = self.embed(padded).permute(0, 4, 1, 2, 3)
        ends = self.past_end(idx)                                           # (S,): slice i reads ends[i]'s window
        past = torch.stack([emb[:, :, m:m + w] for m in ends.tolist()], 1)  # (B, S, E, W, Hb, Wb)
        # fold slices into the batch: row b*S + i is (clip b, slice slices[i])
        past = past.flatten(0, 1)                                           # (B*S, E, W, Hb, Wb)
        cur = cur.transpose(1, 2).flatten(0, 1).unsqueeze(2)                # (B*S, E, 1, Hb, Wb)
        top_slices = top_slices.transpose(1, 2).flatten(0, 1)               # (B*S, Cu, Hb, Wb)
        cond = self._cond_stack(top_slices, self._past_features(past), idx.repeat(b))
        logits = self.pixelcnn(cur, cond)[:, :, 0]                          # (B*S, K, Hb, Wb)
        if self.copy is not None:   # slice ends[i]-1 of each row: padded index w + ends[i] - 1
            prev = padded[:, w - 1 + ends].flatten(0, 1)                    # (B*S, Hb, Wb)
            logits = self.add_copy(logits, cond, prev)
        return logits.unflatten(0, (b, s)).transpose(1, 2)                  # (B, K, S, Hb, Wb)

    # -- the training objective -----------------------------------------------------------------

    def logits_and_targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing on a batch of data/latents items: the given steps are the conditioning
        frames' own codes (as in sampling); in training mode, ``config.scheduled_sampling`` of the
        input codes are this model's own draws (own_samples_mixed_in), the targets staying true.
        -> logits (B, n_codes, Tb - n_given, Hb, Wb), targets (B, Tb - n_given, Hb, Wb)."""
        n_given = self.config.n_given
        top = torch.cat([batch["cond_top"], batch["top"][:, 1:]], 1)               # (B, Tt, Ht, Wt)
        bottom = torch.cat([batch["cond_bottom"], batch["bottom"][:, n_given:]], 1)  # (B, Tb, Hb, Wb)
        inputs = self.own_samples_mixed_in(bottom, top) if self.training else bottom
        past = self.own_draws_in_past(inputs, top) if self.training else None
        return self.forward_all_slices(inputs, top, past=past), bottom[:, n_given:]

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Bits per predicted code (the same optimum as cross-entropy in nats), and its metrics; with
        ``code_weight_power`` the loss is the frequency-weighted bits, the metric the plain ones."""
        logits, targets = self.logits_and_targets(batch)
        if self.config.code_weight_power <= 0:
            bits = bits_per_code(logits, targets)
            return bits, {"bits_per_code": bits.detach()}
        weighted, bits = weighted_bits_per_code(logits, targets, self.code_weights)
        return weighted, {"bits_per_code": bits.detach()}

    @torch.no_grad()
    def own_samples_mixed_in(self, bottom: torch.Tensor, top: torch.Tensor, rate: float | None = None,
                             generator: torch.Generator | None = None) -> torch.Tensor:
        """Scheduled sampling's inputs: ``bottom`` (B, Tb, Hb, Wb) with a fraction ``rate`` (default
        ``config.scheduled_sampling``) of the codes of slices n_given.. replaced by codes drawn
        (temperature 1) from this model's teacher-forced prediction of them; given slices kept."""
        rate = self.config.scheduled_sampling if rate is None else rate
        if rate <= 0:
            return bottom
        ng = self.config.n_given
        logits = self.forward_all_slices(bottom, top)                       # (B, K, S, Hb, Wb)
        rows = logits.movedim(1, -1)                                        # (B, S, Hb, Wb, K)
        drawn = sample_from_logits(rows.flatten(0, -2), 1.0, None, generator).view(rows.shape[:-1])
        keep = torch.rand(drawn.shape, generator=generator, device=drawn.device) >= rate
        out = bottom.clone()
        out[:, ng:] = torch.where(keep, bottom[:, ng:], drawn)
        return out

    @torch.no_grad()
    def own_draws_in_past(self, bottom: torch.Tensor, top: torch.Tensor, rate: float | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor | None:
        """``own_past``'s grid for the past windows: ``bottom`` (B, Tb, Hb, Wb) with each generated
        slice, per clip with probability ``rate`` (default ``config.own_past``), replaced by this
        model's draw of it at ``own_past_temperature`` (``own_past_draws``: from its teacher-forced
        logits, or cell by cell given the true slices before it); None when off."""
        rate = self.config.own_past if rate is None else rate
        if rate <= 0:
            return None
        ng, tb = self.config.n_given, bottom.shape[1]
        if self.config.own_past_draws == "autoregressive":
            if self.slice_sampler is None:
                raise ValueError("own_past_draws = 'autoregressive' needs a slice sampler: set model.slice_sampler "
                                 "= vqvp_core.sampling.sample_slices_given_past (train_bottom_prior's build_model does)")
            # the last slice is nobody's past: left true
            drawn = torch.cat([self.slice_sampler(self, top, bottom, range(ng, tb - 1),
                                                  self.config.own_past_temperature, None, generator),
                               bottom[:, tb - 1:]], 1)                              # (B, S, Hb, Wb)
        else:
            rows = self.forward_all_slices(bottom, top).movedim(1, -1)       # (B, S, Hb, Wb, K)
            drawn = sample_from_logits(rows.flatten(0, -2), self.config.own_past_temperature, None,
                                       generator).view(rows.shape[:-1])
        pick = torch.rand(drawn.shape[:2], generator=generator, device=drawn.device) < rate   # (B, S)
        out = bottom.clone()
        out[:, ng:] = torch.where(pick[:, :, None, None], drawn, bottom[:, ng:])
        return out

    # -- sampling -------------------------------------------------------------------------------

    @torch.no_grad()
    def sample_slice(self, cond: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     generator: torch.Generator | None = None, prev: torch.Tensor | None = None) -> torch.Tensor:
        """Naive sampling of one slice given its conditioning map (B, Cc, 1, Hb, Wb) (and slice n-1,
        prev, for a copy path): the whole PixelCNN once per code -> (B, Hb, Wb)."""
        b, _, _, hb, wb = cond.shape
        codes = torch.zeros(b, hb, wb, dtype=torch.long, device=cond.device)
        for y in range(hb):
            for x in range(wb):
                logits = self.logits_from_cond(codes, cond, prev)[:, :, y, x]  # (B, n_codes)
                codes[:, y, x] = sample_from_logits(logits, temperature, top_k, generator)
        return codes

    @torch.no_grad()
    def sample(self, top: torch.Tensor, cond_bottom: torch.Tensor, temperature: float = 1.0,
               top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Slices n_given..Tb-1 one by one, given the full top grid (B, Tt, Ht, Wt) and the given
        slices cond_bottom (B, n_given, Hb, Wb) -> full bottom grid (B, Tb, Hb, Wb)."""
        cfg = self.config
        b, ng, hb, wb = cond_bottom.shape
        if ng != cfg.n_given:
            raise ValueError(f"cond_bottom must be (B, {cfg.n_given}, Hb, Wb), got {tuple(cond_bottom.shape)}")
        top_feats = self.top_features(top)
        bottom = torch.zeros(b, top_feats.shape[2], hb, wb, dtype=torch.long, device=top.device)
        bottom[:, :ng] = cond_bottom
        for n in range(ng, bottom.shape[1]):
            nn_ = torch.full((b,), n, dtype=torch.long, device=top.device)
            cond = self.condition(self.past_window(bottom, n), nn_, top_feats=top_feats)
            bottom[:, n] = self.sample_slice(cond, temperature, top_k, generator, self.past_window(bottom, n)[:, -1])
        return bottom
