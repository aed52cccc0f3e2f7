"""The I3D video classifier (Inception-v1 inflated to 3D, Kinetics-400) used by FVD.

Two weight files are in common use and both load here, from a local path, ``s3://`` or
``https://`` (fsspec), with their sha256 checked:

- ``i3d_pretrained_400.pt``: a pickled ``state_dict`` of piergiaj/pytorch-i3d's
  ``InceptionI3d(400, in_channels=3)``, the file VideoGPT (``videogpt/fvd/fvd.py``) and TATS
  (``tats/fvd/fvd.py``) load. :class:`InceptionI3d` below has exactly that module tree
  (``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_var``, ..., ``logits.conv3d.bias``),
  so the file loads with ``load_state_dict``. Their FVD features are the network output: the
  400 class logits (before the softmax) averaged over the remaining time steps.
- ``i3d_torchscript.pt``: StyleGAN-V's TorchScript port of the tf.hub I3D used by the original
  FVD code (``src/metrics/frechet_video_distance.py``), called as
  ``detector(x, rescale=..., resize=..., return_features=True)`` on (N, 3, T, H, W); with
  ``return_features=True`` it returns the 400 raw logits before the softmax.

Preprocessing (:func:`preprocess_videos`), the one VideoGPT/TATS apply before their I3D and the
one the TorchScript users (common_metrics_on_video_quality, Open-Sora-Plan) apply before calling
it with ``rescale=False, resize=False``:

1. uint8 (N, T, H, W, 3) -> float32 / 255 in [0, 1];
2. every frame resized with ``torch.nn.functional.interpolate(mode="bilinear",
   align_corners=False)`` (no antialiasing) so that its shorter side is 224 and the other
   ``ceil(side * 224 / shorter)``, then centre-cropped to 224 x 224 (offsets floored);
3. ``(x - 0.5) * 2`` -> [-1, 1]; layout (N, 3, T, 224, 224).

``FeatureExtractor(torchscript_preprocess=True)`` instead hands the TorchScript the raw uint8
(N, 3, T, H, W) with ``rescale=True, resize=True`` -- StyleGAN-V's own call.

The state-dict network needs at least 9 frames: time is halved (rounding up) three times and
the final average pool spans 2 steps.
"""
import hashlib
import io
import logging
import math
import os
import warnings
import zipfile
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator, List, Optional, Tuple, Union

import fsspec
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "I3DWeightsError",
    "InceptionI3d",
    "FeatureExtractor",
    "WeightsInfo",
    "load_i3d",
    "detect_format",
    "preprocess_videos",
    "MIN_FRAMES",
    "RESOLUTION",
]

RESOLUTION = 224
MIN_FRAMES = 9  # ceil(ceil(ceil(T/2)/2)/2) >= 2 for the (2, 7, 7) average pool
PREPROCESSING = ("uint8/255; bilinear (align_corners=False, no antialias) shorter side -> 224, "
                 "centre crop 224x224; (x-0.5)*2 -> [-1, 1]; (N, 3, T, 224, 224)  [VideoGPT/TATS]")


class I3DWeightsError(RuntimeError):
    """The I3D weights cannot be used: missing, unreadable, wrong checksum or wrong contents."""


# ----------------------------------------------------------------------------------------------
# The network (module names and parameter shapes follow piergiaj/pytorch-i3d's InceptionI3d).


def _same_pad(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow 'SAME' padding for one dimension: (before, after); the extra one goes after."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


class Unit3D(nn.Module):
    """Conv3d (no bias unless asked) with 'SAME' zero padding computed per input, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 batch_norm: bool = True, relu: bool = True, bias: bool = False):
        super().__init__()
        self.kt, self.kh, self.kw = (int(k) for k in kernel)
        self.st, self.sh, self.sw = (int(s) for s in stride)
        self.relu = relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, tuple(kernel), tuple(stride), padding=0, bias=bias)
        # eps/momentum as in the converted model; Identity keeps 'bn' keys out of the logits layer
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.001) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0, t1 = _same_pad(x.shape[2], self.kt, self.st)
        h0, h1 = _same_pad(x.shape[3], self.kh, self.sh)
        w0, w1 = _same_pad(x.shape[4], self.kw, self.sw)
        x = self.bn(self.conv3d(F.pad(x, [w0, w1, h0, h1, t0, t1])))
        if self.relu:
            x = F.relu(x)
        return x


class MaxPool3dSame(nn.Module):
    """Max pooling after 'SAME' zero padding (the inputs are ReLU outputs, so zeros never win
    over a real value)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kt, self.kh, self.kw = (int(k) for k in kernel)
        self.st, self.sh, self.sw = (int(s) for s in stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0, t1 = _same_pad(x.shape[2], self.kt, self.st)
        h0, h1 = _same_pad(x.shape[3], self.kh, self.sh)
        w0, w1 = _same_pad(x.shape[4], self.kw, self.sw)
        x = F.pad(x, [w0, w1, h0, h1, t0, t1])
        return F.max_pool3d(x, [self.kt, self.kh, self.kw], [self.st, self.sh, self.sw])


class InceptionModule(nn.Module):
    """Four branches concatenated: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max pool -> 1x1."""

    def __init__(self, in_channels: int, out: List[int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], kernel=(3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# (name, input channels, branch widths) of the Inception blocks, in order.
_MIXED = {
    "Mixed_3b": (192, [64, 96, 128, 16, 32, 32]),
    "Mixed_3c": (256, [128, 128, 192, 32, 96, 64]),
    "Mixed_4b": (480, [192, 96, 208, 16, 48, 64]),
    "Mixed_4c": (512, [160, 112, 224, 24, 64, 64]),
    "Mixed_4d": (512, [128, 128, 256, 24, 64, 64]),
    "Mixed_4e": (512, [112, 144, 288, 32, 64, 64]),
    "Mixed_4f": (528, [256, 160, 320, 32, 128, 128]),
    "Mixed_5b": (832, [256, 160, 320, 32, 128, 128]),
    "Mixed_5c": (832, [384, 192, 384, 48, 128, 128]),
}


class InceptionI3d(nn.Module):
    """Inception-v1 I3D (Carreira & Zisserman 2017) on (N, 3, T, 224, 224) in [-1, 1].

    ``forward`` returns the class logits (N, num_classes) averaged over time, as
    pytorch-i3d's ``InceptionI3d.forward`` in eval mode (its dropout is omitted: inference
    only). ``pooled`` returns the 1024-d average-pooled features, averaged over time.
    Scriptable with ``torch.jit.script``.
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(*_MIXED["Mixed_4b"])
        self.Mixed_4c = InceptionModule(*_MIXED["Mixed_4c"])
        self.Mixed_4d = InceptionModule(*_MIXED["Mixed_4d"])
        self.Mixed_4e = InceptionModule(*_MIXED["Mixed_4e"])
        self.Mixed_4f = InceptionModule(*_MIXED["Mixed_4f"])
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"])
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.logits = Unit3D(1024, num_classes, batch_norm=False, relu=False, bias=True)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, 224, 224) -> the average-pooled map (N, 1024, T', 1, 1)."""
        x = self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))
        x = self.MaxPool3d_3a_3x3(self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x)))
        x = self.MaxPool3d_4a_3x3(self.Mixed_3c(self.Mixed_3b(x)))
        x = self.Mixed_4f(self.Mixed_4e(self.Mixed_4d(self.Mixed_4c(self.Mixed_4b(x)))))
        x = self.Mixed_5c(self.Mixed_5b(self.MaxPool3d_5a_2x2(x)))
        return self.avg_pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.trunk(x)).squeeze(4).squeeze(3).mean(2)

    @torch.jit.export
    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).squeeze(4).squeeze(3).mean(2)


# ----------------------------------------------------------------------------------------------
# Preprocessing


def preprocess_videos(videos: torch.Tensor, resolution: int = RESOLUTION) -> torch.Tensor:
    """uint8 (N, T, H, W, C) -> float32 (N, 3, T, resolution, resolution) in [-1, 1]: the
    VideoGPT/TATS preprocessing (see the module docstring). One channel is repeated to three."""
    if videos.dtype != torch.uint8:
        raise ValueError(f"videos must be uint8 (N, T, H, W, 3), got dtype {videos.dtype}")
    if videos.ndim != 5 or videos.shape[-1] not in (1, 3):
        raise ValueError(f"videos must be (N, T, H, W, 3), got shape {tuple(videos.shape)}")
    n, t, h, w, c = videos.shape
    x = videos.reshape(n * t, h, w, c).permute(0, 3, 1, 2).float().div_(255.0)  # (NT, C, H, W)
    scale = resolution / min(h, w)
    size = (resolution, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), resolution)
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    x = x[:, :, top:top + resolution, left:left + resolution]
    x = (x - 0.5) * 2.0
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.reshape(n, t, 3, resolution, resolution).permute(0, 2, 1, 3, 4).contiguous()


# ----------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights came from and what they are, for the evaluation's protocol record."""
    source: str
    sha256: str
    format: str  # 'state_dict' | 'torchscript'
    size_bytes: int
    sha256_checked: bool


def _normalise_sha(sha256: Optional[str]) -> Optional[str]:
    if sha256 is None or str(sha256).strip() == "":
        return None
    value = str(sha256).strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:"):]
    if len(value) != 64 or any(ch not in "0123456789abcdef" for ch in value):
        raise I3DWeightsError(f"expected sha256 for the I3D weights is not 64 hex digits: {sha256!r}")
    return value


def _read(source: str, storage_options: Optional[dict]) -> Tuple[bytes, str]:
    """The file's bytes and their sha256, read in 1 MiB chunks through fsspec."""
    url = os.path.expanduser(source) if "://" not in source else source
    opts = dict(storage_options or {})
    if url.lower().startswith(("http://", "https://")):
        opts.setdefault("block_size", 0)  # stream: file hosts (Dropbox, OneDrive) may refuse range requests
    digest, buf = hashlib.sha256(), io.BytesIO()
    try:
        with fsspec.open(url, "rb", **opts) as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                buf.write(chunk)
    except FileNotFoundError as exc:
        raise I3DWeightsError(f"I3D weights not found at {source!r} ({exc})") from exc
    except IsADirectoryError as exc:
        raise I3DWeightsError(f"I3D weights source {source!r} is a directory, not a file") from exc
    except Exception as exc:  # permissions, network, credentials, unknown protocol ...
        raise I3DWeightsError(f"cannot read I3D weights from {source!r}: {type(exc).__name__}: {exc}") from exc
    data = buf.getvalue()
    if not data:
        raise I3DWeightsError(f"I3D weights file {source!r} is empty")
    return data, digest.hexdigest()


def detect_format(data: bytes) -> str:
    """'torchscript' for a TorchScript archive (a zip whose folder holds ``code/`` or
    ``constants.pkl``), else 'state_dict' (a ``torch.save`` zip or a legacy pickle)."""
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            return "state_dict"
        # TorchScript: <folder>/code/... and <folder>/constants.pkl; torch.save: <folder>/data.pkl, data/<n>
        parts = [name.split("/") for name in names]
        if any((len(p) >= 3 and p[1] == "code") or p[1:] == ["constants.pkl"] for p in parts):
            return "torchscript"
    return "state_dict"


def _load_state_dict_model(data: bytes, source: str) -> InceptionI3d:
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise I3DWeightsError(f"{source!r} is not a readable PyTorch state dict "
                              f"({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise I3DWeightsError(f"{source!r} does not hold a state dict of tensors (got {type(obj).__name__})")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}
    weight = state.get("logits.conv3d.weight")
    if weight is None or weight.ndim != 5:
        raise I3DWeightsError(f"{source!r} is not an InceptionI3d state dict: no 'logits.conv3d.weight' "
                              f"(keys start {sorted(state)[:5]})")
    model = InceptionI3d(num_classes=int(weight.shape[0]))
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise I3DWeightsError(f"{source!r} does not match InceptionI3d: missing {missing[:8]} "
                              f"({len(missing)}), unexpected {result.unexpected_keys[:8]} "
                              f"({len(result.unexpected_keys)})")
    return model


def load_i3d(source: str, sha256: Optional[str] = None, format: str = "auto",
             device: Union[str, torch.device] = "cpu", *, storage_options: Optional[dict] = None,
             layer: str = "logits", torchscript_preprocess: bool = False) -> "FeatureExtractor":
    """Load I3D weights from ``source`` (a local path, ``s3://...`` or ``https://...``; fsspec
    with ``storage_options``) and return a :class:`FeatureExtractor`.

    ``sha256``: the expected digest of the file; a mismatch raises :class:`I3DWeightsError`
    naming both digests and the source. None skips the check (the digest is still recorded).
    ``format``: 'auto' (a TorchScript archive or a pickled state dict, told apart by the file),
    'state_dict' (pytorch-i3d's ``InceptionI3d``, e.g. ``i3d_pretrained_400.pt``) or
    'torchscript' (StyleGAN-V's ``i3d_torchscript.pt``).
    ``layer``: 'logits' (400-d, the FVD features of every reference) or 'pool' (1024-d, state
    dicts only). ``torchscript_preprocess``: see :class:`FeatureExtractor`.
    """
    if format not in ("auto", "state_dict", "torchscript"):
        raise ValueError(f"format must be 'auto', 'state_dict' or 'torchscript', got {format!r}")
    if not source or not str(source).strip():
        raise I3DWeightsError("no I3D weights source given")
    expected = _normalise_sha(sha256)
    data, actual = _read(str(source), storage_options)
    if expected is not None and actual != expected:
        raise I3DWeightsError(f"sha256 mismatch for I3D weights {source!r}: expected {expected}, got {actual}")
    if expected is None:
        log.warning("I3D weights %s loaded without a sha256 check (sha256 %s)", source, actual)
    detected = detect_format(data)
    fmt = detected if format == "auto" else format
    device = torch.device(device)
    if fmt == "torchscript":
        try:
            with warnings.catch_warnings():  # torch 2.x marks TorchScript deprecated; this file is one
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(io.BytesIO(data), map_location=device)
        except Exception as exc:
            raise I3DWeightsError(f"{source!r} is not a loadable TorchScript archive (looks like {detected}; "
                                  f"{type(exc).__name__}: {exc})") from exc
    else:
        if detected == "torchscript":
            raise I3DWeightsError(f"{source!r} is a TorchScript archive, not a state dict; use format 'torchscript' or 'auto'")
        model = _load_state_dict_model(data, str(source)).to(device)
    info = WeightsInfo(source=str(source), sha256=actual, format=fmt, size_bytes=len(data),
                       sha256_checked=expected is not None)
    return FeatureExtractor(model, info, device=device, layer=layer, torchscript_preprocess=torchscript_preprocess)


# ----------------------------------------------------------------------------------------------
# Features


def _chunks(videos: Any, batch_size: int) -> Iterator[Any]:
    """Slices of at most batch_size videos from an array/tensor (N, T, H, W, C) (a memmap is
    read slice by slice), or from each array of an iterable of such arrays."""
    if hasattr(videos, "shape") and hasattr(videos, "__getitem__") and len(videos.shape) == 5:
        for i in range(0, videos.shape[0], batch_size):
            yield videos[i:i + batch_size]
        return
    for chunk in videos:
        for i in range(0, chunk.shape[0], batch_size):
            yield chunk[i:i + batch_size]


class FeatureExtractor:
    """Videos -> I3D features for FVD, with the reference preprocessing.

    ``torchscript_preprocess=True`` (TorchScript only) skips :func:`preprocess_videos` and calls
    ``detector(uint8 (N, 3, T, H, W), rescale=True, resize=True, return_features=True)``, as
    StyleGAN-V does; the default calls it with ``rescale=False, resize=False`` on the
    preprocessed [-1, 1] input, the same input the state-dict network gets.
    """

    def __init__(self, model: nn.Module, info: WeightsInfo, device: Union[str, torch.device] = "cpu",
                 layer: str = "logits", torchscript_preprocess: bool = False):
        if layer not in ("logits", "pool"):
            raise ValueError(f"layer must be 'logits' or 'pool', got {layer!r}")
        if info.format == "torchscript" and layer != "logits":
            raise ValueError("the TorchScript detector only gives its logits (return_features=True)")
        if torchscript_preprocess and info.format != "torchscript":
            raise ValueError("torchscript_preprocess needs a TorchScript detector")
        self.model = model.eval()
        self.info = info
        self.device = torch.device(device)
        self.layer = layer
        self.torchscript_preprocess = torchscript_preprocess
        self._dim: Optional[int] = None
        if isinstance(model, InceptionI3d):
            self._dim = model.num_classes if layer == "logits" else 1024

    @property
    def format(self) -> str:
        return self.info.format

    @property
    def dim(self) -> Optional[int]:
        """Feature dimension (None for a TorchScript detector until its first call)."""
        return self._dim

    def protocol(self) -> dict:
        """What produced the features, for the evaluation record."""
        if self.torchscript_preprocess:
            prep = "StyleGAN-V: uint8 (N, 3, T, H, W), detector(rescale=True, resize=True)"
        else:
            prep = PREPROCESSING
        return {"weights": asdict(self.info), "layer": self.layer, "feature_dim": self._dim,
                "preprocessing": prep}

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.info.format == "torchscript":
            if self.torchscript_preprocess:
                if batch.dtype != torch.uint8 or batch.ndim != 5:
                    raise ValueError(f"videos must be uint8 (N, T, H, W, 3), got {batch.dtype} {tuple(batch.shape)}")
                x = batch.permute(0, 4, 1, 2, 3).contiguous()
                return self.model(x, rescale=True, resize=True, return_features=True)
            return self.model(preprocess_videos(batch), rescale=False, resize=False, return_features=True)
        if batch.ndim == 5 and batch.shape[1] < MIN_FRAMES:
            raise ValueError(f"the I3D needs at least {MIN_FRAMES} frames per video, got {batch.shape[1]}")
        x = preprocess_videos(batch)
        return self.model(x) if self.layer == "logits" else self.model.pooled(x)

    def features(self, videos: Union[np.ndarray, torch.Tensor, Iterable], batch_size: int = 8,
                 disable: Optional[bool] = False, desc: str = "I3D features",
                 total: Optional[int] = None) -> np.ndarray:
        """uint8 videos (N, T, H, W, 3) -- an array, tensor, memmap, or an iterable of such
        chunks -- -> float64 features (N, D), ``batch_size`` videos at a time (only one batch
        is ever preprocessed in memory). ``disable`` turns the tqdm bar off (None: off when
        not on a terminal)."""
        from tqdm.auto import tqdm

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if total is None and hasattr(videos, "shape") and len(videos.shape) == 5:
            total = int(videos.shape[0])
        out: List[np.ndarray] = []
        with torch.inference_mode(), tqdm(total=total, desc=desc, unit="video", disable=disable) as bar:
            for chunk in _chunks(videos, batch_size):
                if isinstance(chunk, torch.Tensor):
                    batch = chunk.to(self.device)
                else:
                    batch = torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device)
                if batch.shape[0] == 0:
                    continue
                feats = self._forward(batch)
                if feats.ndim != 2 or feats.shape[0] != batch.shape[0]:
                    raise I3DWeightsError(f"I3D from {self.info.source!r} returned shape {tuple(feats.shape)} "
                                          f"for {batch.shape[0]} videos; expected (N, D)")
                out.append(feats.detach().to("cpu", torch.float64).numpy())
                bar.update(batch.shape[0])
        if not out:
            raise ValueError("no videos to compute I3D features of")
        result = np.concatenate(out, axis=0)
        self._dim = int(result.shape[1])
        return result
