"""Top prior: a gated 3D PixelCNN over the predicted top steps, conditioned on the codes of the
4 given frames (paper sec. 3.2 and appendix).

Shapes (tiny preset / paper): the top grid of a clip is (Tt=4, Ht, Wt) = (4, 8, 8) / (4, 32, 32);
step 0 is given by the conditioning frames, the prior generates steps 1..3, i.e. a grid of
(Tp=3, Ht, Wt) in raster order t, y, x. Conditioning codes: top (1, Ht, Wt), bottom (2, Hb, Wb)
with Hb = 2 Ht, Wb = 2 Wt.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

import torch
import torch.nn.functional as F
from torch import nn

from vqvp_core.configbase import Bool, CoreConfig, Float, NonNegativeInt, PositiveInt, odd_kernel
from vqvp_core.models.blocks3d import channels_last_convs
from vqvp_core.models.blocks3d import ResBlock
from vqvp_core.models.pixelcnn import (
    GatedPixelCNN,
    bits_per_code,
    coordinate_channels,
    sample_from_logits,
)


class TopPriorConfig(CoreConfig):
    n_codes: PositiveInt = 512  # top codebook size (paper: 512 codes per level)
    n_codes_bottom: PositiveInt = 512  # bottom codebook size, for the bottom conditioning codes
    pred_steps: PositiveInt = 3  # top steps generated: 4 top steps per clip, step 0 is given
    embed_dim: PositiveInt = 128  # embedding of the codes fed to the PixelCNN (and to attention k/v)
    channels: PositiveInt = 256  # width of the v and h stacks
    n_layers: PositiveInt = 20  # gated blocks (VQ-VAE-2's top prior: 20 layers)
    kernel: PositiveInt = 5  # spatial extent of the planar convs (VQ-VAE-2: filter size 5)
    # time extent: this step + the previous one per block; more distant steps arrive through
    # depth and attention
    kernel_t: PositiveInt = 2
    first_kernel: PositiveInt = 7  # first (only true 3D) layer, as Gated PixelCNN's 7x7 input conv
    first_kernel_t: PositiveInt = 3  # first layer sees all Tp-1 = 2 earlier predicted steps
    attn_every: PositiveInt = 5  # attention after every 5th block (paper); 20 layers -> 4
    attn_heads: PositiveInt = 8
    attn_channels: PositiveInt = 256  # total q/k/v width over all heads
    out_hidden: PositiveInt = 512  # hidden width of the ELU-1x1-ELU-1x1 output stack
    dropout: Annotated[Float, Field(ge=0, lt=1)] = 0.1  # VQ-VAE-2's priors use 0.1
    cond_embed_dim: PositiveInt = 64  # embedding of the conditioning codes (both levels)
    cond_mid_channels: PositiveInt = 256  # paper appendix: "downsampled ... to 32x32x256"
    cond_channels: PositiveInt = 512  # paper appendix: "another convolutional layer to 32x32x3x512"
    cond_res_blocks: NonNegativeInt = 4  # paper appendix: "four residual blocks"
    cond_res_hidden: PositiveInt = 256  # hidden width inside those residual blocks (not in the paper)
    # conv kernels stored channels-last (models.blocks3d.channels_last_convs): oneDNN then stops
    # reordering them on every call (faster steps on CPUs: README, 'Benchmarks')
    channels_last: Bool = True

    @model_validator(mode="after")
    def _consistent(self) -> "TopPriorConfig":
        odd_kernel(self.kernel, "kernel")
        odd_kernel(self.first_kernel, "first_kernel")
        if self.attn_every > self.n_layers:
            raise ValueError(
                f"attn_every = {self.attn_every} with n_layers = {self.n_layers}: expected "
                "1 <= attn_every <= n_layers; the planar convs alone leave blind spots in earlier "
                "steps, at least one attention layer is needed")
        if self.attn_channels % self.attn_heads:
            raise ValueError(f"attn_channels = {self.attn_channels}: expected a multiple "
                             f"of attn_heads = {self.attn_heads}")
        return self

    @classmethod
    def paper(cls) -> "TopPriorConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "TopPriorConfig":
        # CPU in minutes on a 3x8x8 grid; 10 blocks -> 2 attention layers
        return cls(embed_dim=32, channels=64, n_layers=10, kernel=3, kernel_t=2, first_kernel=5,
                   first_kernel_t=3, attn_every=5, attn_heads=4, attn_channels=64, out_hidden=128,
                   dropout=0.0, cond_embed_dim=32, cond_mid_channels=64, cond_channels=64,
                   cond_res_blocks=2, cond_res_hidden=32)


class TopPrior(nn.Module):
    """forward(codes (B, Tp, Ht, Wt), cond_top (B, 1, Ht, Wt), cond_bottom (B, 2, Hb, Wb))
    -> logits (B, n_codes, Tp, Ht, Wt); the logits at (t, y, x) depend on ``codes`` only at
    earlier raster positions, and on all conditioning codes."""

    def __init__(self, config: TopPriorConfig):
        super().__init__()
        self.config = cfg = config
        ec = cfg.cond_embed_dim
        self.embed = nn.Embedding(cfg.n_codes, cfg.embed_dim)
        # conditioning stack (paper appendix)
        self.cond_top_embed = nn.Embedding(cfg.n_codes, ec)
        self.cond_bottom_embed = nn.Embedding(cfg.n_codes_bottom, ec)
        # (2, Hb, Wb) -> (1, Ht, Wt): time 2 -> 1, space /2
        self.cond_bottom_down = nn.Conv3d(ec, ec, (2, 4, 4), stride=(2, 2, 2), padding=(0, 1, 1))
        self.cond_in = nn.Conv2d(2 * ec, cfg.cond_mid_channels, 3, padding=1)
        # after tiling over Tp; +3 fixed coordinate channels (t, y, x) tell the steps apart
        self.cond_up = nn.Conv3d(cfg.cond_mid_channels + 3, cfg.cond_channels, 3, padding=1)
        self.cond_res = nn.Sequential(*(ResBlock(cfg.cond_channels, cfg.cond_res_hidden, dims=3, activation="elu")
                                        for _ in range(cfg.cond_res_blocks)), nn.ELU())
        self.pixelcnn = GatedPixelCNN(
            in_channels=cfg.embed_dim, channels=cfg.channels, cond_channels=cfg.cond_channels,
            n_codes=cfg.n_codes, n_layers=cfg.n_layers, kernel=cfg.kernel, kernel_t=cfg.kernel_t,
            first_kernel=cfg.first_kernel, first_kernel_t=cfg.first_kernel_t,
            attn_every=cfg.attn_every, attn_heads=cfg.attn_heads, attn_channels=cfg.attn_channels,
            out_hidden=cfg.out_hidden, dropout=cfg.dropout)
        if cfg.channels_last:
            channels_last_convs(self)

    @staticmethod
    def _embed(table: nn.Embedding, codes: torch.Tensor) -> torch.Tensor:
        return table(codes).permute(0, 4, 1, 2, 3)  # (B, T, H, W) -> (B, E, T, H, W)

    def condition(self, cond_top: torch.Tensor, cond_bottom: torch.Tensor) -> torch.Tensor:
        """Conditioning map (B, cond_channels, Tp, Ht, Wt) from the given frames' codes."""
        if cond_top.dim() != 4 or cond_top.shape[1] != 1:
            raise ValueError(f"cond_top must be (B, 1, Ht, Wt), got {tuple(cond_top.shape)}")
        b, _, ht, wt = cond_top.shape
        if cond_bottom.shape != (b, 2, 2 * ht, 2 * wt):
            raise ValueError(f"cond_bottom must be (B, 2, 2Ht, 2Wt) = {(b, 2, 2 * ht, 2 * wt)}, "
                             f"got {tuple(cond_bottom.shape)}")
        ct = self._embed(self.cond_top_embed, cond_top)                     # (B, Ec, 1, Ht, Wt)
        cb = self.cond_bottom_down(self._embed(self.cond_bottom_embed, cond_bottom))  # same
        c = torch.cat([ct, cb], 1)[:, :, 0]                                 # (B, 2Ec, Ht, Wt)
        c = F.elu(self.cond_in(F.elu(c)))                                   # (B, Cm, Ht, Wt)
        tp = self.config.pred_steps
        c = c.unsqueeze(2).expand(-1, -1, tp, -1, -1)                       # (B, Cm, Tp, Ht, Wt)
        coords = coordinate_channels((tp, ht, wt), c.device, c.dtype).expand(b, -1, -1, -1, -1)
        c = self.cond_up(torch.cat([c, coords], 1))                         # (B, Cc, Tp, Ht, Wt)
        return self.cond_res(c)

    def logits_from_cond(self, codes: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """codes (B, Tp, Ht, Wt) long, cond from ``condition`` -> (B, n_codes, Tp, Ht, Wt)."""
        return self.pixelcnn(self._embed(self.embed, codes), cond)

    def forward(self, codes: torch.Tensor, cond_top: torch.Tensor,
                cond_bottom: torch.Tensor) -> torch.Tensor:
        tp = self.config.pred_steps
        if codes.dim() != 4 or codes.shape[1] != tp or codes.shape[2:] != cond_top.shape[2:]:
            raise ValueError(f"codes must be (B, {tp}, Ht, Wt) matching cond_top "
                             f"{tuple(cond_top.shape)}, got {tuple(codes.shape)}")
        return self.logits_from_cond(codes, self.condition(cond_top, cond_bottom))

    # -- the training objective -----------------------------------------------------------------

    def logits_and_targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing on a batch of data/latents items: the logits of the predicted top steps
        (B, n_codes, Tp, Ht, Wt) and their true codes (B, Tp, Ht, Wt); step 0 is given."""
        targets = batch["top"][:, 1:]
        return self(targets, batch["cond_top"], batch["cond_bottom"]), targets

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Bits per predicted code (the same optimum as cross-entropy in nats), and its metrics."""
        bits = bits_per_code(*self.logits_and_targets(batch))
        return bits, {"bits_per_code": bits.detach()}

    @torch.no_grad()
    def sample(self, cond_top: torch.Tensor, cond_bottom: torch.Tensor, temperature: float = 1.0,
               top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Naive sampling: the whole network once per code, Tp*Ht*Wt passes. -> (B, Tp, Ht, Wt).
        The reference a cached sampler must reproduce exactly."""
        b, _, ht, wt = cond_top.shape
        cond = self.condition(cond_top, cond_bottom)
        codes = torch.zeros(b, self.config.pred_steps, ht, wt, dtype=torch.long, device=cond_top.device)
        for t in range(self.config.pred_steps):
            for y in range(ht):
                for x in range(wt):
                    logits = self.logits_from_cond(codes, cond)[:, :, t, y, x]   # (B, n_codes)
                    codes[:, t, y, x] = sample_from_logits(logits, temperature, top_k, generator)
        return codes
