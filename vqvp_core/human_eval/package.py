"""Build a self-contained, blinded side-by-side rating study (the paper's human evaluation).

The paper (section 5.2): participants compared side-by-side videos from two models that used
the exact same conditioning frames, at 64x64; they could prefer either video or choose
indifference; each video had at least 13 judgements; Table 1 gives the percentages.

``build_package`` writes one folder::

    study/
      study.json     names of the two systems, min_judgments, seed, created, fps, size, ...
      pairs.json     PUBLIC: pair ids and the file names of the left / right videos
      key.json       PRIVATE: for every pair, which system is on the left and on the right
      videos/        <token>.webm (VP9, what the page plays) and <token>.gif (fallback)

Blinding: the side of each system is drawn per pair with ``seed`` (exactly half of the pairs,
rounded by a coin flip, put system A on the left), and every video file is named by a random
token from the operating system's cryptographic source (``secrets``), independent of the side
draw, so that no seed served or guessed reproduces the names -- neither ``pairs.json`` nor the file names nor
their order on disk (left is always written before right) says which system is which. Only
``key.json`` does; the server never serves it. File sizes are not hidden (a static baseline
compresses to a smaller file), but a rater sees the videos themselves anyway.

Frames: each system gives either the whole clip (``clip_len`` frames, e.g. 16) or only the
prediction (``clip_len - T_given``, e.g. 12; then the given frames are put in front). With
``context="original"`` (the default) the first ``T_given`` frames of *both* videos are the
given (ground-truth) frames, so the two sides differ only in what was predicted; with
``context="system"`` each system's own first frames are kept (e.g. VQ-VAE reconstructions).

Resampling: frames larger than ``size`` are centre-cropped to a square (if not square) and
shrunk to ``size`` x ``size`` with libswscale's AREA filter (box averaging: anti-aliased, no
ringing; ``ACCURATE_RND | BITEXACT``, the same scaler as :mod:`vqvp_core.video.transform`).
Frames already ``size`` or smaller are kept as they are (never upscaled; the page enlarges
them for display with nearest-neighbour pixels).

Video formats: VP9 in WebM plays and loops in every Chromium / Firefox build (Debian's
Chromium included, which may lack H.264); a looping GIF of the same frames is the page's
fallback when a browser cannot play the WebM, and is handy for slides. ``formats`` can add
``"mp4"`` (H.264) for other players.

The folder is built under a temporary name beside ``out_dir`` and renamed into place when
complete. An existing study at ``out_dir`` is replaced whole; its judgments live beside it
(``store.judgments_path``) and are kept.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from vqvp_core.atomic import _umask, atomic_dir

__all__ = ["build_package", "load_study", "load_pairs", "load_key", "resize_frames",
           "CHOICES", "FORMATS"]

CHOICES = ("left", "right", "cant_tell")
FORMATS = ("webm", "gif", "mp4")
FORMAT_VERSION = 1


log = logging.getLogger(__name__)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (..., H, W, 3) -> (..., size, size, 3) if larger than ``size`` (see module doc):
    ingest's own resampling (vqvp_core.video.transform.shrink_to_square)."""
    from vqvp_core.video.transform import shrink_to_square

    return shrink_to_square(frames, size)


def _check_video_array(name: str, arr, n: int | None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 (N, T, H, W, 3), got {arr.dtype} {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} clips, the given frames {n}")
    return arr


def _full_clips(name, system, given, clip_len, context):
    t_given = given.shape[1]
    if system.shape[2:] != given.shape[2:]:
        raise ValueError(f"{name} frames are {system.shape[2:]}, the given frames {given.shape[2:]}")
    if system.shape[1] == clip_len:
        clips = system.copy()
        if context == "original":
            clips[:, :t_given] = given
        return clips
    if system.shape[1] == clip_len - t_given:
        return np.concatenate([given, system], axis=1)
    raise ValueError(
        f"{name} has {system.shape[1]} frames per clip: expected {clip_len} (the whole clip) or "
        f"{clip_len - t_given} (the prediction after {t_given} given frames)")


def _tokens(n: int) -> list[str]:
    """n distinct unguessable file names (64 random bits each, from ``secrets``)."""
    import secrets

    seen: set[str] = set()
    out = []
    while len(out) < n:
        tok = secrets.token_hex(8)
        if tok not in seen:
            seen.add(tok)
            out.append(tok)
    return out


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def build_package(
    out_dir: str | os.PathLike,
    given,
    system_a,
    system_b,
    names: Sequence[str] = ("vqvp", "copy-last-frame"),
    clip_ids: Sequence | None = None,
    fps: float = 8,
    size: int = 64,
    seed: int = 0,
    min_judgments: int = 13,
    *,
    clip_len: int = 16,
    context: str = "original",
    formats: Sequence[str] = ("webm", "gif"),
    min_view_seconds: float | None = None,
    display_px: int = 256,
    title: str = "Which video looks better?",
    replace_judgments: bool = False,
) -> dict:
    """Write the study folder ``out_dir`` (see the module doc) and return a summary dict.

    given: uint8 (N, T_given, H, W, 3), the conditioning frames (4 in the paper).
    system_a / system_b: uint8 (N, clip_len, H, W, 3) or (N, clip_len - T_given, H, W, 3),
    the two systems' videos for the same N conditioning clips (e.g. vqvp samples and the
    copy-last-frame baseline, or two model runs). ``names`` = (name of A, name of B).
    clip_ids: one id per clip (kept in key.json only); default ``0..N-1``.
    min_view_seconds: the page enables the answer buttons after this long (default: one
    full loop of the clip, ``clip_len / fps``); 0 disables the wait.
    replace_judgments: kept for callers of older versions; judgments now live beside the study
    (``store.judgments_path``), so a rebuild keeps them whatever its value.
    """
    given = _check_video_array("given", given, None)
    n = given.shape[0]
    system_a = _check_video_array("system_a", system_a, n)
    system_b = _check_video_array("system_b", system_b, n)
    names, formats, clip_ids = _check_options(n, given.shape[1], names, clip_ids, fps, size, min_judgments,
                                              clip_len, context, formats)
    if min_view_seconds is None:
        min_view_seconds = clip_len / float(fps)
    if min_view_seconds < 0:
        raise ValueError(f"min_view_seconds must be >= 0, not {min_view_seconds!r}")
    _check_no_judgments(Path(out_dir), replace_judgments)

    clips_a = resize_frames(_full_clips("system_a", system_a, given, clip_len, context), size)
    clips_b = resize_frames(_full_clips("system_b", system_b, given, clip_len, context), size)
    height, width = clips_a.shape[2:4]
    a_left = _a_left(n, seed)
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        pairs, key = _write_pairs(tmp / "videos", clips_a, clips_b, a_left, names, clip_ids, formats, fps)
        _dump(tmp / "study.json", {
            "format_version": FORMAT_VERSION, "names": list(names), "min_judgments": int(min_judgments),
            "created": created, "seed": int(seed), "n_pairs": n, "fps": float(fps),
            "size": [int(height), int(width)], "n_frames": int(clip_len), "n_given": int(given.shape[1]),
            "context": context, "formats": list(formats), "min_view_seconds": float(min_view_seconds),
            "display_px": int(display_px), "title": title, "choices": list(CHOICES),
            "resampling": "centre square crop, then libswscale AREA (box) to size x size when larger"})
        _dump(tmp / "pairs.json", {"pairs": pairs})
        _dump(tmp / "key.json", {"names": list(names), "pairs": key})
    return {"out_dir": str(out_dir), "n_pairs": n, "names": list(names), "min_judgments": int(min_judgments),
            "judgments_needed": int(min_judgments) * n, "a_left": int(a_left.sum()), "b_left": int(n - a_left.sum()),
            "size": [int(height), int(width)], "formats": list(formats), "n_videos": 2 * n * len(formats),
            "seed": int(seed), "created": created}


def _check_options(n, n_given, names, clip_ids, fps, size, min_judgments, clip_len, context, formats):
    """(names, formats, clip_ids) normalised; a ValueError naming the option when one is bad."""
    names = tuple(str(x) for x in names)
    if len(names) != 2 or names[0] == names[1] or not all(names):
        raise ValueError(f"names must be two different non-empty names, got {names!r}")
    if context not in ("original", "system"):
        raise ValueError(f"context must be 'original' or 'system', not {context!r}")
    if not (isinstance(min_judgments, (int, np.integer)) and min_judgments >= 1):
        raise ValueError(f"min_judgments must be an integer >= 1, not {min_judgments!r}")
    if not (fps and float(fps) > 0):
        raise ValueError(f"fps must be positive, not {fps!r}")
    if not (isinstance(size, (int, np.integer)) and size >= 2):
        raise ValueError(f"size must be an integer >= 2, not {size!r}")
    if not (0 < n_given < clip_len):
        raise ValueError(f"{n_given} given frames but clip_len={clip_len}")
    formats = tuple(dict.fromkeys(str(f).lower().lstrip(".") for f in formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {formats!r}")
    clip_ids = [c.item() if isinstance(c, np.generic) else c for c in (range(n) if clip_ids is None else clip_ids)]
    if len(clip_ids) != n:
        raise ValueError(f"{len(clip_ids)} clip_ids for {n} clips")
    return names, formats, clip_ids


def _a_left(n: int, seed: int) -> np.ndarray:
    """Which pairs show system A on the left: half of them (the odd one out by a coin), shuffled by `seed`."""
    rng = np.random.default_rng(seed)
    a_left = np.zeros(n, bool)
    a_left[: n // 2] = True
    if n % 2:
        a_left[n - 1] = bool(rng.integers(2))
    return rng.permutation(a_left)


def _write_pairs(videos: Path, clips_a, clips_b, a_left, names, clip_ids, formats, fps) -> tuple[list, dict]:
    """Each pair's two videos under random names (not from the seed: they must not reveal the
    sides), in every format; returns (pairs.json's pairs, key.json's pairs)."""
    from vqvp_core.video.write import write_video

    videos.mkdir()
    tokens = _tokens(2 * len(a_left))
    pairs, key = [], {}
    for i, left_is_a in enumerate(a_left):
        pair_id = f"p{i:04d}"
        left, right = (clips_a[i], clips_b[i]) if left_is_a else (clips_b[i], clips_a[i])
        files = {}
        for side, clip, tok in (("left", left, tokens[2 * i]), ("right", right, tokens[2 * i + 1])):
            files[side] = {fmt: f"{tok}.{fmt}" for fmt in formats}
            for fmt in formats:
                path = write_video(videos / files[side][fmt], clip, fps)
                os.chmod(path, 0o666 & ~_umask())  # write_video leaves mkstemp's 0600
        pairs.append({"pair_id": pair_id, "left": files["left"], "right": files["right"]})
        key[pair_id] = {"left": names[0] if left_is_a else names[1], "right": names[1] if left_is_a else names[0],
                        "clip_id": clip_ids[i], "index": i}
    return pairs, key


def _check_no_judgments(out_dir: Path, replace: bool) -> None:
    """Judgments live beside the study (store.judgments_path), so a rebuild never touches them.
    A database inside the folder (vqvp before issue 13) is moved there first, not deleted."""
    from vqvp_core.human_eval.store import LEGACY_NAME, judgments_path

    legacy = out_dir / LEGACY_NAME
    if not legacy.exists():
        return
    dest = judgments_path(out_dir)
    if dest.exists():
        raise FileExistsError(f"{legacy} and {dest} both exist; merge or move one of them before rebuilding")
    os.replace(legacy, dest)
    log.warning("moved the judgments of the previous study from %s to %s (beside the study, where they "
                "are kept)", legacy, dest)


def _load_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load_study(package_dir) -> dict:
    return _load_json(Path(package_dir) / "study.json")


def load_pairs(package_dir) -> list[dict]:
    return _load_json(Path(package_dir) / "pairs.json")["pairs"]


def load_key(package_dir) -> dict:
    return _load_json(Path(package_dir) / "key.json")
