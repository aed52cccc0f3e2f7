"""Tests of vqvp_core.video.io on real files written by fixtures.py (all small: < 1 s total each)."""

from __future__ import annotations

import io as pyio
import os
import pickle
from fractions import Fraction
from pathlib import Path

import fsspec
import numpy as np
import pytest

from tests.vqvp_core.video import fixtures as fx
from vqvp_core.video import io as vio
from vqvp_core.video.io import (
    VideoError,
    decode_frames,
    iter_windows,
    probe,
    read_clips,
)
from vqvp_core.video.write import write_video
from vqvp_core.video.transform import (
    apply_orientation,
    center_crop,
    display_orientation,
    scaled_size,
)


# --------------------------------------------------------------------------- the zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoo")
    return d, fx.make_zoo(d)


def test_zoo_every_file_decodes_or_is_rejected_with_its_reason(zoo):
    d, expected = zoo
    assert len(expected) >= 30
    assert set(os.listdir(d)) == set(expected)  # no stray files from the writers
    outcomes = {}
    for name, want in expected.items():
        try:
            clips = list(read_clips(d / name, target_fps=30, size=32))
        except VideoError as e:
            assert e.reason in vio.REASONS
            outcomes[name] = e.reason
            continue
        assert clips, name
        for t, clip in clips:
            assert clip.dtype == np.uint8 and clip.shape == (16, 32, 32, 3), name
        outcomes[name] = fx.ZOO_OK
    assert outcomes == expected


def test_zoo_probe_agrees(zoo):
    d, expected = zoo
    for name, want in expected.items():
        if want in ("empty_file", "not_a_video", "corrupt", "no_video_stream", "unreadable"):
            with pytest.raises(VideoError) as ei:
                probe(d / name)
            assert ei.value.reason == want, name
        elif want == fx.ZOO_OK:
            info = probe(d / name)
            assert info.width > 0 and info.height > 0 and info.codec, name
            assert info.fps == pytest.approx(30, rel=0.3), name


def test_zoo_names_and_geometry(zoo):
    d, _ = zoo
    assert probe(d / "vidéo_日本語_ñ.mp4").codec == "h264"
    info = probe(d / "tall_16x400.mp4")
    assert (info.width, info.height) == (16, 400)
    info = probe(d / "rotated_90.mp4")
    assert info.rotation == 90 and (info.display_width, info.display_height) == (48, 64)
    assert probe(d / "rotated_270.webm").rotation == 270
    assert probe(d / "mjpeg.avi").n_frames == 20 and probe(d / "vp8.webm").n_frames is None


# --------------------------------------------------------------------------- frame rate


@pytest.mark.parametrize("ext,codec", [(".mp4", None), (".mp4", "mpeg4"), (".webm", None),
                                       (".avi", None), (".mkv", None), (".ts", None)])
def test_three_seconds_at_30fps_gives_30_frames_at_10fps(tmp_path, ext, codec):
    v = fx.write_test_video(tmp_path / f"v{ext}", n_frames=90, size=(32, 32), fps=30,
                            codec=codec, pattern="index")
    frames = list(decode_frames(v, target_fps=10, size=32))
    assert len(frames) == 30
    assert [fx.read_index(f) for f in frames] == list(range(0, 90, 3))
    clips = list(read_clips(v, target_fps=10, size=32, clip_len=10, stride=10))
    assert [round(t, 6) for t, _ in clips] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("ext", [".mp4", ".webm"])
@pytest.mark.parametrize("target_fps", [30, 12, 7.5, 60, 29.97])
def test_resampling_takes_latest_frame_at_or_before_each_tick(tmp_path, ext, target_fps):
    v = fx.write_test_video(tmp_path / f"v{ext}", n_frames=45, size=(32, 32), fps=30,
                            pattern="index")
    got = [fx.read_index(f) for f in decode_frames(v, target_fps, size=32)]
    tick = Fraction(str(target_fps)) ** -1
    # ticks k/target strictly before the end of the last frame (45/30 s)
    expected = []
    k = 0
    while k * tick < Fraction(45, 30):
        expected.append(int(k * tick * 30))  # floor(t * 30): last frame with pts <= t
        k += 1
    assert got == expected


def test_upsampling_repeats_frames_as_copies(tmp_path):
    v = fx.write_test_video(tmp_path / "v.mp4", n_frames=20, size=(32, 32), fps=10,
                            pattern="index")
    frames = list(decode_frames(v, 30, 32))
    assert len(frames) == 60
    assert [fx.read_index(f) for f in frames] == [i // 3 for i in range(60)]
    frames[3][:] = 0  # repeated frames (of source frame 1) are independent arrays
    assert frames[4].any()


def test_variable_frame_rate(tmp_path):
    v = fx.write_test_video(tmp_path / "vfr.mp4", n_frames=40, size=(32, 32), fps=30,
                            pattern="index", vfr=True)
    times = [Fraction(t).limit_denominator(600) for t in v.frame_times]
    assert len(set(np.diff(v.frame_times).round(6))) > 2  # really irregular
    got = [fx.read_index(f) for f in decode_frames(v, 10, 32)]
    for k, idx in enumerate(got):
        tick = Fraction(k, 10)
        assert idx == max(i for i, t in enumerate(times) if t <= tick), k
    # every tick up to the last frame's time is there (the last frame lasts its own duration)
    assert len(got) >= int(times[-1] * 10) + 1
    assert len(got) <= int(v.duration * 10) + 2


def test_vfr_webm_and_mkv(tmp_path):
    for ext in (".webm", ".mkv"):
        v = fx.write_test_video(tmp_path / f"vfr{ext}", n_frames=24, size=(32, 32), fps=30,
                                pattern="index", vfr=True)
        times = v.frame_times
        got = [fx.read_index(f) for f in decode_frames(v, 20, 32)]
        for k, idx in enumerate(got):
            assert idx == max(i for i, t in enumerate(times) if t <= k / 20 + 1e-3), (ext, k)


def test_start_end_time_and_max_clips(tmp_path):
    v = fx.write_test_video(tmp_path / "v.mp4", n_frames=90, size=(32, 32), fps=30,
                            pattern="index")  # keyframe every 12 frames: seeking must decode on
    clips = list(read_clips(v, 30, 32, clip_len=8, stride=8, start_time=1.0, max_clips=2))
    assert [round(t, 6) for t, _ in clips] == [1.0, pytest.approx(1.0 + 8 / 30)]
    assert [fx.read_index(f) for f in clips[0][1]] == list(range(30, 38))
    assert [fx.read_index(f) for f in clips[1][1]] == list(range(38, 46))

    frames = list(decode_frames(v, 10, 32, start_time=0.5, end_time=1.5))
    assert [fx.read_index(f) for f in frames] == list(range(15, 45, 3))
    assert len(list(decode_frames(v, 30, 32, max_frames=7))) == 7

    with pytest.raises(VideoError) as ei:
        list(read_clips(v, 30, 32, start_time=2.9))
    assert ei.value.reason == "too_short"


def test_stride_and_overlap(tmp_path):
    v = fx.write_test_video(tmp_path / "v.webm", n_frames=40, size=(32, 32), fps=30,
                            pattern="index")
    clips = list(read_clips(v, 30, 32, clip_len=16, stride=8))
    assert [round(t * 30) for t, _ in clips] == [0, 8, 16, 24]
    assert [fx.read_index(c[0]) for _, c in clips] == [0, 8, 16, 24]


# --------------------------------------------------------------------------- orientation


def _quadrants(img: np.ndarray) -> str:
    """Which quadrants are bright: a string over 'tl', 'tr', 'bl', 'br'."""
    h, w = img.shape[:2]
    g = img.mean(axis=-1)
    q = {"tl": g[: h // 2, : w // 2], "tr": g[: h // 2, w // 2:],
         "bl": g[h // 2:, : w // 2], "br": g[h // 2:, w // 2:]}
    return "+".join(k for k, v in q.items() if v.mean() > 127)


@pytest.mark.parametrize("ext", [".mp4", ".webm"])
@pytest.mark.parametrize("rotation,hflip,quadrant", [
    (None, False, "tl"),
    (90, False, "bl"),    # counter-clockwise quarter turn: the top-left corner goes bottom-left
    (180, False, "br"),
    (270, False, "tr"),
    (None, True, "tr"),   # mirrored
    (90, True, "br"),     # turned, then mirrored
])
def test_display_matrix_makes_frames_upright(tmp_path, ext, rotation, hflip, quadrant):
    v = fx.write_test_video(tmp_path / f"r{ext}", n_frames=3, size=(32, 32), fps=30,
                            pattern="corner", rotation=rotation, hflip=hflip)
    frames = list(decode_frames(v, 30, 16))
    assert len(frames) == 3
    assert all(_quadrants(f) == quadrant for f in frames)
    info = probe(v)
    assert (info.rotation, info.mirrored) == ((rotation or 0), hflip)


def test_rotated_landscape_becomes_portrait(tmp_path):
    # stored 64x32 landscape, top half white; shown turned 90 degrees counter-clockwise it is
    # a 32x64 portrait whose left half is white -- and the square crop keeps that.
    v = fx.write_test_video(tmp_path / "phone.mp4", n_frames=2, size=(64, 32), fps=30,
                            pattern="top_white", rotation=90)
    (f, *_) = decode_frames(v, 30, 16)
    assert _quadrants(f) == "tl+bl"
    v = fx.write_test_video(tmp_path / "phone_cw.mp4", n_frames=2, size=(64, 32), fps=30,
                            pattern="top_white", rotation=270)
    (f, *_) = decode_frames(v, 30, 16)
    assert _quadrants(f) == "tr+br"
    assert probe(v).display_width == 32


def test_display_orientation_table():
    # ffmpeg autorotate decisions, for the matrices PyAV's set_display_rotation writes
    one = 65536
    assert display_orientation(0, None) == (0, False, False)
    assert display_orientation(90, [0, -one, 0, one, 0, 0, 0, 0, 1 << 30]) == (1, False, False)
    assert display_orientation(-90, [0, one, 0, -one, 0, 0, 0, 0, 1 << 30]) == (3, False, False)
    assert display_orientation(-180, [-one, 0, 0, 0, one, 0, 0, 0, 1 << 30]) == (0, True, False)
    assert display_orientation(0, [one, 0, 0, 0, -one, 0, 0, 0, 1 << 30]) == (0, False, True)
    img = np.arange(6).reshape(2, 3, 1)
    assert apply_orientation(img, (1, False, False))[..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("size_wh", [(33, 17), (17, 33), (2, 2), (16, 400), (400, 16), (96, 64)])
def test_short_side_resize_and_center_crop_shapes(tmp_path, size_wh):
    ext = ".webm"  # vp8 takes any size
    v = fx.write_test_video(tmp_path / f"v{ext}", n_frames=2, size=size_wh, fps=30)
    for size in (8, 24):
        frames = list(decode_frames(v, 30, size))
        assert len(frames) == 2
        assert all(f.shape == (size, size, 3) and f.dtype == np.uint8 for f in frames)
        assert all(f.flags["C_CONTIGUOUS"] for f in frames)


def test_center_crop_keeps_the_middle(tmp_path):
    def bands(i, wh):  # landscape 96x32: black | white | black thirds
        w, h = wh
        img = np.zeros((h, w, 3), np.uint8)
        img[:, w // 3: 2 * w // 3] = 255
        return img

    v = fx.write_test_video(tmp_path / "bands.mp4", n_frames=2, size=(96, 32), fps=30,
                            pattern=bands)
    (f, _) = decode_frames(v, 30, 16)
    assert f[:, 2:-2].min() > 200  # the centre square is the white band

    def portrait(i, wh):  # portrait 32x96: white | black | white horizontal thirds
        w, h = wh
        img = np.full((h, w, 3), 255, np.uint8)
        img[h // 3: 2 * h // 3] = 0
        return img

    v = fx.write_test_video(tmp_path / "portrait.mp4", n_frames=2, size=(32, 96), fps=30,
                            pattern=portrait)
    (f, _) = decode_frames(v, 30, 16)
    assert f[2:-2].max() < 60


def test_scaled_size_and_center_crop_helpers():
    assert scaled_size(1920, 1080, 64) == (114, 64)
    assert scaled_size(1080, 1920, 64) == (64, 114)
    assert scaled_size(1, 1, 64) == (64, 64)
    assert scaled_size(400, 16, 8) == (200, 8)
    img = np.arange(5 * 7).reshape(5, 7, 1)
    assert center_crop(img, 3)[..., 0].tolist() == [[9, 10, 11], [16, 17, 18], [23, 24, 25]]


# --------------------------------------------------------------------------- determinism


def test_decoding_is_deterministic(tmp_path):
    v = fx.write_test_video(tmp_path / "noise.mp4", n_frames=24, size=(80, 48), fps=30,
                            pattern="noise")
    a = np.stack(list(decode_frames(v, 24, 32)))
    b = np.stack(list(decode_frames(v, 24, 32)))
    c = np.stack(list(decode_frames(v, 24, 32, threads=2)))
    assert a.tobytes() == b.tobytes() == c.tobytes()
    # the writer is deterministic too: same arguments, same bytes
    w = fx.write_test_video(tmp_path / "noise2.mp4", n_frames=24, size=(80, 48), fps=30,
                            pattern="noise")
    assert Path(v).read_bytes() == Path(w).read_bytes()


# --------------------------------------------------------------------------- file objects


def test_fsspec_file_objects_and_urls(tmp_path):
    v = fx.write_test_video(tmp_path / "v d.webm", n_frames=20, size=(48, 32), fps=30)
    ref = [c for _, c in read_clips(v, 30, 16)]
    assert len(ref) == 1

    with fsspec.open(f"file://{v.path}", "rb") as f:
        got = [c for _, c in read_clips(f, 30, 16)]
        assert probe(f).codec == "vp8"  # the object is rewound each time, and not closed
        assert not f.closed
    assert np.array_equal(got[0], ref[0])

    mem = fsspec.filesystem("memory")
    mem.pipe("/vqvp-test/v.webm", Path(v).read_bytes())
    try:
        got = [c for _, c in read_clips("memory://vqvp-test/v.webm", 30, 16)]
        assert np.array_equal(got[0], ref[0])
        with mem.open("/vqvp-test/v.webm", "rb") as f:
            assert probe(f).width == 48
        mem.pipe("/vqvp-test/empty.mp4", b"")
        with pytest.raises(VideoError) as ei:
            probe("memory://vqvp-test/empty.mp4")
        assert ei.value.reason == "empty_file"
        with pytest.raises(VideoError) as ei:
            probe("memory://vqvp-test/missing.mp4")
        assert ei.value.reason == "unreadable"
    finally:
        mem.rm("/vqvp-test", recursive=True)

    got = [c for _, c in read_clips(pyio.BytesIO(Path(v).read_bytes()), 30, 16)]
    assert np.array_equal(got[0], ref[0])


class _FlakyFile(pyio.RawIOBase):
    """A file object whose reads fail after ``ok_bytes`` (a dropped S3 connection)."""

    def __init__(self, data: bytes, ok_bytes: int):
        self._buf = pyio.BytesIO(data)
        self._ok = ok_bytes

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return self._buf.seek(offset, whence)

    def tell(self):
        return self._buf.tell()

    def readinto(self, b):
        if self._buf.tell() >= self._ok:
            raise ConnectionError("connection reset by peer")
        n = min(len(b), self._ok - self._buf.tell())
        data = self._buf.read(n)
        b[: len(data)] = data
        return len(data)


def test_io_errors_are_unreadable(tmp_path):
    v = fx.write_test_video(tmp_path / "v.mp4", n_frames=40, size=(32, 32), fps=30,
                            pattern="noise", faststart=True)
    data = Path(v).read_bytes()
    with pytest.raises(VideoError) as ei:
        list(read_clips(_FlakyFile(data, len(data) // 2), 30, 16))
    assert ei.value.reason == "unreadable"
    with pytest.raises(VideoError) as ei:
        probe(tmp_path / "does not exist.mp4")
    assert ei.value.reason == "unreadable"
    with pytest.raises(VideoError) as ei:
        list(read_clips(tmp_path, 30, 16))
    assert ei.value.reason == "unreadable"


# --------------------------------------------------------------------------- API edges


def test_video_error_is_picklable_and_checked():
    e = VideoError("corrupt", "bad moov", "s3://b/k.mp4")
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.reason, e2.message, e2.source) == ("corrupt", "bad moov", "s3://b/k.mp4")
    assert "corrupt" in str(e2)
    with pytest.raises(ValueError):
        VideoError("nope", "x")


def test_bad_arguments_fail_at_call_time(tmp_path):
    with pytest.raises(ValueError):
        decode_frames(tmp_path / "x.mp4", 0, 32)
    with pytest.raises(ValueError):
        read_clips(tmp_path / "x.mp4", 10, 0)
    with pytest.raises(ValueError):
        read_clips(tmp_path / "x.mp4", 10, 32, start_time=2, end_time=1)
    with pytest.raises(ValueError):
        iter_windows([], clip_len=0)


def test_iter_windows_is_lazy_and_bounded():
    consumed = []

    def frames(n):
        for i in range(n):
            consumed.append(i)
            yield np.full((2, 2, 3), i, np.uint8)

    it = iter_windows(frames(50), clip_len=4, stride=4)
    start, clip = next(it)
    assert start == 0 and clip.shape == (4, 2, 2, 3) and len(consumed) == 4
    assert [s for s, _ in it] == list(range(4, 48, 4))

    got = list(iter_windows(frames(10), clip_len=4, stride=2))
    assert [s for s, _ in got] == [0, 2, 4, 6]
    assert [int(c[0, 0, 0, 0]) for _, c in got] == [0, 2, 4, 6]
    got = list(iter_windows(frames(20), clip_len=3, stride=7))
    assert [(s, c[:, 0, 0, 0].tolist()) for s, c in got] == [(0, [0, 1, 2]), (7, [7, 8, 9]),
                                                            (14, [14, 15, 16])]
    assert list(iter_windows(frames(3), clip_len=4)) == []


def test_max_clips_zero_and_decode_frames_on_short_video(tmp_path):
    v = fx.write_test_video(tmp_path / "s.mp4", n_frames=5, size=(32, 32), fps=30)
    assert list(read_clips(v, 30, 16, max_clips=0)) == []
    assert len(list(decode_frames(v, 30, 16))) == 5  # decode_frames does not judge length


# --------------------------------------------------------------------------- writing


def _smooth_clip(t=12, h=48, w=64):
    y, x = np.mgrid[0:h, 0:w]
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i, ..., 0] = (x * 255 // (w - 1))
        frames[i, ..., 1] = (y * 255 // (h - 1))
        frames[i, ..., 2] = 60
        frames[i, 12:28, 4 + 3 * i: 20 + 3 * i] = 230
    return frames


@pytest.mark.parametrize("ext,tol", [(".mp4", 6.0), (".webm", 8.0), (".gif", 25.0)])
def test_write_video_round_trip(tmp_path, ext, tol):
    frames = _smooth_clip()
    out = tmp_path / f"sub dir/out{ext}"
    out.parent.mkdir()
    write_video(out, frames, fps=10)  # GIF delays are 1/100 s: 10 fps is exact
    assert sorted(os.listdir(out.parent)) == [f"out{ext}"]  # nothing else left behind
    info = probe(out)
    assert (info.width, info.height) == (64, 48) and info.fps == pytest.approx(10)
    back = np.stack([f for f in decode_frames(out, 10, 48)])
    assert back.shape[0] == 12
    ref = frames[:, :, 8:56]  # what the reader's centre crop sees
    err = np.abs(back.astype(np.float32) - ref.astype(np.float32)).mean()
    assert err < tol, err


def test_write_video_same_frames_same_bytes(tmp_path):
    frames = _smooth_clip(t=4)
    # x264 with macroblock-tree rate control differed in a few of 40 encodes: encode often.
    for ext in (".mp4", ".webm", ".gif"):
        outs = {Path(write_video(tmp_path / f"{i}{ext}", frames, fps=10)).read_bytes()
                for i in range(8)}
        assert len(outs) == 1, ext


def test_fixture_writers_are_deterministic(tmp_path):
    for ext in (".webm", ".mkv", ".avi"):
        a = fx.write_test_video(tmp_path / f"a{ext}", n_frames=6, with_audio=True)
        b = fx.write_test_video(tmp_path / f"b{ext}", n_frames=6, with_audio=True)
        assert Path(a).read_bytes() == Path(b).read_bytes(), ext


def test_write_video_pads_odd_sizes(tmp_path):
    frames = _smooth_clip(t=4, h=33, w=17)
    write_video(tmp_path / "odd.mp4", frames, fps=4)
    info = probe(tmp_path / "odd.mp4")
    assert (info.width, info.height) == (18, 34)
    write_video(tmp_path / "odd.gif", frames, fps=4)
    assert (probe(tmp_path / "odd.gif").width, probe(tmp_path / "odd.gif").height) == (17, 33)


def test_write_video_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"previous content")

    def boom(tmp, *args, **kwargs):
        Path(tmp).write_bytes(b"half a video")
        raise RuntimeError("killed mid-write")

    import vqvp_core.video.write as vwrite

    monkeypatch.setattr(vwrite, "_encode", boom)
    with pytest.raises(RuntimeError):
        write_video(target, _smooth_clip(t=2), fps=4)
    assert target.read_bytes() == b"previous content"
    assert os.listdir(tmp_path) == ["keep.mp4"]


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), np.float32), fps=4)
    with pytest.raises(ValueError):
        write_video(tmp_path / "a.xyz", np.zeros((2, 8, 8, 3), np.uint8), fps=4)
    with pytest.raises(ValueError):
        write_video(tmp_path / "a.mp4", np.zeros((0, 8, 8, 3), np.uint8), fps=4)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- timestamps


def _pick(times, fps, *, start=0, end=None, durations=None, max_frames=None):
    durations = durations or [None] * len(times)
    timed = [(None if t is None else Fraction(repr(t)), None if d is None else Fraction(d), i)
             for i, (t, d) in enumerate(zip(times, durations))]
    period = 1 / Fraction(fps)
    return [(float(tick), i) for tick, i in vio._resample(
        iter(timed), period, Fraction(repr(start)), None if end is None else Fraction(repr(end)),
        Fraction(1, 1000), Fraction(1, 10), max_frames)]


def test_resampler_rules():
    # 10 fps source, 5 fps output: every other frame; the last frame lasts 0.1 s
    assert _pick([i / 10 for i in range(6)], 5) == [(0.0, 0), (0.2, 2), (0.4, 4)]
    # ticks before the first frame are dropped, not filled
    assert _pick([0.25, 0.35], 10)[0] == (0.3, 0)
    # missing pts continue the last gap
    assert [i for _, i in _pick([0, 0.1, None, 0.3], 10)] == [0, 1, 2, 3]
    # a small step back is clamped, the frame still counts (and replaces frame 1);
    # the last frame lasts as long as the last gap (0.2 s)
    assert [i for _, i in _pick([0, 0.1, 0.09, 0.3], 10)] == [0, 2, 2, 3, 3]
    # explicit duration of the last frame
    assert len(_pick([0, 0.1], 10, durations=[None, Fraction(1, 2)])) == 6
    assert _pick([i / 10 for i in range(10)], 10, start=0.3, end=0.6) == [
        (0.3, 3), (0.4, 4), (0.5, 5)]
    assert len(_pick([i / 10 for i in range(10)], 10, max_frames=4)) == 4


def test_resampler_survives_garbage_timestamps():
    # a forward jump of a million seconds must not become ten million repeated frames
    got = _pick([0, 0.1, 1e6, 1e6 + 0.1], 10)
    assert [i for _, i in got] == [0, 1, 2, 3]
    # a wrap back to 0 (spliced file) keeps every frame in order
    got = _pick([5.0, 5.1, 5.2, 0.0, 0.1], 10)
    assert [i for _, i in got] == [0, 1, 2, 3, 4]
    # a huge duration on the last frame is capped
    assert len(_pick([0], 10, durations=[Fraction(10 ** 6)])) == 10 * vio.MAX_TIMESTAMP_GAP


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".avi"])
def test_mangled_bytes_only_ever_raise_video_error(tmp_path, ext):
    v = fx.write_test_video(tmp_path / f"v{ext}", n_frames=24, size=(32, 32), fps=30,
                            pattern="noise", with_audio=True)
    data = Path(v).read_bytes()
    rng = np.random.default_rng(7)
    for trial in range(16):
        b = bytearray(data)
        a = int(rng.integers(0, len(b)))
        if trial % 3 == 0:
            b = b[:a]
        elif trial % 3 == 1:
            n = int(rng.integers(1, 500))
            b[a:a + n] = rng.integers(0, 256, len(b[a:a + n]), dtype=np.uint8).tobytes()
        else:
            del b[a:a + int(rng.integers(1, 500))]
        try:
            for _, clip in read_clips(pyio.BytesIO(bytes(b)), 30, 16, clip_len=8):
                assert clip.shape == (8, 16, 16, 3)
        except VideoError as e:
            assert e.reason in vio.REASONS
