"""Reading videos, robust to whatever a crawl or a user's folder contains (writing:
:mod:`vqvp_core.video.write`; opening and classifying inputs: :mod:`vqvp_core.video.container`).

Reading (PyAV / FFmpeg underneath)::

    info = probe("a.mp4")                                   # VideoInfo, cheap
    for t, clip in read_clips("a.mp4", target_fps=10, size=64):
        ...                                                 # clip: uint8 (16, 64, 64, 3) RGB

    frames = decode_frames(src, target_fps, size)           # iterator of (size, size, 3)
    windows = iter_windows(frames, clip_len=16, stride=16)  # iterator of (index, clip)

``source`` is a local path (``str`` / ``os.PathLike``), a URL that fsspec understands
(``s3://bucket/key.mp4``, ``file:///...``, ``memory://...``: any string with ``://``), or
an open binary file object (e.g. ``fsspec.open(url, "rb").open()``; it must be readable,
ideally seekable; a seekable one is rewound to 0 first and is not closed).

Every failure that comes from the input is a :class:`VideoError` whose ``reason`` is one of
:data:`REASONS`:

=====================  ===================================================================
``empty_file``         zero bytes
``not_a_video``        no demuxer recognises the bytes (text, random data, unknown format)
``corrupt``            a known container signature (mp4 ``ftyp``, Matroska, AVI, TS, ...)
                       whose structure cannot be parsed, e.g. an mp4 cut before its index
``no_video_stream``    the container holds no video track (audio only; cover art ignored)
``unsupported_codec``  a video track this FFmpeg build has no decoder for
``decode_error``       more than ``max_decode_errors`` packets/frames failed to decode, or
                       not one frame decoded
``too_short``          not a single window of ``clip_len`` frames at ``target_fps``
                       (read_clips), or a track without frames (probe)
``unreadable``         the bytes could not be read: missing file, permissions, a directory,
                       an I/O error of the file object / remote store (retrying may help)
=====================  ===================================================================

Bad *arguments* (``size <= 0``, ``target_fps <= 0``, ...) raise ``ValueError`` at call time.
Readers are generators: input errors surface while iterating, possibly after some frames /
clips were already produced (a file damaged halfway); callers who want all-or-nothing
collect first.

Timing: decoded frames are placed on the stream's timeline by their presentation timestamps
(exact rationals; 0 = the stream's start time). Output frame ``k`` is, for the tick
``start_time + k / target_fps``, the latest decoded frame whose timestamp is <= the tick
(within ``min(time_base, 1 ms)``), which converts any frame rate, constant or variable, in
either direction. Ticks before the first decoded frame are dropped (the first output tick is
the first one at or after it), ticks at or after the end of the last frame (its pts plus its
duration) are not produced, nor ticks at or after ``end_time``. Timestamps that jump by
more than :data:`MAX_TIMESTAMP_GAP` seconds (or back by more than 1 s) are treated as a
discontinuity and closed up, so broken pts cannot produce hours of one repeated frame.

Geometry: each output frame is the stored frame with its short side scaled to ``size``,
centre-cropped to ``size`` x ``size`` and turned upright according to the stream's display
matrix (``rotate`` tags of phone videos included); see :mod:`vqvp_core.video.transform` for
the scaler choice (swscale AREA down / BICUBIC up, bit-exact).

Determinism: decoding is single-threaded by default (``threads=1``) and scaling bit-exact, so
the same bytes give the same arrays. FFmpeg's threaded decoders are bit-exact on valid streams
too, but their error concealment on damaged streams can depend on timing; parallelise across
files instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator

import av
import av.error
import numpy as np

from av.sidedata.sidedata import Type as _SideDataType

from vqvp_core.clip import CLIP_FRAMES, GIVEN_FRAMES
from vqvp_core.video.container import REASONS, Source, VideoError, describe, open_container, video_stream
from vqvp_core.video.transform import IDENTITY, _Scaler, display_orientation, frame_to_square_rgb

_DISPLAYMATRIX = _SideDataType.DISPLAYMATRIX

log = logging.getLogger(__name__)

__all__ = [
    "REASONS",
    "DEFAULT_MAX_DECODE_ERRORS",
    "VideoError",
    "VideoInfo",
    "probe",
    "decode_frames",
    "iter_windows",
    "read_clips",
]

#: Bad packets (or frames the decoder flags as corrupt) tolerated per file before giving up.
#: A truncated download typically costs one; real corruption costs dozens.
DEFAULT_MAX_DECODE_ERRORS = 3

#: Seconds between two consecutive frames beyond which timestamps are taken to be broken.
MAX_TIMESTAMP_GAP = 10.0



@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` found out about the first video stream.

    ``width``/``height``: stored (coded) frame size; ``display_width``/``display_height``
    swap them when ``rotation`` is 90 or 270. ``rotation``: degrees counter-clockwise, one of
    0/90/180/270, that the display matrix turns the stored frames by, followed by a
    left-right mirror when ``mirrored`` (the readers apply both). ``fps``: the stream's average
    frame rate (None if unknown). ``duration``: seconds (stream, else container; None if
    unknown). ``n_frames``: frame count from the container index (None if not stored, as in
    Matroska/WebM). ``codec``: decoder name; ``format``: demuxer name.
    """

    width: int
    height: int
    fps: float | None
    duration: float | None
    rotation: int
    codec: str
    n_frames: int | None
    format: str
    mirrored: bool = False

    @property
    def display_width(self) -> int:
        return self.height if self.rotation in (90, 270) else self.width

    @property
    def display_height(self) -> int:
        return self.width if self.rotation in (90, 270) else self.height


def _configure_decoder(stream, threads: int) -> None:
    ctx = stream.codec_context
    ctx.thread_count = threads
    ctx.thread_type = "NONE" if threads == 1 else "AUTO"


@contextlib.contextmanager
def _video_errors(name: str):
    """The one mapping of what reading a video raises to VideoError kinds: a missing or forbidden
    file or a failed read is ``unreadable``, an FFmpeg error ``decode_error``."""
    try:
        yield
    except VideoError:
        raise
    except av.error.FFmpegError as e:
        raise VideoError("decode_error", f"{type(e).__name__}: {e}", name) from e
    except OSError as e:  # FileNotFoundError, PermissionError, a failed read
        raise VideoError("unreadable", f"{type(e).__name__}: {e}", name) from e


def _decoded_frames(container, stream, name: str, max_errors: int, errors: list):
    """Decoded ``av.VideoFrame`` in presentation order.

    Bad packets (and frames the decoder flags corrupt) are counted in ``errors`` (a one-item
    list, shared with the caller) and skipped; one more than ``max_errors`` raises
    ``decode_error``. A demuxer error ends the stream (it cannot resynchronise reliably).
    """

    def bad(what: str, e=None):
        errors[0] += 1
        log.debug("%s: %s %s", name, what, e or "")
        if errors[0] > max_errors:
            raise VideoError("decode_error",
                             f"{errors[0]} decoding errors (more than {max_errors}); last: {what}"
                             + (f": {e}" if e else ""), name) from e

    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except (FileNotFoundError, PermissionError) as e:
            raise VideoError("unreadable", f"{type(e).__name__}: {e}", name) from e
        except av.error.FFmpegError as e:
            bad("demuxing failed", e)
            packet = None
        except OSError as e:
            raise VideoError("unreadable", f"read failed: {type(e).__name__}: {e}", name) from e
        if packet is None:  # demuxer gave up: flush what the decoder holds and stop
            try:
                yield from stream.decode(None)
            except av.error.FFmpegError as e:
                bad("flushing the decoder failed", e)
            return
        try:
            frames = stream.decode(packet)
        except av.error.DecoderNotFoundError as e:  # pragma: no cover - depends on the build
            raise VideoError("unsupported_codec", str(e), name) from e
        except av.error.FFmpegError as e:
            bad(f"packet at pts={packet.pts} failed", e)
            continue
        for frame in frames:
            if frame.is_corrupt:
                bad(f"frame at pts={frame.pts} flagged corrupt")
            yield frame


# --------------------------------------------------------------------------- timing


def _as_fraction(x) -> Fraction:
    if isinstance(x, (int, Fraction)):
        return Fraction(x)
    return Fraction(repr(float(x)))  # 29.97 -> 2997/100, not the binary expansion


def _resample(timed, period: Fraction, start: Fraction, end: Fraction | None, eps: Fraction,
              nominal_dt: Fraction, max_frames: int | None):
    """Pick frames for ticks ``start + k * period`` from ``(time, duration, frame)`` triples.

    ``time`` may be None (then previous time + last gap / ``nominal_dt``). Damaged
    timestamps: a small step back is clamped to the previous time; a jump of more than
    :data:`MAX_TIMESTAMP_GAP` seconds forward, or of more than a second back (a wrap, a
    spliced file), is a discontinuity: later timestamps are shifted so the jump becomes one
    ordinary frame gap (so garbage pts never turn into hours of one repeated frame).
    ``duration`` (None if unknown) only matters for the last frame and is capped the same
    way. Yields ``(tick, frame)``; a frame repeats when the output rate is higher than the
    input's.
    """
    max_gap = Fraction(MAX_TIMESTAMP_GAP)
    k = 0
    emitted = 0
    prev = prev_t = prev_dur = None
    gap = None
    shift = Fraction(0)
    for t, dur, frame in timed:
        if t is None:
            t = (prev_t + (gap or nominal_dt)) if prev_t is not None else start
        else:
            t = t + shift
        if prev_t is not None and (t - prev_t > max_gap or prev_t - t > 1):
            step = gap or nominal_dt
            log.warning("timestamp jump from %.3fs to %.3fs treated as a discontinuity",
                        float(prev_t), float(t))
            shift += prev_t + step - t
            t = prev_t + step
        if prev_t is not None and t < prev_t:
            log.debug("timestamp %s goes back before %s; clamped", t, prev_t)
            t = prev_t
        if prev is None:
            # Ticks before the first frame are dropped: start at the first tick >= t - eps.
            k = max(0, math.ceil((t - eps - start) / period))
        else:
            while start + k * period + eps < t:  # this tick precedes the new frame: prev
                tick = start + k * period
                if end is not None and tick >= end:
                    return
                yield tick, prev
                emitted += 1
                if max_frames is not None and emitted >= max_frames:
                    return
                k += 1
            if t > prev_t:
                gap = t - prev_t
        prev, prev_t, prev_dur = frame, t, dur
        if end is not None and prev_t >= end + eps and start + k * period >= end:
            return
    if prev is None:
        return
    last_end = prev_t + min(prev_dur or gap or nominal_dt, max_gap)
    while start + k * period < last_end - eps:
        tick = start + k * period
        if end is not None and tick >= end:
            return
        yield tick, prev
        emitted += 1
        if max_frames is not None and emitted >= max_frames:
            return
        k += 1


def _check_args(target_fps, size, start_time, end_time, max_frames=None):
    if not (isinstance(size, (int, np.integer)) and size > 0):
        raise ValueError(f"size must be a positive int, not {size!r}")
    if not (target_fps and float(target_fps) > 0 and math.isfinite(float(target_fps))):
        raise ValueError(f"target_fps must be a positive number, not {target_fps!r}")
    if start_time is None or float(start_time) < 0:
        raise ValueError(f"start_time must be >= 0, not {start_time!r}")
    if end_time is not None and float(end_time) <= float(start_time):
        raise ValueError(f"end_time ({end_time}) must be after start_time ({start_time})")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0, not {max_frames!r}")


def _timed_frames(source: Source, target_fps, size: int, start_time, end_time, max_frames,
                  max_decode_errors: int, threads: int) -> Iterator[tuple[Fraction, np.ndarray]]:
    """(tick in seconds, uint8 frame) pairs; the engine behind decode_frames/read_clips."""
    if max_frames == 0:
        return
    with open_container(source) as (container, name):
        stream = video_stream(container, name)
        _configure_decoder(stream, threads)
        tb = stream.time_base or Fraction(1, 1_000_000)
        period = 1 / _as_fraction(target_fps)
        eps = min(tb, Fraction(1, 1000), period / 4)
        rate = stream.average_rate or stream.guessed_rate
        nominal_dt = (1 / Fraction(rate)) if rate else period
        origin = stream.start_time * tb if stream.start_time is not None else None
        start = _as_fraction(start_time)
        end = _as_fraction(end_time) if end_time is not None else None
        errors = [0]

        if start > 0:
            target = (origin or 0) + start
            try:
                container.seek(math.floor(target / tb), stream=stream, backward=True,
                               any_frame=False)
            except (av.error.FFmpegError, OSError) as e:  # decode from the start instead
                log.warning("%s: seeking to %.3fs failed (%s); decoding from the start",
                            name, float(start), e)
                try:
                    container.seek(0)
                except (av.error.FFmpegError, OSError):
                    pass

        def timed():
            nonlocal origin
            for frame in _decoded_frames(container, stream, name, max_decode_errors, errors):
                ftb = frame.time_base or tb
                t = frame.pts * ftb if frame.pts is not None else None
                if origin is None and t is not None:
                    origin = t
                dur = frame.duration * ftb if frame.duration else None
                yield (t - origin if t is not None else None), dur, frame

        scaler = _Scaler()
        orient_cache: dict[bytes, tuple] = {}
        last_frame = last_arr = None
        n = 0
        with _video_errors(name):
            for tick, frame in _resample(timed(), period, start, end, eps, nominal_dt, max_frames):
                if frame is last_frame:
                    arr = last_arr.copy()
                else:
                    arr = _to_array(frame, size, scaler, orient_cache)
                    last_frame, last_arr = frame, arr
                n += 1
                yield tick, arr
        if n == 0 and errors[0]:
            raise VideoError("decode_error", f"no frame decoded ({errors[0]} errors)", name)


def _orientation(frame, cache: dict):
    """(k, hflip, vflip) that shows ``frame`` upright, from its display matrix side data."""
    sd = frame.side_data.get(_DISPLAYMATRIX)
    matrix_bytes = bytes(sd) if sd is not None else b""
    orientation = cache.get(matrix_bytes)
    if orientation is None:
        if matrix_bytes:
            matrix = np.frombuffer(matrix_bytes, dtype=np.int32)[:9].tolist()
            orientation = display_orientation(frame.rotation, matrix)
        else:
            orientation = IDENTITY
        cache[matrix_bytes] = orientation
    return orientation


def _to_array(frame, size: int, scaler, orient_cache: dict) -> np.ndarray:
    return frame_to_square_rgb(frame, size, _orientation(frame, orient_cache), scaler)


# --------------------------------------------------------------------------- public readers


def probe(source: Source, *, max_decode_errors: int = DEFAULT_MAX_DECODE_ERRORS) -> VideoInfo:
    """Open ``source``, check it has a decodable video track, describe it.

    Reads the container header and decodes up to the first frame (the display rotation is
    only available on decoded frames in PyAV 18). Raises :class:`VideoError`
    (``empty_file``, ``not_a_video``, ``corrupt``, ``no_video_stream``,
    ``unsupported_codec``, ``decode_error``, ``too_short`` for a track without any frame,
    ``unreadable``).
    """
    with open_container(source) as (container, name):
        stream = video_stream(container, name)
        _configure_decoder(stream, 1)
        errors = [0]
        first = None
        with _video_errors(name):
            for frame in _decoded_frames(container, stream, name, max_decode_errors, errors):
                first = frame
                break
        if first is None:
            if errors[0]:
                raise VideoError("decode_error", f"no frame decoded ({errors[0]} errors)", name)
            raise VideoError("too_short", "the video track has no frames", name)
        tb = stream.time_base
        if stream.duration is not None and tb:
            duration = float(stream.duration * tb)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        rate = stream.average_rate or stream.guessed_rate
        k, hflip, vflip = _orientation(first, {})
        if vflip:  # a top-bottom mirror is a half turn plus a left-right mirror
            k, hflip = k + 2, not hflip
        rotation, mirrored = (k % 4) * 90, hflip
        return VideoInfo(
            width=first.width,
            height=first.height,
            fps=float(rate) if rate else None,
            duration=duration,
            rotation=rotation,
            codec=stream.codec_context.name,
            n_frames=stream.frames or None,
            format=container.format.name,
            mirrored=mirrored,
        )


def decode_frames(
    source: Source,
    target_fps: float,
    size: int,
    start_time: float = 0.0,
    max_frames: int | None = None,
    *,
    end_time: float | None = None,
    max_decode_errors: int = DEFAULT_MAX_DECODE_ERRORS,
    threads: int = 1,
) -> Iterator[np.ndarray]:
    """Frames of ``source`` at ``target_fps``, each uint8 RGB (size, size, 3), upright.

    ``start_time``/``end_time``: seconds from the start of the video track; decoding seeks
    to the keyframe at or before ``start_time`` (``container.seek(..., backward=True)``) and
    stops at the first tick >= ``end_time``. ``max_frames``: stop after that many frames.
    See the module docstring for timing, geometry, determinism and the errors raised.
    """
    _check_args(target_fps, size, start_time, end_time, max_frames)
    gen = _timed_frames(source, target_fps, int(size), start_time, end_time, max_frames,
                        max_decode_errors, threads)
    return (arr for _, arr in gen)


def read_clip(source: Source, fps: float, size: int, start: int = 0, frames: int = CLIP_FRAMES,
              need: int = GIVEN_FRAMES) -> np.ndarray:
    """Up to ``frames`` frames of ``source`` from frame ``start`` (counted at ``fps``), as ingest
    reads them: uint8 (T, size, size, 3). A VideoError (reason ``too_short``) with fewer than
    ``need``. What `vqvp predict` and the MLflow video predictor read their given frames with."""
    got = list(decode_frames(source, target_fps=fps, size=size, start_time=start / fps, max_frames=frames))
    if len(got) < need:
        raise VideoError("too_short", f"{len(got)} frames from frame {start} at {fps:g} fps, need at least {need}",
                         str(source))
    return np.stack(got)


def iter_windows(frames: Iterable[np.ndarray], clip_len: int = 16,
                 stride: int = 16) -> Iterator[tuple[int, np.ndarray]]:
    """Cut ``frames`` into windows ``(start_index, stacked (clip_len, *frame.shape))``.

    Windows start at indices 0, stride, 2*stride, ... and only complete windows are produced.
    ``stride < clip_len`` overlaps them, ``stride > clip_len`` skips frames in between. At
    most ``clip_len`` frames are held at any time; each window is a fresh array.
    """
    if clip_len <= 0 or stride <= 0:
        raise ValueError(f"clip_len and stride must be positive, not {clip_len}, {stride}")
    return _iter_windows(frames, clip_len, stride)


def _iter_windows(frames, clip_len, stride):
    buf: deque = deque()
    buf_start = 0  # index of buf[0]
    for i, frame in enumerate(frames):
        if i < buf_start:  # in a gap between windows (stride > clip_len)
            continue
        buf.append(frame)
        if len(buf) == clip_len:
            yield buf_start, np.stack(buf)
            next_start = buf_start + stride
            drop = min(stride, len(buf))
            for _ in range(drop):
                buf.popleft()
            buf_start = next_start


def read_clips(
    source: Source,
    target_fps: float,
    size: int,
    clip_len: int = 16,
    stride: int = 16,
    start_time: float = 0.0,
    end_time: float | None = None,
    max_clips: int | None = None,
    *,
    max_decode_errors: int = DEFAULT_MAX_DECODE_ERRORS,
    threads: int = 1,
) -> Iterator[tuple[float, np.ndarray]]:
    """Clips of ``source``: ``(start_seconds, uint8 (clip_len, size, size, 3))``.

    :func:`decode_frames` + :func:`iter_windows`. ``start_seconds`` is the tick of the clip's
    first frame on the track's timeline. Decodes no further than ``max_clips`` need. Raises
    ``VideoError("too_short")`` (at the end of iteration) when not even one window fits, and
    the other :data:`REASONS` for inputs that cannot be read.
    """
    _check_args(target_fps, size, start_time, end_time)
    if clip_len <= 0 or stride <= 0:
        raise ValueError(f"clip_len and stride must be positive, not {clip_len}, {stride}")
    if max_clips is not None and max_clips < 0:
        raise ValueError(f"max_clips must be >= 0, not {max_clips!r}")
    return _read_clips(source, target_fps, int(size), clip_len, stride, start_time, end_time,
                       max_clips, max_decode_errors, threads)


def _read_clips(source, target_fps, size, clip_len, stride, start_time, end_time, max_clips,
                max_decode_errors, threads):
    if max_clips == 0:
        return
    max_frames = None if max_clips is None else (max_clips - 1) * stride + clip_len
    period = 1 / _as_fraction(target_fps)
    first_tick: list[Fraction] = []
    count = [0]

    def arrays():
        for tick, arr in _timed_frames(source, target_fps, size, start_time, end_time,
                                       max_frames, max_decode_errors, threads):
            if not first_tick:
                first_tick.append(tick)
            count[0] += 1
            yield arr

    n = 0
    for index, clip in _iter_windows(arrays(), clip_len, stride):
        yield float(first_tick[0] + index * period), clip
        n += 1
        if max_clips is not None and n >= max_clips:
            return
    if n == 0:
        span = f" between {start_time}s and {end_time}s" if end_time is not None else ""
        raise VideoError("too_short",
                         f"{count[0]} frames at {float(target_fps):g} fps{span}; "
                         f"a clip needs {clip_len}", describe(source))

