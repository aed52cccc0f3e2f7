"""Real video files, good and broken, written with PyAV for tests.

Every writer takes a path, writes a real file there (creating parent folders) and is
deterministic: the same arguments give the same bytes (single-threaded encoders, seeded
noise), so a test that fails does so every time.

Good videos -- :func:`write_test_video`::

    v = write_test_video(tmp_path / "a.mp4", n_frames=90, size=(64, 48), fps=30)
    v.path, v.frame_times        # where it is, the presentation time of every frame

The codec follows the extension unless ``codec`` is given:

========  ==========================  ===================================
ext       default                     also possible (``codec=``)
========  ==========================  ===================================
.mp4      h264 (libx264)              mpeg4
.mov      h264 (libx264)              mpeg4, mjpeg
.mkv      h264 (libx264)              mpeg4, libvpx, libvpx-vp9, mjpeg
.webm     vp8 (libvpx)                libvpx-vp9 (alias vp9; vp8 also ok)
.avi      mjpeg                       mpeg4
.ts       h264 (libx264)              mpeg4 (MPEG-TS starts its clock at 1.4 s)
========  ==========================  ===================================

h264 needs even sizes in 4:2:0, so an odd-sized h264 video is written in 4:4:4 (High 4:4:4
profile); every other codec keeps 4:2:0 (full-range 4:2:0 for MJPEG).

Patterns (what each frame shows; ``i`` is the frame index):

- ``moving_square``: dark grey, a white square moving left to right, a colour tint per frame.
- ``noise``: uniform random RGB (seeded), the hardest case for the encoders.
- ``index``: the frame index in binary as 8 vertical stripes (MSB left, white = 1), readable
  back after lossy coding and resizing with :func:`read_index`.
- ``top_white``: top half white, bottom half black.
- ``corner``: top-left quadrant white, the rest black (tells rotations and flips apart).

Broken files: :func:`write_audio_only`, :func:`write_zero_byte`, :func:`write_truncated`,
:func:`write_corrupt`, :func:`write_not_a_video`, :func:`write_still_image`.

:func:`make_zoo` writes one of everything into a folder and says, per file, what a robust
reader must do with it (``"ok"`` or the :class:`vqvp_core.video.io.VideoError` reason).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
import av
import numpy as np

__all__ = [
    "WrittenVideo",
    "ZOO_OK",
    "write_test_video",
    "write_audio_only",
    "write_zero_byte",
    "write_truncated",
    "write_corrupt",
    "write_not_a_video",
    "write_still_image",
    "make_frame",
    "read_index",
    "make_zoo",
]

ZOO_OK = "ok"

_DEFAULT_CODEC = {
    ".mp4": "libx264",
    ".m4v": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".webm": "libvpx",
    ".avi": "mjpeg",
    ".ts": "libx264",
}
_CODEC_ALIASES = {"h264": "libx264", "vp8": "libvpx", "vp9": "libvpx-vp9"}
_AUDIO_CODEC = {
    ".mp4": "aac",
    ".m4v": "aac",
    ".mov": "aac",
    ".mkv": "libopus",
    ".webm": "libopus",
    ".avi": "mp2",
    ".ts": "mp2",
}
# The time base that VFR timestamps are quantised to (divisible by 24, 25, 30, 60 fps).
_VFR_TIME_BASE = Fraction(1, 600)
# Frame durations, in nominal frame intervals, cycled through for a VFR video.
_VFR_PATTERN = (1.0, 0.5, 2.0, 1.5, 0.5, 0.5, 3.0, 1.0)
INDEX_BITS = 8


@dataclass(frozen=True)
class WrittenVideo:
    """What :func:`write_test_video` wrote. Usable wherever a path is (``os.fspath``)."""

    path: Path
    n_frames: int
    size: tuple[int, int]  # (width, height) as stored, before any rotation
    fps: float  # nominal rate
    codec: str
    rotation: int | None
    frame_times: tuple[float, ...] = field(repr=False)  # seconds, one per frame

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def duration(self) -> float:
        """End of the last frame, in seconds."""
        if not self.frame_times:
            return 0.0
        return self.frame_times[-1] + 1.0 / self.fps


# ---------------------------------------------------------------- patterns


def make_frame(pattern: str, index: int, size: tuple[int, int], n_frames: int = 1,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """One RGB uint8 frame (height, width, 3) of ``pattern`` for frame ``index``."""
    w, h = size
    if pattern == "moving_square":
        img = np.full((h, w, 3), 40, np.uint8)
        img[..., index % 3] = 40 + (index * 7) % 60
        side = max(1, min(w, h) // 4)
        span = max(1, w - side)
        x0 = (index * max(1, span // max(1, n_frames - 1))) % (span + 1) if n_frames > 1 else 0
        y0 = max(0, (h - side) // 2)
        img[y0:y0 + side, x0:x0 + side] = 255
        return img
    if pattern == "noise":
        rng = rng if rng is not None else np.random.default_rng(index)
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if pattern == "index":
        if index >= 2 ** INDEX_BITS:
            raise ValueError(f"the index pattern holds at most {2 ** INDEX_BITS} frames")
        img = np.zeros((h, w, 3), np.uint8)
        edges = np.linspace(0, w, INDEX_BITS + 1).round().astype(int)
        for b in range(INDEX_BITS):
            if (index >> (INDEX_BITS - 1 - b)) & 1:
                img[:, edges[b]:edges[b + 1]] = 255
        return img
    if pattern == "top_white":
        img = np.zeros((h, w, 3), np.uint8)
        img[: h // 2] = 255
        return img
    if pattern == "corner":
        img = np.zeros((h, w, 3), np.uint8)
        img[: h // 2, : w // 2] = 255
        return img
    raise ValueError(f"unknown pattern {pattern!r}")


def read_index(frame: np.ndarray) -> int:
    """The frame index drawn by the ``index`` pattern, read back from a decoded frame.

    Works after lossy coding and resizing as long as the frame still spans the full width
    of the original (e.g. a square source decoded with a square crop).
    """
    h, w = frame.shape[:2]
    gray = frame.astype(np.float32).mean(axis=-1)
    edges = np.linspace(0, w, INDEX_BITS + 1)
    value = 0
    for b in range(INDEX_BITS):
        lo, hi = edges[b], edges[b + 1]
        pad = (hi - lo) / 4  # stay clear of the blurred stripe edges
        a, z = int(round(lo + pad)), max(int(round(hi - pad)), int(round(lo + pad)) + 1)
        bit = gray[h // 4: max(h // 4 + 1, 3 * h // 4), a:z].mean() > 127
        value = (value << 1) | int(bit)
    return value


# ---------------------------------------------------------------- good videos


def _frame_times(n_frames: int, fps: float, vfr: bool) -> list[Fraction]:
    step = Fraction(fps).limit_denominator(1001) ** -1
    if not vfr:
        return [i * step for i in range(n_frames)]
    times, t = [], Fraction(0)
    for i in range(n_frames):
        times.append(t)
        t += step * Fraction(_VFR_PATTERN[i % len(_VFR_PATTERN)]).limit_denominator(16)
    return times


def _pix_fmt(codec: str, w: int, h: int) -> str:
    if codec == "mjpeg":
        return "yuvj420p"
    if codec == "libx264" and (w % 2 or h % 2):
        return "yuv444p"
    return "yuv420p"


def _encoder_options(codec: str) -> dict[str, str]:
    if codec == "libx264":
        # one thread: x264's output depends on its thread count; fast, near-lossless
        return {"preset": "ultrafast", "crf": "12", "threads": "1", "g": "12"}
    if codec in ("libvpx", "libvpx-vp9"):
        opts = {"deadline": "realtime", "cpu-used": "8", "threads": "1", "crf": "10",
                "b": "2M", "g": "12"}
        if codec == "libvpx-vp9":
            opts["row-mt"] = "0"
        return opts
    if codec == "mjpeg":
        return {"q:v": "2"}
    if codec == "mpeg4":
        return {"q:v": "2", "g": "12"}
    return {}


def _add_audio(container, codec: str):
    rate = 48000 if codec == "libopus" else 44100
    stream = container.add_stream(codec, rate=rate)
    stream.layout = "mono"
    return stream, rate


def _audio_frames(stream, rate: int, duration: float):
    """Sine-wave frames covering ``duration`` seconds, in the encoder's sample format."""
    ctx = stream.codec_context
    if not ctx.is_open:
        ctx.open()
    fmt = ctx.format.name
    frame_size = ctx.frame_size or 1024
    total = int(round(duration * rate))
    t0 = 0
    while t0 < total:
        n = frame_size
        t = (np.arange(t0, t0 + n) / rate).astype(np.float64)
        sig = 0.2 * np.sin(2 * np.pi * 440.0 * t)
        if fmt.startswith("flt"):
            arr = sig.astype(np.float32)[None, :]
        elif fmt.startswith("s16"):
            arr = (sig * 32767).astype(np.int16)[None, :]
        else:  # pragma: no cover - other encoders
            raise ValueError(f"unsupported audio sample format {fmt}")
        frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = t0
        frame.time_base = Fraction(1, rate)
        yield frame
        t0 += n


def write_test_video(
    path: str | os.PathLike,
    n_frames: int = 48,
    size: tuple[int, int] = (64, 48),
    fps: float = 30,
    *,
    codec: str | None = None,
    pattern="moving_square",
    rotation: int | None = None,
    hflip: bool = False,
    vfr: bool = False,
    with_audio: bool = False,
    seed: int = 0,
    faststart: bool = False,
) -> WrittenVideo:
    """Encode ``n_frames`` frames of ``pattern`` at ``size`` = (width, height) to ``path``.

    - ``codec``: encoder name (or alias h264/vp8/vp9); default chosen by extension (above).
    - ``pattern``: a name from the module docstring, or a callable ``(index, (w, h)) ->
      uint8 (h, w, 3)`` for custom content.
    - ``rotation``: 90, 180 or 270 writes a display matrix asking players to rotate the
      stored frames that many degrees counter-clockwise (PyAV's
      ``VideoStream.set_display_rotation``; mp4/mov/mkv/webm carry it, avi cannot).
      ``hflip`` adds a left-right mirror after the rotation.
    - ``vfr``: irregular frame durations cycling through ``_VFR_PATTERN`` x 1/fps, on a
      1/600 s time base; ``WrittenVideo.frame_times`` gives the exact times.
    - ``with_audio``: adds a mono sine audio track (aac / opus / mp2) muxed alongside.
    - ``faststart``: mp4/mov only, put the index (moov) before the media data.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    codec = _CODEC_ALIASES.get(codec, codec) if codec else _DEFAULT_CODEC.get(ext)
    if codec is None:
        raise ValueError(f"no default codec for extension {ext!r}; pass codec=")
    if rotation not in (None, 0, 90, 180, 270, -90):
        raise ValueError("rotation must be None, 0, 90, 180 or 270")
    w, h = size
    times = _frame_times(n_frames, fps, vfr)
    rng = np.random.default_rng(seed)
    rate = Fraction(fps).limit_denominator(1001)

    # bitexact: no random Matroska UIDs, no version strings -> same bytes every time
    options = {"fflags": "+bitexact"}
    if faststart and ext in (".mp4", ".mov", ".m4v"):
        options["movflags"] = "+faststart"
    with av.open(os.fspath(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = _pix_fmt(codec, w, h)
        stream.codec_context.options = _encoder_options(codec)
        stream.codec_context.thread_count = 1
        if vfr:
            stream.codec_context.time_base = _VFR_TIME_BASE
            stream.time_base = _VFR_TIME_BASE
            tb = _VFR_TIME_BASE
        else:
            tb = 1 / rate
            stream.codec_context.time_base = tb
        if rotation or hflip:
            stream.set_display_rotation((rotation or 0) % 360, hflip=hflip)
        audio = audio_iter = None
        if with_audio:
            audio, arate = _add_audio(container, _AUDIO_CODEC.get(ext, "aac"))
            end = float(times[-1] + 1 / rate) if times else 0.0
            audio_iter = _audio_frames(audio, arate, end)
        next_audio = next(audio_iter, None) if audio_iter else None
        for i, t in enumerate(times):
            if callable(pattern):
                img = np.ascontiguousarray(pattern(i, (w, h)), dtype=np.uint8)
            else:
                img = make_frame(pattern, i, (w, h), n_frames, rng)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(round(t / tb))
            frame.time_base = tb
            for packet in stream.encode(frame):
                container.mux(packet)
            # interleave audio up to the current video time
            while next_audio is not None and next_audio.pts / arate <= float(t):
                for packet in audio.encode(next_audio):
                    container.mux(packet)
                next_audio = next(audio_iter, None)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            while next_audio is not None:
                for packet in audio.encode(next_audio):
                    container.mux(packet)
                next_audio = next(audio_iter, None)
            for packet in audio.encode():
                container.mux(packet)
    return WrittenVideo(path=path, n_frames=n_frames, size=(w, h), fps=float(fps), codec=codec,
                        rotation=rotation, frame_times=tuple(float(t) for t in times))


# ---------------------------------------------------------------- broken files


def write_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> Path:
    """A valid file with one audio stream and no video (aac in .mp4/.m4a, pcm in .wav...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    codecs = {".wav": "pcm_s16le", ".webm": "libopus", ".mkv": "libopus", ".avi": "mp2"}
    codec = codecs.get(ext, "aac")
    with av.open(os.fspath(path), "w", options={"fflags": "+bitexact"}) as container:
        stream, rate = _add_audio(container, codec)
        for frame in _audio_frames(stream, rate, seconds):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_zero_byte(path: str | os.PathLike) -> Path:
    """An empty file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_truncated(path: str | os.PathLike, fraction: float = 0.5, *, faststart: bool = False,
                    n_frames: int = 48) -> Path:
    """A valid mp4 cut after ``fraction`` of its bytes.

    By default the index (moov) sits at the end, as a crashed recorder leaves it, so the cut
    loses it and the file cannot be opened at all. With ``faststart=True`` the index comes
    first and survives; the media data it points to stops halfway.
    """
    path = Path(path)
    full = write_test_video(path, n_frames=n_frames, size=(64, 48), fps=30,
                            pattern="moving_square", faststart=faststart)
    data = Path(full.path).read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_corrupt(path: str | os.PathLike, *, where: str = "payload", seed: int = 0,
                  n_frames: int = 48) -> Path:
    """A video with garbage in it.

    - ``where="payload"`` (default): a valid faststart mp4 (index first) whose media data
      after its first 1/8 is overwritten with random bytes: the container opens, the first
      frames decode, the rest is garbage to the decoder.
    - ``where="header"``: a valid mp4 whose first 64 bytes (the ``ftyp`` box and the start of
      the index) are random: no demuxer recognises it.
    - ``where="all"``: random bytes after an intact ``ftyp`` box, nothing else.
    """
    path = Path(path)
    write_test_video(path, n_frames=n_frames, size=(64, 48), fps=30, pattern="noise",
                     faststart=True)
    data = bytearray(Path(path).read_bytes())
    rng = np.random.default_rng(seed)
    if where == "payload":
        mdat = data.find(b"mdat")
        start = mdat + 4 + (len(data) - mdat) // 8
        data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    elif where == "header":
        data[:64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    elif where == "all":
        ftyp_len = int.from_bytes(data[:4], "big")
        data[ftyp_len:] = rng.integers(0, 256, len(data) - ftyp_len, dtype=np.uint8).tobytes()
    else:
        raise ValueError(f"where must be payload, header or all, not {where!r}")
    path.write_bytes(bytes(data))
    return path


def write_not_a_video(path: str | os.PathLike) -> Path:
    """A text file (named like a video)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("This is not a video.\nJust a few lines of plain text.\n" * 20)
    return path


def write_still_image(path: str | os.PathLike, size: tuple[int, int] = (64, 48)) -> Path:
    """A single PNG image (under whatever name ``path`` has)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = av.VideoFrame.from_ndarray(make_frame("corner", 0, size), format="rgb24")
    tmp = path.with_name(path.name + ".png")
    frame.save(tmp)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- the zoo


def make_zoo(directory: str | os.PathLike, *, n_frames: int = 20) -> dict[str, str]:
    """Write one file of every kind into ``directory``.

    Returns ``{file name: expected outcome}`` where the outcome is :data:`ZOO_OK` (``"ok"``:
    yields at least one 16-frame clip at the file's own frame rate) or the ``reason`` of the
    ``VideoError`` a reader must raise. ``n_frames`` (>= 16) is the length of the good videos;
    all of them are 30 fps, so ``read_clips(..., target_fps=30)`` gives one clip from each.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    n = n_frames
    zoo: dict[str, str] = {}

    def good(name, **kw):
        kw.setdefault("n_frames", n)
        write_test_video(d / name, fps=30, **kw)
        zoo[name] = ZOO_OK

    good("h264.mp4")
    good("mpeg4.mp4", codec="mpeg4")
    good("vp8.webm")
    good("vp9.webm", codec="libvpx-vp9")
    good("mjpeg.avi")
    good("mpeg4.avi", codec="mpeg4")
    good("h264.mkv")
    good("h264.ts")
    good("noise.mp4", pattern="noise")
    good("with audio.mp4", with_audio=True)
    good("with_audio.webm", with_audio=True)
    good("rotated_90.mp4", rotation=90, pattern="corner")
    good("rotated_270.webm", rotation=270, pattern="corner")
    good("vfr.mp4", vfr=True)
    good("odd_33x17.mp4", size=(33, 17))
    good("odd_33x17.avi", size=(33, 17))
    good("tiny_2x2.mp4", size=(2, 2))
    good("one_pixel_1x1.webm", size=(1, 1))
    good("tall_16x400.mp4", size=(16, 400))
    good("wide_400x16.webm", size=(400, 16))
    good("name with spaces.mp4")
    good("vidéo_日本語_ñ.mp4")
    good("UPPER_EXT.MP4")
    good("faststart.mp4", faststart=True)

    write_test_video(d / "too_short.mp4", n_frames=5, fps=30)
    zoo["too_short.mp4"] = "too_short"
    write_still_image(d / "still_image.mp4")
    zoo["still_image.mp4"] = "too_short"
    write_audio_only(d / "audio_only.m4a")
    zoo["audio_only.m4a"] = "no_video_stream"
    write_audio_only(d / "audio_only.mp4")
    zoo["audio_only.mp4"] = "no_video_stream"
    write_zero_byte(d / "zero_byte.mp4")
    zoo["zero_byte.mp4"] = "empty_file"
    write_truncated(d / "truncated.mp4")
    zoo["truncated.mp4"] = "corrupt"
    write_truncated(d / "truncated_faststart.mp4", faststart=True, n_frames=2 * n + 8)
    zoo["truncated_faststart.mp4"] = ZOO_OK
    write_corrupt(d / "corrupt_payload.mp4", n_frames=max(n, 48))
    zoo["corrupt_payload.mp4"] = "decode_error"
    write_corrupt(d / "corrupt_header.mp4", where="header")
    zoo["corrupt_header.mp4"] = "not_a_video"
    write_corrupt(d / "corrupt_all.mp4", where="all")
    zoo["corrupt_all.mp4"] = "corrupt"
    write_not_a_video(d / "not_a_video.mp4")
    zoo["not_a_video.mp4"] = "not_a_video"
    return zoo
