"""Writing videos (mp4/m4v/mov/mkv H.264, webm VP9, avi MJPEG, gif): same frames -> same bytes,
written atomically through vqvp_core.atomic."""
from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

from vqvp_core.atomic import atomic_path

# No random Matroska UIDs, no library version strings: same frames -> same bytes (and the
# same DVC md5).
_MUXER_OPTIONS = {"fflags": "+bitexact"}

# x264's macroblock-tree rate control was seen to give different bytes for the same frames
# from run to run (a few in 40 encodes in one process; not with asm=0), so it is off:
# a slightly larger file for reproducible outputs.
_X264 = {"crf": "17", "preset": "medium", "threads": "1", "x264-params": "mbtree=0"}

_WRITERS = {
    # ext: (format, codec, pix_fmt, codec options)
    ".mp4": ("mp4", "libx264", "yuv420p", _X264),
    ".m4v": ("mp4", "libx264", "yuv420p", _X264),
    ".mov": ("mov", "libx264", "yuv420p", _X264),
    ".mkv": ("matroska", "libx264", "yuv420p", _X264),
    ".webm": ("webm", "libvpx-vp9", "yuv420p",
              {"crf": "24", "b": "0", "deadline": "good", "cpu-used": "2", "threads": "1",
               "row-mt": "0"}),
    ".avi": ("avi", "mjpeg", "yuvj444p", {"q:v": "2"}),
    ".gif": ("gif", "gif", "pal8", {}),
}


def write_video(path: str | os.PathLike, frames, fps: float) -> str:
    """Encode ``frames`` (uint8 (T, H, W, 3) RGB, or a sequence of (H, W, 3)) to ``path``.

    The format follows the extension: ``.mp4``/``.m4v``/``.mov``/``.mkv`` H.264 (yuv420p,
    crf 17: what every player and browser shows), ``.webm`` VP9 (yuv420p), ``.avi`` MJPEG,
    ``.gif`` (a per-file 256-colour palette from FFmpeg's palettegen/paletteuse filters;
    delays are in 1/100 s so the rate is rounded). 4:2:0 formats need even sizes: an odd
    width/height is padded by repeating the last column/row (the decoded video is then one
    pixel larger). Single-threaded encoders and bit-exact muxing, so the same frames give the
    same bytes (for one FFmpeg build).

    Written atomically: to a hidden temporary file in the same folder, then ``os.replace``;
    on any error the temporary file is removed and nothing appears at ``path``. Local paths
    only. Returns ``path`` as a string.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _WRITERS:
        raise ValueError(f"cannot write {ext!r} videos; use one of {sorted(_WRITERS)}")
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise ValueError(
            f"frames must be uint8 (T, H, W, 3) with T >= 1, got {arr.dtype} {arr.shape}")
    if not (fps and float(fps) > 0):
        raise ValueError(f"fps must be positive, not {fps!r}")
    fmt, codec, pix_fmt, options = _WRITERS[ext]
    if pix_fmt == "yuv420p" and (arr.shape[1] % 2 or arr.shape[2] % 2):
        arr = np.pad(arr, ((0, 0), (0, arr.shape[1] % 2), (0, arr.shape[2] % 2), (0, 0)),
                     mode="edge")
    rate = (Fraction(fps) if isinstance(fps, (int, Fraction)) else Fraction(repr(float(fps)))).limit_denominator(1001)
    with atomic_path(path) as tmp:  # same folder, renamed on success, removed on error
        if ext == ".gif":
            _encode_gif(str(tmp), arr, rate)
        else:
            _encode(str(tmp), fmt, codec, pix_fmt, options, arr, rate)
    return path


def _encode(tmp, fmt, codec, pix_fmt, options, arr, rate):
    t, h, w = arr.shape[:3]
    with av.open(tmp, "w", format=fmt, options=_MUXER_OPTIONS) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.codec_context.options = dict(options)
        stream.codec_context.thread_count = 1
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(arr[i], format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _encode_gif(tmp, arr, rate):
    """GIF through a palettegen/paletteuse filter graph (one palette for the whole clip)."""
    from av.filter import Graph

    t, h, w = arr.shape[:3]
    tb = 1 / rate
    with av.open(tmp, "w", format="gif", options=_MUXER_OPTIONS) as container:
        stream = container.add_stream("gif", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "pal8"
        graph = Graph()
        src = graph.add_buffer(width=w, height=h, format="rgb24", time_base=tb)
        split = graph.add("split")
        gen = graph.add("palettegen", "stats_mode=full")
        use = graph.add("paletteuse", "dither=bayer:bayer_scale=5")
        sink = graph.add("buffersink")
        src.link_to(split)
        split.link_to(gen, 0, 0)
        split.link_to(use, 1, 0)
        gen.link_to(use, 0, 1)
        use.link_to(sink)
        graph.configure()
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(arr[i], format="rgb24")
            frame.pts = i
            frame.time_base = tb
            graph.push(frame)
        graph.push(None)
        while True:
            try:
                out = graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            out.pts = out.pts if out.pts is not None else 0
            for packet in stream.encode(out):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
