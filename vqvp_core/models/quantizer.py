"""EMA vector quantizer (VQ-VAE with exponential-moving-average codebooks).

The codebook is learned by exponential moving averages, as in the paper's eq. 3 (and
VQ-VAE-2 / rosinality), not by gradients::

    N_i := gamma * N_i + (1 - gamma) * n_i              # cluster sizes (EMA of code counts)
    m_i := gamma * m_i + (1 - gamma) * sum_j z_ij       # cluster sums (EMA of encoder outputs)
    e_i := m_i / N~_i,   N~_i = (N_i + eps) / (sum N + K eps) * sum N    # Laplace smoothing

The encoder is pulled towards its code by the commitment loss ``beta * ||z - sg[e]||^2`` and
gradients pass the bottleneck with the straight-through estimator ``z + sg[e - z]``.

What users of VideoGPT / TATS / Jukebox expect on top of that, all optional:

- ``init_from_data``: the first training batch initialises the codebook with randomly chosen
  encoder outputs (no code starts out of the data's range, so none is dead from step 0).
- ``restart_dead``: a code whose EMA count ``N_i`` fell below ``dead_threshold`` is moved onto
  a random encoder output of the current batch (its EMA state reset to that vector with count
  ``dead_threshold``; it survives if it then attracts at least that many vectors per step).
  ``restart_sampling="error"`` (default) draws those outputs in proportion to their squared
  distance to their code, as k-means++ seeds: restarted codes go where the codebook fits the
  data worst. Uniform draws put most of them onto already well-coded vectors, where they die
  again at once: on the tiny preset the top level then used 23% of its codes on held-out
  clips, against 98% with error-weighted draws (same PSNR).
- ``normalize``: l2-normalised codes (ViT-VQGAN, Yu et al. 2022): the encoder output and every
  code are unit vectors, so the nearest code is the one of highest cosine similarity and the
  EMA means are projected back onto the sphere after each update. Feature magnitude no longer
  picks the code: a direction is one code whatever its length.

Under ``torch.distributed`` (when initialised) the per-batch counts and sums are all-reduced
before the EMA, and the random vectors for init/restarts are broadcast from rank 0, so every
rank holds the same codebook, equal to a single process's update on the concatenated batch
(restarts aside, which draw from rank 0's batch). In a single process this is a no-op.

All state lives in buffers, so ``state_dict()`` carries the codebook and its EMA statistics.
Distances are computed in fp32, even under autocast.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["EMAQuantizer", "QuantizerOutput", "QuantizerStats"]

_ARGMIN_CHUNK = 65536  # rows of the (N, K) distance matrix computed at once: bounds memory
_ARGMIN_CHUNK_CPU = 4096  # on CPU a (4096, 512) fp32 block stays in cache: 2x faster


@dataclass
class QuantizerStats:
    """Per-batch codebook statistics (detached 0-d tensors: ``.item()`` them when logging).

    perplexity: exp(entropy) of the batch's code histogram, in [1, n_codes]; n_codes when all
        codes are used equally.
    usage: fraction of the codebook used by at least one vector of the batch, in (0, 1].
    restarted: number of dead codes restarted in this step (0 in eval mode).
    """

    perplexity: torch.Tensor
    usage: torch.Tensor
    restarted: torch.Tensor


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, C, T, H, W), straight-through: values of e, gradient to z
    codes: torch.Tensor  # (B, T, H, W) int64
    commit_loss: torch.Tensor  # 0-d: beta * mean((z - sg[e])^2)
    stats: QuantizerStats


@contextlib.contextmanager
def _full_fp32(device_type: str):
    """No autocast, and no TF32 matmuls on CUDA (a trainer may have allowed them globally)."""
    with torch.autocast(device_type=device_type, enabled=False):
        if device_type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
            torch.backends.cuda.matmul.allow_tf32 = False
            try:
                yield
            finally:
                torch.backends.cuda.matmul.allow_tf32 = True
        else:
            yield


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class EMAQuantizer(nn.Module):
    """Nearest-neighbour quantizer of ``dim``-channel feature maps onto ``n_codes`` codes.

    forward(z: (B, C=dim, *spatial)) -> QuantizerOutput. Works for any number of spatial axes
    (video: (B, C, T, H, W) -> codes (B, T, H, W)).
    """

    def __init__(
        self,
        n_codes: int = 512,
        dim: int = 64,
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        init_from_data: bool = True,
        restart_dead: bool = True,
        dead_threshold: float = 1.0,
        restart_sampling: str = "error",
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if n_codes < 1:
            raise ValueError(f"n_codes must be >= 1, got {n_codes}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if restart_sampling not in ("uniform", "error"):
            raise ValueError(f"restart_sampling must be 'uniform' or 'error', got {restart_sampling!r}")
        if restart_dead and dead_threshold <= 0:
            raise ValueError(f"dead_threshold must be > 0 when restart_dead is on, got {dead_threshold}")
        self.n_codes = n_codes
        self.dim = dim
        self.beta = beta
        self.decay = decay
        self.eps = eps
        self.init_from_data = init_from_data
        self.restart_dead = restart_dead
        self.dead_threshold = dead_threshold
        self.restart_sampling = restart_sampling
        self.normalize = normalize

        embed = torch.randn(n_codes, dim)
        if normalize:
            embed = F.normalize(embed, dim=1)
        self.register_buffer("codebook", embed)  # (K, D): e
        self.register_buffer("cluster_size", torch.ones(n_codes))  # (K,): N
        self.register_buffer("embed_sum", embed.clone())  # (K, D): m (so that e = m / N)
        # 0-d flag, a buffer so that a loaded checkpoint is never re-initialised from data.
        self.register_buffer("initialized", torch.tensor(not init_from_data))
        self._init_cache = not init_from_data

    def extra_repr(self) -> str:
        return (f"n_codes={self.n_codes}, dim={self.dim}, beta={self.beta}, decay={self.decay}, "
                f"init_from_data={self.init_from_data}, restart_dead={self.restart_dead}, "
                f"dead_threshold={self.dead_threshold}, restart_sampling={self.restart_sampling}, "
                f"normalize={self.normalize}")

    # ------------------------------------------------------------------ helpers

    def _check(self, z: torch.Tensor) -> None:
        if z.dim() < 3:
            raise ValueError(f"quantizer input must be (B, C, *spatial) with C={self.dim}, "
                             f"got shape {tuple(z.shape)}")
        if z.shape[1] != self.dim:
            raise ValueError(f"quantizer input dim 1 (channels) must be {self.dim}, "
                             f"got {z.shape[1]} (shape {tuple(z.shape)})")
        if not z.is_floating_point():
            raise ValueError(f"quantizer input must be a float tensor, got {z.dtype}")

    @torch.no_grad()
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``flat`` (N, D) fp32 -> (N,) int64.

        argmin_k ||f - e_k||^2 = argmax_k (f . e_k - ||e_k||^2 / 2): one matmul of [f, 1] with
        [e, -||e||^2 / 2] per chunk of rows (no bias pass; on CPU the chunk stays in cache)."""
        flat = flat.float()
        e = self.codebook.float()
        e_aug = torch.cat([e, -0.5 * e.pow(2).sum(1, keepdim=True)], 1).t()  # (D + 1, K)
        f_aug = torch.cat([flat, flat.new_ones(flat.shape[0], 1)], 1)  # (N, D + 1)
        chunk = _ARGMIN_CHUNK_CPU if flat.device.type == "cpu" else _ARGMIN_CHUNK
        out = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
        with _full_fp32(flat.device.type):
            for s in range(0, flat.shape[0], chunk):
                out[s:s + chunk] = (f_aug[s:s + chunk] @ e_aug).argmax(1)  # (n, K) -> (n,)
        return out

    @torch.no_grad()
    def _random_rows(self, flat: torch.Tensor, n: int, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` rows drawn at random from ``flat`` (N, D), identical on all ranks (rank 0's).

        Uniformly, or with probability proportional to ``weights`` (N,) >= 0. Without
        replacement when the batch holds enough vectors; otherwise with replacement, plus a
        little noise so that repeated vectors give distinct codes."""
        N = flat.shape[0]
        if weights is not None:
            # + a floor so that a batch of perfectly quantized vectors still draws its n rows
            w = weights.float() + weights.float().mean().clamp_min(1e-12) * 1e-3
            idx = torch.multinomial(w, n, replacement=N < n)
            rows = flat[idx].clone()
            if N < n:
                rows = rows + torch.randn_like(rows) * rows.std().clamp_min(1e-3) * 0.01
        elif N >= n:
            idx = torch.randperm(N, device=flat.device)[:n]
            rows = flat[idx].clone()
        else:
            idx = torch.randint(0, N, (n,), device=flat.device)
            rows = flat[idx]
            std = rows.std().clamp_min(1e-3) * 0.01
            rows = rows + torch.randn_like(rows) * std
        if _distributed():
            dist.broadcast(rows, src=0)
        return rows

    @torch.no_grad()
    def _init_codebook(self, flat: torch.Tensor) -> None:
        rows = self._random_rows(flat, self.n_codes)
        self.codebook.copy_(rows)
        self.embed_sum.copy_(rows)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 3 on this (all-reduced) batch; returns (counts (K,), number of restarted codes)."""
        counts = torch.bincount(codes, minlength=self.n_codes).to(flat.dtype)  # n_i
        sums = torch.zeros(self.n_codes, self.dim, dtype=flat.dtype, device=flat.device)
        sums.index_add_(0, codes, flat)  # sum_j z_ij
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        g = self.decay
        self.cluster_size.mul_(g).add_(counts, alpha=1 - g)
        self.embed_sum.mul_(g).add_(sums, alpha=1 - g)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.n_codes * self.eps) * n
        means = self.embed_sum / smoothed.unsqueeze(1)
        self.codebook.copy_(F.normalize(means, dim=1) if self.normalize else means)

        restarted = torch.zeros((), dtype=torch.long, device=flat.device)
        if self.restart_dead:
            dead = self.cluster_size < self.dead_threshold  # (K,), identical on all ranks
            weights = None
            if self.restart_sampling == "error":
                # k-means++-style: dead codes land where the codebook fits the data worst (the
                # objects, not the large, already well-coded background)
                weights = (flat - self.codebook[codes]).pow(2).sum(1)  # (N,) after this update
            rows = self._random_rows(flat, self.n_codes, weights)  # drawn every step: no host sync
            # the j-th dead code takes the j-th draw (weighted draws come best-first)
            rows = rows[(dead.long().cumsum(0) - 1).clamp_min(0)]
            d = dead.unsqueeze(1)
            self.codebook.copy_(torch.where(d, rows, self.codebook))
            self.embed_sum.copy_(torch.where(d, rows * self.dead_threshold, self.embed_sum))
            self.cluster_size.copy_(torch.where(dead, torch.full_like(self.cluster_size,
                                                                      self.dead_threshold),
                                                self.cluster_size))
            restarted = dead.sum()
        return counts, restarted

    # ------------------------------------------------------------------ API

    def _needs_init(self) -> bool:
        # a Python-side cache of the `initialized` buffer: one host sync, not one per step
        if not self._init_cache:
            self._init_cache = bool(self.initialized)
        return not self._init_cache

    def _load_from_state_dict(self, *args, **kwargs):
        self._init_cache = False  # the loaded buffer decides
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize z (B, C, *S). In training mode also updates the codebook (eq. 3), after
        picking the codes: the returned vectors are those of the codebook that chose them."""
        self._check(z)
        in_dtype = z.dtype
        spatial = (z.shape[0], *z.shape[2:])  # (B, *S)
        with _full_fp32(z.device.type):
            z32 = F.normalize(z.float(), dim=1) if self.normalize else z.float()  # (B, C, *S)
            # (B, C, *S) -> (B, *S, C) -> (N, C): one row per position
            flat = z32.detach().movedim(1, -1).reshape(-1, self.dim)
            if self.training and self.init_from_data and self._needs_init():
                self._init_codebook(flat)
                self._init_cache = True
            codes = self.nearest(flat)  # (N,)
            # (N,) -> (B, *S, C) -> (B, C, *S)
            q = F.embedding(codes, self.codebook).view(*spatial, self.dim).movedim(-1, 1)
            if self.training:
                counts, restarted = self._ema_update(flat, codes)
            else:
                counts = torch.bincount(codes, minlength=self.n_codes).float()
                restarted = torch.zeros((), dtype=torch.long, device=z.device)
            commit = self.beta * F.mse_loss(z32, q)
            quantized = z32 + (q - z32).detach()  # straight-through estimator
        probs = counts / counts.sum().clamp_min(1)
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
        stats = QuantizerStats(perplexity=entropy.exp(), usage=(counts > 0).float().mean(),
                               restarted=restarted)
        if in_dtype in (torch.float16, torch.bfloat16):
            quantized = quantized.to(in_dtype)
        return QuantizerOutput(quantized=quantized, codes=codes.view(spatial),
                               commit_loss=commit, stats=stats)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, *S) int -> code vectors (B, C, *S) fp32."""
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        if codes.dim() < 2:
            raise ValueError(f"codes must be (B, *spatial), got shape {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.n_codes):
            raise ValueError(f"codes must lie in [0, {self.n_codes}), got range "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        # (B, *S) -> (B, *S, C) -> (B, C, *S)
        return F.embedding(codes.long(), self.codebook).movedim(-1, 1).contiguous()

    @torch.no_grad()
    def merge(self, k: int, iters: int = 50, seed: int = 0) -> torch.Tensor:
        """Merge the codebook into ``k`` clusters after training; returns each code's cluster (K,).

        A weighted k-means (k-means++ start, Lloyd steps) of the code vectors, each weighted by
        its EMA usage (``cluster_size``); every code's vector becomes its cluster's centre. Codes of
        one cluster are then exact duplicates, and ``nearest`` picks the lowest index among them:
        each cluster has one canonical code. What it is for: a trained codebook spends many codes
        on nearly the same vector (on the demo, 278 codes on pure-black cells), so the code of a
        static cell flickers from slice to slice, and a prior must learn that noise."""
        if not 1 <= k <= self.n_codes:
            raise ValueError(f"merge: k must be in [1, n_codes={self.n_codes}], got {k}")
        e = self.codebook.float()
        w = self.cluster_size.float().clamp_min(0) + 1e-6
        g = torch.Generator(device="cpu").manual_seed(seed)
        centres = e[torch.multinomial(w.cpu(), 1, generator=g).to(e.device)]
        for _ in range(1, k):  # k-means++: the next centre far from the chosen ones, by weight
            d = torch.cdist(e, centres).min(1).values.pow(2) * w
            if float(d.sum()) <= 0:
                d = w  # fewer distinct vectors than k: the rest duplicate them
            centres = torch.cat([centres, e[torch.multinomial(d.cpu(), 1, generator=g).to(e.device)]])
        for _ in range(iters):
            labels = torch.cdist(e, centres).argmin(1)  # (K,)
            mass = torch.zeros(k, device=e.device).index_add_(0, labels, w)
            sums = torch.zeros_like(centres).index_add_(0, labels, e * w[:, None])
            new = torch.where(mass[:, None] > 0, sums / mass.clamp_min(1e-12)[:, None], centres)
            if torch.equal(new, centres):
                break
            centres = new
        labels = torch.cdist(e, centres).argmin(1)
        merged = F.normalize(centres, dim=1) if self.normalize else centres
        self.codebook.copy_(merged[labels].to(self.codebook.dtype))
        self.embed_sum.copy_(self.codebook * self.cluster_size[:, None])
        return labels
