"""Synthetic moving-objects videos: the embedded default data source (no download needed).

Each video shows 1-3 digits (an embedded 5x7 bitmap font) and/or shapes (square, circle,
triangle), in colour, moving at constant velocity and bouncing elastically off the walls, as in
Moving MNIST. Objects are drawn back to front, so they occlude one another. Rendering is
anti-aliased (supersampled masks) and sub-pixel (bilinear shifts), so slow objects move smoothly.

A video depends only on ``(cfg, index)``: its generator is seeded from ``(cfg.seed, index)``, so
any process, in any order, gets byte-identical frames.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, Field, model_validator

from vqvp_core.configbase import Bool, CoreConfig, Float, Int, NonNegativeInt, PositiveInt

__all__ = ["SyntheticSource", "SyntheticConfig", "generate_video", "video_metadata", "object_tracks", "video_background",
           "render_video"]

_SHAPES = ("square", "circle", "triangle")
_SUPERSAMPLE = 4  # 4x4 sub-pixel samples per pixel: smooth edges at a small cost

# 5x7 bitmap glyphs of the digits 0-9, one string per row.
_FONT = {
    0: (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    1: ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    2: (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    3: ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    4: ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    5: ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    6: ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    7: ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    8: (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    9: (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
}
_GLYPHS = {d: np.pad(np.array([[c == "#" for c in row] for row in rows], dtype=np.float32), 1)
           for d, rows in _FONT.items()}  # zero-padded to 9x7: cell (r, c) centred at (r+1, c+1)
_GLYPH_MARGIN = 0.2  # box = glyph cells + this much (in cells) on each side
_GLYPH_LEVEL = 0.4  # iso-level of the bilinear-interpolated bitmap: rounded strokes

# Saturated colours that stand out on every background.
_PALETTE = np.array(
    [[255, 255, 255], [255, 64, 64], [64, 220, 64], [80, 120, 255], [255, 230, 40],
     [40, 230, 230], [240, 70, 240], [255, 150, 30], [170, 110, 255], [200, 200, 200]],
    dtype=np.float32,
) / 255.0


def _range(lo: float, hi: float | None = None):
    """A (min, max) pair with lo <= min <= max (<= hi)."""

    def check(pair: tuple) -> tuple:
        a, b = pair
        if not (lo <= a <= b and (hi is None or b <= hi)):
            raise ValueError(f"expected {lo} <= min <= max{f' <= {hi}' if hi is not None else ''}")
        return pair

    return AfterValidator(check)


class SyntheticSource(CoreConfig):
    """What the synthetic videos show: the `ingest.synthetic` params section. The frame size and
    rate are ingest's own (`SyntheticConfig` adds them)."""

    # 400 videos -> 1,200 clips (963 / 126 / 111 train / val / test): rendering is seconds, the
    # priors of the demo see each training clip about once, so they learn instead of overfitting,
    # and 111 test clips resolve the metrics (README, 'The demo's recipe')
    n_videos: PositiveInt = 400
    n_frames: PositiveInt = 48  # 48 gives 3 windows of 16
    objects: Annotated[tuple[Int, Int], _range(1, 8)] = (1, 3)  # objects per video, inclusive range
    kinds: Literal["digits", "shapes", "both"] = "both"
    # px/frame at 64x64 (scale it with the frame); < 0.5 is barely visible over 16 frames
    speed: Annotated[tuple[Float, Float], _range(0.0)] = (0.5, 3.0)
    # object height as a fraction of the frame (Moving MNIST: 28/64)
    scale: Annotated[tuple[Float, Float], _range(0.05, 0.8)] = (0.25, 0.45)
    background: Literal["black", "noise", "gradient"] = "black"  # noise: static per video
    occlusions: Bool = True  # opaque objects in depth order; False: per-pixel max (transparent)
    bounce: Bool = True  # elastic bounces off the walls; False: wrap around (torus)
    static_fraction: Annotated[Float, Field(ge=0, le=1)] = 0.1  # chance that an object does not move
    seed: NonNegativeInt = 0


class SyntheticConfig(SyntheticSource):
    """Everything that renders a synthetic video: the source plus the frame geometry."""

    size: Annotated[Int, Field(ge=16, le=1024)] = 64  # square frames of size x size pixels
    fps: Annotated[Int, Field(ge=1, le=1000)] = 8  # nominal; only written to the metadata

    @classmethod
    def at(cls, source: SyntheticSource, size: int, fps: float) -> "SyntheticConfig":
        """The source rendered at ingest's frame size and (whole, nominal) rate."""
        return cls(**source.to_dict(), size=size, fps=max(1, round(fps)))

    @model_validator(mode="after")
    def _speed_fits(self) -> "SyntheticConfig":
        if self.speed[1] > self.size / 2:
            raise ValueError(f"speed = {self.speed}: expected max <= size / 2 = {self.size / 2:g} px/frame")
        return self


# ------------------------------------------------------------------------------------ planning

def _rngs(cfg: SyntheticConfig, index: int):
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise TypeError(f"index must be an integer, got {index!r}")
    if not 0 <= index < cfg.n_videos:
        raise IndexError(f"index {index} out of range for n_videos={cfg.n_videos}")
    obj_ss, bg_ss = np.random.SeedSequence([cfg.seed, int(index)]).spawn(2)
    return np.random.default_rng(obj_ss), np.random.default_rng(bg_ss)


def _plan(cfg: SyntheticConfig, rng: np.random.Generator) -> list[dict]:
    """Draw every object's identity, look and motion (back to front). Draws a fixed number of
    values per object whatever the branch, so one field does not shift the others' stream."""
    n = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    objs = []
    for _ in range(n):
        (u_kind, u_digit, u_shape, u_col, u_scale, u_speed, u_dir, u_x, u_y,
         u_static) = rng.random(10)
        kind = {"digits": "digit", "shapes": "shape"}.get(cfg.kinds) or (
            "digit" if u_kind < 0.5 else "shape")
        name = str(int(u_digit * 10)) if kind == "digit" else _SHAPES[int(u_shape * 3)]
        h = max(3, int(round(cfg.size * (cfg.scale[0] + u_scale * (cfg.scale[1] - cfg.scale[0])))))
        h = min(h, cfg.size - 2)
        w = max(3, int(round(h * (5 + 2 * _GLYPH_MARGIN) / (7 + 2 * _GLYPH_MARGIN))))
        w = w if kind == "digit" else h
        static = bool(u_static < cfg.static_fraction)
        speed = 0.0 if static else cfg.speed[0] + u_speed * (cfg.speed[1] - cfg.speed[0])
        angle = 2 * np.pi * u_dir
        vel = (float(speed * np.sin(angle)), float(speed * np.cos(angle)))  # (vy, vx)
        objs.append(dict(kind=kind, name=name, color=_PALETTE[int(u_col * len(_PALETTE))].copy(),
                         h=h, w=w, static=bool(static or speed == 0.0), velocity=vel,
                         start=(u_y, u_x)))
    return objs


def _positions(cfg: SyntheticConfig, o: dict) -> np.ndarray:
    """Top-left (y, x) of the object's padded box per frame, float (T, 2)."""
    t = np.arange(cfg.n_frames, dtype=np.float64)[:, None]
    if cfg.bounce:  # the padded box is (h+1, w+1): its top-left stays in [0, L]
        span = np.array([cfg.size - o["h"] - 1, cfg.size - o["w"] - 1], dtype=np.float64)
        x = np.asarray(o["start"]) * span + np.asarray(o["velocity"]) * t
        u = np.mod(x, 2 * span)
        return np.where(u > span, 2 * span - u, u)  # triangle wave = elastic reflections
    return np.mod(np.asarray(o["start"]) * cfg.size + np.asarray(o["velocity"]) * t, cfg.size)


def object_tracks(cfg: SyntheticConfig, index: int) -> list[dict]:
    """The objects of video ``index``, back to front: kind, name, colour (RGB in [0, 1]),
    box size h, w (px), static, velocity (vy, vx) px/frame, and ``positions`` (T, 2): the
    top-left (y, x) per frame of the object's box, which is (h+1, w+1) with sub-pixel shift."""
    rng, _ = _rngs(cfg, index)
    return [dict(o, positions=_positions(cfg, o)) for o in _plan(cfg, rng)]


# ----------------------------------------------------------------------------------- rendering

def _interp_matrix(v: np.ndarray, cells: int) -> np.ndarray:
    """Bilinear weights (len(v), cells + 2) reading a zero-padded row of ``cells`` cells at
    box coordinates ``v`` in [0, 1)."""
    g = 0.5 - _GLYPH_MARGIN + v * (cells + 2 * _GLYPH_MARGIN)  # padded-grid coordinates
    i0 = np.floor(g).astype(np.int64)
    f = (g - i0).astype(np.float32)
    m = np.zeros((len(v), cells + 2), dtype=np.float32)
    m[np.arange(len(v)), i0] = 1 - f
    m[np.arange(len(v)), i0 + 1] = f
    return m


def _mask(o: dict) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of shape (h, w), by 4x4 supersampling."""
    h, w, k = o["h"], o["w"], _SUPERSAMPLE
    vy = (np.arange(h * k) + 0.5) / (h * k)  # sub-pixel centres in [0, 1)
    vx = (np.arange(w * k) + 0.5) / (w * k)
    if o["kind"] == "digit":
        # Smooth outlines: threshold the bitmap bilinearly interpolated at the sub-pixels.
        g = _GLYPHS[int(o["name"])]
        wy, wx = (_interp_matrix(v, n - 2) for v, n in ((vy, g.shape[0]), (vx, g.shape[1])))
        hi = wy @ g @ wx.T >= _GLYPH_LEVEL
    else:
        y, x = 2 * vy[:, None] - 1, 2 * vx[None, :] - 1  # [-1, 1]
        if o["name"] == "circle":
            hi = x * x + y * y <= 1.0
        elif o["name"] == "triangle":  # apex at the top centre, base along the bottom
            hi = np.abs(x) <= (y + 1) / 2
        else:
            hi = np.ones((h * k, w * k), dtype=bool)
    return hi.reshape(h, k, w, k).mean(axis=(1, 3), dtype=np.float32)


def _background(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    s = cfg.size
    if cfg.background == "noise":  # static per video, dark: objects stay the salient thing
        return (rng.random((s, s, 3), dtype=np.float32) * 0.25).astype(np.float32)
    if cfg.background == "gradient":
        c0, c1 = rng.random((2, 3), dtype=np.float32) * 0.35
        a = rng.random() * 2 * np.pi
        g = np.arange(s, dtype=np.float32) / (s - 1)
        p = np.cos(a) * g[None, :] + np.sin(a) * g[:, None]
        p = (p - p.min()) / max(float(p.max() - p.min()), 1e-6)
        return (c0 + (c1 - c0) * p[..., None]).astype(np.float32)
    return np.zeros((s, s, 3), dtype=np.float32)


def video_background(cfg: SyntheticConfig, index: int) -> np.ndarray:
    """The static background of video ``index``: float32 (size, size, 3) in [0, 1] (black,
    noise or gradient); ``np.clip(bg * 255 + 0.5, 0, 255).astype(np.uint8)`` is how it shows."""
    _, bg_rng = _rngs(cfg, index)
    return _background(cfg, bg_rng)


def _render(cfg: SyntheticConfig, objs: list[dict], positions: list, background: np.ndarray) -> np.ndarray:
    """Frames of ``objs`` (back to front) at ``positions`` (per object: float (T, 2), the top-left
    (y, x) of its padded box per frame) over ``background``: uint8 (T, size, size, 3)."""
    T = len(positions[0]) if positions else cfg.n_frames
    s = cfg.size
    frames = np.broadcast_to(background, (T, s, s, 3)).copy()
    tt = np.arange(T)[:, None, None]
    for o, pos in zip(objs, positions):
        m = _mask(o)
        pos = np.asarray(pos, dtype=np.float64)
        ip = np.floor(pos).astype(np.int64)
        fy, fx = [(pos[:, i] - ip[:, i]).astype(np.float32)[:, None, None] for i in (0, 1)]
        # Bilinear sub-pixel shift of the mask inside its (h+1, w+1) box: coverage is conserved.
        alpha = ((1 - fy) * (1 - fx) * np.pad(m, ((0, 1), (0, 1)))
                 + (1 - fy) * fx * np.pad(m, ((0, 1), (1, 0)))
                 + fy * (1 - fx) * np.pad(m, ((1, 0), (0, 1)))
                 + fy * fx * np.pad(m, ((1, 0), (1, 0))))[..., None]
        yy = ip[:, 0, None, None] + np.arange(o["h"] + 1)[None, :, None]
        xx = ip[:, 1, None, None] + np.arange(o["w"] + 1)[None, None, :]
        if not cfg.bounce:
            yy, xx = yy % s, xx % s
        region = frames[tt, yy, xx]
        if cfg.occlusions:
            frames[tt, yy, xx] = region + alpha * (o["color"] - region)
        else:
            frames[tt, yy, xx] = np.maximum(region, alpha * o["color"])
    return np.clip(frames * 255.0 + 0.5, 0, 255).astype(np.uint8)


def generate_video(cfg: SyntheticConfig, index: int) -> np.ndarray:
    """Video ``index`` of the data set: uint8 RGB frames, shape (n_frames, size, size, 3)."""
    rng, bg_rng = _rngs(cfg, index)
    objs = _plan(cfg, rng)
    return _render(cfg, objs, [_positions(cfg, o) for o in objs], _background(cfg, bg_rng))


def render_video(cfg: SyntheticConfig, index: int, positions: list) -> np.ndarray:
    """Video ``index``'s objects and background rendered with the renderer of ``generate_video``
    at other ``positions``: one float (T, 2) array per object (back to front, as
    ``object_tracks``: top-left (y, x) of the (h+1, w+1) box; with ``cfg.bounce`` each must lie
    in [0, size - h - 1] x [0, size - w - 1]). uint8 (T, size, size, 3); the tracks' own
    positions give exactly ``generate_video``'s frames."""
    rng, bg_rng = _rngs(cfg, index)
    objs = _plan(cfg, rng)
    if len(positions) != len(objs) or len({len(p) for p in positions}) > 1:
        raise ValueError(f"video {index} has {len(objs)} objects: give one (T, 2) array of positions each, "
                         f"got {len(positions)} of lengths {[len(p) for p in positions]}")
    return _render(cfg, objs, positions, _background(cfg, bg_rng))


def video_metadata(cfg: SyntheticConfig, index: int) -> dict:
    """Manifest row for video ``index``, e.g. label 'digits:3,7', 'shapes:circle,square' or
    'mixed:4,triangle' (objects back to front), without rendering the frames."""
    rng, _ = _rngs(cfg, index)
    objs = _plan(cfg, rng)
    kinds = {o["kind"] for o in objs}
    prefix = "mixed" if len(kinds) > 1 else ("digits" if kinds == {"digit"} else "shapes")
    return {
        "source": "synthetic",
        "index": int(index),
        "seed": cfg.seed,
        "label": f"{prefix}:" + ",".join(o["name"] for o in objs),
        "fps": cfg.fps,
        "n_frames": cfg.n_frames,
        "height": cfg.size,
        "width": cfg.size,
        "n_objects": len(objs),
        "n_static": sum(o["static"] for o in objs),
    }
