"""A metric that sees motion: on synthetic clips, does each object go where it should?

PSNR cannot tell motion from blur: a grey smear where the objects might be scores better than a
sharp object a few pixels off. The synthetic generator knows every object of every clip (colour,
size, position, velocity), so for each predicted frame (frames 5-16, indices 4..15) we ask of
each object whether the prediction still shows it, with its colour and roughly its size, and how
far its centre is from where it is in the ground truth (README, 'Evaluation').

Definitions (the same for ground truth and prediction):

* **Classes.** Every pixel goes to the nearest (Euclidean distance in RGB, uint8 values) of the
  clip's background colour *at that pixel* (black, or the generator's static noise / gradient
  image) and the colours of the clip's objects; ties go to the background, then to the object
  drawn first. Objects that share a colour in one clip form one **colour group**, evaluated as
  one object (the pixels cannot say which is which): its area is their union, its centroid that
  of the union.
* Per colour group and frame: the ground truth's area ``A`` and centroid ``c`` (pixel centres,
  (row, column)); a group with ``A == 0`` in a frame (fully occluded) is skipped there. The
  prediction's area ``A'`` and centroid ``c'``.
* **found**: ``A'`` within ``FOUND_AREA_RATIO`` x ``A``.
* **centroid error**: ``|c - c'|`` in pixels when ``A' > 0``. A prediction with no pixel of the
  colour at all is charged the error of a guess, the mean distance from ``c`` to a uniformly
  random pixel of the frame: a lost object must not make the mean look better (skipping it
  would reward losing the objects that are hard to place).
* **object PSNR**: the PSNR over the objects' pixels only, those that are foreground (not
  background) in the ground truth *or* the prediction, of the summed squared error over the
  split (as the split PSNR, ``vqvp_core.metrics``), capped like it at one value off by one per
  frame.

Per clip and frame index the sums (error, object-frames, found, squared error and value counts)
are kept, so split figures, per-frame curves and bootstrap resamples over clips are sums.

Pure numpy: no torch, no prefect / mlflow / dvc.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vqvp_core.clip import GIVEN_FRAMES as GIVEN  # frames given to the predictor; GIVEN.. are predicted

FOUND_AREA_RATIO = (0.5, 2.0)   # found: A' in [0.5 A, 2 A]: half the object missing, or smeared over twice
                                # its area, is no longer "the object with roughly its size"; symmetric in
                                # log-area, and wide enough that anti-aliased edges never decide it
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_LEVEL = 0.95
_CHUNK = 16                     # clips classified at once: bounded memory (~60 MB at 64x64)

# Each figure: per-clip columns summed over the chosen frames, the statistic of the summed
# columns, whether it uses only the last frame, and whether higher is better (for best-of).
FIGURES = {
    "psnr": (("sse", "values", "frames"), "psnr", False, True),
    "ssim": (("ssim", "frames"), "ratio", False, True),
    "centroid_error_px": (("err", "objects"), "ratio", False, False),
    "found": (("found", "objects"), "ratio", False, True),
    "found_frame16": (("found", "objects"), "ratio", True, True),
    "object_psnr": (("fg_sse", "fg_values", "fg_frames"), "psnr", False, True),
}


@dataclass
class Scene:
    """What the generator knows of one clip: its video, first frame, background and colour groups."""
    video: int
    start: int
    background: np.ndarray          # uint8 (H, W, 3): how the background shows
    colors: np.ndarray              # uint8 (K, 3): one per colour group
    groups: list = field(default_factory=list)  # per group: the object indices (back to front)


def _uint8(rgb) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def synthetic_scenes(cfg, sources, start_times, fps) -> list[Scene]:
    """The scenes of clips from manifest columns: ``sources`` 'synthetic://<index>', ``start_times``
    (s) and ``fps`` (the clip's frame = round(start_time * fps), as ingest cut it)."""
    from vqvp_core.data.synthetic import object_tracks, video_background

    cache: dict[int, tuple] = {}
    scenes = []
    for src, t0, rate in zip(sources, start_times, np.broadcast_to(fps, (len(start_times),))):
        if not str(src).startswith("synthetic://"):
            raise ValueError(f"not a synthetic source: {src!r}")
        video = int(str(src).split("://", 1)[1])
        if video not in cache:
            colors: dict[bytes, list] = {}
            for i, o in enumerate(object_tracks(cfg, video)):
                colors.setdefault(_uint8(o["color"]).tobytes(), []).append(i)
            palette = np.frombuffer(b"".join(colors), dtype=np.uint8).reshape(-1, 3)
            cache[video] = (_uint8(video_background(cfg, video)), palette, list(colors.values()))
        bg, palette, groups = cache[video]
        scenes.append(Scene(video, int(round(float(t0) * float(rate))), bg, palette, groups))
    return scenes


def constant_velocity(cfg, scenes, clip_len: int = 16, given: int = GIVEN) -> np.ndarray:
    """The constant-velocity extrapolation of the given frames, uint8 (N, clip_len, H, W, 3): each
    clip re-rendered by the generator's renderer with each object at its real position in the
    given frames and, after them, moving on with the velocity of the last two given frames
    (positions at clip indices given-2, given-1), stopped at the wall (with ``cfg.bounce``; the
    torus wraps around otherwise). A near-oracle: it knows the objects, only not their bounces."""
    from vqvp_core.data.synthetic import object_tracks, render_video

    out = []
    t = np.arange(clip_len, dtype=np.float64)[:, None]
    for sc in scenes:
        positions = []
        for o in object_tracks(cfg, sc.video):
            p = o["positions"][sc.start:sc.start + clip_len]
            q = p[given - 1] + (p[given - 1] - p[given - 2]) * (t - (given - 1))
            if cfg.bounce:
                q = np.clip(q, 0.0, [cfg.size - o["h"] - 1, cfg.size - o["w"] - 1])
            else:
                q = np.mod(q, cfg.size)
            positions.append(np.where(t < given, p, q))
        out.append(render_video(cfg, sc.video, positions))
    return np.stack(out)


# ------------------------------------------------------------------------------ classification

def _planes(frames) -> np.ndarray:
    """uint8 (..., 3) -> float32 (3, ...) contiguous colour planes (exact: integers)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(frames), -1, 0), dtype=np.float32)


class _Classes:
    """The per-pixel coefficients of one chunk of clips: pixel f goes to colour group k rather
    than to the background when |f - c_k|^2 - |f - b|^2 = sum_ch 2 f (b - c_k) + |c_k|^2 - |b|^2
    < 0. Every term is an integer below 2^24, so float32 computes it exactly."""

    def __init__(self, background, colors, valid=None):
        b = _planes(background)[:, :, None]                              # (3, n, 1, h, w)
        c = colors.astype(np.float32)                                    # (n, K, 3)
        cc = (c * c).sum(-1)
        if valid is not None:
            cc = np.where(valid, cc, np.inf)
        bb = (b * b).sum(0)                                              # (n, 1, h, w)
        shape = (-1, 1, 1, 1)
        self.coef = [[2.0 * (b[ch] - c[:, g, ch].reshape(shape)) for ch in range(3)]
                     for g in range(c.shape[1])]
        self.const = [cc[:, g].reshape(shape) - bb for g in range(c.shape[1])]

    def __call__(self, planes) -> np.ndarray:
        """Class of every pixel of colour planes (3, n, t, h, w): uint8 (n, t, h, w)."""
        lab = np.zeros(planes.shape[1:], dtype=np.uint8)
        best = np.zeros(planes.shape[1:], dtype=np.float32)  # the background's score
        for g, (coef, const) in enumerate(zip(self.coef, self.const)):
            d = planes[0] * coef[0]
            d += planes[1] * coef[1]
            d += planes[2] * coef[2]
            d += const
            closer = d < best  # ties stay with the background, then with the earlier group
            np.copyto(lab, g + 1, where=closer)
            np.minimum(best, d, out=best)
        return lab


def classify(frames, background, colors, valid=None) -> np.ndarray:
    """Class of every pixel, uint8 (N, T, H, W): 0 = background, k + 1 = colour group k, the
    nearest in RGB (ties: background, then the lower k). ``frames`` uint8 (N, T, H, W, 3);
    ``background`` uint8 (N, H, W, 3); ``colors`` uint8 (N, K, 3); ``valid`` bool (N, K) marks
    the real groups of clips with fewer than K."""
    return _Classes(background, colors, valid)(_planes(frames))


def _groups(labels, k: int):
    """Area (n, t, K) and centroid (row, column) (n, t, K, 2) of each class 1..K (nan if empty)."""
    n, t, h, w = labels.shape
    area = np.zeros((n, t, k))
    cen = np.full((n, t, k, 2), np.nan)
    ys, xs = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    for g in range(k):
        m = labels == g + 1
        rows, cols = m.sum(3, dtype=np.int64), m.sum(2, dtype=np.int64)
        a = rows.sum(-1)
        area[..., g] = a
        with np.errstate(invalid="ignore", divide="ignore"):
            cen[..., g, 0] = (rows @ ys) / a
            cen[..., g, 1] = (cols @ xs) / a
    return area, cen


def guess_error(centroids, h: int, w: int) -> np.ndarray:
    """Mean distance (px) from each centroid (M, 2) to a uniformly random pixel of an h x w frame."""
    centroids = np.asarray(centroids, dtype=np.float64).reshape(-1, 2)
    ys, xs = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    out = np.empty(len(centroids))
    for s in range(0, len(centroids), 256):
        c = centroids[s:s + 256]
        dy2 = (c[:, 0, None] - ys) ** 2
        dx2 = (c[:, 1, None] - xs) ** 2
        out[s:s + 256] = np.sqrt(dy2[:, :, None] + dx2[:, None, :]).mean((1, 2))
    return out


def _pad(scenes):
    k = max([len(sc.colors) for sc in scenes] + [1])
    colors = np.zeros((len(scenes), k, 3), dtype=np.uint8)
    valid = np.zeros((len(scenes), k), dtype=bool)
    for i, sc in enumerate(scenes):
        colors[i, :len(sc.colors)], valid[i, :len(sc.colors)] = sc.colors, True
    return np.stack([sc.background for sc in scenes]), colors, valid


def motion_stats(target, systems: dict, scenes, given: int = GIVEN, chunk: int = _CHUNK) -> dict:
    """Per-clip, per-frame sums for each system over the predicted frames (indices given..):
    ``{name: {column: float64 (S, N, T - given)}}``, S the system's draws (a video (N, T, H, W, 3)
    is one draw; (S, N, T, H, W, 3) are S). Columns: ``sse``, ``values``, ``frames`` (all pixels:
    squared error, value count, 1), ``objects`` (colour groups visible in the ground truth),
    ``err`` (their summed centroid error, px), ``found``, and ``fg_sse``, ``fg_values``,
    ``fg_frames`` (object pixels only)."""
    target = np.asarray(target)
    n, t, h, w, c = target.shape
    if len(scenes) != n:
        raise ValueError(f"{len(scenes)} scenes for {n} clips")
    videos = {name: (v[None] if np.ndim(v) == 5 else v) for name, v in systems.items()}
    for name, v in videos.items():
        if v.shape[1:] != target.shape:
            raise ValueError(f"{name}: shape {v.shape[1:]} != ground truth {target.shape}")
    tp = t - given
    cols = ("sse", "values", "frames", "objects", "err", "found", "fg_sse", "fg_values", "fg_frames")
    out = {name: {k: np.zeros((v.shape[0], n, tp)) for k in cols} for name, v in videos.items()}
    lo, hi = FOUND_AREA_RATIO
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        bg, colors, valid = _pad(scenes[sl])
        k = colors.shape[1]
        classes = _Classes(bg, colors, valid)
        gt = _planes(target[sl, given:])
        lab_gt = classes(gt)
        fg_gt = lab_gt > 0
        area, cen = _groups(lab_gt, k)
        present = area > 0
        guess = None
        for name, v in videos.items():
            for d in range(v.shape[0]):
                pred = _planes(v[d, sl, given:])
                lab = classes(pred)
                area_p, cen_p = _groups(lab, k)
                err = np.sqrt(((cen - cen_p) ** 2).sum(-1))
                lost = present & (area_p == 0)
                if lost.any():
                    if guess is None:  # computed once per chunk, for every visible group
                        guess = np.zeros_like(area)
                        guess[present] = guess_error(cen[present], h, w)
                    err = np.where(lost, guess, err)
                found = present & (area_p >= lo * area) & (area_p <= hi * area)
                diff = pred - gt
                diff *= diff
                sq = diff.sum(0)                                                  # (n, tp, h, w)
                fg = fg_gt | (lab > 0)
                o = out[name]
                o["sse"][d, sl] = sq.sum((2, 3), dtype=np.float64)
                o["values"][d, sl] = h * w * c
                o["frames"][d, sl] = 1
                o["objects"][d, sl] = present.sum(-1)
                o["err"][d, sl] = np.where(present, err, 0.0).sum(-1)
                o["found"][d, sl] = found.sum(-1)
                o["fg_sse"][d, sl] = np.where(fg, sq, 0).sum((2, 3), dtype=np.float64)
                o["fg_values"][d, sl] = fg.sum((2, 3)) * c
                o["fg_frames"][d, sl] = fg.any((2, 3))
    return out


def found_by_group(target, video, scenes, frames) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per colour group, whether ``video`` shows it at each of ``frames`` (clip frame indices):
    (present, found, area ratio), (N, len(frames), K) each, K the most groups of a clip; found is
    the test of ``motion_stats`` (the ratio of the prediction's area to the ground truth's within
    ``FOUND_AREA_RATIO``); the ratio is nan where the group is not present."""
    lo, hi = FOUND_AREA_RATIO
    bg, colors, valid = _pad(scenes)
    classes = _Classes(bg, colors, valid)
    frames = list(frames)
    area, _ = _groups(classes(_planes(np.asarray(target)[:, frames])), colors.shape[1])
    area_p, _ = _groups(classes(_planes(np.asarray(video)[:, frames])), colors.shape[1])
    present = area > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(present, area_p / area, np.nan)
    return present, present & (area_p >= lo * area) & (area_p <= hi * area), ratio


def group_attributes(cfg, scenes) -> dict[str, np.ndarray]:
    """What the generator knows of each colour group, (N, K) each: ``kind`` ('digit' when any of
    its objects is a digit, else 'shape'; '' for padding), ``speed`` (px/frame, its fastest object)
    and ``height`` (px, its tallest)."""
    from vqvp_core.data.synthetic import object_tracks

    k = max([len(sc.groups) for sc in scenes] + [1])
    out = {"kind": np.full((len(scenes), k), "", dtype=object), "speed": np.zeros((len(scenes), k)),
           "height": np.zeros((len(scenes), k))}
    for i, sc in enumerate(scenes):
        tracks = object_tracks(cfg, sc.video)
        for g, members in enumerate(sc.groups):
            objs = [tracks[j] for j in members]
            out["kind"][i, g] = "digit" if any(o["kind"] == "digit" for o in objs) else "shape"
            out["speed"][i, g] = max(float(np.hypot(*o["velocity"])) for o in objs)
            out["height"][i, g] = max(o["h"] for o in objs)
    return out


# ------------------------------------------------------------------------------------ statistics

def statistic(kind: str, sums: np.ndarray) -> np.ndarray:
    """A figure from summed columns (..., F): 'ratio' = a / b (nan where b == 0); 'psnr' (columns
    sse, values, frames) = 10 log10(255^2 values / max(sse, frames)): the PSNR of the mean squared
    error, capped at one value off by one per frame, as ``vqvp_core.metrics.psnr_of_mse``."""
    sums = np.asarray(sums, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "ratio":
            return np.where(sums[..., 1] > 0, sums[..., 0] / sums[..., 1], np.nan)
        if kind == "psnr":
            return np.where(sums[..., 1] > 0, 10.0 * np.log10(
                255.0**2 * sums[..., 1] / np.maximum(sums[..., 0], sums[..., 2])), np.nan)
    raise ValueError(f"unknown statistic {kind!r}")


@functools.lru_cache(maxsize=8)
def _resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    idx = np.random.default_rng(seed).integers(0, n, (resamples, n))
    counts = np.bincount((idx + n * np.arange(resamples)[:, None]).ravel(), minlength=n * resamples)
    counts = counts.reshape(resamples, n).astype(np.float64)
    counts.flags.writeable = False
    return counts


def bootstrap_ci(columns, kind: str, baseline=None, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                 level: float = BOOTSTRAP_LEVEL) -> tuple[float, float, float]:
    """(value, lo, hi): a figure of per-clip columns (N, F) (``statistic`` of their sums) and its
    percentile bootstrap interval over clips. With ``baseline`` (N, F) of the same clips: the
    figure minus the baseline's, both on the same resampled clips. The resamples depend only on
    (N, resamples, seed), so every system of one split is resampled alike."""
    columns = np.asarray(columns, dtype=np.float64)
    n = len(columns)
    value = statistic(kind, columns.sum(0))
    if baseline is not None:
        baseline = np.asarray(baseline, dtype=np.float64)
        value = value - statistic(kind, baseline.sum(0))
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    counts = _resample_counts(n, resamples, seed)
    boot = statistic(kind, counts @ columns)
    if baseline is not None:
        boot = boot - statistic(kind, counts @ baseline)
    tail = 100.0 * (1.0 - level) / 2.0
    if np.isnan(boot).all():
        return float(value), float("nan"), float("nan")
    lo, hi = np.nanpercentile(boot, [tail, 100.0 - tail])
    return float(value), float(lo), float(hi)


def _columns(stats: dict, figure: str) -> np.ndarray | None:
    """(S, N, T', F) columns of one figure, or None when a column is missing (e.g. no SSIM)."""
    names = FIGURES[figure][0]
    if any(c not in stats for c in names):
        return None
    return np.stack([stats[c] for c in names], -1)


def _best(cols: np.ndarray, figure: str) -> np.ndarray:
    """Per clip the draw best on this figure (the SVG/SAVP protocol): (N, T', F) columns of it."""
    _, kind, last, higher = FIGURES[figure]
    per_clip = statistic(kind, (cols[:, :, -1:] if last else cols).sum(2))       # (S, N)
    per_clip = np.where(np.isnan(per_clip), -np.inf if higher else np.inf, per_clip)
    choice = per_clip.argmax(0) if higher else per_clip.argmin(0)
    return cols[choice, np.arange(cols.shape[1])]


def _ci(value, lo, hi) -> dict:
    r = lambda x: None if np.isnan(x) else round(float(x), 6)  # noqa: E731
    return {"value": r(value), "ci95": [r(lo), r(hi)]}


def motion_report(stats: dict, baseline: str = "copy_last_frame", primary: str = "model",
                  resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, given: int = GIVEN) -> dict:
    """The ``motion`` block of ``metrics/eval.json`` from ``motion_stats`` (plus an optional
    ``ssim`` column (S, N, T') per system): per figure and system ``{value, ci95}``; a system with
    several draws is reported as its first draw (``name``) and as the best draw per clip, chosen
    per figure (``name_best``); ``<primary>_minus_<baseline>`` per figure; per-frame curves."""
    per_system: dict[str, dict[str, np.ndarray]] = {}   # system -> figure -> (N, T', F)
    for name, st in stats.items():
        for fig in FIGURES:
            cols = _columns(st, fig)
            if cols is None:
                continue
            per_system.setdefault(name, {})[fig] = cols[0]
            if cols.shape[0] > 1:
                per_system.setdefault(f"{name}_best", {})[fig] = _best(cols, fig)
    n, tp = next(iter(stats.values()))["sse"].shape[1:]
    draws = stats[primary]["sse"].shape[0] if primary in stats else 1
    out: dict = {"available": True, "n_clips": int(n), "draws": int(draws), "frames": list(range(given + 1, given + 1 + tp)),
                 "systems": list(per_system),
                 "constants": {"found_area_ratio": list(FOUND_AREA_RATIO), "given_frames": given,
                               "classes": "nearest in RGB of the background colour at the pixel and the "
                                          "clip's object colours; objects sharing a colour form one group",
                               "lost_object_error": "mean distance from the true centroid to a uniformly random pixel",
                               "object_psnr_pixels": "foreground in the ground truth or the prediction",
                               "best": f"{primary}_best: per clip the best of {draws} draws, chosen per figure"},
                 "bootstrap": {"resamples": resamples, "seed": seed, "level": BOOTSTRAP_LEVEL, "unit": "clip",
                               "method": "percentile"}}
    pairs = [(p, baseline) for p in (primary, f"{primary}_best") if p in per_system and baseline in per_system]
    out["per_frame"] = {}
    for fig, (_, kind, last, _) in FIGURES.items():
        have = {s: figs[fig] for s, figs in per_system.items() if fig in figs}
        if not have:
            continue
        pick = (lambda c: c[:, -1]) if last else (lambda c: c.sum(1))  # noqa: E731
        out[fig] = {s: _ci(*bootstrap_ci(pick(c), kind, resamples=resamples, seed=seed)) for s, c in have.items()}
        for a, b in pairs:
            out.setdefault(f"{primary}_minus_{baseline}", {}).setdefault(fig, {})[a] = _ci(*bootstrap_ci(
                pick(have[a]), kind, baseline=pick(have[b]), resamples=resamples, seed=seed))
        if not last:
            out["per_frame"][fig] = {s: [None if np.isnan(x) else round(float(x), 6)
                                         for x in statistic(kind, c.sum(0))] for s, c in have.items()}
    return out


def motion_metrics(cfg, sources, start_times, fps, target, systems: dict, ssim=None, known_ssim=None,
                   seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES, given: int = GIVEN) -> dict:
    """The ``motion`` block of ``metrics/eval.json`` for clips (uint8 ``target`` (N, T, H, W, 3),
    manifest columns ``sources``, ``start_times``, ``fps``) of the synthetic generator ``cfg``:
    ``systems`` (name -> (N, ...) or (S, N, ...) videos; 'model' first, 'copy_last_frame' the
    baseline) plus ``constant_velocity``. ``ssim``: optional callable (videos {key: (N, T - given,
    H, W, 3)}, target frames) -> {key: (N, T - given)}, the SSIM per predicted frame (this module
    needs no torch), called once for every draw not in ``known_ssim`` ({name: (N, T - given)}
    of each system's first draw)."""
    target = np.asarray(target)
    try:
        scenes = synthetic_scenes(cfg, sources, start_times, fps)
        cv = constant_velocity(cfg, scenes, target.shape[1], given)
    except (ValueError, IndexError, TypeError) as exc:
        return {"available": False, "reason": f"the clips are not the synthetic generator's: {exc}"}
    if cv.shape != target.shape or not np.array_equal(cv[:, :given], target[:, :given]):
        return {"available": False, "reason": "the clips' given frames differ from the synthetic generator's "
                                              "with these ingest params: re-run ingest"}
    videos = {name: (v[None] if np.ndim(v) == 5 else np.asarray(v)) for name, v in systems.items()}
    order = list(videos)
    cut = order.index("copy_last_frame") + 1 if "copy_last_frame" in order else len(order)
    videos = {k: videos[k] for k in order[:cut]} | {"constant_velocity": cv[None]} | {k: videos[k] for k in order[cut:]}
    stats = motion_stats(target, videos, scenes, given)
    if ssim is not None:
        known = {(k, 0): v for k, v in (known_ssim or {}).items()}
        todo = {(k, d): v[d, :, given:] for k, v in videos.items() for d in range(len(v)) if (k, d) not in known}
        got = {**known, **(ssim(todo, target[:, given:]) if todo else {})}
        for k, v in videos.items():
            stats[k]["ssim"] = np.stack([np.asarray(got[k, d], dtype=np.float64) for d in range(len(v))])
    return motion_report(stats, seed=seed, resamples=resamples, given=given)


def frame_intervals(mse: dict, ssim: dict, values_per_frame: int, primary: str = "model",
                    baseline: str = "copy_last_frame", resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """Bootstrap intervals over clips of the split PSNR and the mean SSIM of each system, from
    per clip and frame arrays (N, T) {system: mse} and {system: ssim}: ``psnr_ci95`` and
    ``ssim_ci95`` ({system: [lo, hi]}), ``psnr_<primary>_minus_<baseline>`` and the SSIM one
    ({value, ci95}), both systems on the same resampled clips."""
    cols = {}
    for name in mse:
        e, q = np.asarray(mse[name], dtype=np.float64), np.asarray(ssim[name], dtype=np.float64)
        n, t = e.shape
        cols[name] = {"psnr": (np.stack([e.sum(1) * values_per_frame, np.full(n, t * values_per_frame),
                                         np.full(n, t)], 1), "psnr"),
                      "ssim": (np.stack([q.sum(1), np.full(n, t)], 1), "ratio")}
    out: dict = {"psnr_ci95": {}, "ssim_ci95": {}}
    for name, figs in cols.items():
        for m, (c, kind) in figs.items():
            out[f"{m}_ci95"][name] = list(bootstrap_ci(c, kind, resamples=resamples, seed=seed)[1:])
    for m, (c, kind) in cols[primary].items():
        value, lo, hi = bootstrap_ci(c, kind, baseline=cols[baseline][m][0], resamples=resamples, seed=seed)
        out[f"{m}_{primary}_minus_{baseline.replace('_frame', '')}"] = {"value": value, "ci95": [lo, hi]}
    return out


def summary(report: dict) -> str:
    """One line: centroid error, found fraction and object PSNR of every system, with intervals."""
    def fig(key, fmt):
        return ", ".join(f"{s} {v['value']:{fmt}} [{v['ci95'][0]:{fmt}}, {v['ci95'][1]:{fmt}}]"
                         for s, v in report[key].items() if v["value"] is not None)
    return (f"over {report['n_clips']} clips, frames 5-16 (95% CI): centroid error px "
            f"{fig('centroid_error_px', '.2f')}; found {fig('found', '.0%')}; object PSNR dB {fig('object_psnr', '.2f')}")


def headline(report: dict) -> dict[str, float]:
    """Flat ``motion/<figure>/<system>`` figures and ``motion/<figure>/<system>_minus_<baseline>``
    differences, for MLflow."""
    flat = {}
    for fig in FIGURES:
        for system, v in report.get(fig, {}).items():
            if v["value"] is not None:
                flat[f"motion/{fig}/{system}"] = v["value"]
    for key, figs in report.items():
        if "_minus_" not in key:
            continue
        baseline = key.split("_minus_", 1)[1]
        for fig, by in figs.items():
            for system, v in by.items():
                if v["value"] is not None:
                    flat[f"motion/{fig}/{system}_minus_{baseline}"] = v["value"]
    return flat


def plot_per_frame(report: dict, path) -> None:
    """Centroid error and found fraction per predicted frame, every system (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "centroid_error_px", "centroid error (px)"),
                           (axes[1], "found", "objects found (fraction)")):
        for system, values in report["per_frame"].get(key, {}).items():
            ax.plot(report["frames"], [np.nan if v is None else v for v in values], marker="o",
                    label=system.replace("_", " "))
        ax.set(xlabel="frame index (1-4 given)", ylabel=label, title=f"{label} per predicted frame")
        ax.grid(alpha=0.3)
    axes[1].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
