"""Pictures people would rather look at than numbers: contact sheets of clips."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def contact_sheet(clips: np.ndarray, frames: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 clips (N, T, H, W, 3) -> one uint8 image (N rows of T frames each), padded in grey."""
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips must be (N, T, H, W, 3), got shape {clips.shape}")
    n, t, h, w, _ = clips.shape
    t = min(t, frames) if frames else t
    sheet = np.full((n * (h + pad) + pad, t * (w + pad) + pad, 3), 128, dtype=np.uint8)
    for i in range(n):
        for j in range(t):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            sheet[y:y + h, x:x + w] = clips[i, j]
    return sheet


def save_png(image: np.ndarray, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    plt.imsave(str(path), np.asarray(image, dtype=np.uint8))
