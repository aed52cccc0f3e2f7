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


GIVEN_COLOR = (40, 200, 40)      # green border: a given (conditioning) frame
PREDICTED_COLOR = (220, 40, 40)  # red border: a predicted frame


def mark(frames: np.ndarray, given: int, width: int = 1) -> np.ndarray:
    """uint8 (T, H, W, 3) -> a copy with a green border on the first `given` frames, red after."""
    out = np.array(frames, dtype=np.uint8, copy=True)
    for t in range(out.shape[0]):
        color = GIVEN_COLOR if t < given else PREDICTED_COLOR
        out[t, :width], out[t, -width:], out[t, :, :width], out[t, :, -width:] = color, color, color, color
    return out


def side_by_side(*panels: np.ndarray, gap: int = 2) -> np.ndarray:
    """Panels of uint8 (T, H, W, 3) with the same T and H -> one (T, H, sum W + gaps, 3) video."""
    if len({p.shape[:2] for p in panels}) != 1:
        raise ValueError(f"panels must share T and H, got shapes {[p.shape for p in panels]}")
    t, h = panels[0].shape[:2]
    spacer = np.full((t, h, gap, 3), 255, dtype=np.uint8)
    parts = [p for panel in panels for p in (panel, spacer)][:-1]
    return np.concatenate(parts, axis=2)


def hold(frames: np.ndarray, length: int) -> np.ndarray:
    """Pad a short video to `length` frames by repeating its last frame."""
    if frames.shape[0] >= length:
        return frames[:length]
    return np.concatenate([frames, np.repeat(frames[-1:], length - frames.shape[0], axis=0)])
