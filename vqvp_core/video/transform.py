"""Per-frame image transforms used by :mod:`vqvp_core.video.io`.

- :func:`frame_to_square_rgb`: one decoded ``av.VideoFrame`` -> uint8 (size, size, 3) RGB:
  short side scaled to ``size`` by libswscale (through PyAV's ``VideoReformatter``), then a
  centre crop, then the display orientation applied.
- :func:`display_orientation` / :func:`apply_orientation`: the display matrix a container
  stores (phones record landscape and tag the track "rotate 90") turned into the lossless
  numpy rotation / mirroring that shows the frame upright, with exactly the decisions of the
  ``ffmpeg`` command line's autorotate.

Resizing choice: libswscale with ``AREA`` (box averaging: anti-aliased, no ringing) when the
short side shrinks, ``BICUBIC`` when it grows, and ``ACCURATE_RND | BITEXACT`` so the result
is the same on every CPU (no SIMD-dependent rounding); single-threaded. The YUV -> RGB
conversion happens in the same swscale call, using the colour space and range the decoder
tagged on the frame (BT.601 when untagged, as FFmpeg does). Scaling before cropping means
the scaler only ever reads the pixels it needs once; the crop offset is rounded to whole
output pixels, i.e. the crop is centred within half an output pixel.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "Orientation",
    "display_orientation",
    "apply_orientation",
    "scaled_size",
    "center_crop",
    "frame_to_square_rgb",
    "shrink_to_square",
]

# (k, hflip, vflip): k quarter turns counter-clockwise, then the mirrors; see apply_orientation.
Orientation = tuple
IDENTITY: Orientation = (0, False, False)


def display_orientation(rotation: float, matrix: Sequence[int] | None) -> Orientation:
    """The lossless transform that shows a frame upright: ``(k, hflip, vflip)``.

    ``rotation`` is ``av_display_rotation_get`` of the display matrix (counter-clockwise
    degrees, PyAV's ``VideoFrame.rotation``); ``matrix`` its 9 raw int32 values (for the
    mirror bits), or None. Applied as: rotate ``k`` quarter turns counter-clockwise
    (``np.rot90(img, k)``), then mirror left-right if ``hflip``, then top-bottom if ``vflip``.

    Mirrors fftools' autorotate (ffmpeg_filter.c): ``theta = -round(rotation) mod 360``;
    90 -> ``transpose=clock`` (or ``cclock_flip`` when m[3] > 0), 180 -> hflip if m[0] < 0
    and vflip if m[4] < 0, 270 -> ``transpose=cclock`` (or ``clock_flip`` when m[3] < 0),
    0 -> vflip if m[4] < 0. Other angles are rounded to the nearest quarter turn, with a
    warning (ffmpeg would rotate by the exact angle, filling the corners).
    """
    theta = -round(float(rotation))
    theta -= 360 * np.floor(theta / 360 + 0.9 / 360)
    m = list(matrix) if matrix is not None and len(matrix) >= 5 else None
    quarter = int(round(theta / 90.0)) % 4
    if abs(theta - 90 * round(theta / 90.0)) >= 1.0:
        log.warning("display rotation of %.1f degrees is not a quarter turn; rounding to %d",
                    -theta, -90 * quarter)
    if quarter == 1:  # 90 clockwise
        if m is not None and m[3] > 0:  # transpose=cclock_flip == rot90 ccw then vflip
            return (1, False, True)
        return (-1 % 4, False, False)  # transpose=clock
    if quarter == 2:
        if m is None:
            return (2, False, False)
        return (0, m[0] < 0, m[4] < 0)
    if quarter == 3:  # 270 clockwise == 90 counter-clockwise
        if m is not None and m[3] < 0:  # transpose=clock_flip == rot90 cw then vflip
            return (3, False, True)
        return (1, False, False)  # transpose=cclock
    if m is not None and m[4] < 0:
        return (0, False, True)
    return IDENTITY


def apply_orientation(img: np.ndarray, orientation: Orientation) -> np.ndarray:
    """Apply ``(k, hflip, vflip)`` from :func:`display_orientation` to an (H, W, C) image."""
    k, hflip, vflip = orientation
    if k % 4:
        img = np.rot90(img, k % 4)
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    return np.ascontiguousarray(img)


def scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after scaling the short side to ``size``, keeping the aspect ratio.

    The long side is rounded to the nearest pixel and is never below ``size``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    if width <= height:
        return size, max(size, int(round(height * size / width)))
    return max(size, int(round(width * size / height))), size


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size`` x ``size`` window of an (H, W, C) image with min(H, W) >= size."""
    h, w = img.shape[:2]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return img[y0:y0 + size, x0:x0 + size]


class _Scaler:
    """One swscale context per output geometry (PyAV advises reusing a reformatter)."""

    def __init__(self):
        from av.video.reformatter import Interpolation, VideoReformatter

        self._reformatter = VideoReformatter()
        exact = Interpolation.ACCURATE_RND | Interpolation.BITEXACT
        self.down = Interpolation.AREA | exact
        self.up = Interpolation.BICUBIC | exact

    def __call__(self, frame, width: int, height: int):
        shrink = width * height < frame.width * frame.height
        return self._reformatter.reformat(
            frame, width=width, height=height, format="rgb24",
            interpolation=self.down if shrink else self.up, threads=1,
        )


def frame_to_square_rgb(frame, size: int, orientation: Orientation = IDENTITY,
                        scaler: "_Scaler | None" = None) -> np.ndarray:
    """A decoded ``av.VideoFrame`` as uint8 (size, size, 3) RGB, upright.

    Short side scaled to ``size`` (see the module docstring for the filter), centre crop,
    then ``orientation``. Quarter-turn orientations commute with "short side + centre
    square crop", so cropping the stored frame and rotating afterwards gives the same square
    as rotating first, while the scaler works on the stored layout.
    """
    scaler = scaler or _Scaler()
    w, h = scaled_size(frame.width, frame.height, size)
    rgb = scaler(frame, w, h).to_ndarray()
    if rgb.shape[:2] != (h, w):  # pragma: no cover - defensive, swscale honours the size
        raise ValueError(f"scaler returned {rgb.shape}, expected {(h, w)}")
    return apply_orientation(center_crop(rgb, size), orientation)


def shrink_to_square(frames: np.ndarray, size: int, upscale: bool = False) -> np.ndarray:
    """uint8 RGB frames (..., H, W, 3) -> (..., size, size, 3): a centre square crop, then the
    same swscale AREA scaling as ingest (bit-exact). Frames no larger than ``size`` are only
    cropped square unless ``upscale`` (then they are scaled up to size x size, as ingest scales
    a small video's short side up). For arrays already decoded (the human-evaluation videos,
    the MLflow predictor's input)."""
    frames = np.asarray(frames)
    h, w = frames.shape[-3:-1]
    if h == w == size or (h <= size and w <= size and not upscale):
        return frames
    if h != w:  # the pipeline's frames are square already
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        frames = frames[..., y0:y0 + s, x0:x0 + s, :]
        if s == size or (s < size and not upscale):
            return np.ascontiguousarray(frames)
    import av

    scaler = _Scaler()
    lead = frames.shape[:-3]
    flat = frames.reshape((-1,) + frames.shape[-3:])
    out = np.empty((flat.shape[0], size, size, 3), np.uint8)
    for i, img in enumerate(flat):
        out[i] = scaler(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24"), size, size).to_ndarray()
    return out.reshape(lead + (size, size, 3))
