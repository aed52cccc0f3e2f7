"""The hierarchical 3D VQ-VAE of "Predicting Video with VQVAE" (VQ-VAE-2, rosinality, in 3D).

::

    x (B,3,T,H,W) in [-1,1]
      -> enc_b: space /4, time /2          -> h_b (B,C,T/2,H/4,W/4)
      -> enc_t: all axes /2                -> h_t (B,C,T/4,H/8,W/8)
      -> quant_conv_t, quantize_t          -> q_t (B,E,T/4,H/8,W/8), top codes
      -> dec_t(q_t) (x2 up), concat h_b    -> quant_conv_b, quantize_b -> q_b (B,E,T/2,H/4,W/4)
      -> dec(concat(upsample_t(q_t), q_b)) -> x_hat (B,3,T,H,W)

Each level has its own EMA codebook (vqvp_core.models.quantizer). The loss is the
reconstruction MSE plus the commitment losses of both levels. The model is fully
convolutional: 16-frame clips give top 4 / bottom 8 time steps, the 4 conditioning frames
encoded on their own give top 1 / bottom 2.

Pure torch: no file, CLI or tracking code here, and no device is assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from vqvp_core.clip import GIVEN_FRAMES as COND_FRAMES  # 4: vqvp_core/clip.py
from vqvp_core.configbase import Bool, CoreConfig, Float, NonNegativeInt, PositiveInt
from vqvp_core.models.blocks3d import Decoder3d, Encoder3d, channels_last_convs
from vqvp_core.models.quantizer import EMAQuantizer, QuantizerStats

__all__ = ["VQVAEConfig", "VQVAE", "VQVAEOutput", "clips_to_input", "output_to_uint8", "reconstruct",
           "COND_FRAMES"]

_BOTTOM_STRIDES = ((2, 2, 2), (1, 2, 2))  # time /2, space /4; time first: halves the cost
_TOP_STRIDES = ((2, 2, 2),)  # all axes /2 again
_T_FACTOR, _S_FACTOR = 4, 8  # total downsampling of the top level: T and H, W must divide


class VQVAEConfig(CoreConfig):
    """Everything that builds a VQVAE; stored in checkpoints (``to_dict`` / ``from_dict``)."""

    in_channels: PositiveInt = 3  # RGB
    # Width of the first (space /2, time /2) encoder layer and the last decoder layer, the
    # two layers at the highest resolution; half of `channels` as in VQ-VAE-2.
    first_channels: PositiveInt = 64
    channels: PositiveInt = 128  # width of every layer at the bottom and top grids
    res_channels: PositiveInt = 64  # bottleneck width inside the residual blocks
    n_res_blocks: NonNegativeInt = 2  # residual blocks per encoder / decoder stack (VQ-VAE-2: 2)
    embed_dim: PositiveInt = 64  # code vector size, both levels (VQ-VAE-2: 64)
    n_codes: PositiveInt = 512  # codes per level (the paper: 512, one codebook per level)
    beta: Annotated[Float, Field(ge=0)] = 0.25  # commitment weight (VQ-VAE, VQ-VAE-2)
    # EMA decay gamma of the codebooks. VQ-VAE-2 uses 0.99 (the `paper` preset does); a short
    # CPU training moves the encoder fast and a codebook averaging over ~100 steps lags it
    # (README, 'The model').
    decay: Annotated[Float, Field(ge=0, lt=1)] = 0.95
    eps: Annotated[Float, Field(gt=0)] = 1e-5  # Laplace smoothing of the EMA cluster sizes
    init_from_data: Bool = True  # codebooks start as random encoder outputs of batch 1
    restart_dead: Bool = True  # codes whose EMA count < dead_threshold jump onto batch vectors
    # A code is dead when it is chosen less than once per step on average (EMA count < 1),
    # the threshold of VideoGPT and Jukebox.
    dead_threshold: Annotated[Float, Field(gt=0)] = 1.0
    # Where restarted codes land: "uniform" over the batch's encoder outputs (VideoGPT), or
    # "error": drawn in proportion to each vector's squared distance to its code (k-means++),
    # so they go to badly coded regions rather than onto the large uniform background.
    restart_sampling: Literal["uniform", "error"] = "error"
    # l2-normalised codes (ViT-VQGAN): encoder outputs and codes on the unit sphere, the nearest
    # code by cosine similarity. Off in the paper (plain Euclidean VQ-VAE-2 codebooks).
    normalize_codes: Bool = False
    # Conv weights in torch.channels_last_3d (oneDNN/cuDNN then run every conv channels-last):
    # faster on CPUs, in fp32 and more so in bf16 (README, 'Benchmarks').
    channels_last: Bool = True
    # Encoders causal in time (front padding only): a code depends on the frames up to the end
    # of its own time block, never later ones. Then the 4 conditioning frames encoded alone give
    # exactly the clip's first codes, and a code the priors are taught from never carries the
    # future they must predict (with centred padding, codes of step t see frames of step t+1).
    causal_encoder: Bool = False
    # The bottom quantizer's input includes the decoded top codes (VQ-VAE-2: the bottom level
    # codes what the top level left out). Off: the bottom codes are a function of the pixels in
    # their own receptive field only, as the bottom prior's conditioning assumes of them.
    bottom_sees_top: Bool = True
    # Bottom dropout, a training-time choice of vqvp, not in the paper: this fraction of the
    # training clips is decoded from the top codes alone (their bottom codes zeroed), so the top
    # level must carry the coarse picture the bottom prior can then follow; at a small size the
    # decoder otherwise ignores the top level (README, 'The demo's recipe'). 0 = off.
    bottom_dropout: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    # the clip the model is made for (the model itself takes any T % 4 == 0, H, W % 8 == 0);
    # in params.yaml these follow ingest.clip_len / ingest.size
    frames: PositiveInt = 16
    size: PositiveInt = 64

    @model_validator(mode="after")
    def _divisible(self) -> "VQVAEConfig":
        if self.frames % _T_FACTOR:
            raise ValueError(f"frames = {self.frames}: expected a multiple of {_T_FACTOR} (time is downsampled by 4)")
        if self.size % _S_FACTOR:
            raise ValueError(f"size = {self.size}: expected a multiple of {_S_FACTOR} (space is downsampled by 8)")
        return self

    @classmethod
    def tiny(cls, **overrides: Any) -> "VQVAEConfig":
        """64x64x16 clips -> bottom codes 8x16x16, top 4x8x8 (T, H, W), at VQ-VAE-2's widths.
        The demo's own, smaller recipe is the `tiny` preset's (vqvp_core/presets/tiny.yaml)."""
        return cls(**{**dict(frames=16, size=64), **overrides})

    @classmethod
    def paper(cls, **overrides: Any) -> "VQVAEConfig":
        """256x256x16 clips -> bottom codes 8x64x64, top 4x32x32 (T, H, W). For GPUs.

        Twice the VQ-VAE-2 widths: Kinetics is far more varied than the synthetic clips and
        the paper does not give its widths."""
        base = dict(first_channels=128, channels=256, res_channels=128, frames=16, size=256,
                    decay=0.99)
        return cls(**{**base, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "VQVAEConfig":
        if name not in ("tiny", "paper"):
            raise ValueError(f"VQVAE preset must be 'tiny' or 'paper', got {name!r}")
        return getattr(cls, name)(**overrides)

    def latent_shapes(self, frames: int | None = None, height: int | None = None,
                      width: int | None = None) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """((Tt, Ht, Wt), (Tb, Hb, Wb)) for a clip of frames x height x width (default: the
        preset's clip)."""
        t = self.frames if frames is None else frames
        h = self.size if height is None else height
        w = h if width is None else width
        if t % _T_FACTOR or h % _S_FACTOR or w % _S_FACTOR:
            raise ValueError(f"clip {t}x{h}x{w} (T x H x W): T must be a multiple of "
                             f"{_T_FACTOR}, H and W of {_S_FACTOR}")
        return (t // 4, h // 8, w // 8), (t // 2, h // 4, w // 4)


@dataclass
class VQVAEOutput:
    recon: torch.Tensor  # (B, 3, T, H, W), same range as the input ([-1, 1] when trained)
    loss: torch.Tensor  # recon_loss + commit_loss
    recon_loss: torch.Tensor  # MSE on [-1, 1] inputs
    commit_loss: torch.Tensor  # beta * (commitment top + commitment bottom)
    top_codes: torch.Tensor  # (B, T/4, H/8, W/8) int64
    bottom_codes: torch.Tensor  # (B, T/2, H/4, W/4) int64
    stats: dict[str, QuantizerStats]  # "top", "bottom"

    def metrics(self) -> dict[str, float]:
        """Flat floats for logging (one host sync): loss terms and per-level codebook stats."""
        out = {"loss": self.loss, "recon_loss": self.recon_loss, "commit_loss": self.commit_loss}
        for level, s in self.stats.items():
            out[f"{level}_perplexity"] = s.perplexity
            out[f"{level}_usage"] = s.usage
            out[f"{level}_restarted"] = s.restarted
        vals = torch.stack([v.detach().float().reshape(()) for v in out.values()]).cpu().tolist()
        return dict(zip(out, vals))


class VQVAE(nn.Module):
    """Two-level 3D VQ-VAE. Input float (B, 3, T, H, W) in [-1, 1], T % 4 == 0, H, W % 8 == 0."""

    def __init__(self, config: VQVAEConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else VQVAEConfig()
        self.config = cfg
        C, E = cfg.channels, cfg.embed_dim
        q_kw = dict(n_codes=cfg.n_codes, dim=E, beta=cfg.beta, decay=cfg.decay, eps=cfg.eps,
                    init_from_data=cfg.init_from_data, restart_dead=cfg.restart_dead,
                    dead_threshold=cfg.dead_threshold, restart_sampling=cfg.restart_sampling,
                    normalize=cfg.normalize_codes)
        self.enc_b = Encoder3d(cfg.in_channels, C, cfg.first_channels, cfg.n_res_blocks,
                               cfg.res_channels, _BOTTOM_STRIDES, cfg.causal_encoder)
        self.enc_t = Encoder3d(C, C, C // 2, cfg.n_res_blocks, cfg.res_channels, _TOP_STRIDES,
                               cfg.causal_encoder)
        self.quant_conv_t = nn.Conv3d(C, E, 1)
        self.quantize_t = EMAQuantizer(**q_kw)
        if cfg.bottom_sees_top:
            self.dec_t = Decoder3d(E, E, C, C // 2, cfg.n_res_blocks, cfg.res_channels, _TOP_STRIDES)
        self.quant_conv_b = nn.Conv3d(E + C if cfg.bottom_sees_top else C, E, 1)
        self.quantize_b = EMAQuantizer(**q_kw)
        self.upsample_t = nn.ConvTranspose3d(E, E, 4, stride=2, padding=1)
        self.dec = Decoder3d(2 * E, cfg.in_channels, C, cfg.first_channels, cfg.n_res_blocks,
                             cfg.res_channels, tuple(reversed(_BOTTOM_STRIDES)))
        if cfg.channels_last:
            channels_last_convs(self)

    # ------------------------------------------------------------------ checks

    def _check_input(self, x: torch.Tensor, what: str = "x") -> None:
        c = self.config.in_channels
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor (B, {c}, T, H, W), got {type(x).__name__}")
        if x.dim() != 5:
            raise ValueError(f"{what} must have 5 dims (B, {c}, T, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{what} must be float in [-1, 1] (see clips_to_input), got {x.dtype}")
        B, C, T, H, W = x.shape
        if C != c:
            raise ValueError(f"{what} dim 1 (channels) must be {c}, got {C} (shape "
                             f"{tuple(x.shape)}; clips (B, T, H, W, 3) go through clips_to_input)")
        if T < _T_FACTOR or T % _T_FACTOR:
            raise ValueError(f"{what} dim 2 (frames T) must be a positive multiple of {_T_FACTOR}, "
                             f"got {T}")
        for name, dim, v in (("height H", 3, H), ("width W", 4, W)):
            if v < _S_FACTOR or v % _S_FACTOR:
                raise ValueError(f"{what} dim {dim} ({name}) must be a positive multiple of "
                                 f"{_S_FACTOR}, got {v}")

    # ------------------------------------------------------------------ parts

    def _encode(self, x: torch.Tensor):
        self._check_input(x)
        h_b = self.enc_b(x)  # (B, C, T/2, H/4, W/4)
        h_t = self.enc_t(h_b)  # (B, C, T/4, H/8, W/8)
        q_t = self.quantize_t(self.quant_conv_t(h_t))  # quantized (B, E, T/4, H/8, W/8)
        if self.config.bottom_sees_top:
            d_t = self.dec_t(q_t.quantized)  # (B, E, T/2, H/4, W/4)
            h_b = torch.cat([d_t, h_b], 1)  # (B, E + C, T/2, H/4, W/4)
        q_b = self.quantize_b(self.quant_conv_b(h_b))  # (B, E, T/2, H/4, W/4)
        return q_t, q_b

    def _decode(self, quant_t: torch.Tensor, quant_b: torch.Tensor) -> torch.Tensor:
        up_t = self.upsample_t(quant_t)  # (B, E, T/4, H/8, W/8) -> (B, E, T/2, H/4, W/4)
        return self.dec(torch.cat([up_t, quant_b], 1))  # (B, 2E, T/2, H/4, W/4) -> (B, 3, T, H, W)

    # ------------------------------------------------------------------ API

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        """x (B, 3, T, H, W) in [-1, 1] -> reconstruction, losses, codes and codebook stats.
        In training mode the codebooks take an EMA step (see EMAQuantizer)."""
        q_t, q_b = self._encode(x)
        quant_b = q_b.quantized
        if self.training and self.config.bottom_dropout > 0:
            keep = torch.rand(x.shape[0], device=x.device) >= self.config.bottom_dropout
            quant_b = quant_b * keep.to(quant_b.dtype)[:, None, None, None, None]   # (B, E, T/2, H/4, W/4)
        recon = self._decode(q_t.quantized, quant_b)
        recon_loss = F.mse_loss(recon.float(), x.float())
        commit = q_t.commit_loss + q_b.commit_loss
        return VQVAEOutput(recon=recon, loss=recon_loss + commit, recon_loss=recon_loss,
                           commit_loss=commit, top_codes=q_t.codes, bottom_codes=q_b.codes,
                           stats={"top": q_t.stats, "bottom": q_b.stats})

    def loss(self, clips: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The training objective on a batch of uint8 clips (B, T, H, W, 3): reconstruction MSE +
        commitment (codebooks by EMA), and its metrics (losses, codebook use, PSNR)."""
        from vqvp_core.metrics import psnr_from_mse

        out = self(clips_to_input(clips))
        metrics = out.metrics()
        metrics["psnr"] = psnr_from_mse(metrics["recon_loss"])
        return out.loss, metrics

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, T, H, W) -> (top codes (B, T/4, H/8, W/8), bottom codes (B, T/2, H/4, W/4)),
        int64. Call in eval mode (in training mode the codebooks would take an EMA step)."""
        q_t, q_b = self._encode(x)
        return q_t.codes, q_b.codes

    def encode_cond(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The 4 conditioning frames (B, 3, 4, H, W), encoded on their own ->
        (top codes (B, 1, H/8, W/8), bottom codes (B, 2, H/4, W/4))."""
        if isinstance(x, torch.Tensor) and x.dim() == 5 and x.shape[2] != COND_FRAMES:
            raise ValueError(f"encode_cond takes the {COND_FRAMES} conditioning frames: x dim 2 "
                             f"(frames T) must be {COND_FRAMES}, got {x.shape[2]} "
                             f"(shape {tuple(x.shape)}); slice x[:, :, :{COND_FRAMES}]")
        return self.encode(x)

    def decode_codes(self, top_codes: torch.Tensor, bottom_codes: torch.Tensor) -> torch.Tensor:
        """(top (B, Tt, Ht, Wt), bottom (B, 2Tt, 2Ht, 2Wt)) int codes -> x_hat (B, 3, 4Tt, 8Ht, 8Wt)."""
        for name, c in (("top_codes", top_codes), ("bottom_codes", bottom_codes)):
            if not isinstance(c, torch.Tensor) or c.dim() != 4:
                raise ValueError(f"{name} must be a (B, T, H, W) integer tensor, got "
                                 f"{tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__}")
        want = (top_codes.shape[0], *(2 * s for s in top_codes.shape[1:]))
        if tuple(bottom_codes.shape) != want:
            raise ValueError(f"bottom_codes shape must be {want} (batch of top_codes, twice its "
                             f"T, H, W {tuple(top_codes.shape[1:])}), got {tuple(bottom_codes.shape)}")
        dev = self.quantize_t.codebook.device
        quant_t = self.quantize_t.lookup(top_codes.to(dev))  # (B, E, Tt, Ht, Wt)
        quant_b = self.quantize_b.lookup(bottom_codes.to(dev))  # (B, E, Tb, Hb, Wb)
        return self._decode(quant_t, quant_b)


# ---------------------------------------------------------------------- conversions


def clips_to_input(clips: np.ndarray | torch.Tensor, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 clips (B, T, H, W, C) -> float (B, C, T, H, W) in [-1, 1], on ``device``.

    The uint8 array moves to the device first (4x less to transfer than floats)."""
    if isinstance(clips, np.ndarray):
        clips = torch.from_numpy(np.ascontiguousarray(clips))
    if not isinstance(clips, torch.Tensor):
        raise TypeError(f"clips must be a numpy array or torch tensor, got {type(clips).__name__}")
    if clips.dtype != torch.uint8:
        raise ValueError(f"clips must be uint8 (B, T, H, W, C), got dtype {clips.dtype}")
    if clips.dim() != 5:
        raise ValueError(f"clips must have 5 dims (B, T, H, W, C), got shape {tuple(clips.shape)}")
    if device is not None:
        clips = clips.to(device, non_blocking=True)
    x = clips.permute(0, 4, 1, 2, 3).to(dtype)  # (B, T, H, W, C) -> (B, C, T, H, W)
    return (x / 127.5 - 1.0).contiguous()


def output_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float (B, C, T, H, W) in [-1, 1] -> uint8 (B, T, H, W, C) (clamped, rounded), same device."""
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        raise ValueError(f"x must be a (B, C, T, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x must be float in [-1, 1], got {x.dtype}")
    y = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return y.permute(0, 2, 3, 4, 1).contiguous()  # (B, C, T, H, W) -> (B, T, H, W, C)


@torch.no_grad()
def reconstruct(model: VQVAE, clips: np.ndarray | torch.Tensor, batch: int = 16) -> np.ndarray:
    """uint8 clips (N, T, H, W, 3) -> their reconstructions, uint8 (N, T, H, W, 3): encoded to codes
    and decoded, ``batch`` clips at a time on the model's device."""
    device = next(model.parameters()).device
    model.eval()
    out = [output_to_uint8(model.decode_codes(*model.encode(clips_to_input(clips[s:s + batch], device)))).cpu().numpy()
           for s in range(0, len(clips), batch)]
    return np.concatenate(out)
