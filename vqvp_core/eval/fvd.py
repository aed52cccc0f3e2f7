"""Fréchet Video Distance (Unterthiner et al. 2018) with the paper's protocol (section 5.2).

- :func:`stats`: mean and unbiased covariance (``np.cov``, ddof=1) of (N, D) features, float64.
- :func:`frechet_distance`: ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` in float64 with
  ``scipy.linalg.sqrtm``, as pytorch-fid / StyleGAN-V compute it: if the square root is not
  finite, retry with ``eps`` added to both diagonals; imaginary parts (numerical noise) are
  dropped. If the result is still unusable (a large imaginary part, or a root that does not
  square back to the product -- near-singular covariances, e.g. fewer samples than feature
  dimensions), the trace is computed instead from the symmetric form
  ``tr((S1^(1/2) S2 S1^(1/2))^(1/2))`` by eigendecompositions, exact for PSD matrices.
- :func:`fvd_kfold`: the paper's "2-fold cross-validation": each set shuffled with ``seed``
  and split into ``k`` folds (``np.array_split``); FVD of fold i of A against fold i of B; the
  mean and the spread (``np.std``, ddof=0) over folds. When both sets have the same size they
  are taken to be paired (sample i and reference i share conditioning frames, as for FVD and
  FVD*) and share one permutation, so paired videos land in the same fold.
- :func:`resize_videos`: uint8 videos to ``size`` x ``size`` for the 64x64 (downscaled)
  protocol: bilinear with antialiasing (``F.interpolate(mode="bilinear", antialias=True,
  align_corners=False)``, PIL's BILINEAR filter), or 'area' (box averaging); rounded to
  nearest and clamped back to uint8. The I3D preprocessing then upsamples to 224.
- :class:`FVDUnavailable`: the reason FVD cannot be computed (no weights configured); callers
  report the reason, never a number from an untrained network.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

__all__ = [
    "stats",
    "frechet_distance",
    "fvd",
    "fvd_kfold",
    "resize_videos",
    "compute_fvd",
    "FVDResult",
    "FVDUnavailable",
    "NO_WEIGHTS_REASON",
    "unavailable_reason",
    "require_weights",
]

NO_WEIGHTS_REASON = ("no I3D weights configured ({key}); FVD needs the Kinetics-400 I3D "
                     "(i3d_pretrained_400.pt or StyleGAN-V's i3d_torchscript.pt) with its sha256 -- see README")


# ----------------------------------------------------------------------------------------------
# Gaussian statistics and the Fréchet distance


def stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> (mu (D,), sigma (D, D)) in float64; sigma unbiased (ddof=1), N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinity")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_symmetric(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)) for PSD S1, S2."""
    r = _psd_sqrt(sigma1)
    m = r @ sigma2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def _trace_sqrt_scipy(a: np.ndarray) -> Optional[float]:
    """tr(sqrtm(a)), or None when scipy's root is not finite, has a real imaginary part, or
    does not square back to ``a``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = scipy.linalg.sqrtm(a)
    root = np.asarray(root)
    if not np.isfinite(root).all():
        return None
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):  # pytorch-fid's tolerance
            return None
        root = root.real
    err = np.linalg.norm(root @ root - a) / max(np.linalg.norm(a), 1e-300)
    if err > 1e-5:
        return None
    return float(np.trace(root))


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), float64 (module docstring)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    for name, arr in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinity")
    diff = mu1 - mu2
    tr_covmean = _trace_sqrt_scipy(sigma1 @ sigma2)
    if tr_covmean is None:
        offset = np.eye(d) * eps
        tr_covmean = _trace_sqrt_scipy((sigma1 + offset) @ (sigma2 + offset))
    if tr_covmean is None:
        tr_covmean = _trace_sqrt_symmetric(sigma1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fvd(feats_a: Any, feats_b: Any) -> float:
    """FVD between two sets of I3D features (N_a, D) and (N_b, D)."""
    mu_a, sigma_a = stats(feats_a)
    mu_b, sigma_b = stats(feats_b)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


def fvd_kfold(feats_a: Any, feats_b: Any, k: int = 2, seed: int = 0, paired: Optional[bool] = None) -> dict:
    """The paper's k-fold FVD: dict(mean, std, folds, n_a, n_b, k, seed, paired, fold_sizes).

    ``paired`` None: paired when both sets have the same size (one shared permutation).
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {a.shape} and {b.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_a, n_b = a.shape[0], b.shape[0]
    if min(n_a, n_b) < 2 * k:
        raise ValueError(f"{k}-fold FVD needs at least {2 * k} videos per set (2 per fold), got {n_a} and {n_b}")
    if paired is None:
        paired = n_a == n_b
    if paired and n_a != n_b:
        raise ValueError(f"paired folds need sets of the same size, got {n_a} and {n_b}")
    rng = np.random.default_rng(seed)
    perm_a = rng.permutation(n_a)
    perm_b = perm_a if paired else rng.permutation(n_b)
    folds_a, folds_b = np.array_split(perm_a, k), np.array_split(perm_b, k)
    folds = [fvd(a[ia], b[ib]) for ia, ib in zip(folds_a, folds_b)]
    return {"mean": float(np.mean(folds)), "std": float(np.std(folds)), "folds": folds,
            "n_a": int(n_a), "n_b": int(n_b), "k": int(k), "seed": int(seed), "paired": bool(paired),
            "fold_sizes": [[len(ia), len(ib)] for ia, ib in zip(folds_a, folds_b)]}


# ----------------------------------------------------------------------------------------------
# Resizing for the downscaled protocol


def resize_videos(videos: Any, size: int | tuple[int, int], mode: str = "bilinear", chunk: int = 64) -> np.ndarray:
    """uint8 (N, T, H, W, C) -> uint8 (N, T, h, w, C), (h, w) = size (an int: square).

    'bilinear': antialiased bilinear (PIL's BILINEAR triangle filter widened by the scale when
    shrinking; ``align_corners=False``); 'area': box averaging (``F.interpolate(mode="area")``,
    exact for integer factors such as 256 -> 64). Computed in float32 on [0, 255], rounded to
    nearest, clamped. Returns a numpy array; processes ``chunk`` videos at a time.
    """
    if mode not in ("bilinear", "area"):
        raise ValueError(f"mode must be 'bilinear' or 'area', got {mode!r}")
    h_out, w_out = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h_out < 1 or w_out < 1:
        raise ValueError(f"size must be positive, got {size}")
    v = videos.numpy() if isinstance(videos, torch.Tensor) else np.asarray(videos)
    if v.dtype != np.uint8 or v.ndim != 5:
        raise ValueError(f"videos must be uint8 (N, T, H, W, C), got {v.dtype} {v.shape}")
    n, t, h, w, c = v.shape
    if (h, w) == (h_out, w_out):
        return v.copy()
    out = np.empty((n, t, h_out, w_out, c), np.uint8)
    for i in range(0, n, chunk):
        x = torch.from_numpy(np.ascontiguousarray(v[i:i + chunk]))
        m = x.shape[0]
        x = x.reshape(m * t, h, w, c).permute(0, 3, 1, 2).float()
        if mode == "bilinear":
            y = F.interpolate(x, size=(h_out, w_out), mode="bilinear", align_corners=False, antialias=True)
        else:
            y = F.interpolate(x, size=(h_out, w_out), mode="area")
        y = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        out[i:i + m] = y.reshape(m, t, h_out, w_out, c).numpy()
    return out


def _resized_chunks(videos: Any, size: Optional[int], chunk: int) -> Iterator[np.ndarray]:
    for i in range(0, len(videos), chunk):
        part = videos[i:i + chunk]
        yield part if size is None else resize_videos(part, size)


# ----------------------------------------------------------------------------------------------
# A full evaluation with its protocol record


@dataclass
class FVDResult:
    """One FVD measurement and how it was made (for metrics files and MLflow params)."""
    fvd: float                     # mean over folds
    std: float                     # spread over folds (np.std, ddof=0)
    folds: list
    n_a: int
    n_b: int
    k: int
    seed: int
    paired: bool
    resolution: Optional[int]      # frames resized to this before I3D (None: as given)
    resize_mode: Optional[str]
    frames: int
    feature_dim: int
    weights: dict = field(default_factory=dict)    # source, sha256, format, size_bytes, sha256_checked
    preprocessing: str = ""
    covariance: str = "unbiased (ddof=1); float64 Fréchet distance (scipy.linalg.sqrtm)"

    def to_dict(self) -> dict:
        return asdict(self)


def compute_fvd(extractor, videos_a: Any, videos_b: Any, *, resolution: Optional[int] = None,
                k: int = 2, seed: int = 0, paired: Optional[bool] = None, batch_size: int = 8,
                disable: Optional[bool] = False) -> FVDResult:
    """FVD between two sets of uint8 videos (N, T, H, W, 3) with ``extractor``
    (:class:`~vqvp_core.eval.i3d.FeatureExtractor`): frames first resized to ``resolution``
    (the paper's 64x64 protocol; None keeps them), then I3D features and :func:`fvd_kfold`.
    FVD* is the same call with the VQ-VAE reconstructions as ``videos_b``."""
    for name, v in (("videos_a", videos_a), ("videos_b", videos_b)):
        if len(getattr(v, "shape", ())) != 5:
            raise ValueError(f"{name} must be uint8 (N, T, H, W, 3)")
    chunk = max(batch_size, 1)
    feats = [extractor.features(_resized_chunks(v, resolution, chunk), batch_size=batch_size, disable=disable,
                                desc=f"I3D features ({name})", total=int(v.shape[0]))
             for name, v in (("a", videos_a), ("b", videos_b))]
    res = fvd_kfold(feats[0], feats[1], k=k, seed=seed, paired=paired)
    proto = extractor.protocol()
    return FVDResult(fvd=res["mean"], std=res["std"], folds=res["folds"], n_a=res["n_a"], n_b=res["n_b"],
                     k=res["k"], seed=res["seed"], paired=res["paired"], resolution=resolution,
                     resize_mode=None if resolution is None else "bilinear-antialias",
                     frames=int(videos_a.shape[1]), feature_dim=int(feats[0].shape[1]),
                     weights=proto["weights"], preprocessing=proto["preprocessing"])


# ----------------------------------------------------------------------------------------------
# When FVD cannot be computed


class FVDUnavailable(RuntimeError):
    """FVD cannot be computed here; ``reason`` says why (for logs and metrics files)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

    @classmethod
    def no_weights(cls, key: str = "evaluate.i3d.path") -> "FVDUnavailable":
        return cls(NO_WEIGHTS_REASON.format(key=key))


def unavailable_reason(i3d_path: Optional[str], key: str = "evaluate.i3d.path") -> Optional[str]:
    """The reason string when no I3D weights are configured, else None."""
    if i3d_path is None or not str(i3d_path).strip():
        return NO_WEIGHTS_REASON.format(key=key)
    return None


def require_weights(i3d_path: Optional[str], key: str = "evaluate.i3d.path") -> str:
    """``i3d_path`` if configured, else raise :class:`FVDUnavailable` with the reason."""
    reason = unavailable_reason(i3d_path, key)
    if reason is not None:
        raise FVDUnavailable(reason)
    return str(i3d_path)
