"""Frame metrics shared by training, evaluation and the benchmarks."""
from __future__ import annotations

import math

import torch


def psnr_uint8(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-clip PSNR in dB of uint8 clips (B, ...) against uint8 targets, on the 0-255 scale."""
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    err = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(255.0**2 / err.clamp_min(1e-10))


def psnr_from_mse(mse: float, data_range: float = 2.0) -> float:
    """PSNR in dB from a mean squared error on data spanning `data_range` ([-1, 1] -> 2)."""
    return 10.0 * math.log10(data_range**2 / max(mse, 1e-12))


def codes_in_use(codes: torch.Tensor, n_codes: int) -> float:
    """Fraction of the codebook that appears at least once in `codes`."""
    return torch.bincount(codes.flatten().long(), minlength=n_codes).gt(0).float().mean().item()


def perplexity(codes: torch.Tensor, n_codes: int) -> float:
    """exp(entropy) of the code histogram: n_codes when all codes are equally used, 1 when one is."""
    p = torch.bincount(codes.flatten().long(), minlength=n_codes).double()
    p = p / p.sum().clamp_min(1)
    return math.exp(-(p[p > 0] * p[p > 0].log()).sum().item())


def unigram_bits(train_codes: torch.Tensor, eval_codes: torch.Tensor, n_codes: int) -> float:
    """Bits per code of the unigram (code-frequency) baseline: the train histogram with add-one
    smoothing, evaluated on `eval_codes`. A prior must beat this to have learned any structure."""
    counts = torch.bincount(train_codes.flatten().long(), minlength=n_codes).double() + 1.0
    logp = (counts / counts.sum()).log2()
    return -logp[eval_codes.flatten().long()].mean().item()


def frame_psnr(pred, target) -> torch.Tensor:
    """PSNR per frame (dB, 0-255 scale) of uint8 videos (N, T, H, W, 3) -> (N, T)."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    n, t = pred.shape[:2]
    return psnr_uint8(pred.reshape(n * t, -1), target.reshape(n * t, -1)).reshape(n, t)


def copy_last_frame(clips, given: int = 4):
    """The copy-last-frame baseline: every frame after the given ones repeats the last given frame."""
    clips = torch.as_tensor(clips).clone()
    clips[:, given:] = clips[:, given - 1 : given]
    return clips


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def frame_ssim(pred, target, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM per frame (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data
    range 255, 'valid' filtering, mean over RGB channels) of uint8 videos (N, T, H, W, 3) -> (N, T).
    Frames smaller than the window use a window of their own size."""
    import torch.nn.functional as F

    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(f"pred and target must be (N, T, H, W, 3) of one shape, got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}")
    n, t, h, w, c = pred.shape
    size = min(window, h, w)
    kernel = _gaussian_window(size, sigma).expand(c, 1, size, size)
    x = pred.reshape(n * t, h, w, c).permute(0, 3, 1, 2).double()
    y = target.reshape(n * t, h, w, c).permute(0, 3, 1, 2).double()

    def filt(z):
        return F.conv2d(z, kernel, groups=c)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return ssim.mean(dim=(1, 2, 3)).reshape(n, t).float()


class SampleSetPSNR:
    """PSNR of several samples per clip against one ground truth, over the frames after the
    given ones, accumulated one sample set at a time (memory: one float copy of the clips).

    ``add(pred)`` takes uint8 (N, T, H, W, 3) predictions of the same N clips; ``result()`` gives
      single:   mean PSNR of a sample (over samples, clips and frames): what one draw scores;
      best:     per clip the sample with the best mean PSNR, averaged over clips: the protocol of
                stochastic video prediction papers (SV2P, SVG, SAVP), which sees the ground truth;
      mean:     PSNR of the pixel-wise average of the samples: a point estimate near the
                conditional mean, which PSNR favours (it is blurry where the samples disagree);
    and per-frame curves of ``single`` and ``mean``."""

    def __init__(self, target, given: int = 4):
        self.target, self.given = torch.as_tensor(target), given
        self.sum: torch.Tensor | None = None
        self.per_sample: list[torch.Tensor] = []  # each (N, T - given)

    def add(self, pred) -> None:
        pred = torch.as_tensor(pred)
        self.per_sample.append(frame_psnr(pred, self.target)[:, self.given:])
        self.sum = pred.double() if self.sum is None else self.sum + pred.double()

    def result(self) -> dict:
        if not self.per_sample:
            raise ValueError("SampleSetPSNR.result() before any add()")
        psnr = torch.stack(self.per_sample)                              # (S, N, T - given)
        mean = (self.sum / len(self.per_sample)).round().clamp(0, 255).to(torch.uint8)
        mean_psnr = frame_psnr(mean, self.target)[:, self.given:]        # (N, T - given)
        return {"samples": len(self.per_sample), "single": psnr.mean().item(),
                "best": psnr.mean(2).max(0).values.mean().item(), "mean": mean_psnr.mean().item(),
                "single_per_frame": psnr.mean((0, 1)).tolist(), "mean_per_frame": mean_psnr.mean(0).tolist()}
